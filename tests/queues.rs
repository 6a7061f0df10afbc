//! The queue engine on real kernel sources: the CPU run queue of this host
//! stays clear while it is idle and stands when more threads are busy than
//! there are CPUs; a broken source turns the queue collector's success to 0.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sojourn::metrics::{self, Format};
use sojourn::queue::sampler::Sampler;

fn standing_seconds(sampler: &Sampler, queue: &str) -> f64 {
    sampler
        .shared
        .queues
        .lock()
        .unwrap()
        .snapshot(queue)
        .map_or(0.0, |s| s.standing_seconds)
}

/// Busy-loops `n` threads for `d` (bounded: they stop by themselves).
fn burn(n: usize, d: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    std::thread::sleep(d);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn cpu_queue_is_clear_when_idle_and_stands_when_oversubscribed() {
    let sampler = Sampler::start(&sojourn::cli::parse(["sojourn"]).unwrap().collect).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let idle = standing_seconds(&sampler, "cpu");
    assert!(idle < 0.1, "idle machine: cpu queue stood {idle} s of 1 s");

    let cpus = std::thread::available_parallelism().unwrap().get();
    let start = Instant::now();
    burn(cpus * 2 + 2, Duration::from_millis(1500));
    let busy = standing_seconds(&sampler, "cpu") - idle;
    let wall = start.elapsed().as_secs_f64();
    assert!(
        busy > 0.5 * wall,
        "{} busy threads on {cpus} CPUs: stood only {busy:.2} s of {wall:.2} s",
        cpus * 2 + 2
    );

    // Drained: the queue clears again.
    std::thread::sleep(Duration::from_millis(300));
    let queues = sampler.shared.queues.lock().unwrap();
    assert_eq!(queues.is_standing("cpu"), Some(false));
    let info = metrics::encode(queues.emit(), Format::Text);
    let source = if std::path::Path::new("/proc/schedstat").exists() {
        "schedstat"
    } else {
        "loadavg"
    };
    let cpu_info = info
        .lines()
        .find(|l| l.starts_with("sojourn_queue_info{queue=\"cpu\","))
        .expect("cpu queue info");
    assert!(
        cpu_info.contains(&format!("source=\"{source}\"")),
        "{cpu_info}"
    );
    assert!(sampler.shared.stats.ticks.load(Ordering::Relaxed) > 150);
}

#[test]
fn a_missing_cpu_source_fails_the_queue_collector_only() {
    let (_dir, root) = common::fixture_copy();
    std::fs::remove_file(root.join("proc/schedstat")).unwrap();
    std::fs::remove_file(root.join("proc/loadavg")).unwrap();
    let scraper = common::tree_scraper_with(
        &root,
        &[
            "--collector.disable-defaults",
            "--collector.queue",
            "--collector.cpu",
        ],
    );
    std::thread::sleep(Duration::from_millis(100));
    let text = metrics::encode(scraper.scrape(), Format::Text);
    assert!(
        text.contains("sojourn_scrape_collector_success{collector=\"queue\"} 0"),
        "{text}"
    );
    assert!(text.contains("sojourn_scrape_collector_success{collector=\"cpu\"} 1"));
}

#[test]
fn fixture_queues_have_every_kind() {
    let scraper = common::tree_scraper_with(
        &common::fixtures(),
        &["--collector.disable-defaults", "--collector.queue"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = metrics::encode(scraper.scrape(), Format::Text);
    for needle in [
        "sojourn_queue_info{queue=\"cpu\",measure=\"delay\",source=\"schedstat\"} 1",
        "sojourn_queue_info{queue=\"cpu0\",measure=\"delay\",source=\"schedstat\"} 1",
        "sojourn_queue_info{queue=\"memory:psi\",measure=\"share\",source=\"psi\"} 1",
        "sojourn_queue_info{queue=\"disk:sda\",measure=\"delay\",source=\"diskstats\"} 1",
        "sojourn_queue_info{queue=\"disk_inflight:sda\",measure=\"length\",source=\"diskstats\"} 1",
        // A fixture never changes: every delay is 0 and nothing stands.
        "sojourn_queue_standing{queue=\"cpu\"} 0",
        "sojourn_queue_min_delay_seconds{queue=\"cpu\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")
            .unwrap();
        return values.split_whitespace().nth(i).unwrap().parse().unwrap();
    }
    panic!("no TcpExt in /proc/net/netstat");
}

#[test]
fn an_accept_queue_that_is_not_drained_stands_and_overflows_then_clears() {
    use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
    // A listener with a backlog of 2 that nobody accepts from, on loopback.
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    listen(&fd, 2).unwrap();
    let listener = std::net::TcpListener::from(fd);
    let addr = listener.local_addr().unwrap();
    let queue = format!("tcp_accept:127.0.0.1:{}", addr.port());

    let sampler = Sampler::start(&sojourn::cli::parse(["sojourn"]).unwrap().collect).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        sampler.shared.queues.lock().unwrap().is_standing(&queue),
        Some(false)
    );

    let overflows_before = listen_overflows();
    // Ten clients: the queue holds backlog + 1, the rest overflow (their
    // SYNs are dropped; the short timeout bounds the test).
    let clients: Vec<_> = (0..10)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        })
        .collect();
    assert!(
        clients.len() >= 3,
        "backlog 2 holds 3 connections, got {}",
        clients.len()
    );
    std::thread::sleep(Duration::from_millis(400));
    {
        let queues = sampler.shared.queues.lock().unwrap();
        assert_eq!(
            queues.is_standing(&queue),
            Some(true),
            "accept queue full for 400 ms"
        );
        let s = queues.snapshot(&queue).unwrap();
        assert!(s.last_min.unwrap() >= 3.0, "{:?}", s.last_min);
        let text = metrics::encode(queues.emit(), Format::Text);
        assert!(
            text.contains(&format!("sojourn_queue_limit{{queue=\"{queue}\"}} 2")),
            "{text}"
        );
    }
    assert!(
        listen_overflows() > overflows_before,
        "ListenOverflows did not rise"
    );

    // The server drains its queue: standing clears.
    listener.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    while let Ok((s, _)) = listener.accept() {
        accepted.push(s);
    }
    assert!(accepted.len() >= 3);
    std::thread::sleep(Duration::from_millis(200));
    let queues = sampler.shared.queues.lock().unwrap();
    assert_eq!(queues.is_standing(&queue), Some(false));
    drop(clients);
}
