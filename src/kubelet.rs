//! Pod and container names from the kubelet's pods endpoint (a
//! `v1.PodList`): the authenticated port (`https://NODE:10250/pods`, with
//! the ServiceAccount's bearer token; RBAC `nodes/proxy` or, on 1.33+,
//! `nodes/pods`) or the read-only one (`http://NODE:10255/pods`), so cgroup
//! series can carry `namespace`, `pod` and `container` besides the ids
//! parsed from cgroup paths. Off unless `--collector.cgroup.kubelet-url`
//! is given.
//!
//! A background thread fetches the list every [`REFRESH`]; scrapes only read
//! the latest directory, so a slow or absent kubelet never slows a scrape.
//! When a fetch fails the last good directory is kept (a pod's uid never
//! changes its name) and `sojourn_cgroup_kubelet_up` turns 0; with none,
//! series keep their uid labels only. One fetcher per URL serves every
//! reader ([`shared`]): the cgroup and netns collectors and the queue
//! sampler's pods' listeners.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ParseError;

/// How often the pod list is fetched again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// Longest a fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest pod list read (a node's 110 pods take about 1 MB).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    pub namespace: String,
    pub pod: String,
}

/// Names by pod uid and by container id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodDirectory {
    pub pods: HashMap<String, PodNames>,
    pub containers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Metadata,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: String,
    uid: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    /// `containerd://<id>`, `cri-o://<id>`, `docker://<id>`; absent before start.
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

/// Parses a `v1.PodList` as the kubelet's /pods serves it.
pub fn parse_pod_list(json: &[u8]) -> Result<PodDirectory, ParseError> {
    let list: PodList =
        serde_json::from_slice(json).map_err(|e| ParseError(format!("pod list: {e}")))?;
    let mut dir = PodDirectory::default();
    for pod in list.items {
        let status = pod.status.unwrap_or_default();
        for c in status
            .container_statuses
            .into_iter()
            .chain(status.init_container_statuses)
            .chain(status.ephemeral_container_statuses)
        {
            if let Some(id) = c.container_id.as_deref().and_then(bare_container_id) {
                dir.containers.insert(id.to_string(), c.name);
            }
        }
        dir.pods.insert(
            pod.metadata.uid,
            PodNames {
                namespace: pod.metadata.namespace,
                pod: pod.metadata.name,
            },
        );
    }
    Ok(dir)
}

/// `containerd://4f1c…` → `4f1c…`, the id the cgroup path carries.
fn bare_container_id(id: &str) -> Option<&str> {
    let bare = id.split_once("://").map_or(id, |(_, b)| b);
    (!bare.is_empty()).then_some(bare)
}

struct Shared {
    /// The latest good directory, and the latest fetch's outcome (None before the first).
    directory: Mutex<(Arc<PodDirectory>, Option<bool>)>,
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

/// The background fetcher and the latest directory.
pub struct Kubelet {
    shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Where the ServiceAccount's token and the cluster's CA are mounted in a pod.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Where the pod list is fetched and how.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: hyper::Uri,
    /// For https: the certificate check (a CA file, or none).
    pub tls: Option<crate::tls_client::TlsSettings>,
    /// A bearer token file, read at every fetch: a projected
    /// ServiceAccount token is rotated under a running pod.
    pub token_file: Option<PathBuf>,
}

impl Endpoint {
    /// The endpoint for `url`: over https, the CA in `ca_file` (else the
    /// ServiceAccount's where mounted, else the system's) unless
    /// `insecure` (the kubelet's self-signed certificate, as kube-prometheus
    /// scrapes it), and the token in `token_file` (else the
    /// ServiceAccount's where mounted).
    pub fn new(
        url: hyper::Uri,
        ca_file: Option<PathBuf>,
        insecure: bool,
        token_file: Option<PathBuf>,
    ) -> Result<Endpoint, String> {
        let mounted = |p: &str| {
            let p = PathBuf::from(p);
            p.exists().then_some(p)
        };
        if url.scheme_str() != Some("https") {
            if ca_file.is_some() || insecure || token_file.is_some() {
                return Err(format!(
                    "{url}: a CA, insecure-skip-verify or a token is for an https kubelet URL"
                ));
            }
            return Ok(Endpoint {
                url,
                tls: None,
                token_file: None,
            });
        }
        let ca_file = ca_file.or_else(|| mounted(SERVICE_ACCOUNT_CA));
        let ca = match (&ca_file, insecure) {
            (Some(path), false) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("kubelet CA file {}: {e}", path.display()))?,
            ),
            _ => None,
        };
        let tls = crate::tls_client::TlsSettings::new(ca.as_deref(), None, insecure)
            .map_err(|e| format!("kubelet CA: {e}"))?;
        Ok(Endpoint {
            url,
            tls: Some(tls),
            token_file: token_file.or_else(|| mounted(SERVICE_ACCOUNT_TOKEN)),
        })
    }
}

/// Checks a `--collector.cgroup.kubelet-url` value.
pub fn parse_url(s: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "{s:?}: scheme {other} is not supported: https for the kubelet's port 10250, http for its read-only port 10255"
            ));
        }
        None => {
            return Err(format!(
                "{s:?}: no scheme (use https://HOST:10250/pods or http://HOST:10255/pods)"
            ));
        }
    }
    if uri.host().is_none() {
        return Err(format!("{s:?}: no host"));
    }
    Ok(uri)
}

/// The fetcher of `url`, started by the first reader and shared with the
/// others while any holds it: one request per [`REFRESH`] whoever reads.
pub fn shared(endpoint: &Endpoint) -> std::io::Result<Arc<Kubelet>> {
    static RUNNING: Mutex<Vec<(String, std::sync::Weak<Kubelet>)>> = Mutex::new(Vec::new());
    let key = endpoint.url.to_string();
    let mut running = RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    running.retain(|(_, k)| k.strong_count() > 0);
    if let Some(k) = running
        .iter()
        .find(|(u, _)| *u == key)
        .and_then(|(_, k)| k.upgrade())
    {
        return Ok(k);
    }
    let k = Arc::new(Kubelet::start(endpoint.clone(), REFRESH)?);
    running.push((key, Arc::downgrade(&k)));
    Ok(k)
}

impl Kubelet {
    /// Starts fetching `url` now and every `refresh`.
    pub fn start(endpoint: Endpoint, refresh: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            directory: Mutex::new((Arc::new(PodDirectory::default()), None)),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        });
        let handle = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kubelet-pods".into())
                .spawn(move || run(&endpoint, refresh, &shared))?
        };
        Ok(Kubelet {
            shared,
            handle: Some(handle),
        })
    }

    /// The latest good directory, and whether the latest fetch succeeded
    /// (None until the first has finished).
    pub fn directory(&self) -> (Arc<PodDirectory>, Option<bool>) {
        self.shared
            .directory
            .lock()
            .map(|d| (d.0.clone(), d.1))
            .unwrap_or_else(|_| (Arc::new(PodDirectory::default()), Some(false)))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _guard = self.shared.wake_lock.lock();
            self.shared.wake.notify_all();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(endpoint: &Endpoint, refresh: Duration, shared: &Shared) {
    let url = &endpoint.url;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("kubelet pod names disabled: no runtime: {e}");
            return;
        }
    };
    let mut was_up = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let result = rt
            .block_on(async { tokio::time::timeout(FETCH_TIMEOUT, fetch(endpoint)).await })
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")))
            .and_then(|body| parse_pod_list(&body).map_err(|e| e.0));
        let up = result.is_ok();
        match (&result, was_up) {
            (Err(e), Some(true) | None) => {
                tracing::warn!("kubelet pod list from {url}: {e}; cgroup series keep uid labels")
            }
            (Ok(d), Some(false) | None) => {
                tracing::info!("kubelet pod list from {url}: {} pods", d.pods.len())
            }
            _ => {}
        }
        was_up = Some(up);
        if let Ok(mut d) = shared.directory.lock() {
            match result {
                Ok(dir) => *d = (Arc::new(dir), Some(true)),
                // The last good names stay: a pod uid is never renamed.
                Err(_) => d.1 = Some(false),
            }
        }
        let Ok(guard) = shared.wake_lock.lock() else {
            return;
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let _ = shared.wake.wait_timeout(guard, refresh);
    }
}

async fn fetch(endpoint: &Endpoint) -> Result<Vec<u8>, String> {
    let url = &endpoint.url;
    let host = url.host().ok_or("no host")?.trim_matches(['[', ']']);
    let default_port = if endpoint.tls.is_some() { 443 } else { 80 };
    let port = url.port_u16().unwrap_or(default_port);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Read at every fetch: a projected token is rotated under the pod.
    let token = match &endpoint.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("token file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    match &endpoint.tls {
        None => get_pods(hyper_util::rt::TokioIo::new(stream), url, token).await,
        Some(tls) => {
            let stream = tls
                .connect(stream, host)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            get_pods(hyper_util::rt::TokioIo::new(stream), url, token).await
        }
    }
}

async fn get_pods<IO>(io: IO, url: &hyper::Uri, token: Option<String>) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Empty, Limited};
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or_default();
    let mut request = hyper::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if !response.status().is_success() {
        conn.abort();
        return Err(match response.status().as_u16() {
            401 => "HTTP 401: the kubelet refused the token (--collector.cgroup.kubelet-token-file)".into(),
            403 => "HTTP 403: the ServiceAccount may not read pods from the kubelet (RBAC: get on nodes/proxy, or nodes/pods)".into(),
            _ => format!("HTTP {}", response.status()),
        });
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    conn.abort();
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &str = r#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[
      {"metadata":{"name":"checkout-7d9f","namespace":"shop","uid":"0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e","labels":{"app":"checkout"}},
       "spec":{"containers":[{"name":"app"}]},
       "status":{"phase":"Running","qosClass":"Burstable",
         "initContainerStatuses":[{"name":"migrate","containerID":"containerd://aaaa0000aaaa0000"}],
         "containerStatuses":[{"name":"app","ready":true,"containerID":"containerd://4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01"},
                              {"name":"sidecar","ready":false}]}},
      {"metadata":{"name":"pending","namespace":"default","uid":"11111111-2222-3333-4444-555555555555"}}
    ]}"#;

    #[test]
    fn names_by_pod_uid_and_container_id() {
        let d = parse_pod_list(PODS.as_bytes()).unwrap();
        assert_eq!(
            d.pods["0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e"],
            PodNames {
                namespace: "shop".into(),
                pod: "checkout-7d9f".into()
            }
        );
        assert_eq!(
            d.containers["4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01"],
            "app"
        );
        assert_eq!(d.containers["aaaa0000aaaa0000"], "migrate");
        assert_eq!(d.containers.len(), 2, "a container not started has no id");
        assert_eq!(
            d.pods["11111111-2222-3333-4444-555555555555"].pod,
            "pending"
        );
    }

    #[test]
    fn rejects_what_is_not_a_pod_list() {
        assert!(parse_pod_list(b"<html>").is_err());
        assert!(parse_pod_list(br#"{"items":[{"metadata":{}}]}"#).is_err());
        assert_eq!(parse_pod_list(b"{}").unwrap(), PodDirectory::default());
    }

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:10255/pods").is_ok());
        assert!(parse_url("https://127.0.0.1:10250/pods").is_ok());
        assert!(parse_url("https://[fd00::7]:10250/pods").is_ok());
        assert!(
            parse_url("ftp://127.0.0.1/pods")
                .unwrap_err()
                .contains("10250")
        );
        assert!(parse_url("127.0.0.1:10255").is_err());
        assert!(parse_url("http:///pods").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_pod_list(&bytes);
        }
    }
}
