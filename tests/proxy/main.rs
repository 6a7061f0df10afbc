//! `sojourn proxy` as a real process between a real client and an upstream
//! on loopback: status codes pass through and are counted, upstream
//! failures become 502/504 counted by type, bodies stream byte-exact both
//! ways, cancelled requests are counted, headers are rewritten as a proxy
//! should, and SIGTERM drains requests in flight.

#[path = "../common/mod.rs"]
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

mod connections;
mod drain;
mod framing;
mod queueing;
mod signals;
mod timeouts;

// Helpers a group of tests defined beside them, shared with the others.
#[allow(unused_imports)]
use {connections::*, drain::*, framing::*, queueing::*, signals::*, timeouts::*};
