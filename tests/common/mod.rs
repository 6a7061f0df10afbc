//! Helpers shared by the integration tests: start the built binary, speak
//! just enough HTTP/1.1 to scrape it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};

/// A test that cannot run here (a tool missing, not root) is skipped with
/// a line saying why, unless `require_var` is set, as .ci/run sets it:
/// then it fails.
pub fn skip_unless_required(require_var: &str, why: &str) {
    assert!(
        std::env::var_os(require_var).is_none(),
        "{require_var} is set but {why}"
    );
    eprintln!("skipped: {why}");
}
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies a directory tree (the fixture tree, into a temp dir a test may break).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if kind.is_symlink() {
            // Namespace links (`net:[4026531840]`) point nowhere on disk.
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), dest).unwrap();
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A running sojourn; killed on drop.
pub struct Exporter {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a free loopback port and waits for its "listening" line.
pub fn start(extra: &[&str]) -> Exporter {
    start_with(Command::new(env!("CARGO_BIN_EXE_sojourn")), extra)
}

/// [`start`] with `command` running the binary (e.g. `ip netns exec NS
/// sojourn`).
pub fn start_with(mut command: Command, extra: &[&str]) -> Exporter {
    command
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(extra);
    spawn_listening(&mut command, 1).0
}

/// Runs `command` (sojourn, or what execs it) until it has logged `count`
/// "listening" lines: the running exporter (at the first address) and
/// every address, in order.
pub fn spawn_listening(command: &mut Command, count: usize) -> (Exporter, Vec<SocketAddr>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sojourn");
    let mut reader = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut line = String::new();
    while addrs.len() < count {
        line.clear();
        let n = reader.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "sojourn exited before listening");
        if line.contains("listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
                .expect("address in the listening line")
                .parse()
                .expect("socket address");
            addrs.push(addr);
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = reader.read_to_string(&mut sink);
    });
    let addr = addrs[0];
    (Exporter { child, addr }, addrs)
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(addr, "GET", path, headers)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    request_with_body(addr, method, path, headers, b"")
}

/// One request on a new connection (`Connection: close`), with a body when
/// `body` is not empty; `Host` is the address unless `headers` name one.
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 2 + size + 2..];
    }
}

/// The flags that point sojourn at a fixture-shaped tree under `root`.
pub fn tree_args(root: &Path) -> Vec<String> {
    vec![
        "--path.procfs".into(),
        root.join("proc").display().to_string(),
        "--path.sysfs".into(),
        root.join("sys").display().to_string(),
        "--path.rootfs".into(),
        root.join("rootfs").display().to_string(),
    ]
}

/// Collectors whose output does not come from the fixture tree: the queue
/// sampler's values depend on timing, and tcp_ports dumps the live kernel's
/// sockets over netlink (tests/queues.rs and tests/tcp_ports.rs cover them).
pub const LIVE_ONLY: [&str; 2] = ["--no-collector.queue", "--no-collector.tcp_ports"];

/// The flags every run against the checked-in fixture tree uses.
pub fn fixture_args() -> Vec<String> {
    let mut args = tree_args(&fixtures());
    args.extend(LIVE_ONLY.iter().map(|s| s.to_string()));
    // proc/4242 is a postgres process.
    args.extend(["--collector.process.include".into(), "^(postgres)".into()]);
    args
}

/// An in-process scraper over `root` with every default collector but the
/// live-only ones.
pub fn tree_scraper(root: &Path) -> sojourn::scrape::Scraper {
    tree_scraper_with(root, &LIVE_ONLY)
}

/// An in-process scraper over `root` with extra flags.
pub fn tree_scraper_with(root: &Path, extra: &[&str]) -> sojourn::scrape::Scraper {
    let args = std::iter::once("sojourn".to_string())
        .chain(tree_args(root))
        .chain(extra.iter().map(|s| s.to_string()));
    let s = sojourn::cli::parse(args).expect("fixture flags");
    sojourn::scrape::Scraper::new(s.collect, &s.collectors)
}

/// A temporary copy of the fixture tree that a test may break.
pub fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fixtures");
    copy_tree(&fixtures(), &root);
    (dir, root)
}

/// Compares `got` with the golden file at `path` (relative to the crate),
/// showing the lines that differ; `UPDATE_GOLDEN=1` rewrites the file.
pub fn golden(path: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).expect("golden file; UPDATE_GOLDEN=1 writes it");
    if got == want {
        return;
    }
    let diff: Vec<String> = want
        .lines()
        .filter(|l| !got.lines().any(|g| g == *l))
        .map(|l| format!("- {l}"))
        .chain(
            got.lines()
                .filter(|l| !want.lines().any(|w| w == *l))
                .map(|l| format!("+ {l}")),
        )
        .take(40)
        .collect();
    panic!(
        "output differs from {} (UPDATE_GOLDEN=1 regenerates it); lines only on one side:\n{}",
        path.display(),
        if diff.is_empty() {
            "(none: the same lines in another order or number)".to_string()
        } else {
            diff.join("\n")
        }
    );
}

/// A small HTTP(S) server on its own runtime thread, for probes:
///   /status/N   answers N
///   /slow/MS    answers 200 after MS milliseconds
///   /text/T     answers 200 with body T
pub struct TestServer {
    pub addr: SocketAddr,
    /// The self-signed certificate (PEM) when serving TLS.
    pub ca_pem: Option<String>,
}

/// The certificate's notAfter, as a Unix time: 2031-05-17 00:00:00 UTC.
pub const TEST_CERT_NOT_AFTER: i64 = 1_936_742_400;

/// Accepts on a free loopback port, on a thread with its own runtime, and
/// runs `per_connection` as a task for each connection.
pub fn serve_on_thread<F, Fut>(per_connection: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(per_connection(stream));
            }
        });
    });
    rx.recv().unwrap()
}

pub fn test_server(tls: bool) -> TestServer {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let (tls_config, ca_pem) = if tls {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        (Some(std::sync::Arc::new(config)), Some(cert.pem()))
    } else {
        (None, None)
    };
    let acceptor = tls_config.map(tokio_rustls::TlsAcceptor::from);
    let addr = serve_on_thread(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let (status, body) = if let Some(code) = path.strip_prefix("/status/") {
                        (code.parse().unwrap(), format!("status {code}\n"))
                    } else if let Some(ms) = path.strip_prefix("/slow/") {
                        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                        (200, "slow\n".to_string())
                    } else if let Some(t) = path.strip_prefix("/text/") {
                        (200, t.to_string())
                    } else {
                        (404, "no such test route\n".to_string())
                    };
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                },
            );
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(a) => {
                    if let Ok(s) = a.accept(stream).await {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                }
                None => {
                    let _ = http
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        }
    });
    TestServer { addr, ca_pem }
}

/// Polls `addr`'s /metrics until `done` holds for its text, or panics after
/// `within` with the last text.
pub fn scrape_until(addr: SocketAddr, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = get(addr, "/metrics", &[]).text();
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {within:?}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample whose line starts with `series` (name and
/// labels as exposed), if any.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Processes killed (and reaped) on drop, so that a failing assertion
/// leaves no load behind for the next test.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` busy shells; the loop is a builtin, so no grandchild outlives the kill.
pub fn busy_shells(n: usize) -> Children {
    Children(
        (0..n)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("start sh")
            })
            .collect(),
    )
}

/// Removes a cgroup directory whose tasks were killed: the kernel frees a
/// cgroup only once its last task has gone, so this retries for a second.
pub fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup made for the test, with a busy child in it; removed on drop.
pub struct Throttled {
    pub dir: std::path::PathBuf,
    /// cgroup v1: the same cgroup in the cpuacct, memory and pids
    /// hierarchies, so that usage, memory and tasks are reported too.
    pub others: Vec<std::path::PathBuf>,
    pub child: std::process::Child,
}

impl Drop for Throttled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in std::iter::once(&self.dir).chain(&self.others) {
            remove_cgroup(dir);
        }
    }
}

/// Where a cgroup `name` with `controller` goes on this machine's
/// hierarchy: (its directory, whether cgroup v2). On v2 the controller is
/// enabled for the root's children.
pub fn cgroup_dir(controller: &str, name: &str) -> (std::path::PathBuf, bool) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let _ = std::fs::write(
            root.join("cgroup.subtree_control"),
            format!("+{controller}"),
        );
        (root.join(name), true)
    } else {
        (root.join(controller).join(name), false)
    }
}

pub fn throttled_cgroup(name: &str) -> Throttled {
    let (dir, v2) = cgroup_dir("cpu", name);
    std::fs::create_dir(&dir).expect("create a cgroup (the tests run as root)");
    if v2 {
        std::fs::write(dir.join("cpu.max"), "20000 100000").unwrap();
    } else {
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), "20000").unwrap();
    }
    // A busy loop, bounded: the guard kills it.
    let child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let mut guard = Throttled {
        dir,
        others: Vec::new(),
        child,
    };
    std::fs::write(guard.dir.join("cgroup.procs"), guard.child.id().to_string()).unwrap();
    if !v2 {
        for controller in ["cpuacct", "memory", "pids"] {
            let (other, _) = cgroup_dir(controller, name);
            // Where cpuacct shares cpu's hierarchy the directory exists.
            if other.exists() || std::fs::create_dir(&other).is_err() {
                continue;
            }
            let _ = std::fs::write(other.join("cgroup.procs"), guard.child.id().to_string());
            guard.others.push(other);
        }
    }
    guard
}

pub struct Pki {
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub client_cert: rustls::pki_types::CertificateDer<'static>,
    pub client_key: Vec<u8>,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, the
/// server's and the CA's written into `dir`.
pub fn pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec!["prometheus".to_string()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    Pki {
        ca_der: ca_cert.der().clone(),
        client_cert: client.der().clone(),
        client_key: client_key.serialize_der(),
    }
}

/// A child process killed and reaped when the test lets go of it, even
/// when the test fails.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fake Kubernetes pods for the tests of per-namespace signals: a network
/// namespace with a process in a kubelet-layout cgroup.
/// A fake pod: its namespace, its process, its cgroup; all removed on drop.
pub struct Pod {
    pub netns: String,
    pub uid: String,
    pub child: Child,
    pub cgroup: PathBuf,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup(&self.cgroup);
        if let Some(pod) = self.cgroup.parent() {
            remove_cgroup(pod);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// A Python program run in the pod: `busy` listens with a backlog of 1,
/// never accepts, and keeps connecting to itself, so the accept queue
/// overflows; otherwise it only sleeps.
const PROGRAM: &str = r#"
import socket, sys, time
if sys.argv[1] == "busy":
    l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen(1)
    held = []
    while True:
        for _ in range(8):
            c = socket.socket(); c.setblocking(False)
            try: c.connect(("127.0.0.1", 8080))
            except BlockingIOError: pass
            held.append(c)
        held = held[-64:]
        time.sleep(0.05)
else:
    time.sleep(120)
"#;

/// [`pod`], or None after saying why the test is skipped (it fails
/// instead where SOJOURN_REQUIRE_NAMESPACES is set).
pub fn pod_or_skip(tag: &str, busy: bool) -> Option<Pod> {
    let made = pod(tag, busy);
    if made.is_none() {
        skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "ip netns and cgroups need root",
        );
    }
    made
}

/// A scraper reading other namespaces (netns, queue and tcp_ports at a
/// 100 ms rescan), with a fake kubelet that lists `pod` as shop/web-7d9.
pub fn named_pod_scraper(pod: &Pod) -> sojourn::scrape::Scraper {
    let (port, _) = fake_kubelet(
        "200 OK",
        format!(
            r#"{{"kind":"PodList","items":[{{"metadata":{{"name":"web-7d9","namespace":"shop","uid":"{}"}}}}]}}"#,
            pod.uid
        ),
    );
    let url = format!("http://127.0.0.1:{port}/pods");
    let settings = sojourn::cli::parse([
        "sojourn",
        "--collector.disable-defaults",
        "--collector.netns",
        "--collector.queue",
        "--collector.tcp_ports",
        "--collector.process.rescan-interval",
        "100ms",
        "--collector.cgroup.kubelet-url",
        &url,
    ])
    .expect("flags");
    sojourn::scrape::Scraper::new(settings.collect, &settings.collectors)
}

pub fn pod(tag: &str, busy: bool) -> Option<Pod> {
    pod_of_user(tag, busy, None)
}

/// [`pod`] whose process runs as `user` (uid and gid), as a pod's
/// container usually does: not as the agent's user.
pub fn pod_of_user(tag: &str, busy: bool, user: Option<u32>) -> Option<Pod> {
    let netns = format!("sojourn-pod-{tag}-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    for args in [
        &["link", "set", "lo", "up"][..],
        // An interface besides loopback, as a pod's eth0 (its peer stays
        // in the namespace too).
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "veth0",
        ],
        &["link", "set", "eth0", "up"],
        &["link", "set", "veth0", "up"],
    ] {
        let _ = Command::new("ip")
            .args(["netns", "exec", &netns, "ip"])
            .args(args)
            .status();
    }
    let uid = format!(
        "0b2e4c3a-1111-2222-3333-{:012x}",
        std::process::id() as u64 * 16 + busy as u64
    );
    let (base, _) = cgroup_dir("memory", "kubepods/burstable");
    let cgroup = base.join(format!("pod{uid}")).join("c0ffee00c0ffee00");
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &netns]);
    let mut python = "python3";
    if let Some(user) = user {
        command
            .arg("setpriv")
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .arg("--clear-groups");
        // The system's, which any user may run (not a shim under /root).
        if Path::new("/usr/bin/python3").exists() {
            python = "/usr/bin/python3";
        }
    }
    let child = command
        .args([python, "-c", PROGRAM])
        .arg(if busy { "busy" } else { "idle" })
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let pod = Pod {
        netns,
        uid,
        child,
        cgroup,
    };
    std::fs::create_dir_all(&pod.cgroup).ok()?;
    std::fs::write(pod.cgroup.join("cgroup.procs"), pod.child.id().to_string()).ok()?;
    Some(pod)
}

/// A stand-in for the kubelet's read-only port: answers every request with
/// `status` and `body`, and records the request lines.
pub fn fake_kubelet(
    status: &'static str,
    body: impl Into<String>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let body: String = body.into();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            log.lock().unwrap().push(line.trim_end().to_string());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

/// A server on 127.0.0.1:9000 that accepts and never reads, and a client
/// of it that writes until its send buffer is full.
pub const UNREAD: &str = r#"
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 9000)); l.listen(8)
c = socket.create_connection(("127.0.0.1", 9000)); c.setblocking(False)
s, _ = l.accept()
try:
    while True: c.send(b"x" * 65536)
except BlockingIOError:
    pass
time.sleep(120)
"#;

/// Runs `promtool check metrics` on a scrape: `Some(findings)` (empty when
/// clean), or `None` when promtool is not installed and not required.
pub fn promtool_findings(text: &str) -> Option<String> {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            skip_unless_required(
                "SOJOURN_REQUIRE_PROMTOOL",
                &format!("promtool cannot run ({e}): lint"),
            );
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 0 on lint warnings too; sojourn has none to excuse.
    if !out.status.success() && findings.trim().is_empty() {
        return Some(format!("promtool exited with {}", out.status));
    }
    Some(findings)
}
