//! The process collector against child processes this test starts: known
//! resident memory, threads and open files; counters stay monotonic and
//! series go away as processes exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sojourn::metrics::{self, Format};

/// A Python child holding 64 MiB, 4 extra threads and 10 extra open files
/// until its stdin closes (bounded: it also exits after 60 s).
const HELPER: &str = r#"
import sys, threading, time
block = bytearray(64 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
stop = threading.Event()
threads = [threading.Thread(target=stop.wait, args=(60,), daemon=True) for _ in range(4)]
for t in threads: t.start()
files = [open("/dev/null") for _ in range(10)]
print("ready", flush=True)
sys.stdin.read()
"#;

fn helper(marker: &str) -> Child {
    let mut child = Command::new("python3")
        .args(["-c", HELPER, marker])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

fn stop(mut c: Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

/// A scraper with only what `--collector.process.include (marker)` enables,
/// and `extra` flags.
fn process_scraper(marker: &str, extra: &[&str]) -> sojourn::scrape::Scraper {
    let include = format!("({marker})");
    let args = [
        "--collector.disable-defaults",
        "--collector.process.include",
        &include,
    ];
    let scraper = common::scraper_for(args.iter().chain(extra));
    assert_eq!(
        scraper.collector_names(),
        ["process"],
        "an include enables the collector"
    );
    scraper
}

#[test]
fn a_known_child_is_measured_and_forgotten_when_it_exits() {
    let marker = format!("sojourn-proc-test-{}", std::process::id());
    let scraper = process_scraper(&marker, &[]);

    let first = helper(&marker);
    let second = helper(&marker);
    let text = metrics::encode(scraper.scrape(), Format::Text);
    let g = format!("{{group=\"{marker}\"}}");
    assert_eq!(
        value(&text, &format!("sojourn_process_instances{g}")),
        Some(2.0),
        "{text}"
    );
    let rss = value(&text, &format!("sojourn_process_resident_memory_bytes{g}")).unwrap();
    assert!(rss >= 2.0 * 64.0 * 1024.0 * 1024.0, "rss {rss}");
    let pss = value(
        &text,
        &format!("sojourn_process_proportional_memory_bytes{g}"),
    )
    .unwrap();
    assert!(
        pss >= 2.0 * 60.0 * 1024.0 * 1024.0 && pss <= rss,
        "pss {pss}, rss {rss}"
    );
    let vsz = value(&text, &format!("sojourn_process_virtual_memory_bytes{g}")).unwrap();
    assert!(vsz >= rss);
    let threads = value(&text, &format!("sojourn_process_threads{g}")).unwrap();
    assert!(threads >= 10.0, "{threads} threads for 2 × (1 + 4)");
    let fds = value(&text, &format!("sojourn_process_open_fds{g}")).unwrap();
    assert!(fds >= 26.0, "{fds} fds for 2 × (3 + 10)");
    assert!(value(&text, &format!("sojourn_process_open_fds_limit_ratio{g}")).unwrap() > 0.0);
    assert_eq!(
        value(&text, &format!("sojourn_process_go_processes{g}")),
        Some(0.0),
        "python is not Go"
    );
    let cpu_before = value(
        &text,
        &format!("sojourn_process_cpu_seconds_total{{group=\"{marker}\",mode=\"user\"}}"),
    )
    .unwrap();
    assert!(cpu_before > 0.0, "touching 128 MiB takes CPU time");

    // One exits: the group's CPU counter does not go down.
    stop(first);
    let text = metrics::encode(scraper.scrape(), Format::Text);
    assert_eq!(
        value(&text, &format!("sojourn_process_instances{g}")),
        Some(1.0)
    );
    let cpu_after = value(
        &text,
        &format!("sojourn_process_cpu_seconds_total{{group=\"{marker}\",mode=\"user\"}}"),
    )
    .unwrap();
    assert!(
        cpu_after >= cpu_before,
        "counter went down: {cpu_before} -> {cpu_after}"
    );

    // The last exits: the group's series go away.
    stop(second);
    let text = metrics::encode(scraper.scrape(), Format::Text);
    assert!(!text.contains(&marker), "{text}");
    assert!(text.contains("sojourn_scrape_collector_success{collector=\"process\"} 1"));
}

#[test]
fn new_processes_appear_at_the_next_rescan_and_exits_at_once() {
    let marker = format!("sojourn-rescan-test-{}", std::process::id());
    let scraper = process_scraper(&marker, &["--collector.process.rescan-interval", "1s"]);
    let instances = || {
        let text = metrics::encode(scraper.scrape(), Format::Text);
        value(
            &text,
            &format!("sojourn_process_instances{{group=\"{marker}\"}}"),
        )
    };
    let first = helper(&marker);
    let started = std::time::Instant::now();
    assert_eq!(instances(), Some(1.0));
    let second = helper(&marker);
    if started.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            instances(),
            Some(1.0),
            "not listed again within the interval"
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(instances(), Some(2.0), "found by the rescan");
    stop(first);
    assert_eq!(instances(), Some(1.0), "an exit is seen without a rescan");
    stop(second);
    assert_eq!(instances(), None);
}

mod common;

use common::sample as value;

#[test]
fn schedstat_of_zeros_means_no_run_queue_series() {
    let (_dir, root) = common::fixture_copy();
    let scrape = |root: &std::path::Path| {
        let scraper = common::tree_scraper_with(
            root,
            &[
                "--collector.disable-defaults",
                "--collector.process.include",
                "^(postgres)",
            ],
        );
        metrics::encode(scraper.scrape(), Format::Text)
    };
    assert!(
        scrape(&root).contains(
            "sojourn_process_run_queue_wait_seconds_total{group=\"postgres\"} 0.002345678"
        )
    );
    // Kernels without sched_info accounting print zeros: not a measurement.
    std::fs::write(root.join("proc/4242/schedstat"), "0 0 0\n").unwrap();
    let text = scrape(&root);
    assert!(
        !text.contains("sojourn_process_run_queue_wait_seconds_total{"),
        "{text}"
    );
    assert!(text.contains("sojourn_process_instances{group=\"postgres\"} 1"));
}
