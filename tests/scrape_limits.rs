//! Scrape deadline and concurrency limit, with a source that really hangs:
//! a FIFO in place of /proc/loadavg blocks read(2) until someone writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixture_args, get, start};

/// A fixture copy whose /proc/loadavg is a FIFO nobody writes: reading it
/// blocks. Returns the tree and the file's original content.
fn tree_with_hanging_loadavg() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let (dir, root) = common::fixture_copy();
    let loadavg = root.join("proc/loadavg");
    let content = std::fs::read(&loadavg).unwrap();
    std::fs::remove_file(&loadavg).unwrap();
    let made = Command::new("mkfifo").arg(&loadavg).status().unwrap();
    assert!(made.success());
    (dir, root, content)
}

fn start_on(root: &Path, extra: &[&str]) -> common::Exporter {
    let mut args = common::tree_args(root);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start(&args)
}

#[test]
fn a_hung_source_hits_the_deadline_and_cannot_pile_up_scrapes() {
    let (_dir, root, content) = tree_with_hanging_loadavg();
    let loadavg = root.join("proc/loadavg");

    let e = start_on(
        &root,
        &["--web.scrape-timeout", "1s", "--web.max-requests", "1"],
    );

    // The first scrape blocks on the FIFO and is answered 503 at its deadline.
    let addr = e.addr;
    let first = std::thread::spawn(move || {
        let t = Instant::now();
        (get(addr, "/metrics", &[]), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));

    // Meanwhile a second scrape is refused at once: the limit is 1.
    let t = Instant::now();
    let second = get(e.addr, "/metrics", &[]);
    assert_eq!(second.status, 503);
    assert!(
        second.text().contains("Too many concurrent scrapes"),
        "{}",
        second.text()
    );
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "refusal must not wait"
    );

    let (first, took) = first.join().unwrap();
    assert_eq!(first.status, 503);
    assert!(first.text().contains("deadline"), "{}", first.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // The stuck read still holds the only permit: no new work is started.
    assert_eq!(get(e.addr, "/metrics", &[]).status, 503);
    // Probes do not need a permit.
    assert_eq!(get(e.addr, "/-/healthy", &[]).status, 200);

    // Put a regular file back, then release the stuck reader.
    let replacement = root.join("proc/loadavg.new");
    std::fs::write(&replacement, &content).unwrap();
    let fifo = root.join("proc/loadavg.fifo");
    std::fs::rename(&loadavg, &fifo).unwrap();
    std::fs::rename(&replacement, &loadavg).unwrap();
    std::fs::write(&fifo, &content).unwrap();

    // Once the stuck scrape finishes its permit returns and scrapes work again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(e.addr, "/metrics", &[]);
        if r.status == 200 {
            assert!(r.text().contains("sojourn_load1 0.21"));
            break;
        }
        assert!(Instant::now() < deadline, "permit never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn prometheus_timeout_header_lowers_the_deadline() {
    let (_dir, root, _) = tree_with_hanging_loadavg();
    let loadavg = root.join("proc/loadavg");
    let e = start_on(&root, &["--web.scrape-timeout", "30s"]);
    let t = Instant::now();
    let r = get(
        e.addr,
        "/metrics",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1")],
    );
    assert_eq!(r.status, 503);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Unblock the reader so the exporter can exit cleanly.
    std::fs::write(&loadavg, b"0.1 0.1 0.1 1/1 1\n").unwrap();
}

#[test]
fn concurrent_scrapes_all_succeed_with_the_same_series() {
    let args = fixture_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = start(&args);
    let series = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("sojourn_scrape_collector_duration"))
            .filter(|l| !l.starts_with("sojourn_filesystem_"))
            // sojourn's own CPU, memory and fds change as it serves.
            .filter(|l| !l.starts_with("process_"))
            .map(String::from)
            .collect()
    };
    let reference = series(&get(e.addr, "/metrics", &[]).text());
    let addr = e.addr;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| get(addr, "/metrics", &[]))
                    .map(|r| (r.status, r.text()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for w in workers {
        for (status, text) in w.join().unwrap() {
            assert_eq!(status, 200);
            assert_eq!(series(&text), reference);
        }
    }
}

#[test]
fn any_timeout_header_gets_a_scrape_not_a_panic() {
    let e = start(
        &fixture_args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    for value in [
        "1e30",
        "1e400",
        "-5",
        "NaN",
        "inf",
        "0",
        "x",
        "18446744073709551616",
    ] {
        let r = get(
            e.addr,
            "/metrics",
            &[("X-Prometheus-Scrape-Timeout-Seconds", value)],
        );
        assert_eq!(r.status, 200, "{value}");
        assert!(r.text().contains("sojourn_build_info"), "{value}");
    }
}

#[test]
fn a_duration_too_long_for_the_clock_is_a_usage_error() {
    for (flag, value) in [
        ("--web.scrape-timeout", "99999999999999999999s"),
        ("--queue.interval", "99999999999999999999h"),
        ("--collector.filesystem.mount-timeout", "9000h"),
        ("--collector.process.rescan-interval", "1e3000s"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "names the flag: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args(["check", "--for", "99999999999999999999s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Sockets of the exporter's port in state ESTABLISHED, its side.
fn established_on(port: u16) -> usize {
    let out = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn clients_that_pipeline_scrapes_and_never_read_are_closed() {
    use std::io::Write;
    let e = start(
        &fixture_args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    // Enough responses (~50 kB each) to fill both sockets' buffers.
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
    let clients: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(e.addr).unwrap();
            s.write_all(requests.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let stuck = established_on(e.addr.port());
    assert!(stuck > 0, "the clients are not reading yet");
    let t = Instant::now();
    while established_on(e.addr.port()) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "{} of 20 still held {:?} after they stopped reading",
            established_on(e.addr.port()),
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "all closed {:?} after the first check ({stuck} held then)",
        t.elapsed()
    );
    drop(clients);
    // The port still serves.
    assert_eq!(get(e.addr, "/metrics", &[]).status, 200);
}

#[test]
fn connections_past_the_limit_are_closed_unanswered() {
    use std::io::{Read, Write};
    let mut args = fixture_args();
    args.extend(["--web.max-connections".into(), "3".into()]);
    let e = start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(e.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = std::net::TcpStream::connect(e.addr).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = fourth.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let t = Instant::now();
    let _ = fourth.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert!(t.elapsed() < Duration::from_secs(2), "closed at once");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(e.addr, "/metrics", &[]).status, 200);
}
