//! Pods' network namespaces, made for real: each fake pod is a network
//! namespace of the test's own with a process in it, placed in a cgroup of
//! the kubelet's layout (`kubepods/burstable/pod<uid>/<container>`). The
//! netns collector must report each pod's TCP counters under its uid, and
//! forget a pod once it is gone.

mod common;

use std::time::{Duration, Instant};

use common::pod;

use sojourn::metrics::{self, Format};

fn scraper() -> sojourn::scrape::Scraper {
    let s = sojourn::cli::parse([
        "sojourn",
        "--collector.disable-defaults",
        "--collector.netns",
        "--collector.process.rescan-interval",
        "0s",
    ])
    .expect("flags");
    sojourn::scrape::Scraper::new(s.collect, &s.collectors)
}

fn scrape(s: &sojourn::scrape::Scraper) -> String {
    String::from_utf8(metrics::encode_bytes(s.scrape(), Format::Text)).unwrap()
}

fn overflows(text: &str, uid: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with("sojourn_netns_tcp_listen_overflows_total{")
                && l.contains(&format!("pod_uid=\"{uid}\""))
                && l.contains("qos_class=\"burstable\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn each_pods_tcp_counters_are_its_own_and_go_with_it() {
    let (Some(busy), Some(idle)) = (pod("busy", true), pod("idle", false)) else {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "ip netns and cgroups need root",
        );
        return;
    };
    let s = scraper();
    let t = Instant::now();
    let text = loop {
        let text = scrape(&s);
        if overflows(&text, &busy.uid).is_some_and(|v| v > 0.0) {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the busy pod's listener overflows under its uid:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(overflows(&text, &idle.uid), Some(0.0), "{text}");
    assert!(
        !text.contains(&format!("netns=\"{}\"", own_inode())),
        "sojourn's own namespace is the host collectors'"
    );

    // `sojourn check` over a window names the busy pod, not the idle one.
    let snaps = sojourn::check::sample(&s, Duration::from_secs(2), |_| {});
    let report = sojourn::check::evaluate(&snaps).unwrap();
    assert!(
        report
            .findings
            .contains(&format!("tcp_accept of pod {}", busy.uid)),
        "{:?}",
        report.findings
    );
    assert!(
        !report.findings.iter().any(|f| f.contains(&idle.uid)),
        "{:?}",
        report.findings
    );

    let uid = busy.uid.clone();
    drop(busy);
    let text = scrape(&s);
    assert!(!text.contains(&uid), "a pod gone leaves no series:\n{text}");
    assert_eq!(overflows(&text, &idle.uid), Some(0.0));
}

fn own_inode() -> u64 {
    let link = std::fs::read_link("/proc/self/ns/net").unwrap();
    sojourn::netns::parse_ns_link(link.to_str().unwrap()).unwrap()
}
