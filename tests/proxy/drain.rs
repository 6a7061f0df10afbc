//! SIGTERM: requests in flight are drained before the proxy stops.

use super::*;

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
