//! Per-port TCP signals on real loopback sockets: a slow reader's receive
//! queue rises on its port; connections are counted per listening port.

mod common;

use std::io::Write;
use std::time::Duration;

use common::sample as value;
use sojourn::metrics::{self, Format};

fn scrape_tcp_ports() -> String {
    let scraper = common::scraper_for(["--collector.disable-defaults", "--collector.tcp_ports"]);
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

/// The dump's CPU time over the scrapes: whatever the scrape rate, the dumps
/// before the last cost at most the budget's share of the time they spanned.
#[test]
fn the_dumps_keep_to_their_cpu_budget_whatever_the_scrape_rate() {
    let scraper = |budget: &str| {
        common::scraper_for([
            "--collector.disable-defaults",
            "--collector.tcp_ports",
            "--collector.tcp_ports.cpu-budget",
            budget,
        ])
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let default = scraper("0.005");
    let start = std::time::Instant::now();
    let (mut dumps, mut spent, mut last_cpu) = (0.0, 0.0, 0.0);
    let mut ages = Vec::new();
    for _ in 0..300 {
        let text = metrics::encode(default.scrape(), Format::Text);
        let n = value(&text, "sojourn_tcp_port_dumps_total").unwrap();
        if n > dumps {
            spent += last_cpu;
            dumps = n;
            last_cpu = value(&text, "sojourn_tcp_port_dump_cpu_seconds").unwrap();
            assert!(last_cpu > 0.0, "{text}");
        }
        ages.push(value(&text, "sojourn_tcp_port_dump_age_seconds").unwrap());
    }
    let wall = start.elapsed().as_secs_f64();
    assert!(dumps >= 1.0);
    assert!(
        spent <= 0.005 * wall,
        "{dumps} dumps spent {spent} s of CPU before the last in {wall} s"
    );
    assert!(dumps < 300.0, "every scrape dumped");
    assert!(
        ages.iter().any(|&a| a > 0.0) && ages.iter().all(|&a| a <= wall),
        "{ages:?}"
    );

    // Served from the last dump, a new connection is still seen once the next is due.
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server, _) = listener.accept().unwrap();
    let series = format!("sojourn_tcp_port_connections{{port=\"{port}\"}}");
    let seen = std::time::Instant::now();
    while value(&metrics::encode(default.scrape(), Format::Text), &series) != Some(1.0) {
        assert!(
            seen.elapsed() < Duration::from_secs(3),
            "never dumped again"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // A budget of a whole CPU: a dump is never shorter than its own CPU time,
    // so every scrape dumps.
    let every = scraper("1");
    for i in 1..=20 {
        let text = metrics::encode(every.scrape(), Format::Text);
        assert_eq!(
            value(&text, "sojourn_tcp_port_dumps_total"),
            Some(f64::from(i))
        );
    }
}
