//! What a request is counted as: status codes, bounded series, upstream
//! failures by type, bodies both ways, cancellations, rewritten headers.

use super::*;

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
pub(crate) fn assert_value(p: &Proxy, series: &str, want: f64) {
    let text = metrics(p);
    assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
}

/// Waits up to `within` for `series` to read `want`; the metrics then.
pub(crate) fn wait_for_value(p: &Proxy, series: &str, want: f64, within: Duration) -> String {
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

pub(crate) fn assert_cancelled_and_recorded(p: &Proxy, method: &str, status: u16, why: &str) {
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
