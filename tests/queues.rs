//! The queue engine on real kernel sources: the CPU run queue of this host
//! stays clear while it is idle and stands when more threads are busy than
//! there are CPUs; a broken source turns the queue collector's success to 0.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sojourn::metrics::{self, Format};
use sojourn::queue::QueueConfig;
use sojourn::queue::sampler::Sampler;
use sojourn::roots::Roots;

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
    let sampler = Sampler::start(
        Roots::default(),
        QueueConfig::default(),
        regex::Regex::new(sojourn::collectors::disk::DEFAULT_DEVICE_EXCLUDE).unwrap(),
    )
    .unwrap();
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
