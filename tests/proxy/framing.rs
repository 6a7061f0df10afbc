//! Message framing as RFC 9112 says, against a scripted upstream: responses,
//! retries of idempotent requests, uploads.

use super::*;

pub(crate) const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw HTTP/1.1 upstream whose answers are written by hand, counting the
/// connections it accepts: `answer` gets the request's index on its
/// connection (0 first), its method and path, and returns the bytes to
/// send, or None to close the connection without answering. A connection
/// is closed after an answer that says `Connection: close` or has neither
/// length nor chunked framing, and with `idle_close`, that long after its
/// last answer without saying so (as an upstream's idle timeout does).
pub(crate) fn scripted_upstream(
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
