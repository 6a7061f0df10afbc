//! `sojourn proxy` as a real process between a real client and an upstream
//! on loopback: status codes pass through and are counted, upstream
//! failures become 502/504 counted by type, bodies stream byte-exact both
//! ways, cancelled requests are counted, headers are rewritten as a proxy
//! should, and SIGTERM drains requests in flight.

mod common;

use common::sample as value;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The upstream: a hyper server on its own runtime thread.
///   /status/N        answers N
///   /slow/MS         answers 200 after MS milliseconds
///   /bytes/N         streams N bytes of a known pattern
///   /drip            streams a chunk every 100 ms for 5 s
///   /upload          reads the body, answers "LEN SUM"
///   /headers         answers the request headers, one per line
///   /upgrade         switches to protocol "echo" (101) and echoes bytes
fn upstream() -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    type Boxed = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    common::serve_on_thread(|stream| async move {
        let svc = hyper::service::service_fn(
            |mut req: hyper::Request<hyper::body::Incoming>| async move {
                let path = req.uri().path().to_string();
                if path == "/upgrade" {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(io) = on.await else { return };
                        let mut io = hyper_util::rt::TokioIo::new(io);
                        let (mut r, mut w) = tokio::io::split(&mut io);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                    let mut r = hyper::Response::new(Full::new(Bytes::new()).boxed());
                    *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                    r.headers_mut()
                        .insert("connection", "upgrade".parse().unwrap());
                    r.headers_mut().insert("upgrade", "echo".parse().unwrap());
                    return Ok::<_, std::convert::Infallible>(r);
                }
                let full = |status: u16, body: String| {
                    let mut r = hyper::Response::new(Full::new(Bytes::from(body)).boxed());
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    r
                };
                let resp: hyper::Response<Boxed> = if let Some(code) = path.strip_prefix("/status/")
                {
                    full(code.parse().unwrap(), format!("status {code}\n"))
                } else if let Some(ms) = path.strip_prefix("/slow/") {
                    tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                    full(200, "slow\n".into())
                } else if let Some(n) = path.strip_prefix("/bytes/") {
                    let n: usize = n.parse().unwrap();
                    let (send, body) = tokio::sync::mpsc::channel(4);
                    tokio::spawn(async move {
                        for start in (0..n).step_by(65536) {
                            let end = (start + 65536).min(n);
                            let chunk: Vec<u8> = (start..end).map(|i| (i % 251) as u8).collect();
                            if send.send(Bytes::from(chunk)).await.is_err() {
                                return;
                            }
                        }
                    });
                    hyper::Response::new(Chunks(body).boxed())
                } else if path == "/drip" {
                    let (send, body) = tokio::sync::mpsc::channel(1);
                    tokio::spawn(async move {
                        for _ in 0..50 {
                            if send.send(Bytes::from_static(b"drip\n")).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    });
                    hyper::Response::new(Chunks(body).boxed())
                } else if path == "/upload" {
                    let Ok(body) = req.into_body().collect().await else {
                        return Ok(full(400, "body broke off\n".into()));
                    };
                    let body = body.to_bytes();
                    let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
                    full(200, format!("{} {sum}", body.len()))
                } else if path == "/headers" {
                    let mut lines: Vec<String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                        .collect();
                    lines.sort();
                    full(200, lines.join("\n"))
                } else {
                    full(404, "no such test route\n".into())
                };
                Ok::<_, std::convert::Infallible>(resp)
            },
        );
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    })
}

/// A streamed body: each chunk sent on the channel is one frame.
struct Chunks(tokio::sync::mpsc::Receiver<hyper::body::Bytes>);

impl hyper::body::Body for Chunks {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

struct Proxy {
    child: Child,
    addr: SocketAddr,
    /// The other services' addresses, in the order asked for.
    others: Vec<SocketAddr>,
    metrics: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(upstream: &str, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--service",
        "shop",
    ];
    args.extend_from_slice(extra);
    start_services(&args, &["shop"])
}

/// A proxy (with `extra` flags) in front of the test upstream (`upstream()`).
fn proxy_to_test_upstream(extra: &[&str]) -> Proxy {
    start_proxy(&format!("http://{}", upstream()), extra)
}

/// Starts sojourn with `args` and waits until it proxies every one of
/// `services`; `addr` is the first one's.
fn start_services(args: &[&str], services: &[&str]) -> Proxy {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args(args)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let field = |line: &str, key: &str| -> String {
        let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
        line[start..].split_whitespace().next().unwrap().to_string()
    };
    let mut metrics = None;
    let mut addrs = Vec::new();
    while metrics.is_none() || addrs.len() < services.len() {
        let line = lines.next().expect("sojourn exited").unwrap();
        if line.contains("listening") {
            metrics = Some(field(&line, "address").parse().unwrap());
        } else if line.contains("proxying") {
            addrs.push((
                field(&line, "service"),
                field(&line, "proxy").parse::<SocketAddr>().unwrap(),
            ));
        }
    }
    // Keep draining stderr so the proxy never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let addr_of = |name: &str| {
        addrs
            .iter()
            .find(|(s, _)| s == name)
            .unwrap_or_else(|| panic!("service {name} not proxied: {addrs:?}"))
            .1
    };
    Proxy {
        addr: addr_of(services[0]),
        others: services[1..].iter().map(|s| addr_of(s)).collect(),
        metrics: metrics.unwrap(),
        child,
    }
}

/// A request as the tests' clients send it (`Host: shop.example`): (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let r = request_full(addr, method, path, headers, body);
    (r.status, r.body)
}

fn request_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> common::HttpResponse {
    let mut all = vec![("Host", "shop.example")];
    all.extend_from_slice(headers);
    common::request_with_body(addr, method, path, &all, body)
}

fn metrics(p: &Proxy) -> String {
    let (status, body) = request(p.metrics, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

/// Requests the histogram counted for GETs of `service` with `status` on
/// `route` ("" for unmatched paths).
fn gets_counted(text: &str, service: &str, status: u16, route: &str) -> Option<f64> {
    counted(text, service, "GET", status, route)
}

/// Requests the histogram counted for `method` requests of `service` with
/// `status` on `route`.
fn counted(text: &str, service: &str, method: &str, status: u16, route: &str) -> Option<f64> {
    value(
        text,
        &format!(
            r#"http_server_request_duration_seconds_count{{service="{service}",http_request_method="{method}",http_response_status_code="{status}",http_route="{route}"}}"#
        ),
    )
}

/// A one-thread runtime for a test's async client.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An HTTP/2 prior-knowledge client connection to `addr`, its connection
/// task spawned (the handle ends when the connection does).
async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

/// A GET without a body.
fn get(uri: impl AsRef<str>) -> hyper::Request<http_body_util::Empty<hyper::body::Bytes>> {
    hyper::Request::get(uri.as_ref())
        .body(http_body_util::Empty::new())
        .unwrap()
}

#[test]
fn status_codes_pass_through_and_every_request_is_counted() {
    let p = proxy_to_test_upstream(&["--route", "/status/{code}"]);
    let sent = [(200, 5), (404, 2), (503, 1)];
    for (code, n) in sent {
        for _ in 0..n {
            let (status, body) = request(p.addr, "GET", &format!("/status/{code}"), &[], b"");
            assert_eq!(status, code);
            assert_eq!(body, format!("status {code}\n").as_bytes());
        }
    }
    let text = metrics(&p);
    for (code, n) in sent {
        assert_eq!(
            gets_counted(&text, "shop", code, "/status/{code}"),
            Some(n as f64),
            "{code}\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_time_to_first_byte_seconds_count{service="shop",http_request_method="GET",http_route="/status/{code}"}"#
        ),
        Some(8.0)
    );
    assert_eq!(
        value(&text, r#"sojourn_proxy_active_requests{service="shop"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"sojourn_proxy_connections_total{service="shop"}"#),
        Some(8.0)
    );
    // No host collector in proxy mode unless asked for.
    assert!(!text.contains("sojourn_cpu_seconds_total"));
}

#[test]
fn an_upstream_answering_every_status_code_makes_a_bounded_set_of_series() {
    let p = proxy_to_test_upstream(&[]);
    // Every final code an upstream can send (1xx are interim responses).
    for code in 200..=999u16 {
        let method = ["GET", "POST", "PUT"][usize::from(code) % 3];
        let (status, _) = request(p.addr, method, &format!("/status/{code}"), &[], b"");
        assert_eq!(status, code);
    }
    let text = metrics(&p);
    let codes: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .filter_map(|l| {
            l.split("http_response_status_code=\"")
                .nth(1)?
                .split('"')
                .next()
        })
        .collect();
    // The registered codes from 200 up (60, 499 among them) and a class
    // each for the rest, 2xx to 9xx: the README's bound is 73 with 1xx.
    assert_eq!(codes.len(), 68, "{codes:?}");
    for kept in ["200", "404", "418", "499", "503", "511"] {
        assert!(codes.contains(kept), "{kept}: {codes:?}");
    }
    for folded in ["2xx", "5xx", "6xx", "9xx"] {
        assert!(codes.contains(folded), "{folded}: {codes:?}");
    }
    assert!(
        !codes.contains("520") && !codes.contains("777"),
        "{codes:?}"
    );
    // 520..=599 less the 11 registered 5xx codes, all under one series.
    let five_xx: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains("http_response_status_code=\"5xx\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(five_xx, 100.0 - 11.0, "every unregistered 5xx counted");
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 6_000, "{series} series");
}

#[test]
fn an_upstream_url_the_proxy_cannot_honour_stops_start_up() {
    for (url, says) in [
        ("http://127.0.0.1:99999", "not a port"),
        ("http://user:hunter2@127.0.0.1:8080", "credentials"),
        ("http://127.0.0.1:8080/base?x=1", "path or query"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", url])
            .args(["--web.listen-address", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(
            err.contains("--upstream") && err.contains(says),
            "{url}: {err}"
        );
        assert!(!err.contains("hunter2"), "never printed: {err}");
    }
}

#[test]
fn an_upstream_that_is_down_is_a_502_counted_as_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let p = start_proxy(&format!("http://127.0.0.1:{port}"), &[]);
    let (status, _) = request(p.addr, "GET", "/anything", &[], b"");
    assert_eq!(status, 502);
    let text = metrics(&p);
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="connect"}"#
        ),
        Some(1.0)
    );
    assert_eq!(gets_counted(&text, "shop", 502, ""), Some(1.0));
}

#[test]
fn an_upstream_slower_than_the_timeout_is_a_504() {
    let p = proxy_to_test_upstream(&["--upstream.timeout", "300ms"]);
    let started = Instant::now();
    let (status, _) = request(p.addr, "GET", "/slow/3000", &[], b"");
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = request(p.addr, "GET", "/slow/10", &[], b"");
    assert_eq!(status, 200, "a fast request still passes");
    let text = metrics(&p);
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="timeout"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn large_bodies_stream_byte_exact_both_ways() {
    let up = upstream();
    let p = start_proxy(&format!("http://{up}"), &[]);
    let kb = |field: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let rss_before_kb = kb("VmRSS:");
    let upload: Vec<u8> = (0..8 * 1024 * 1024u64)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    let (status, body) = request(p.addr, "POST", "/upload", &[], &upload);
    assert_eq!(status, 200);
    let sum: u64 = upload.iter().map(|b| u64::from(*b)).sum();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("{} {sum}", upload.len())
    );
    let n = 16 * 1024 * 1024 + 7;
    let (status, body) = request(p.addr, "GET", &format!("/bytes/{n}"), &[], b"");
    assert_eq!(status, 200);
    assert_eq!(body.len(), n);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    let text = metrics(&p);
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_request_body_bytes_total{service="shop"}"#
        ),
        Some(upload.len() as f64)
    );
    assert!(
        value(
            &text,
            r#"sojourn_proxy_response_body_bytes_total{service="shop"}"#
        )
        .unwrap()
            >= n as f64
    );
    // The proxy streamed: its peak memory grew by less than the 8 MiB
    // upload, let alone the 16 MiB download.
    let growth_kb = kb("VmHWM:").saturating_sub(rss_before_kb);
    assert!(
        growth_kb < 6 * 1024,
        "peak RSS grew by {growth_kb} kB from {rss_before_kb} kB: bodies were buffered"
    );
}

/// Waits (up to 5 s) until the one request made has ended as cancelled and
/// left the active-requests gauge, then checks it is recorded in the
/// duration histogram under `method` and `status`.
/// Asserts that `series` reads `want` now.
fn assert_value(p: &Proxy, series: &str, want: f64) {
    let text = metrics(p);
    assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
}

/// Waits up to `within` for `series` to read `want`; the metrics then.
fn wait_for_value(p: &Proxy, series: &str, want: f64, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics(p);
        if value(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is not {want} after {within:?}\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_cancelled_and_recorded(p: &Proxy, method: &str, status: u16, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(p);
        let cancelled = value(
            &text,
            r#"sojourn_proxy_requests_cancelled_total{service="shop"}"#,
        );
        let active = value(&text, r#"sojourn_proxy_active_requests{service="shop"}"#);
        if cancelled == Some(1.0) && active == Some(0.0) {
            assert_eq!(
                counted(&text, "shop", method, status, ""),
                Some(1.0),
                "{why}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cancelled {cancelled:?}, active {active:?}: the request did not end as \
             cancelled\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_goes_away_before_the_response_head_is_counted_as_cancelled() {
    let p = proxy_to_test_upstream(&[]);
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(s, "GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The client leaves while the upstream is still thinking.
    drop(s);
    assert_cancelled_and_recorded(
        &p,
        "GET",
        499,
        "recorded with nginx's 499, client closed request",
    );
}

#[test]
fn a_client_that_goes_away_is_counted_as_cancelled() {
    let p = proxy_to_test_upstream(&[]);
    let mut s = TcpStream::connect(p.addr).unwrap();
    write!(s, "GET /drip HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0 && first.starts_with(b"HTTP/1.1 200"));
    drop(s);
    assert_cancelled_and_recorded(&p, "GET", 200, "a cancelled request is recorded too");
}

#[test]
fn headers_are_rewritten_as_a_proxy_should() {
    let p = proxy_to_test_upstream(&[]);
    let (status, body) = request(
        p.addr,
        "GET",
        "/headers",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Keep-Alive", "timeout=5"),
            ("X-Kept", "yes"),
        ],
        b"",
    );
    assert_eq!(status, 200);
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("host: shop.example"), "Host kept:\n{body}");
    assert!(
        body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(body.contains("x-kept: yes"), "{body}");
    assert!(
        !body.contains("keep-alive: timeout"),
        "hop-by-hop dropped:\n{body}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let up = upstream();
    // A 2 s header timeout sweeps idle connections every 500 ms: a
    // connection is parked 0.5–1 s after its last response.
    let mut p = start_proxy(&format!("http://{up}"), &["--proxy.header-timeout", "2s"]);
    let addr = p.addr;
    // Idle connections must not hold the drain up to its 30 s timeout: one
    // parked (idle for several sweeps), one idle inside hyper (its request
    // just answered), one HTTP/2 connection with no stream open.
    let idle_h1 = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
            .unwrap();
        let mut r = BufReader::new(s);
        assert_eq!(read_response(&mut r).0, 200);
        r
    };
    let mut parked = idle_h1();
    let h2 = std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async {
            let (mut sender, conn) = h2_client(addr).await;
            let req = get("http://shop.example/status/200");
            assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
            // Held open until the proxy closes it.
            tokio::time::timeout(Duration::from_secs(10), conn)
                .await
                .expect("the proxy closes an idle HTTP/2 connection when it stops")
                .unwrap()
                .unwrap();
            drop(sender);
        })
    });
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        value(
            &metrics(&p),
            r#"sojourn_proxy_idle_connections{service="shop"}"#
        ),
        Some(1.0),
        "the first connection is parked"
    );
    let inflight = std::thread::spawn(move || request(addr, "GET", "/slow/1500", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    // Answered just before the stop: still inside hyper, well before a
    // sweep could park it.
    let mut just_answered = idle_h1();
    let stopped = Instant::now();
    sigterm(&p);
    assert_eq!(just_answered.read(&mut [0; 16]).unwrap(), 0, "closed");
    assert!(
        stopped.elapsed() < Duration::from_millis(400),
        "an idle connection inside hyper is closed by the stop itself, not \
         parked by a later sweep: {:?}",
        stopped.elapsed()
    );
    let (status, body) = inflight.join().unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"slow\n"[..]),
        "the request in flight completed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(code) = p.child.try_wait().unwrap() {
            assert!(code.success(), "{code}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
    assert_eq!(parked.read(&mut [0; 16]).unwrap(), 0, "closed");
    h2.join().unwrap();
}

/// `clients` threads each sending `each` requests to `path` one after the
/// other: (status, latency, Retry-After) of every request.
fn overload(
    addr: SocketAddr,
    clients: usize,
    each: usize,
    path: &str,
) -> Vec<(u16, Duration, Option<String>)> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                (0..each)
                    .map(|_| {
                        let t = Instant::now();
                        let r = request_full(addr, "GET", &path, &[], b"");
                        let retry_after = r.header("retry-after").map(str::to_string);
                        (r.status, t.elapsed(), retry_after)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn overload_makes_the_request_queue_stand_and_codel_sheds_it() {
    let up = upstream();
    let url = format!("http://{up}");
    // 16 callers, 2 slots, 50 ms per request: callers wait up to ~400 ms.
    let queued = start_proxy(&url, &["--max-concurrency", "2"]);
    let results = overload(queued.addr, 16, 4, "/slow/50");
    assert!(
        results.iter().all(|r| r.0 == 200),
        "without shedding every request is served"
    );
    let queued_p99 = p99(results.iter().map(|r| r.1).collect());
    let text = metrics(&queued);
    let standing = value(
        &text,
        r#"sojourn_queue_standing_seconds_total{queue="proxy:shop"}"#,
    )
    .unwrap();
    assert!(
        standing > 0.3,
        "the proxy queue stood {standing} s:\n{text}"
    );
    assert!(
        value(
            &text,
            r#"sojourn_queue_delay_seconds_count{queue="proxy:shop"}"#
        )
        .unwrap()
            >= 64.0
    );
    assert!(
        text.contains(r#"sojourn_queue_info{queue="proxy:shop",measure="delay",source="proxy"} 1"#),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_requests_shed_total{service="shop"}"#
        ),
        Some(0.0)
    );
    // Idle again: the queue empties and stops standing.
    std::thread::sleep(Duration::from_millis(300));
    let _ = request(queued.addr, "GET", "/slow/1", &[], b"");
    std::thread::sleep(Duration::from_millis(250));
    let _ = request(queued.addr, "GET", "/slow/1", &[], b"");
    let text = metrics(&queued);
    assert_eq!(
        value(&text, r#"sojourn_queue_standing{queue="proxy:shop"}"#),
        Some(0.0),
        "{text}"
    );

    let shedding = start_proxy(&url, &["--max-concurrency", "2", "--shed", "codel"]);
    let results = overload(shedding.addr, 16, 4, "/slow/50");
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let served: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    assert_eq!(shed.len() + served.len(), results.len());
    assert!(!shed.is_empty(), "CoDel shed nothing under 8x overload");
    assert!(shed.iter().all(|r| r.2.as_deref() == Some("1")));
    // A shed request is told at once, not after queueing.
    assert!(p99(shed.iter().map(|r| r.1).collect()) < Duration::from_millis(300));
    let served_p99 = p99(served);
    // Admitted requests no longer wait behind the whole backlog (about half
    // the unshed p99 here; a quarter of margin for a noisy machine).
    assert!(
        served_p99.as_secs_f64() < 0.75 * queued_p99.as_secs_f64(),
        "admitted p99 {served_p99:?} is not well below the unshed p99 {queued_p99:?}"
    );
    let text = metrics(&shedding);
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_requests_shed_total{service="shop"}"#
        ),
        Some(shed.len() as f64)
    );
    eprintln!(
        "p99 without shedding {queued_p99:?}; with codel {served_p99:?} for the admitted, {} of {} shed",
        shed.len(),
        results.len()
    );
}

#[test]
fn shedding_without_a_limit_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
            "--shed",
            "codel",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-concurrency"));
}

#[test]
fn adaptive_lifo_serves_the_newest_first_while_the_queue_stands() {
    let up = upstream();
    let url = format!("http://{up}");
    let median = |v: Vec<Duration>| {
        let mut v = v;
        v.sort();
        v[v.len() / 2]
    };
    let fifo = start_proxy(&url, &["--max-concurrency", "2"]);
    let lifo = start_proxy(
        &url,
        &["--max-concurrency", "2", "--queue-order", "adaptive-lifo"],
    );
    let f = overload(fifo.addr, 16, 4, "/slow/50");
    let l = overload(lifo.addr, 16, 4, "/slow/50");
    assert!(
        f.iter().chain(&l).all(|r| r.0 == 200),
        "reordering sheds nothing"
    );
    let (f50, l50) = (
        median(f.iter().map(|r| r.1).collect()),
        median(l.iter().map(|r| r.1).collect()),
    );
    let (f99, l99) = (
        p99(f.iter().map(|r| r.1).collect()),
        p99(l.iter().map(|r| r.1).collect()),
    );
    eprintln!("fifo p50 {f50:?} p99 {f99:?}; adaptive lifo p50 {l50:?} p99 {l99:?}");
    // Newest first: most callers are served sooner, a few much later.
    assert!(l50 < f50, "lifo p50 {l50:?} not below fifo p50 {f50:?}");
    assert!(l99 > f99, "lifo p99 {l99:?} not above fifo p99 {f99:?}");
}

#[test]
fn several_services_from_a_config_file_are_proxied_and_counted_apart() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(
        &config,
        format!(
            "services:
  - {{name: cart, listen: '127.0.0.1:0', upstream: 'http://{up}', routes: ['/status/{{code}}']}}
  - {{name: search, listen: '127.0.0.1:0', upstream: 'http://{up}', max_concurrency: 2}}
"
        ),
    )
    .unwrap();
    // The command line's service and the file's run side by side.
    let p = start_services(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{up}"),
            "--service",
            "shop",
            "--config.file",
            config.to_str().unwrap(),
        ],
        &["shop", "cart", "search"],
    );
    let (cart, search) = (p.others[0], p.others[1]);
    for _ in 0..3 {
        assert_eq!(request(cart, "GET", "/status/201", &[], b"").0, 201);
    }
    for _ in 0..2 {
        assert_eq!(request(search, "GET", "/status/404", &[], b"").0, 404);
    }
    assert_eq!(request(p.addr, "GET", "/status/200", &[], b"").0, 200);
    let text = metrics(&p);
    let count = |service, status, route| gets_counted(&text, service, status, route);
    assert_eq!(count("cart", 201, "/status/{code}"), Some(3.0), "{text}");
    assert_eq!(count("search", 404, ""), Some(2.0), "{text}");
    assert_eq!(count("shop", 200, ""), Some(1.0), "{text}");
    assert_eq!(
        value(&text, r#"sojourn_proxy_queued_requests{service="search"}"#),
        Some(0.0),
        "only search has a request queue"
    );
    assert_eq!(
        value(&text, r#"sojourn_proxy_queued_requests{service="cart"}"#),
        None
    );
    // Each family once, whatever the number of services.
    let types = text
        .lines()
        .filter(|l| l.starts_with("# TYPE http_server_request_duration_seconds "))
        .count();
    assert_eq!(types, 1, "{text}");
}

#[test]
fn window_quantiles_are_the_requests_latencies_and_age_out() {
    let p = proxy_to_test_upstream(&["--proxy.quantile-window", "3s", "--route", "/slow/{ms}"]);
    // 19 requests of ~40 ms and one of ~400 ms: p50 ≈ 40 ms, p99.9 ≈ 400 ms.
    for _ in 0..19 {
        assert_eq!(request(p.addr, "GET", "/slow/40", &[], b"").0, 200);
    }
    assert_eq!(request(p.addr, "GET", "/slow/400", &[], b"").0, 200);
    let text = metrics(&p);
    let q = |quantile: &str| {
        value(
            &text,
            &format!(
                r#"sojourn_proxy_request_duration_window_seconds{{service="shop",http_route="/slow/{{ms}}",q="{quantile}"}}"#
            ),
        )
        .unwrap_or_else(|| panic!("no {quantile} quantile\n{text}"))
    };
    assert!((0.040..0.060).contains(&q("0.5")), "p50 {}", q("0.5"));
    // The proxy's output is lint-clean, as the exporter's is.
    if let Some(findings) = common::promtool_findings(&text) {
        assert!(
            findings.trim().is_empty(),
            "promtool check metrics:\n{findings}"
        );
    }
    assert!((0.400..0.450).contains(&q("0.999")), "p99.9 {}", q("0.999"));
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_requests_in_window{service="shop",http_route="/slow/{ms}"}"#
        ),
        Some(20.0)
    );
    // Three seconds later, and at most half a second of rotation after
    // that, the window is empty and the quantiles are gone.
    std::thread::sleep(Duration::from_millis(4500));
    let text = metrics(&p);
    assert!(
        !text.contains("sojourn_proxy_request_duration_window_seconds{"),
        "{text}"
    );
}

#[test]
fn an_upgraded_connection_is_relayed_both_ways_and_counted() {
    use std::io::{Read, Write};
    let p = proxy_to_test_upstream(&[]);
    let mut client = std::net::TcpStream::connect(p.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    for message in [&b"hello"[..], &[0u8, 1, 2, 255][..], &[7u8; 70_000][..]] {
        client.write_all(message).unwrap();
        let mut back = vec![0u8; message.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, message);
    }
    assert_value(&p, r#"sojourn_proxy_open_tunnels{service="shop"}"#, 1.0);
    drop(client);
    let text = wait_for_value(
        &p,
        r#"sojourn_proxy_open_tunnels{service="shop"}"#,
        0.0,
        Duration::from_secs(5),
    );
    let bytes = 5 + 4 + 70_000;
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_request_body_bytes_total{service="shop"}"#
        ),
        Some(bytes as f64)
    );
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_response_body_bytes_total{service="shop"}"#
        ),
        Some(bytes as f64)
    );
    assert_eq!(gets_counted(&text, "shop", 101, ""), Some(1.0));
}

#[test]
fn http2_prior_knowledge_clients_are_served_and_counted() {
    let p = proxy_to_test_upstream(&[]);
    let rt = runtime();
    let (statuses, headers) = rt.block_on(async {
        use http_body_util::BodyExt;
        let (mut sender, _) = h2_client(p.addr).await;
        let mut statuses = Vec::new();
        // Several streams at once on the one connection.
        let requests: Vec<_> = ["/status/201", "/status/404", "/slow/50"]
            .iter()
            .map(|path| sender.send_request(get(format!("http://shop.example{path}"))))
            .collect();
        for r in requests {
            let resp = r.await.unwrap();
            statuses.push(resp.status().as_u16());
            resp.into_body().collect().await.unwrap();
        }
        let req = get("http://shop.example/headers");
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (statuses, String::from_utf8(body.to_vec()).unwrap())
    });
    assert_eq!(statuses, [201, 404, 200]);
    assert!(
        headers.contains("host: shop.example"),
        "Host kept: {headers}"
    );
    let text = metrics(&p);
    for (status, n) in [(201, 1.0), (404, 1.0), (200, 2.0)] {
        assert_eq!(
            gets_counted(&text, "shop", status, ""),
            Some(n),
            "{status}\n{text}"
        );
    }
}

#[test]
fn upstream_connections_are_reused_and_a_stale_one_is_replaced() {
    let (up, accepted) = scripted_upstream(|_, _, _| Some(OK), None);
    let p = start_proxy(&format!("http://{up}"), &[]);
    for _ in 0..20 {
        assert_eq!(request(p.addr, "GET", "/", &[], b"").0, 200);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "20 sequential requests share one upstream connection"
    );
    drop(p);

    // The upstream drops idle connections after 100 ms: the proxy notices
    // and opens a new one; no client sees an error.
    let (up, accepted) = scripted_upstream(|_, _, _| Some(OK), Some(Duration::from_millis(100)));
    let p = start_proxy(&format!("http://{up}"), &[]);
    for _ in 0..3 {
        assert_eq!(request(p.addr, "GET", "/", &[], b"").0, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    let text = metrics(&p);
    for e in ["connect", "reset"] {
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"sojourn_proxy_upstream_errors_total{{service="shop",error_type="{e}"}}"#
                )
            ),
            Some(0.0),
            "{text}"
        );
    }
}

/// Reads one response with a Content-Length body from a kept-alive
/// connection: (status, lower-cased headers, body).
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .unwrap_or_else(|| panic!("no Content-Length: {status} {headers:?}"))
        .1
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, headers, body)
}

#[test]
fn an_idle_keep_alive_connection_is_parked_and_serves_again_until_the_idle_timeout() {
    let p = proxy_to_test_upstream(&["--proxy.idle-timeout", "4s", "--proxy.header-timeout", "1s"]);
    let idle = |p: &Proxy| {
        value(
            &metrics(p),
            r#"sojourn_proxy_idle_connections{service="shop"}"#,
        )
    };
    let stream = TcpStream::connect(p.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    // Two requests in one write (pipelined): answered in order.
    writer
        .write_all(format!("{}{}", get("/status/201"), get("/status/202")).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut reader).0, 201);
    assert_eq!(read_response(&mut reader).0, 202);
    // Idle for two sweeps: parked, holding no HTTP state, still open.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(idle(&p), Some(1.0), "the idle connection is parked");
    writer.write_all(get("/status/203").as_bytes()).unwrap();
    let (status, headers, body) = read_response(&mut reader);
    assert_eq!((status, body.as_slice()), (203, &b"status 203\n"[..]));
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close"),
        "a parked connection is not told to close: {headers:?}"
    );
    // A request that arrives while the connection is being parked, and
    // one split across two writes, are served whole.
    std::thread::sleep(Duration::from_millis(2500));
    let split = get("/status/200");
    writer.write_all(&split.as_bytes()[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    writer.write_all(&split.as_bytes()[7..]).unwrap();
    assert_eq!(read_response(&mut reader).0, 200);
    let text = metrics(&p);
    assert_eq!(
        value(&text, r#"sojourn_proxy_connections_total{service="shop"}"#),
        Some(1.0),
        "one connection served every request"
    );
    for status in [201, 202, 203, 200] {
        assert_eq!(gets_counted(&text, "shop", status, ""), Some(1.0));
    }
    // Past the idle timeout the proxy closes it.
    let started = Instant::now();
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap(), 0);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "closed after {:?}, before the 4 s idle timeout",
        started.elapsed()
    );
    // A request whose first byte alone cannot tell HTTP/1 from HTTP/2's
    // preface ("P" of PUT or PRI) is served once the rest comes.
    let mut put = TcpStream::connect(p.addr).unwrap();
    put.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    put.write_all(b"P").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    put.write_all(b"UT /status/200 HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut BufReader::new(put)).0, 200);
    // A new connection that sends nothing has the header timeout (1 s).
    let mut silent = TcpStream::connect(p.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(silent.read(&mut [0; 16]).unwrap(), 0, "closed");
    assert_eq!(idle(&p), Some(0.0));
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw HTTP/1.1 upstream whose answers are written by hand, counting the
/// connections it accepts: `answer` gets the request's index on its
/// connection (0 first), its method and path, and returns the bytes to
/// send, or None to close the connection without answering. A connection
/// is closed after an answer that says `Connection: close` or has neither
/// length nor chunked framing, and with `idle_close`, that long after its
/// last answer without saying so (as an upstream's idle timeout does).
fn scripted_upstream(
    answer: fn(usize, &str, &str) -> Option<&'static [u8]>,
    idle_close: Option<Duration>,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(idle_close);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for index in 0.. {
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end;
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + length);
                    let mut line = head.split_whitespace();
                    let (method, path) = (line.next().unwrap(), line.next().unwrap());
                    let Some(reply) = answer(index, method, path) else {
                        return;
                    };
                    let _ = stream.write_all(reply);
                    let text = String::from_utf8_lossy(reply).to_ascii_lowercase();
                    let framed = text.contains("content-length:")
                        || text.contains("transfer-encoding: chunked")
                        || text.starts_with("http/1.1 204")
                        || method == "HEAD";
                    if text.contains("connection: close") || !framed {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
fn upstream_responses_are_framed_as_rfc_9112_says() {
    let (up, _) = scripted_upstream(
        |_, _, path| {
            Some(match path {
            "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nread until the upstream closes",
            "/len100" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n",
            "/continue" => {
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            "/trailers" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
            }
            "/garbage" => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "/big" => {
                static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                BIG.get_or_init(|| {
                    let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n".to_vec();
                    r.extend((0..3_000_000u32).map(|i| (i % 253) as u8));
                    r
                })
            }
            _ => OK,
        })
        },
        None,
    );
    let p = start_proxy(&format!("http://{up}"), &[]);
    let (status, body) = request(p.addr, "GET", "/until-close", &[], b"");
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"read until the upstream closes"[..])
    );
    assert_eq!(request(p.addr, "GET", "/no-content", &[], b"").0, 204);
    assert_eq!(
        request(p.addr, "GET", "/continue", &[], b""),
        (200, b"ok".to_vec())
    );
    assert_eq!(
        request(p.addr, "GET", "/trailers", &[], b""),
        (200, b"abcde".to_vec())
    );
    let (status, body) = request(p.addr, "GET", "/garbage", &[], b"");
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    // A length-delimited body over many reads, twice on one pooled
    // upstream connection.
    for _ in 0..2 {
        let (status, body) = request(p.addr, "GET", "/big", &[], b"");
        assert_eq!((status, body.len()), (200, 3_000_000));
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
    }

    // HEAD: the upstream's Content-Length comes through with no body, and
    // the next request on the same client connection is answered.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /len100 HTTP/1.1\r\nHost: shop\r\n\r\nGET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 100"), "{head}");
    let (status, _, body) = read_response(&mut r);
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    let text = metrics(&p);
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="reset"}"#
        ),
        Some(1.0),
        "only the garbage answer is an upstream error: {text}"
    );
}

#[test]
fn a_body_framed_two_ways_is_framed_by_transfer_encoding_alone() {
    let (up, _) = scripted_upstream(
        |_, _, path| {
            Some(match path {
                // Content-Length shorter, then longer, than the chunked body.
                "/short" => {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nAAAAAAAAAAAAAAAAAAAA\r\n0\r\n\r\n"
                }
                "/long" => {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nBBBBB\r\n0\r\n\r\n"
                }
                // Not chunked: the body runs until the upstream closes.
                "/identity" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabcdef"
                }
                _ => OK,
            })
        },
        None,
    );
    let p = start_proxy(&format!("http://{up}"), &[]);
    let check = |path: &str, want: &[u8]| {
        let r = request_full(p.addr, "GET", path, &[], b"");
        assert_eq!((r.status, r.body.as_slice()), (200, want), "{path}");
        assert!(
            r.header("content-length").is_none(),
            "{path}: {:?}",
            r.headers
        );
    };
    check("/short", &[b'A'; 20]);
    check("/long", b"BBBBB");
    check("/identity", b"abcdef");
    // HTTP/2 clients get the whole body, not a PROTOCOL_ERROR.
    runtime().block_on(async {
        use http_body_util::BodyExt;
        let (mut h2, _conn) = h2_client(p.addr).await;
        for (path, len) in [("/short", 20), ("/long", 5)] {
            let resp = h2
                .send_request(get(format!("http://shop.example{path}")))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), len, "{path}");
        }
    });
}

#[test]
fn a_response_broken_before_its_body_is_recorded_as_the_502_it_was() {
    let (up, _) = scripted_upstream(
        |_, _, path| {
            Some(match path {
                "/plus" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
                "/huge" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000005\r\nhello\r\n0\r\n\r\n"
                }
                _ => OK,
            })
        },
        None,
    );
    let p = start_proxy(&format!("http://{up}"), &[]);
    for path in ["/plus", "/huge"] {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .unwrap();
        let got = read_until_closed(&mut s);
        assert!(
            !String::from_utf8_lossy(&got).contains("hello"),
            "{path}: {got:?}"
        );
    }
    let text = metrics(&p);
    assert_eq!(gets_counted(&text, "shop", 502, ""), Some(2.0), "{text}");
    assert_eq!(gets_counted(&text, "shop", 200, ""), None, "{text}");
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="reset"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn a_pooled_connection_closed_as_a_request_crosses_it_is_retried_only_if_idempotent() {
    // Each upstream connection answers one request and closes on reading
    // the next: the proxy cannot know beforehand.
    let (up, accepted) = scripted_upstream(|index, _, _| (index == 0).then_some(OK), None);
    let p = start_proxy(&format!("http://{up}"), &[]);
    for _ in 0..3 {
        assert_eq!(request(p.addr, "GET", "/", &[], b""), (200, b"ok".to_vec()));
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    let reset = r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="reset"}"#;
    assert_eq!(value(&metrics(&p), reset), Some(0.0));
    // A POST may have been acted on: not sent twice, a 502.
    assert_eq!(request(p.addr, "POST", "/", &[], b"order=1").0, 502);
    assert_eq!(value(&metrics(&p), reset), Some(1.0));
}

#[test]
fn a_chunked_upload_goes_upstream_chunked_and_whole() {
    let p = proxy_to_test_upstream(&[]);
    let mut s = client_sending(
        p.addr,
        b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let (status, _, body) = read_response(&mut BufReader::new(s));
    let sum: u64 = b"hello world".iter().map(|b| u64::from(*b)).sum();
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (200, format!("11 {sum}"))
    );
}

#[test]
fn a_request_body_that_breaks_off_is_the_clients_failure_not_the_upstreams() {
    let p = proxy_to_test_upstream(&[]);
    let upstream_errors = |text: &str| {
        ["connect", "timeout", "reset"]
            .iter()
            .map(|t| {
                let series = format!(
                    r#"sojourn_proxy_upstream_errors_total{{service="shop",error_type="{t}"}}"#
                );
                value(text, &series).unwrap_or(0.0)
            })
            .sum::<f64>()
    };

    // The client half-closes after 10 of the 1000 bytes it announced: it
    // is told 400, and the request is a cancellation (499).
    let mut s = client_sending(
        p.addr,
        b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n0123456789",
    );
    std::thread::sleep(Duration::from_millis(100));
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_cancelled_and_recorded(
        &p,
        "POST",
        499,
        "a body cut short is the client's cancellation",
    );

    // One that closes mid-upload: another cancellation.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n0123456789")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    let cancelled = r#"sojourn_proxy_requests_cancelled_total{service="shop"}"#;
    wait_for_value(&p, cancelled, 2.0, Duration::from_secs(5));

    // A chunk-size line that is not hex: 400, recorded as such.
    let mut s = client_sending(
        p.addr,
        b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"zz\r\nbad\r\n0\r\n\r\n").unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let text = metrics(&p);
    assert_eq!(counted(&text, "shop", "POST", 400, ""), Some(1.0), "{text}");
    assert_eq!(counted(&text, "shop", "POST", 499, ""), Some(2.0), "{text}");
    assert_eq!(value(&text, cancelled), Some(2.0), "{text}");
    assert_eq!(upstream_errors(&text), 0.0, "no upstream error: {text}");
    assert_eq!(
        counted(&text, "shop", "POST", 502, ""),
        None,
        "no 502 for a client's failure: {text}"
    );
}

#[test]
fn an_upload_is_timed_by_who_stalls_it_not_by_its_length() {
    let p = proxy_to_test_upstream(&["--upstream.timeout", "300ms"]);
    let timeouts = r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="timeout"}"#;
    let upload_head = b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000\r\n\r\n";

    // 1000 bytes over a second, 100 every 100 ms: three timeouts long, and
    // never silent for one. It goes through whole.
    let mut s = client_sending(p.addr, upload_head);
    for _ in 0..10 {
        s.write_all(&[7u8; 100])
            .expect("a slow, steady upload was cut off");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, body) = read_response(&mut BufReader::new(s));
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (200, "1000 7000".to_string()),
        "a slow, steady upload is no upstream timeout"
    );

    // A client that stops after 100 bytes: 408, the client's timeout.
    let mut s = client_sending(p.addr, upload_head);
    s.write_all(&[7u8; 100]).unwrap();
    let stalled = Instant::now();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
    let waited = stalled.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let text = metrics(&p);
    assert_eq!(value(&text, timeouts), Some(0.0), "{text}");
    assert_eq!(counted(&text, "shop", "POST", 408, ""), Some(1.0), "{text}");

    // An upstream that takes the head and then reads nothing while the
    // client has plenty to send: the upstream's timeout, 504.
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let deaf_addr = deaf.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = deaf.accept().unwrap();
        let mut head = [0u8; 64];
        let _ = conn.read(&mut head);
        std::thread::sleep(Duration::from_secs(10));
    });
    let p = start_proxy(
        &format!("http://{deaf_addr}"),
        &["--upstream.timeout", "300ms"],
    );
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let size = 64 << 20;
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: {size}\r\n\r\n"
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let block = vec![7u8; 1 << 20];
        for _ in 0..64 {
            if writer.write_all(&block).is_err() {
                return;
            }
        }
    });
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    let text = metrics(&p);
    assert_eq!(value(&text, timeouts), Some(1.0), "{text}");
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let p = proxy_to_test_upstream(&["--proxy.send-timeout", "500ms"]);
    let mut s = TcpStream::connect(p.addr).unwrap();
    // 256 MiB: far more than the socket buffers between the proxy and this
    // client hold, so the proxy's writes wait once they are full.
    write!(s, "GET /bytes/268435456 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    let n = s.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // Reads nothing more, and stays: the proxy must let go of it.
    assert_cancelled_and_recorded(&p, "GET", 200, "a client that reads nothing is cut off");
    assert_value(&p, r#"sojourn_proxy_open_connections{service="shop"}"#, 0.0);
    drop(s);
}

#[test]
fn http2_connections_that_idle_or_stop_reading_are_closed() {
    let p = proxy_to_test_upstream(&[
        "--proxy.idle-timeout",
        "1s",
        "--proxy.send-timeout",
        "500ms",
    ]);
    let open = r#"sojourn_proxy_open_connections{service="shop"}"#;

    // An idle connection is told GOAWAY after 1–1.5 idle timeouts.
    let rt = runtime();
    let idle_for = rt.block_on(async {
        use http_body_util::BodyExt;
        let (mut sender, conn) = h2_client(p.addr).await;
        let req = get("http://shop/status/204");
        let resp = sender.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let answered = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("an idle HTTP/2 connection stays open")
            .unwrap()
            .unwrap();
        answered.elapsed()
    });
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for < Duration::from_millis(2500),
        "closed {idle_for:?} after its last response"
    );

    // A client that stops reading in the middle of a response: flow
    // control stalls the stream before the socket fills, and the unanswered
    // PING closes the connection.
    freeze_http2_client_mid_download(p.addr, Duration::from_secs(10));
    let stopped = Instant::now();
    // Its stream is reset (its window stays shut: `flow`), and the
    // connection closed (the PING unanswered).
    assert_cancelled_and_recorded(&p, "GET", 200, "the frozen client's request is cut off");
    wait_for_value(
        &p,
        open,
        0.0,
        Duration::from_secs(4).saturating_sub(stopped.elapsed()),
    );
}

/// An HTTP/2 client of `addr` that starts a 100 MiB download and, once its
/// first frame came, stops whole for `frozen` (its connection task too: no
/// read, no WINDOW_UPDATE, no PING answered). Returns once it stopped.
fn freeze_http2_client_mid_download(addr: SocketAddr, frozen: Duration) {
    let (stopped, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async {
            use http_body_util::BodyExt;
            let (mut sender, _) = h2_client(addr).await;
            let req = get("http://shop/bytes/104857600");
            let mut body = sender.send_request(req).await.unwrap().into_body();
            body.frame().await.unwrap().unwrap();
            stopped.send(()).unwrap();
            std::thread::sleep(frozen);
        });
    });
    stop.recv_timeout(Duration::from_secs(5)).unwrap();
}

fn sigterm(p: &Proxy) {
    let pid = p.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A client connection to `addr` that has sent `bytes` (reads time out
/// after 10 s).
fn client_sending(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Reads until the proxy closes the connection; what it sent before.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is a close too (unread bytes were left behind).
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the proxy did not close the connection: {e}"),
        }
    }
}

#[test]
fn slow_huge_and_surplus_clients_are_cut_off() {
    let p = proxy_to_test_upstream(&[
        "--proxy.header-timeout",
        "1s",
        "--proxy.max-connections",
        "3",
    ]);
    // Slowloris: a header line every 200 ms never finishes the head; the
    // header timeout (1 s) ends the connection however long it trickles.
    let mut slow = TcpStream::connect(p.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\n")
        .unwrap();
    let started = Instant::now();
    let trickling = {
        let mut w = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..40 {
                std::thread::sleep(Duration::from_millis(200));
                if w.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    read_until_closed(&mut slow);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "a trickling client held its connection {took:?} with a 1 s header timeout"
    );
    trickling.join().unwrap();
    // A head under 64 KiB is served; one over it gets 431, and the
    // connection closed.
    let big = "b".repeat(60 * 1024);
    assert_eq!(
        request(p.addr, "GET", "/status/200", &[("X-Filler", &big)], b"").0,
        200,
        "a 60 KiB head"
    );
    let mut huge = TcpStream::connect(p.addr).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let filler = "a".repeat(70 * 1024);
    let _ = huge.write_all(
        format!("GET / HTTP/1.1\r\nHost: shop.example\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
    );
    let answer = String::from_utf8_lossy(&read_until_closed(&mut huge)).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a 70 KiB head: {answer:?}"
    );
    // Three connections open (the limit): a fourth is closed unanswered;
    // once one of the three closes, a new one is served.
    let open: Vec<_> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(p.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: shop.example\r\n\r\n")
                .unwrap();
            let mut r = BufReader::new(s);
            assert_eq!(read_response(&mut r).0, 200);
            r
        })
        .collect();
    let mut surplus = TcpStream::connect(p.addr).unwrap();
    surplus
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = surplus.write_all(b"GET /status/200 HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    assert_eq!(
        read_until_closed(&mut surplus),
        b"",
        "a connection over the limit is closed unanswered"
    );
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /status/200 HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        if r.read_line(&mut line).is_ok() && line.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came free");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_upstream_body_that_stalls_is_cut_off_after_the_timeout_between_reads() {
    // A chunk every 100 ms for 5 s: never silent for the 300 ms timeout,
    // so served whole, however long it takes.
    let p = proxy_to_test_upstream(&["--upstream.timeout", "300ms"]);
    let (status, body) = request(p.addr, "GET", "/drip", &[], b"");
    assert_eq!((status, body.len()), (200, 250), "the drip passed whole");
    // A body that stops after 7 of its 100 bytes, the connection left open.
    let (up, _) = scripted_upstream(
        |_, _, _| Some(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
        None,
    );
    let p = start_proxy(&format!("http://{up}"), &["--upstream.timeout", "300ms"]);
    let mut client = TcpStream::connect(p.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let got = String::from_utf8_lossy(&read_until_closed(&mut client)).into_owned();
    let took = started.elapsed();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\npartial"),
        "the head and the 7 bytes, then the close: {got:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "cut after {took:?} with a 300 ms timeout"
    );
    assert_value(
        &p,
        r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="timeout"}"#,
        1.0,
    );
}

#[test]
fn an_http2_stream_whose_window_stays_shut_is_reset_after_the_send_timeout() {
    let p = proxy_to_test_upstream(&["--proxy.send-timeout", "500ms"]);
    // A client that answers PINGs (its connection task runs) but never
    // reads its response body, so never opens the stream's window again.
    let (head_send, head) = std::sync::mpsc::channel();
    let (go_on, told) = tokio::sync::oneshot::channel::<()>();
    let addr = p.addr;
    let client = std::thread::spawn(move || {
        runtime().block_on(async {
            use http_body_util::BodyExt;
            let (mut sender, _conn) = h2_client(addr).await;
            let req = get("http://shop/bytes/104857600");
            let mut body = sender.send_request(req).await.unwrap().into_body();
            head_send.send(()).unwrap();
            told.await.unwrap();
            let mut read = 0usize;
            let ended = loop {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                    Some(Err(e)) => break format!("error: {e}"),
                    None => break "whole".to_string(),
                }
            };
            // The connection itself serves on.
            let again = sender.send_request(get("http://shop/status/204")).await;
            (ended, read, again.map(|r| r.status().as_u16()).ok())
        })
    });
    head.recv_timeout(Duration::from_secs(5)).unwrap();
    let stalled = Instant::now();
    assert_cancelled_and_recorded(&p, "GET", 200, "the stalled stream is cut off");
    assert!(
        stalled.elapsed() < Duration::from_secs(4),
        "{:?}",
        stalled.elapsed()
    );
    go_on.send(()).unwrap();
    let (ended, read, again) = client.join().unwrap();
    assert!(ended.starts_with("error"), "{ended} after {read} bytes");
    assert!(read < 104_857_600 / 2, "{read} bytes");
    assert_eq!(
        again,
        Some(204),
        "the connection was closed with the stream"
    );
}

#[test]
fn a_frozen_http2_client_does_not_hold_the_stop_up() {
    // The drain timeout is 30 s: the stop must end well before it.
    let mut p = proxy_to_test_upstream(&["--proxy.send-timeout", "500ms"]);
    // Nor answers the GOAWAY's PING.
    freeze_http2_client_mid_download(p.addr, Duration::from_secs(20));
    let stopped = Instant::now();
    sigterm(&p);
    loop {
        if let Some(code) = p.child.try_wait().unwrap() {
            assert!(code.success(), "{code}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "a frozen HTTP/2 client held the stop up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
