//! Connections: upgrades, HTTP/2 prior knowledge, the upstream pool and
//! parked keep-alive client connections.

use super::*;

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
pub(crate) fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
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
