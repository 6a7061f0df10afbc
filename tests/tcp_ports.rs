//! Per-port TCP signals on real loopback sockets: a slow reader's receive
//! queue rises on its port; connections are counted per listening port.

mod common;

use std::io::Write;
use std::time::Duration;

use common::sample as value;
use sojourn::metrics::{self, Format};

fn scrape_tcp_ports() -> String {
    let s = sojourn::cli::parse([
        "sojourn",
        "--collector.disable-defaults",
        "--collector.tcp_ports",
    ])
    .unwrap();
    let scraper = sojourn::scrape::Scraper::new(s.collect, &s.collectors);
    metrics::encode(scraper.scrape(), Format::Text)
}

#[test]
fn a_slow_readers_receive_queue_rises_on_its_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server, _) = listener.accept().unwrap();
    let before = scrape_tcp_ports();
    assert_eq!(
        value(
            &before,
            &format!("sojourn_tcp_port_connections{{port=\"{port}\"}}")
        ),
        Some(1.0),
        "{before}"
    );
    assert_eq!(
        value(
            &before,
            &format!("sojourn_tcp_port_receive_queue_bytes{{port=\"{port}\"}}")
        ),
        Some(0.0)
    );

    // The server never reads: what the client sends waits in its receive queue.
    client
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < 512 * 1024 {
        match client.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // both buffers full
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let after = scrape_tcp_ports();
    let queued = value(
        &after,
        &format!("sojourn_tcp_port_receive_queue_bytes{{port=\"{port}\"}}"),
    )
    .unwrap();
    assert!(
        queued >= 64.0 * 1024.0,
        "{queued} bytes queued after sending {sent}:\n{after}"
    );
    let rtt_count = value(
        &after,
        &format!("sojourn_tcp_port_rtt_seconds_count{{port=\"{port}\"}}"),
    )
    .unwrap();
    assert_eq!(rtt_count, 1.0);
}

#[test]
fn outbound_connections_are_not_counted_as_a_service() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server, peer) = listener.accept().unwrap();
    let text = scrape_tcp_ports();
    assert_eq!(
        value(
            &text,
            &format!("sojourn_tcp_port_connections{{port=\"{port}\"}}")
        ),
        Some(1.0),
        "the server side is counted once:\n{text}"
    );
    assert!(
        !text.contains(&format!("port=\"{}\"", peer.port())),
        "the client's ephemeral port is not a service"
    );
}
