//! Pods' network namespaces, made for real: each fake pod is a network
//! namespace of the test's own with a process in it, placed in a cgroup of
//! the kubelet's layout (`kubepods/burstable/pod<uid>/<container>`). The
//! netns collector must report each pod's TCP counters under its uid, and
//! forget a pod once it is gone.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sojourn::metrics::{self, Format};

/// A fake pod: its namespace, its process, its cgroup; all removed on drop.
struct Pod {
    netns: String,
    uid: String,
    child: Child,
    cgroup: PathBuf,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::remove_cgroup(&self.cgroup);
        if let Some(pod) = self.cgroup.parent() {
            common::remove_cgroup(pod);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// A Python program run in the pod: `busy` listens with a backlog of 1,
/// never accepts, and keeps connecting to itself, so the accept queue
/// overflows; otherwise it only sleeps.
const PROGRAM: &str = r#"
import socket, sys, time
if sys.argv[1] == "busy":
    l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen(1)
    held = []
    while True:
        for _ in range(8):
            c = socket.socket(); c.setblocking(False)
            try: c.connect(("127.0.0.1", 8080))
            except BlockingIOError: pass
            held.append(c)
        held = held[-64:]
        time.sleep(0.05)
else:
    time.sleep(120)
"#;

fn pod(tag: &str, busy: bool) -> Option<Pod> {
    let netns = format!("sojourn-pod-{tag}-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    let _ = Command::new("ip")
        .args(["netns", "exec", &netns, "ip", "link", "set", "lo", "up"])
        .status();
    let uid = format!(
        "0b2e4c3a-1111-2222-3333-{:012x}",
        std::process::id() as u64 * 16 + busy as u64
    );
    let (base, _) = common::cgroup_dir("memory", "kubepods/burstable");
    let cgroup = base.join(format!("pod{uid}")).join("c0ffee00c0ffee00");
    let child = Command::new("ip")
        .args(["netns", "exec", &netns, "python3", "-c", PROGRAM])
        .arg(if busy { "busy" } else { "idle" })
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let pod = Pod {
        netns,
        uid,
        child,
        cgroup,
    };
    std::fs::create_dir_all(&pod.cgroup).ok()?;
    std::fs::write(pod.cgroup.join("cgroup.procs"), pod.child.id().to_string()).ok()?;
    Some(pod)
}

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
