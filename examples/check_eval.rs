//! How long the USE rules take over a host with many cgroups (the live
//! page evaluates once a second): `cargo run --release --example check_eval`.
use sojourn::check::{Snapshot, evaluate};

fn snap(at: f64, cgroups: usize) -> Snapshot {
    let mut s = Snapshot::new(at);
    for i in 0..cgroups {
        let cg = format!("/kubepods/pod{i}/c{i}");
        let l = [("cgroup", cg.as_str())];
        for m in [
            "sojourn_cgroup_cpu_usage_seconds_total",
            "sojourn_cgroup_cpu_periods_total",
            "sojourn_cgroup_cpu_throttled_periods_total",
            "sojourn_cgroup_memory_usage_bytes",
            "sojourn_cgroup_memory_working_set_bytes",
            "sojourn_cgroup_memory_limit_bytes",
            "sojourn_cgroup_cpu_quota_seconds",
            "sojourn_cgroup_cpu_period_seconds",
        ] {
            s.push(m, &l, at * 0.5 + 1.0);
        }
        for e in ["max", "high", "oom", "oom_kill"] {
            s.push(
                "sojourn_cgroup_memory_events_total",
                &[("cgroup", cg.as_str()), ("event", e)],
                at,
            );
        }
    }
    s
}

fn main() {
    let cgroups: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let snaps: Vec<Snapshot> = (0..6).map(|i| snap(i as f64, cgroups)).collect();
    let start = std::time::Instant::now();
    let n = 20;
    for _ in 0..n {
        std::hint::black_box(evaluate(&snaps));
    }
    println!(
        "{cgroups} cgroups: {:.2} ms per evaluation",
        start.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
