//! `sojourn proxy`: a sidecar reverse proxy that measures the four golden
//! signals of the service behind it without touching the service.
//!
//! Bodies stream through in both directions (never buffered whole);
//! upstream connections are pooled and kept alive; hop-by-hop headers are
//! dropped, `X-Forwarded-For`/`X-Forwarded-Proto` added and `Host` kept.
//! A request is recorded when its response body ends, or when the client
//! goes away and the body is dropped (counted as cancelled), as Linkerd
//! does: the latency a caller saw, not the time to the headers only (kept
//! apart as time to first byte).

pub mod admission;
pub mod client;
mod collector;
pub mod defaults;
mod flow;
mod headers;
mod record;
mod route;
pub(crate) mod stall;
pub mod stats;
mod trim;
pub mod upstream;
pub mod window;

pub use collector::ProxyCollector;
use headers::*;
use record::*;
pub use record::{CountingBody, RecordedBody};
pub use route::{Route, route_index};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use admission::{Admission, Admit, Permit};
use stats::{ErrorType, RequestKey, RouteKey, ServiceStats, method_label};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `http://host:port`; the request's path and query are kept.
    pub upstream: Uri,
    pub service: String,
    pub routes: Vec<Route>,
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response headers (504 after; from
    /// the last request-body bytes during an upload, whose client gets 408
    /// if it is the one silent that long), and longest silence within a
    /// response body (cut off after).
    pub timeout: Duration,
    /// Longest wait for a client's request headers (slowloris), and for
    /// a new connection's first byte.
    pub header_timeout: Duration,
    /// Longest wait for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Longest a client may take nothing of what is written to it (nginx's
    /// `send_timeout`): a client that stops reading is closed after.
    pub send_timeout: Duration,
    /// Most client connections at once; more are closed on arrival.
    pub max_connections: usize,
    /// Longest wait for in-flight requests on SIGTERM.
    pub drain_timeout: Duration,
    /// `--max-concurrency` and what to do beyond it; None: unlimited.
    pub admission: Option<admission::AdmissionConfig>,
    /// Span of the latency quantiles' sliding window.
    pub quantile_window: Duration,
    /// The p99 the service should stay under (`sojourn check`, the / page).
    pub latency_target: Duration,
}

impl Config {
    /// This service's stats (a quantile window per route) and, with
    /// `--max-concurrency`, its request queue.
    pub fn new_handle(&self, queue: crate::queue::QueueConfig) -> ServiceHandle {
        ServiceHandle {
            latency_target: self.latency_target,
            stats: Arc::new(ServiceStats::with_routes(
                self.service.clone(),
                self.routes.iter().map(|r| r.template.clone()).collect(),
            )),
            admission: self
                .admission
                .clone()
                .map(|a| Arc::new(Admission::new(a, &self.service, queue))),
        }
    }
}

/// Checks an `--upstream` value: an http URL with a host.
pub fn parse_upstream(s: &str) -> Result<Uri, String> {
    // Never echo user information: it may be a password.
    let shown = redact_userinfo(s);
    let uri: Uri = s.parse().map_err(|e| format!("{shown:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{shown:?}: only http:// upstreams are supported"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{shown:?}: no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{shown:?}: credentials in the upstream URL are not supported (the proxy forwards each client's own Authorization)"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{shown:?}: no host"));
    }
    // hyper keeps a port it cannot use and would fall back to 80.
    if let Some(port) = authority
        .as_str()
        .rsplit_once(':')
        .and_then(|(host, port)| {
            // An IPv6 literal's colons are inside its brackets.
            (!host.is_empty() && !port.contains(']')).then_some(port)
        })
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err(format!(
            "{shown:?}: port {port:?} is not a port (1 to 65535)"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{shown:?}: a path or query in the upstream URL is not supported (requests keep their own)"
        ));
    }
    Ok(uri)
}

/// `s` with anything between `://` and an `@` in its authority starred out.
fn redact_userinfo(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => s.to_string(),
    }
}

/// One proxied service's stats and request queue, shared by its proxy and
/// the scraper.
#[derive(Clone)]
pub struct ServiceHandle {
    pub stats: Arc<ServiceStats>,
    pub latency_target: Duration,
    pub admission: Option<Arc<Admission>>,
}

struct Shared {
    cfg: Config,
    stats: Arc<ServiceStats>,
    upstream: Arc<upstream::UpstreamPool>,
    admission: Option<Arc<Admission>>,
    /// The empty `http_route`, shared rather than allocated per request.
    no_route: Arc<str>,
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<flow::StreamExecutor>,
    /// Sweeps every `client::idle_sweep`, and the stop, for the HTTP/1
    /// connections being served.
    control: client::Control,
    /// Connections parked since the freed heap was last given back.
    parked: std::sync::atomic::AtomicUsize,
}

/// The proxy as a hyper service, for one client connection (`client`:
/// what its requests tell the task serving it).
fn service(
    shared: Arc<Shared>,
    peer: SocketAddr,
    client: Option<Arc<client::ClientConn>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<RecordedBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Unpin
+ 'static {
    // The client's address as X-Forwarded-For wants it, made once per
    // connection rather than formatted per request.
    let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
        .expect("an IP address is a valid header value");
    hyper::service::service_fn(move |req| {
        forward(shared.clone(), req, peer_ip.clone(), client.clone())
    })
}

/// Connections parked (their buffers freed) before the freed heap is
/// given back to the kernel.
const PARKED_BEFORE_TRIM: usize = 256;

/// Serves the proxy on `listener` until `shutdown`, then stops accepting
/// and waits up to the drain timeout for requests in flight.
pub async fn serve(
    listener: TcpListener,
    cfg: Config,
    handle: ServiceHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let ServiceHandle {
        stats, admission, ..
    } = handle;
    let rotation = window::rotation_interval(cfg.quantile_window);
    let rotating = stats.clone();
    let _rotator = crate::rt::AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + rotation, rotation);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            rotating.rotate_windows();
        }
    }));
    let upstream = Arc::new(upstream::UpstreamPool::new(
        &cfg.upstream,
        cfg.connect_timeout,
        cfg.timeout,
    ));
    let limit = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        // The read buffer's limit alone lets a head through that ends in
        // the read that crosses it (a 70 KiB head was forwarded).
        .max_header_size(upstream::MAX_HEAD)
        .max_buf_size(upstream::MAX_HEAD);
    let mut h2 = hyper::server::conn::http2::Builder::new(flow::StreamExecutor {
        send_timeout: cfg.send_timeout,
    });
    h2.timer(TokioTimer::new())
        .max_header_list_size(upstream::MAX_HEAD as u32)
        .max_concurrent_streams(256)
        // HTTP/2's flow control stops the writes to a client that reads
        // nothing long before the socket fills, so the send timeout cannot
        // see it: a PING unanswered for the send timeout after that long
        // without a frame closes it (and ends a GOAWAY whose PING is never
        // answered). A client that answers but keeps one stream's window
        // shut is `flow`'s.
        .keep_alive_interval(cfg.send_timeout)
        .keep_alive_timeout(cfg.send_timeout);
    let shared = Arc::new(Shared {
        cfg,
        stats,
        upstream,
        admission,
        no_route: Arc::from(""),
        h1,
        h2,
        control: client::Control::default(),
        parked: Default::default(),
    });
    let sweeping = shared.clone();
    let _sweeper = crate::rt::AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(client::idle_sweep(sweeping.cfg.header_timeout));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweeping.control.sweep();
            // ~33 kB each: 256 parked is 8 MB freed, worth a trim (~1 ms,
            // off the serving thread).
            if sweeping.parked.load(Ordering::Relaxed) >= PARKED_BEFORE_TRIM {
                sweeping.parked.store(0, Ordering::Relaxed);
                tokio::task::spawn_blocking(trim::release_free_heap);
            }
        }
    }));
    // Every connection's task holds a receiver: `closed` below is the
    // moment the last one has finished.
    let (all_ended, task_alive) = watch::channel(());
    tokio::pin!(shutdown);
    while let Some((stream, peer)) = crate::rt::accept_until(&listener, &mut shutdown).await {
        // Over the connection limit: closed at once, so that idle or slow
        // clients cannot hold every slot and memory stays bounded.
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stats = shared.stats.clone();
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.open_connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let task_alive = task_alive.clone();
        tokio::spawn(async move {
            client::serve(stream, peer, shared).await;
            drop(task_alive);
            stats.open_connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    drop(task_alive);
    shared.control.stop();
    let drain = shared.cfg.drain_timeout;
    if tokio::time::timeout(drain, all_ended.closed())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {drain:?}; closing");
    }
}

/// Relays a switched connection both ways until either side closes,
/// counting its bytes as the service's traffic.
async fn tunnel(
    mut client: client::Replay,
    mut upstream: client::Replay,
    stats: Arc<ServiceStats>,
) {
    stats.open_tunnels.fetch_add(1, Ordering::Relaxed);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            stats.request_bytes.fetch_add(up, Ordering::Relaxed);
            stats.response_bytes.fetch_add(down, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
    }
    stats.open_tunnels.fetch_sub(1, Ordering::Relaxed);
}

/// Forwards one request. The request is encoded for the upstream here, in
/// hyper's call of the service, and its head's bytes let go before the
/// future exists: hyper reads on into its buffer before it first polls the
/// future, and while the head's bytes were still held it allocated a new
/// 8 KiB buffer for every request.
fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer_ip: HeaderValue,
    client: Option<Arc<client::ClientConn>>,
) -> impl Future<Output = Result<Response<RecordedBody>, Infallible>> + Send + 'static {
    let start = Instant::now();
    let upgrade = upgrade_protocol(&req);
    // Only an HTTP/1.1 exchange that neither closes nor switches protocols
    // leaves the socket for another request.
    let keep_alive = req.version() == hyper::Version::HTTP_11
        && upgrade.is_none()
        && !connection_has(req.headers(), "close");
    let in_flight = client.as_ref().map(|c| c.begin(keep_alive));
    let route_index = route_index(&shared.cfg.routes, req.uri().path());
    // From here the request is recorded once, however it ends: with its
    // response, or as cancelled if the client leaves before one exists.
    let mut recording = Recording::begin(
        start,
        &shared.stats,
        method_label(req.method()),
        route_index
            .map_or(&shared.no_route, |i| &shared.cfg.routes[i].template)
            .clone(),
        route_index,
        in_flight,
    );
    let http2 = req.version() == hyper::Version::HTTP_2;
    let (mut parts, body) = req.into_parts();
    upstream_head(&mut parts, upgrade.as_ref(), peer_ip);
    let request = upstream::Prepared::new(&parts, body.is_end_stream());
    drop(parts);
    async move {
        // hyper calls the service on the connection's task and polls this
        // on the stream's.
        if http2 {
            recording.client_window = flow::Waiting::current();
        }
        let stats = &shared.stats;
        if let Some(a) = &shared.admission {
            // Boxed: its wait is the rare path, and the request's future is
            // moved whole (every byte of its largest state) into hyper's slot.
            match Box::pin(a.admit()).await {
                Admit::Go(p) => recording.permit = Some(p),
                Admit::Shed => {
                    let mut r = local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded, retry\n",
                        recording,
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return Ok(r);
                }
            }
        }
        // The deadline from the request's start: one clock read fewer.
        let deadline = tokio::time::Instant::from_std(start) + shared.cfg.timeout;
        // Nothing bound here outlives the await: a named future would keep its
        // room in every request's state.
        Ok(
            match shared
                .upstream
                .send(
                    request,
                    CountingBody {
                        inner: body,
                        stats: shared.stats.clone(),
                    },
                    deadline,
                )
                .await
            {
                Ok(mut resp) => {
                    // The client's side of the relay is its socket, which the
                    // connection's task takes back once hyper has written the 101.
                    let upstream_upgrade = match (upgrade.is_some(), &client) {
                        (true, Some(client)) => match resp.body_mut().take_switched() {
                            Some(switched) => {
                                client.set_upgrade(switched);
                                resp.headers().get(header::UPGRADE).cloned()
                            }
                            None => None,
                        },
                        _ => None,
                    };
                    stats.record_first_byte(
                        &RouteKey {
                            method: recording.key.method,
                            route: recording.key.route.clone(),
                        },
                        start.elapsed().as_secs_f64(),
                    );
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    if let Some(protocol) = &upstream_upgrade {
                        mark_upgrade(&mut parts.headers, protocol);
                    }
                    let body = recording.respond(parts.status, Inner::Upstream(body));
                    Response::from_parts(parts, body)
                }
                Err(upstream::UpstreamError::RequestBody(e)) => request_body_broke(&e, recording),
                Err(upstream::UpstreamError::ClientTimeout) => {
                    // The client is slow, not the upstream (nginx's
                    // client_body_timeout: 408).
                    local(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body timed out\n",
                        recording,
                    )
                }
                Err(upstream::UpstreamError::Timeout) => {
                    stats.error(ErrorType::Timeout);
                    local(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream timed out\n",
                        recording,
                    )
                }
                Err(upstream::UpstreamError::Connect(why)) => {
                    upstream_unavailable(stats, ErrorType::Connect, &why, recording)
                }
                Err(upstream::UpstreamError::Reset(why)) => {
                    upstream_unavailable(stats, ErrorType::Reset, &why, recording)
                }
            },
        )
    }
}

/// The 502 for an upstream that could not be reached or broke the
/// exchange, counted by `kind`.
fn upstream_unavailable(
    stats: &ServiceStats,
    kind: ErrorType,
    why: &str,
    recording: Recording,
) -> Response<RecordedBody> {
    stats.error(kind);
    tracing::debug!(error = why, error_type = ?kind, "upstream request failed");
    local(StatusCode::BAD_GATEWAY, "upstream unavailable\n", recording)
}

/// The answer when the client's request body broke off on its way
/// upstream. No upstream error: the upstream did nothing wrong, and an
/// alert on its errors must not page anyone for a client.
fn request_body_broke(e: &hyper::Error, mut recording: Recording) -> Response<RecordedBody> {
    tracing::debug!(error = %e, "the client's request body broke off");
    if body_malformed(e) {
        // The client is there and framed its body wrongly (nginx: 400).
        return local(
            StatusCode::BAD_REQUEST,
            "malformed request body\n",
            recording,
        );
    }
    // The client went away mid-upload (closed, reset, HTTP/2 stream
    // cancelled): a cancellation, recorded as 499 like any other. The 400
    // reaches only a client that half-closed its side.
    recording.finish(true);
    local(
        StatusCode::BAD_REQUEST,
        "request body incomplete\n",
        recording,
    )
}

/// A body hyper refused as framed wrongly (a bad chunk-size line, a chunk
/// without its CRLF), as against one the client stopped sending: hyper's
/// decoder reports the first as InvalidInput or InvalidData.
fn body_malformed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        source = s.source();
    }
    false
}

fn local(status: StatusCode, text: &'static str, recording: Recording) -> Response<RecordedBody> {
    let mut r = Response::new(recording.respond(
        status,
        Inner::Local(Full::new(Bytes::from_static(text.as_bytes()))),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates_not_raw_paths() {
        let routes: Vec<Route> = ["/users/{id}", "/users/{id}/orders", "/static/*", "/"]
            .iter()
            .map(|t| Route::parse(t).unwrap())
            .collect();
        let route = |path| route_index(&routes, path).map_or("", |i| &*routes[i].template);
        assert_eq!(route("/users/42"), "/users/{id}");
        assert_eq!(route("/users/42/orders"), "/users/{id}/orders");
        assert_eq!(route("/static/css/a.css"), "/static/*");
        assert_eq!(route("/"), "/");
        assert_eq!(route("/users/"), "", "an empty segment is no id");
        assert_eq!(route("/nope"), "");
        assert!(Route::parse("users").is_err());
        assert!(Route::parse("/a/*/b").is_err());
        assert!(Route::parse("/a{b}").is_err());
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upstreams_are_plain_http_addresses() {
        assert!(parse_upstream("https://x").is_err());
        assert!(parse_upstream("http://127.0.0.1:1").is_ok());
        assert!(parse_upstream("http://127.0.0.1:8080/").is_ok());
        assert!(parse_upstream("http://[::1]:8080").is_ok());
        assert!(parse_upstream("http://[::1]").is_ok());
        assert!(parse_upstream("http://shop").is_ok());
        for (bad, says) in [
            ("http://127.0.0.1:99999", "not a port"),
            ("http://127.0.0.1:0", "not a port"),
            ("http://[::1]:70000", "not a port"),
            ("http://h:8080/base", "path or query"),
            ("http://h:8080/?x=1", "path or query"),
            ("http://user:pw@h/base?x=1", "credentials"),
        ] {
            let e = parse_upstream(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("pw"), "never echoes a password: {e}");
        }
        assert_eq!(redact_userinfo("http://u:p@h:1/x@y"), "http://***@h:1/x@y");
    }
}
