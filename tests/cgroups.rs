//! The cgroup collector on a v1 fixture tree (the kubelet's cgroupfs driver)
//! and on a real cgroup this test creates: a busy process under a 20 % CPU
//! quota is throttled.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use sojourn::metrics::{self, Format};

fn scrape(args: &[&str]) -> String {
    let args = [
        "sojourn",
        "--collector.disable-defaults",
        "--collector.cgroup",
    ]
    .iter()
    .chain(args)
    .map(|s| s.to_string());
    let s = sojourn::cli::parse(args).unwrap();
    let scraper = sojourn::scrape::Scraper::new(s.collect, &s.collectors);
    metrics::encode(scraper.scrape(), Format::Text)
}

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn v1_cgroupfs_kubelet_tree() {
    let root = common::fixtures().join("cgroup-v1");
    let fixture_proc = common::fixtures().join("proc");
    let text = scrape(&[
        "--collector.cgroup.root",
        root.to_str().unwrap(),
        "--path.procfs",
        fixture_proc.to_str().unwrap(),
    ]);
    let id = "cgroup=\"/kubepods/burstable/pod0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e/4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01\",pod_uid=\"0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e\",container_id=\"4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01\",qos_class=\"burstable\"";
    for (metric, want) in [
        ("sojourn_cgroup_cpu_usage_seconds_total", 8.123456789),
        ("sojourn_cgroup_cpu_throttled_periods_total", 300.0),
        ("sojourn_cgroup_cpu_throttled_seconds_total", 45.0),
        ("sojourn_cgroup_cpu_quota_seconds", 0.02),
        ("sojourn_cgroup_memory_usage_bytes", 268435456.0),
        ("sojourn_cgroup_memory_working_set_bytes", 200000000.0),
        ("sojourn_cgroup_memory_limit_bytes", 536870912.0),
        ("sojourn_cgroup_pids", 12.0),
    ] {
        assert_eq!(
            value(&text, &format!("{metric}{{{id}}}")),
            Some(want),
            "{metric}:\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_memory_events_total{{{id},event=\"max\"}}")
        ),
        Some(7.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_memory_events_total{{{id},event=\"oom_kill\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_io_bytes_total{{{id},device=\"sda\",direction=\"write\"}}")
        ),
        Some(2097152.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "sojourn_cgroup_pressure_stalled_seconds_total{{{id},resource=\"cpu\",kind=\"some\"}}"
            )
        ),
        Some(30.0),
        "PSI from the hybrid host's unified hierarchy"
    );
    assert!(
        !text.contains("sojourn_cgroup_pids_limit{"),
        "pids.max is max: no limit series"
    );
    assert!(text.contains("sojourn_scrape_collector_success{collector=\"cgroup\"} 1"));
}

#[test]
fn include_exclude_and_cap() {
    let sys = common::fixtures().join("sys");
    let all = scrape(&["--path.sysfs", sys.to_str().unwrap()]);
    assert_eq!(
        all.matches("sojourn_cgroup_pids{").count(),
        2,
        "two containers have pids files:\n{all}"
    );
    let kube = scrape(&[
        "--path.sysfs",
        sys.to_str().unwrap(),
        "--collector.cgroup.include",
        "^/kubepods",
    ]);
    assert!(!kube.contains("sshd.service"));
    assert_eq!(
        kube.matches("sojourn_cgroup_cpu_usage_seconds_total{")
            .count(),
        2,
        "{kube}"
    );
    let no_docker = scrape(&[
        "--path.sysfs",
        sys.to_str().unwrap(),
        "--collector.cgroup.exclude",
        "docker-",
    ]);
    assert!(!no_docker.contains("docker-"));
    assert!(no_docker.contains("cri-containerd-") && no_docker.contains("sshd.service"));
    let capped = scrape(&[
        "--path.sysfs",
        sys.to_str().unwrap(),
        "--collector.cgroup.max-cgroups",
        "1",
    ]);
    assert_eq!(value(&capped, "sojourn_cgroup_omitted"), Some(2.0));
    assert_eq!(
        capped
            .matches("sojourn_cgroup_cpu_usage_seconds_total{")
            .count(),
        1
    );
}

/// A cgroup made for the test, with a busy child in it; removed on drop.
struct Throttled {
    dir: std::path::PathBuf,
    child: Child,
}

impl Drop for Throttled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The kernel frees the cgroup once its last task has gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn throttled_cgroup(name: &str) -> Throttled {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let v2 = root.join("cgroup.controllers").exists();
    let dir = if v2 {
        root.join(name)
    } else {
        root.join("cpu").join(name)
    };
    std::fs::create_dir(&dir).expect("create a cgroup (the tests run as root)");
    if v2 {
        let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
        std::fs::write(dir.join("cpu.max"), "20000 100000").unwrap();
    } else {
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), "20000").unwrap();
    }
    // A busy loop, bounded: the guard kills it.
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let guard = Throttled { dir, child };
    std::fs::write(guard.dir.join("cgroup.procs"), guard.child.id().to_string()).unwrap();
    guard
}

#[test]
fn a_busy_process_under_a_small_quota_is_throttled() {
    let name = format!("sojourn-test-{}", std::process::id());
    let cg = throttled_cgroup(&name);
    let include = format!("^/{name}$");
    // The queue engine samples the cgroup's throttling once per CFS period.
    let cfg = sojourn::cli::parse(["sojourn", "--collector.cgroup.include", &include])
        .unwrap()
        .collect;
    let sampler = sojourn::queue::sampler::Sampler::start(&cfg).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape(&["--collector.cgroup.include", &include]);
    let id = format!("cgroup=\"/{name}\",pod_uid=\"\",container_id=\"\",qos_class=\"\"");
    let throttled = value(
        &text,
        &format!("sojourn_cgroup_cpu_throttled_seconds_total{{{id}}}"),
    )
    .expect(&text);
    let periods = value(
        &text,
        &format!("sojourn_cgroup_cpu_throttled_periods_total{{{id}}}"),
    )
    .unwrap();
    assert!(
        throttled > 0.5,
        "throttled {throttled} s in 1.5 s at 20 % quota"
    );
    assert!(periods >= 5.0, "{periods} throttled periods");
    assert_eq!(
        value(&text, &format!("sojourn_cgroup_cpu_quota_seconds{{{id}}}")),
        Some(0.02)
    );

    let queue = format!("cgroup_cpu:/{name}");
    let queues = sampler.shared.queues.lock().unwrap();
    let snap = queues
        .snapshot(&queue)
        .expect("a throttling queue for the cgroup");
    assert!(
        snap.standing,
        "80 ms throttled per 100 ms period stands: {snap:?}"
    );
    assert!(snap.standing_seconds > 0.5, "{snap:?}");
    let per_period = snap.last_min.unwrap();
    assert!(
        per_period > 0.05 && per_period <= 0.1,
        "throttled {per_period} s per period"
    );
    drop(queues);
    drop(cg);
}
