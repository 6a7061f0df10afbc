//! Timeouts between moments of progress, and clients that are slow, huge,
//! surplus or frozen.

use super::*;

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
pub(crate) fn freeze_http2_client_mid_download(addr: SocketAddr, frozen: Duration) {
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

pub(crate) fn sigterm(p: &Proxy) {
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
pub(crate) fn client_sending(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Reads until the proxy closes the connection; what it sent before.
pub(crate) fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
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
