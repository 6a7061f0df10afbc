//! The HTTP side: `/metrics` (text 0.0.4 or OpenMetrics, gzip on request),
//! a landing page at `/`, and `/-/healthy`, `/-/ready` for probes.
//!
//! A scrape runs on the blocking pool, holding a permit from a semaphore of
//! `--web.max-requests`: a scrape beyond that gets 503 at once, and one that
//! outlives its deadline gets 503 while its thread finishes and only then
//! gives the permit back. So a slow source can never pile up threads — the
//! failure node_exporter's `--web.max-requests` was added for.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::{self, Format};
use crate::scrape::Scraper;
use crate::web_config::Refusal;

/// Prometheus sends its scrape timeout; answering a little before it lets
/// Prometheus see our 503 instead of its own timeout.
const TIMEOUT_HEADROOM: Duration = Duration::from_millis(500);
mod keepalive;
use keepalive::{HEADER_READ_TIMEOUT, HeadTimed};
/// A client that takes nothing of its response for this long is closed
/// (nginx's `send_timeout`, between two writes): one that pipelines
/// scrapes and never reads would otherwise hold its connection and its
/// responses for good.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// An address to serve metrics on (`--web.listen-address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every address of the host, IPv6 and IPv4 through one
    /// dual-stack socket where the host has IPv6, IPv4 alone where it has
    /// not — what a Go exporter's `:PORT` means.
    AnyHost(u16),
    /// One address, of one family.
    Addr(std::net::SocketAddr),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::AnyHost(port) => write!(f, ":{port}"),
            ListenAddr::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// What the metrics server is told: the `--web.*` flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Each `--web.listen-address`, in order.
    pub listen: Vec<ListenAddr>,
    /// `--web.systemd-socket`: serve on the sockets systemd passed instead.
    pub systemd_socket: bool,
    pub telemetry_path: String,
    /// 0 means no limit.
    pub max_requests: usize,
    /// Connections open at once on the metrics port.
    pub max_connections: usize,
    pub scrape_timeout: Duration,
    /// TLS and basic auth of the HTTP endpoints, from `--web.config.file`.
    pub web: crate::web_config::WebConfig,
}

pub struct App {
    pub scraper: Arc<Scraper>,
    pub settings: Config,
    limiter: Option<Arc<Semaphore>>,
    /// The `/` page's live USE table.
    pub live: Arc<crate::check::live::Live>,
}

impl App {
    pub fn new(scraper: Scraper, settings: Config) -> Self {
        let limiter =
            (settings.max_requests > 0).then(|| Arc::new(Semaphore::new(settings.max_requests)));
        App {
            scraper: Arc::new(scraper),
            settings,
            limiter,
            live: Arc::default(),
        }
    }
}

pub use crate::rt::{AbortOnDrop, accept_until};

/// Serves until `shutdown` completes.
pub async fn serve(
    listeners: Vec<TcpListener>,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tls = app
        .settings
        .web
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    // One limit on connections across every listener.
    let open = Arc::new(Semaphore::new(app.settings.max_connections.max(1)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        let (app, tls, open, mut stopped) =
            (app.clone(), tls.clone(), open.clone(), stopped.clone());
        accepting.spawn(async move {
            let until = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tokio::pin!(until);
            while let Some((stream, peer)) = accept_until(&listener, &mut until).await {
                let Ok(slot) = open.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, limit = app.settings.max_connections, "--web.max-connections reached; connection closed");
                    continue;
                };
                let stream = SendTimed::new(stream, SEND_TIMEOUT);
                let app = app.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tls {
                        None => serve_connection(stream, app).await,
                        // A client gets as long for its handshake as for its headers.
                        Some(tls) => {
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => serve_connection(stream, app).await,
                                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
        });
    }
    shutdown.await;
    let _ = stop.send(true);
    while accepting.join_next().await.is_some() {}
}

/// Binds a `--web.listen-address`.
pub fn bind(addr: ListenAddr) -> std::io::Result<TcpListener> {
    let listener = match addr {
        ListenAddr::Addr(a) => std::net::TcpListener::bind(a)?,
        ListenAddr::AnyHost(port) => match dual_stack(port) {
            Ok(l) => l,
            // No IPv6 on this host (disabled, or not built): IPv4 alone.
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error())
                    || e.raw_os_error() == Some(rustix::io::Errno::ADDRNOTAVAIL.raw_os_error()) =>
            {
                std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))?
            }
            Err(e) => return Err(e),
        },
    };
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// One socket on every address of both families: IPv6 with IPV6_V6ONLY
/// off, whatever the host's net.ipv6.bindv6only says, so IPv4 clients
/// reach it as mapped addresses.
fn dual_stack(port: u16) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let fd = rustix::net::socket_with(
        AddressFamily::INET6,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_ipv6_v6only(&fd, false)?;
    let any = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, port, 0, 0);
    rustix::net::bind(&fd, &any)?;
    rustix::net::listen(&fd, 128)?;
    Ok(std::net::TcpListener::from(fd))
}

/// The listening sockets systemd passed (sd_listen_fds(3)): descriptors
/// 3 to 3 + LISTEN_FDS - 1, when LISTEN_PID is this process.
pub fn systemd_listeners() -> Result<Vec<TcpListener>, String> {
    let var = |name: &str| std::env::var(name).ok();
    let pid = var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return Err(
            "LISTEN_PID is not this process: not started by systemd socket activation".into(),
        );
    }
    let count = var("LISTEN_FDS")
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 0)
        .ok_or("LISTEN_FDS names no socket")?;
    let mut out = Vec::new();
    for fd in 3..3 + count {
        use std::os::fd::FromRawFd;
        // SAFETY: systemd hands descriptors 3.. to this process to own
        // (sd_listen_fds(3)). They were open when the process started, so
        // no descriptor sojourn opened has their numbers, and they are
        // taken here once, at start-up.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let listening = rustix::net::sockopt::socket_type(&owned)
            .is_ok_and(|t| t == rustix::net::SocketType::STREAM)
            && rustix::net::sockopt::socket_acceptconn(&owned).unwrap_or(false);
        if !listening {
            return Err(format!("descriptor {fd} is not a listening stream socket"));
        }
        rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| format!("descriptor {fd}: {e}"))?;
        let listener = std::net::TcpListener::from(owned);
        listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map(|l| out.push(l))
            .map_err(|e| format!("descriptor {fd}: {e}"))?;
    }
    Ok(out)
}

/// A connection whose writes fail once its peer has taken nothing for the
/// timeout, as the proxy's client connections do.
struct SendTimed<S> {
    inner: S,
    stall: crate::proxy::stall::Stall,
}

impl<S> SendTimed<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        SendTimed {
            inner,
            stall: crate::proxy::stall::Stall::new(timeout),
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for SendTimed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for SendTimed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stall.timed_write(written, cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stall.timed_write(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A socket's flush has nothing to wait for; TLS above it flushes by
    // writing, which is timed.
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The HTTP/1 server of every metrics connection. hyper's own header
/// timeout is off: it would also close a keep-alive connection idle
/// between scrapes; [`HeadTimed`] times reads instead.
fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    builder
}

async fn serve_connection<S>(stream: S, app: Arc<App>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(app.clone(), req));
    let conn = http1_builder().serve_connection(TokioIo::new(HeadTimed::new(stream)), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Whether the request carries the credentials `--web.config.file` asks
/// for; bcrypt, when the answer is not remembered, runs off the serving
/// thread one verification at a time.
async fn authorized(app: &App, req: &Request<Incoming>) -> Result<(), Refusal> {
    let Some(auth) = app.settings.web.auth.as_ref() else {
        return Ok(());
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    auth.admit(header).await
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Err(refusal) = authorized(&app, &req).await {
        let (status, body, name, value) = match refusal {
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized.\n",
                header::WWW_AUTHENTICATE,
                "Basic realm=\"sojourn\"",
            ),
            Refusal::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many logins waiting to be checked; try again.\n",
                header::RETRY_AFTER,
                "1",
            ),
        };
        let mut r = text(status, body);
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
        return Ok(r);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET and HEAD are served.\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let path = req.uri().path();
    Ok(if path == app.settings.telemetry_path {
        let (collect, exclude) = match collector_params(req.uri().query()) {
            Ok(p) => p,
            Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
        };
        let selection = match app.scraper.select(&collect, &exclude) {
            Ok(s) => s,
            Err(e) => return Ok(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
        };
        scrape(&app, req.headers(), selection).await
    } else {
        match path {
            "/" => landing_page(&app),
            "/api/use" => live_use(&app, req.uri().query() == Some("all=1")),
            path @ ("/assets/sojourn.js" | "/assets/sojourn.css") => {
                let (body, content_type) = crate::check::page::asset(path).expect("routed");
                asset(body, content_type)
            }
            "/-/healthy" => text(StatusCode::OK, "Healthy\n"),
            "/-/ready" => text(StatusCode::OK, "Ready\n"),
            _ => text(
                StatusCode::NOT_FOUND,
                "Not found. Metrics are at the telemetry path; see /.\n",
            ),
        }
    })
}

/// The deadline: our flag, lowered to Prometheus' own timeout when it sends one.
fn deadline(flag: Duration, headers: &HeaderMap) -> Duration {
    headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| {
            // Longer than a Duration holds is longer than the flag.
            let theirs = Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX);
            theirs
                .saturating_sub(TIMEOUT_HEADROOM)
                .max(theirs / 2)
                .min(flag)
        })
        .unwrap_or(flag)
}

/// True when `Accept-Encoding` accepts gzip: named with a weight above 0,
/// or, when not named, accepted by `*` (RFC 9110 §12.5.3).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut named, mut any) = (None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in metrics::weighted_list(value) {
            if item.value.eq_ignore_ascii_case("gzip") {
                named = Some(item.q);
            } else if item.value == "*" {
                any = Some(item.q);
            }
        }
    }
    named.or(any).is_some_and(|q| q > 0.0)
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a
/// space, `%XX` a byte; None when an escape is broken or the bytes are not
/// UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = |b: Option<u8>| char::from(b?).to_digit(16);
                let (hi, lo) = (hex(bytes.next())?, hex(bytes.next())?);
                u8::try_from(hi * 16 + lo).ok()?
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

/// The `collect[]` and `exclude[]` values of a query string, in order;
/// other parameters are left alone.
pub fn collector_params(query: Option<&str>) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut collect, mut exclude) = (Vec::new(), Vec::new());
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || format!("malformed query parameter {pair:?}");
        let key = form_decode(key).ok_or_else(bad)?;
        let into = match key.as_str() {
            "collect[]" => &mut collect,
            "exclude[]" => &mut exclude,
            _ => continue,
        };
        into.push(form_decode(value).ok_or_else(bad)?);
    }
    Ok((collect, exclude))
}

async fn scrape(
    app: &App,
    headers: &HeaderMap,
    selection: crate::scrape::Selection,
) -> Response<Full<Bytes>> {
    let permit = match &app.limiter {
        None => None,
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::warn!(
                    limit = app.settings.max_requests,
                    "too many concurrent scrapes; answering 503"
                );
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "Too many concurrent scrapes (limit {}, --web.max-requests).\n",
                        app.settings.max_requests
                    ),
                );
            }
        },
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let gzip = accepts_gzip(headers);
    let timeout = deadline(app.settings.scrape_timeout, headers);
    let scraper = app.scraper.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let body = metrics::encode_bytes(scraper.scrape_selected(&selection), format);
        if gzip { metrics::gzip(&body) } else { body }
    });
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            if gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            h.insert(
                header::VARY,
                HeaderValue::from_static("Accept, Accept-Encoding"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "scrape task failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Scrape failed; see the exporter's log.\n",
            )
        }
        Err(_) => {
            tracing::warn!(
                timeout_seconds = timeout.as_secs_f64(),
                "scrape exceeded its deadline"
            );
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Scrape exceeded its deadline of {:.3} s.\n",
                    timeout.as_secs_f64()
                ),
            )
        }
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The live USE table as JSON (`check::page`).
fn live_use(app: &Arc<App>, all: bool) -> Response<Full<Bytes>> {
    let json = crate::check::page::api_use(&app.live, &app.scraper, all);
    let mut r = Response::new(Full::new(Bytes::from(json)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn landing_page(app: &App) -> Response<Full<Bytes>> {
    let html =
        crate::check::page::landing(&app.settings.telemetry_path, &app.scraper.collector_names());
    let mut r = Response::new(Full::new(Bytes::from(html)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_parameters_are_read_as_forms_encode_them() {
        let q = "collect%5B%5D=cpu&x=1&collect[]=mem%6Fry&exclude%5B%5D=a+b&&flag";
        let (collect, exclude) = collector_params(Some(q)).unwrap();
        assert_eq!(collect, ["cpu", "memory"]);
        assert_eq!(exclude, ["a b"]);
        assert_eq!(collector_params(None).unwrap(), (vec![], vec![]));
        let e = collector_params(Some("collect[]=%ZZ")).unwrap_err();
        assert!(e.contains("%ZZ"), "{e}");
        assert!(
            collector_params(Some("collect[]=%C3")).is_err(),
            "not UTF-8"
        );
        assert_eq!(form_decode("%e2%9C%93"), Some("✓".into()));
        assert_eq!(form_decode("%"), None);
        assert_eq!(form_decode("%4"), None);
    }

    proptest::proptest! {
        #[test]
        fn form_decoding_never_panics_and_inverts_encoding(s in "\\PC*", raw in "[ -~]*") {
            let _ = collector_params(Some(&raw));
            let encoded: String = s
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect();
            proptest::prop_assert_eq!(form_decode(&encoded), Some(s));
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "deflate, gzip;q=1.0, *;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&headers(&[])));
        // Named gzip;q=0 is refused whatever `*` says; `*` alone accepts.
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip;q=0, *"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "*;q=0")])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "GZIP;Q=0.5")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip;q=0.000"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "x-gzipped")])));
    }

    #[test]
    fn deadline_follows_prometheus_header() {
        let flag = Duration::from_secs(10);
        assert_eq!(deadline(flag, &headers(&[])), flag);
        assert_eq!(
            deadline(
                flag,
                &headers(&[("x-prometheus-scrape-timeout-seconds", "5")])
            ),
            Duration::from_millis(4500)
        );
        assert_eq!(
            deadline(
                flag,
                &headers(&[("x-prometheus-scrape-timeout-seconds", "60")])
            ),
            flag
        );
        assert_eq!(
            deadline(
                flag,
                &headers(&[("x-prometheus-scrape-timeout-seconds", "0.5")])
            ),
            Duration::from_millis(250)
        );
        assert_eq!(
            deadline(
                flag,
                &headers(&[("x-prometheus-scrape-timeout-seconds", "x")])
            ),
            flag
        );
        // Whatever the header says, the flag or less, never a panic.
        for value in [
            "1e30",
            "1e400",
            "-1",
            "NaN",
            "inf",
            "-inf",
            "0",
            "",
            "1e-300",
            "18446744073709551616",
        ] {
            let d = deadline(
                flag,
                &headers(&[("x-prometheus-scrape-timeout-seconds", value)]),
            );
            assert!(d <= flag, "{value}: {d:?}");
        }
    }
}
