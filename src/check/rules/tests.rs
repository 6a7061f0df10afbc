//! The rules judged on made-up windows: each verdict, its evidence
//! and who is named.

use super::*;
use crate::check::{Snapshot, evaluate};

/// Two CPUs, mostly idle; every scenario below starts from this host.
fn host(at: f64, busy: [f64; 2]) -> Snapshot {
    let mut s = Snapshot::new(at);
    for (cpu, b) in ["0", "1"].iter().zip(busy) {
        s.push(
            "sojourn_cpu_seconds_total",
            &[("cpu", cpu), ("mode", "user")],
            b * at,
        );
        s.push(
            "sojourn_cpu_seconds_total",
            &[("cpu", cpu), ("mode", "idle")],
            (1.0 - b) * at,
        );
    }
    s.push("sojourn_memory_mem_total_bytes", &[], 8e9);
    s.push("sojourn_memory_mem_available_bytes", &[], 6e9);
    s.push("sojourn_netstat_tcp_out_segs_total", &[], 1000.0 * at);
    s.push("sojourn_netstat_tcp_retrans_segs_total", &[], 0.0);
    s.push("sojourn_netstat_tcpext_tcp_syn_retrans_total", &[], 0.0);
    s.push("sojourn_netstat_tcpext_listen_overflows_total", &[], 0.0);
    s
}

fn queue(s: &mut Snapshot, q: &'static str, measure: &str, standing: f64, min: f64) {
    s.push(
        "sojourn_queue_info",
        &[("queue", q), ("measure", measure)],
        1.0,
    );
    s.push(
        "sojourn_queue_standing_seconds_total",
        &[("queue", q)],
        standing,
    );
    s.push("sojourn_queue_min_length", &[("queue", q)], min);
    s.push("sojourn_queue_target_length", &[("queue", q)], 1.0);
}

fn findings(snaps: &[Snapshot]) -> Vec<String> {
    evaluate(snaps).unwrap().findings
}

fn pod_namespace(s: &mut Snapshot, netns: &'static str, uid: &'static str, overflows: f64) {
    let id = [
        ("netns", netns),
        ("pod_uid", uid),
        ("qos_class", "burstable"),
        ("process", ""),
    ];
    s.push("sojourn_netns_tcp_listen_overflows_total", &id, overflows);
    s.push("sojourn_netns_tcp_segments_sent_total", &id, 1000.0);
    s.push("sojourn_netns_tcp_retransmitted_segments_total", &id, 0.0);
}

#[test]
fn a_pods_overflowing_listener_is_named_by_the_pod() {
    let mut a = host(0.0, [0.05, 0.05]);
    let mut b = host(10.0, [0.05, 0.05]);
    pod_namespace(&mut a, "4026532481", "busy-uid", 0.0);
    pod_namespace(&mut b, "4026532481", "busy-uid", 40.0);
    pod_namespace(&mut a, "4026532482", "idle-uid", 0.0);
    pod_namespace(&mut b, "4026532482", "idle-uid", 0.0);
    let snaps = [a, b];
    assert_eq!(findings(&snaps), ["tcp_accept of pod busy-uid"]);
    let r = evaluate(&snaps).unwrap();
    let row = r
        .resources
        .iter()
        .find(|x| x.resource == "tcp_accept of pod busy-uid")
        .unwrap();
    assert!(
        row.evidence
            .iter()
            .any(|e| e.contains("40 connections dropped")),
        "{row:?}"
    );
}

#[test]
fn an_idle_host_has_no_findings() {
    let snaps = [host(0.0, [0.05, 0.05]), host(10.0, [0.05, 0.05])];
    let r = evaluate(&snaps).unwrap();
    assert!(r.findings.is_empty(), "{r:?}");
    assert_eq!(r.window_seconds, 10.0);
    let cpu = r.resources.iter().find(|r| r.resource == "cpu").unwrap();
    assert!((cpu.utilization.as_ref().unwrap().value - 0.05).abs() < 1e-9);
}

#[test]
fn a_standing_run_queue_saturates_the_cpu_and_a_burst_does_not() {
    let mut a = host(0.0, [1.0, 1.0]);
    let mut b = host(10.0, [1.0, 1.0]);
    queue(&mut a, "cpu", "length", 0.0, 0.0);
    queue(&mut b, "cpu", "length", 9.6, 3.0);
    let r = evaluate(&[a, b]).unwrap();
    assert_eq!(r.findings, ["cpu"]);
    let cpu = &r.resources[0];
    assert_eq!(cpu.verdict, Verdict::Saturated);
    assert!(
        cpu.evidence.iter().any(|e| e.starts_with(
            "run queue standing 9.6 s of 10.0 s (96 %), min length up to 3 (target 1)"
        )),
        "{cpu:?}"
    );
    // Stood 2 s of 10: noticed, not a finding.
    let mut a = host(0.0, [0.5, 0.5]);
    let mut b = host(10.0, [0.5, 0.5]);
    queue(&mut a, "cpu", "length", 0.0, 0.0);
    queue(&mut b, "cpu", "length", 2.0, 0.0);
    assert!(findings(&[a, b]).is_empty());
}

#[test]
fn saturated_memory_and_disk_name_who_uses_them() {
    let mut snaps = [host(0.0, [0.3, 0.3]), host(10.0, [0.3, 0.3])];
    for (i, s) in snaps.iter_mut().enumerate() {
        let at = i as f64 * 10.0;
        queue(s, "memory:psi", "share", 9.0 * i as f64, 0.3);
        queue(s, "disk:vda", "delay", 9.0 * i as f64, 0.3);
        s.push(
            "sojourn_disk_io_time_seconds_total",
            &[("device", "vda")],
            9.0 * at,
        );
        s.push(
            "sojourn_disk_read_bytes_total",
            &[("device", "vda")],
            1e8 * at,
        );
        s.push(
            "sojourn_disk_written_bytes_total",
            &[("device", "vda")],
            0.0,
        );
        // (cgroup, pod uid, namespace, pod, working set, bytes read per second)
        for (cgroup, uid, ns, pod, ws, io) in [
            ("/kubepods/pod1/c1", "1111", "shop", "web-7d9", 1.5e9, 6e7),
            ("/system.slice/backup.service", "", "", "", 0.4e9, 3e7),
            ("/kubepods/pod2/c2", "2222", "", "", 0.01e9, 1e5),
        ] {
            let id = [
                ("cgroup", cgroup),
                ("pod_uid", uid),
                ("namespace", ns),
                ("pod", pod),
            ];
            s.push("sojourn_cgroup_memory_working_set_bytes", &id, ws);
            let mut psi_id = id.to_vec();
            psi_id.extend([("resource", "memory"), ("kind", "some")]);
            let stalled = if uid == "1111" { 0.4 * at } else { 0.0 };
            s.push(
                "sojourn_cgroup_pressure_stalled_seconds_total",
                &psi_id,
                stalled,
            );
            let mut io_id = id.to_vec();
            io_id.extend([("device", "vda"), ("direction", "read")]);
            s.push("sojourn_cgroup_io_bytes_total", &io_id, io * at);
        }
    }
    let r = evaluate(&snaps).unwrap();
    let who = |resource: &str| {
        let row = r.resources.iter().find(|x| x.resource == resource).unwrap();
        assert_eq!(row.verdict, Verdict::Saturated, "{row:?}");
        row.evidence
            .iter()
            .find(|e| e.starts_with("who: "))
            .cloned()
            .unwrap_or_else(|| panic!("no who: {row:?}"))
    };
    // Who waited: the pod's tasks stalled on memory 4 s of the 10.
    let memory = r.resources.iter().find(|x| x.resource == "memory").unwrap();
    assert!(
        memory.evidence.iter().any(|e| e
            == "stalled: cgroup /kubepods/pod1/c1 (pod shop/web-7d9) 4.0 s (40 %) of the window (PSI some)"),
        "{memory:?}"
    );
    // 2 GB in use (8 GB total, 6 GB available): the pod first, by name.
    assert_eq!(
        who("memory"),
        "who: cgroup /kubepods/pod1/c1 (pod shop/web-7d9) 1.5 GB (75 %), \
         cgroup /system.slice/backup.service 400.0 MB (20 %) of the memory in use"
    );
    // 100 MB/s read from vda: 60 % the pod's, 30 % the backup's; the
    // third, under 2 %, is not named.
    assert_eq!(
        who("disk vda"),
        "who: cgroup /kubepods/pod1/c1 (pod shop/web-7d9) 60.0 MB/s (60 %), \
         cgroup /system.slice/backup.service 30.0 MB/s (30 %) of the bytes moved"
    );
}

#[test]
fn one_hot_cpu_is_found_while_the_others_have_room() {
    let r = evaluate(&[host(0.0, [1.0, 0.05]), host(10.0, [1.0, 0.05])]).unwrap();
    assert_eq!(r.findings, ["cpu0"]);
    assert!(
        r.resources[0].evidence[0].contains("while the other CPU average 5 %"),
        "{:?}",
        r.resources[0].evidence
    );
    // The other CPU a third busy (a build, sojourn itself): still
    // found, where the whole average (67 %) would have hidden it.
    let r = evaluate(&[host(0.0, [1.0, 0.35]), host(10.0, [1.0, 0.35])]).unwrap();
    assert_eq!(r.findings, ["cpu0"]);
    // The other past half busy: no imbalance.
    assert!(findings(&[host(0.0, [1.0, 0.6]), host(10.0, [1.0, 0.6])]).is_empty());
    // Both CPUs busy: no imbalance, and busy is not a finding by itself.
    assert!(findings(&[host(0.0, [1.0, 1.0]), host(10.0, [1.0, 1.0])]).is_empty());
}

#[test]
fn accept_overflows_name_the_standing_listener_and_syn_retransmits_are_not_loss() {
    let mut a = host(0.0, [0.1, 0.1]);
    let mut b = host(5.0, [0.1, 0.1]);
    queue(&mut a, "tcp_accept:127.0.0.1:8080", "length", 0.0, 0.0);
    queue(&mut b, "tcp_accept:127.0.0.1:8080", "length", 4.9, 5.0);
    b.push(
        "sojourn_queue_limit",
        &[("queue", "tcp_accept:127.0.0.1:8080")],
        4.0,
    );
    for (name, v) in [
        ("sojourn_netstat_tcpext_listen_overflows_total", 212.0),
        ("sojourn_netstat_tcp_retrans_segs_total", 300.0),
        ("sojourn_netstat_tcpext_tcp_syn_retrans_total", 300.0),
    ] {
        b.series.get_mut(name).unwrap()[0].value = v;
    }
    let r = evaluate(&[a, b]).unwrap();
    assert_eq!(r.findings, ["tcp_accept 127.0.0.1:8080"]);
    let e = &r.resources[0].evidence[0];
    assert!(
        e.contains("backlog 4") && e.contains("212 connections dropped"),
        "{e}"
    );
}

#[test]
fn retransmits_beyond_one_percent_are_errors() {
    let a = host(0.0, [0.1, 0.1]);
    let mut b = host(10.0, [0.1, 0.1]);
    b.series
        .get_mut("sojourn_netstat_tcp_retrans_segs_total")
        .unwrap()[0]
        .value = 500.0;
    let r = evaluate(&[a, b]).unwrap();
    assert_eq!(r.findings, ["tcp"]);
    assert_eq!(r.resources[0].verdict, Verdict::Errors);
    assert!(
        r.resources[0]
            .evidence
            .iter()
            .any(|e| e.contains("500 of 10000 segments retransmitted (5 %)"))
    );
}

#[test]
fn a_socket_queue_stands_only_when_every_snapshot_holds_it() {
    let snap = |at: f64, rq: f64| {
        let mut s = host(at, [0.1, 0.1]);
        s.push("sojourn_tcp_port_connections", &[("port", "8080")], 1.0);
        s.push(
            "sojourn_tcp_port_receive_queue_bytes",
            &[("port", "8080")],
            rq,
        );
        s.push(
            "sojourn_tcp_port_receive_queue_max_bytes",
            &[("port", "8080")],
            rq,
        );
        s.push(
            "sojourn_tcp_port_send_queue_bytes",
            &[("port", "8080")],
            0.0,
        );
        s
    };
    let stood = [snap(0.0, 2e6), snap(1.0, 2.5e6), snap(2.0, 3e6)];
    let r = evaluate(&stood).unwrap();
    assert_eq!(r.findings, ["tcp_port 8080"]);
    assert!(r.resources[0].evidence[0].starts_with("receive queue stood at ≥ 2.0 MB"));
    let drained = [snap(0.0, 2e6), snap(1.0, 0.0), snap(2.0, 3e6)];
    assert!(findings(&drained).is_empty());
}

fn service(at: f64, fast: u64, slow: u64, errors: u64) -> Snapshot {
    let mut s = host(at, [0.1, 0.1]);
    let bounds = [0.1, 1.0, f64::INFINITY];
    let hist = "http_server_request_duration_seconds";
    s.push_histogram(
        hist,
        &[("service", "shop"), ("http_response_status_code", "200")],
        &bounds,
        &[fast, slow, 0],
    );
    s.push_histogram(
        hist,
        &[("service", "shop"), ("http_response_status_code", "503")],
        &bounds,
        &[errors, 0, 0],
    );
    s.push("sojourn_proxy_active_requests", &[("service", "shop")], 1.0);
    s.push(
        "sojourn_proxy_latency_target_seconds",
        &[("service", "shop")],
        0.25,
    );
    s
}

#[test]
fn a_slow_service_on_a_quiet_host_blames_its_upstream() {
    let r = evaluate(&[service(0.0, 100, 0, 0), service(10.0, 150, 50, 0)]).unwrap();
    assert_eq!(r.findings, ["service shop"]);
    let row = &r.resources[0];
    assert_eq!(row.verdict, Verdict::Slow);
    let e = row.evidence.iter().find(|e| e.starts_with("p99")).unwrap();
    assert!(e.contains("over the 250 ms target (100 requests)"), "{e}");
    assert!(e.contains("the time is spent upstream"), "{e}");
    // Fast but failing.
    let r = evaluate(&[service(0.0, 100, 0, 0), service(10.0, 190, 0, 10)]).unwrap();
    assert_eq!(r.resources[0].verdict, Verdict::Errors);
    assert!(
        r.resources[0]
            .evidence
            .iter()
            .any(|e| e == "10 of 100 requests answered 5xx (10 %)")
    );
}

#[test]
fn a_cgroup_throttled_in_most_periods_is_saturated() {
    let snap = |at: f64, throttled: f64| {
        let mut s = host(at, [0.2, 0.1]);
        let cg = [("cgroup", "/shop")];
        s.push("sojourn_cgroup_cpu_quota_seconds", &cg, 0.02);
        s.push("sojourn_cgroup_cpu_period_seconds", &cg, 0.1);
        s.push("sojourn_cgroup_cpu_usage_seconds_total", &cg, 0.2 * at);
        s.push("sojourn_cgroup_cpu_periods_total", &cg, 10.0 * at);
        s.push(
            "sojourn_cgroup_cpu_throttled_periods_total",
            &cg,
            throttled * at,
        );
        s
    };
    let r = evaluate(&[snap(0.0, 9.0), snap(4.0, 9.0)]).unwrap();
    assert_eq!(r.findings, ["cgroup /shop cpu"]);
    assert!(
        r.resources[0].evidence[0]
            .starts_with("throttled in 36 of 40 CFS periods (90 %): the quota of 0.20 cores"),
        "{:?}",
        r.resources[0]
    );
    // Throttled now and then: said, not a finding.
    let r = evaluate(&[snap(0.0, 1.0), snap(4.0, 1.0)]).unwrap();
    assert!(r.findings.is_empty(), "{r:?}");
}

#[test]
fn a_mount_that_went_read_only_is_an_error_and_one_always_read_only_is_not() {
    let snap = |at: f64, ro: f64| {
        let mut s = host(at, [0.1, 0.1]);
        let m = [("mountpoint", "/data")];
        s.push("sojourn_filesystem_size_bytes", &m, 100e9);
        s.push("sojourn_filesystem_free_bytes", &m, 60e9);
        s.push("sojourn_filesystem_avail_bytes", &m, 55e9);
        s.push("sojourn_filesystem_readonly", &m, ro);
        s
    };
    let r = evaluate(&[snap(0.0, 0.0), snap(4.0, 1.0)]).unwrap();
    assert_eq!(r.findings, ["filesystem /data"]);
    assert_eq!(r.resources[0].evidence, ["mounted read-only"]);
    let r = evaluate(&[snap(0.0, 1.0), snap(4.0, 1.0)]).unwrap();
    assert!(r.findings.is_empty(), "{r:?}");
    // Used as df counts it: 40 of 95 GB that users can have.
    let fs = r
        .resources
        .iter()
        .find(|r| r.resource == "filesystem /data")
        .unwrap();
    assert_eq!(fs.utilization.as_ref().unwrap().text, "42 %");
}

#[test]
fn a_cgroup_hitting_its_memory_limit_is_saturated_and_oom_kills_are_errors() {
    let snap = |at: f64, failcnt: f64, kills: f64| {
        let mut s = host(at, [0.1, 0.1]);
        for cg in ["/batch", "/idle"] {
            let l = [("cgroup", cg)];
            s.push("sojourn_cgroup_memory_usage_bytes", &l, 32e6);
            s.push("sojourn_cgroup_memory_working_set_bytes", &l, 1e6);
            s.push("sojourn_cgroup_memory_limit_bytes", &l, 32e6);
            let (f, k) = if cg == "/batch" {
                (failcnt, kills)
            } else {
                (0.0, 0.0)
            };
            s.push(
                "sojourn_cgroup_memory_events_total",
                &[("cgroup", cg), ("event", "max")],
                f,
            );
            s.push(
                "sojourn_cgroup_memory_events_total",
                &[("cgroup", cg), ("event", "oom_kill")],
                k,
            );
        }
        s
    };
    let r = evaluate(&[snap(0.0, 100.0, 0.0), snap(2.0, 970.0, 0.0)]).unwrap();
    assert_eq!(r.findings, ["cgroup /batch memory"]);
    assert_eq!(
        r.resources[0].evidence,
        ["hit its memory limit 870 times in 2.0 s: its tasks reclaim before they allocate"]
    );
    let r = evaluate(&[snap(0.0, 100.0, 0.0), snap(2.0, 100.0, 2.0)]).unwrap();
    assert_eq!(r.resources[0].verdict, Verdict::Errors);
    assert_eq!(
        r.resources[0].evidence,
        ["2 tasks killed by the OOM killer"]
    );
}

#[test]
fn queue_names_map_to_their_resources() {
    assert_eq!(queue_resource("cpu:psi"), (Kind::Cpu, "cpu".to_string()));
    assert_eq!(queue_resource("cpu3"), (Kind::Cpu, "cpu3".to_string()));
    assert_eq!(
        queue_resource("disk_inflight:loop0"),
        (Kind::Disk, "disk loop0".to_string())
    );
    assert_eq!(
        queue_resource("cgroup_cpu:/kubepods/pod1"),
        (Kind::ContainerCpu, "cgroup /kubepods/pod1 cpu".to_string())
    );
    assert_eq!(
        queue_resource("tcp_accept:[::]:80"),
        (Kind::TcpAccept, "tcp_accept [::]:80".to_string())
    );
    assert_eq!(
        queue_resource("proxy:shop"),
        (Kind::Service, "service shop".to_string())
    );
}

/// Buckets of the timed-wait histograms these tests push: 1 ms to 16 ms.
const WAIT_BOUNDS: [f64; 6] = [0.001, 0.002, 0.004, 0.008, 0.016, f64::INFINITY];

/// The run queue's timed waits at the `n`th snapshot: 1 000 more in each
/// window, the 990th of which ends the 8 ms bucket.
fn push_run_queue_waits(s: &mut Snapshot, n: u64) {
    s.push_histogram(
        "sojourn_runqueue_wait_seconds",
        &[],
        &WAIT_BOUNDS,
        &[7 + 500 * n, 300 * n, 150 * n, 40 * n, 10 * n, 0],
    );
}

/// Where eBPF timed a queue's items, its evidence quotes what the kernel
/// measured over the window: the run queue's p99 wait, a disk's p99
/// queued and served times, and how many were timed.
#[test]
fn a_timed_queue_quotes_the_waits_the_kernel_measured() {
    let mut snaps = [host(0.0, [1.0, 1.0]), host(10.0, [1.0, 1.0])];
    for (i, s) in snaps.iter_mut().enumerate() {
        let n = i as u64;
        for (q, measure) in [
            ("cpu", "delay"),
            ("disk:vda", "delay"),
            ("tcp_accept:127.0.0.1:8080", "length"),
        ] {
            s.push(
                "sojourn_queue_info",
                &[("queue", q), ("measure", measure), ("source", "ebpf")],
                1.0,
            );
            s.push(
                "sojourn_queue_standing_seconds_total",
                &[("queue", q)],
                9.0 * i as f64,
            );
            s.push("sojourn_queue_min_delay_seconds", &[("queue", q)], 0.0031);
            s.push("sojourn_queue_target_delay_seconds", &[("queue", q)], 0.005);
        }
        push_run_queue_waits(s, n);
        s.push_histogram(
            "sojourn_disk_request_queued_seconds",
            &[("device", "vda")],
            &WAIT_BOUNDS,
            &[100 * n, 0, 0, 0, 0, 0],
        );
        s.push_histogram(
            "sojourn_tcp_accept_wait_seconds",
            &[("port", "8080"), ("netns", "")],
            &WAIT_BOUNDS,
            &[0, 0, 0, 0, 0, 20 * n],
        );
        s.push_histogram(
            "sojourn_disk_request_served_seconds",
            &[("device", "vda")],
            &WAIT_BOUNDS,
            &[0, 0, 0, 0, 100 * n, 0],
        );
    }
    let r = evaluate(&snaps).unwrap();
    let evidence: Vec<&String> = r.resources.iter().flat_map(|r| &r.evidence).collect();
    for expected in [
        "run queue standing 9.0 s of 10.0 s (90 %), min delay up to 3 ms (target 5 ms); p99 wait 8 ms of 1000 waits timed (eBPF)",
        "queue disk:vda standing 9.0 s of 10.0 s (90 %), min delay up to 3 ms (target 5 ms); p99 queued 990 µs, served 16 ms of 100 requests timed (eBPF)",
        "queue tcp_accept:127.0.0.1:8080 standing 9.0 s of 10.0 s (90 %), min length up to 0 (target 0); p99 wait for accept 16 ms of 20 connections timed (eBPF)",
    ] {
        assert!(
            evidence.iter().any(|e| e.as_str() == expected),
            "{expected:?} in {evidence:#?}"
        );
    }
}

/// A CPU whose stall (PSI) stands while its run queue's timed delay stays
/// within target (threads hogging the CPU wait a couple of slices each)
/// quotes the run queue's measured waits on the stall's line, once.
#[test]
fn a_cpu_stall_quotes_the_run_queues_timed_waits() {
    let mut snaps = [host(0.0, [1.0, 1.0]), host(10.0, [1.0, 1.0])];
    for (i, s) in snaps.iter_mut().enumerate() {
        let n = i as u64;
        s.push(
            "sojourn_queue_info",
            &[("queue", "cpu"), ("measure", "delay"), ("source", "ebpf")],
            1.0,
        );
        s.push(
            "sojourn_queue_info",
            &[
                ("queue", "cpu:psi"),
                ("measure", "share"),
                ("source", "psi"),
            ],
            1.0,
        );
        s.push(
            "sojourn_queue_standing_seconds_total",
            &[("queue", "cpu")],
            0.0,
        );
        s.push(
            "sojourn_queue_standing_seconds_total",
            &[("queue", "cpu:psi")],
            9.0 * i as f64,
        );
        s.push(
            "sojourn_queue_min_stall_ratio",
            &[("queue", "cpu:psi")],
            1.0,
        );
        s.push(
            "sojourn_queue_target_stall_ratio",
            &[("queue", "cpu:psi")],
            0.1,
        );
        push_run_queue_waits(s, n);
    }
    let r = evaluate(&snaps).unwrap();
    let evidence: Vec<&String> = r.resources.iter().flat_map(|r| &r.evidence).collect();
    let expected = "stall (PSI some) standing 9.0 s of 10.0 s (90 %), min share up to 100 % (target 10 %); run queue p99 wait 8 ms of 1000 waits timed (eBPF)";
    assert!(
        evidence.iter().any(|e| e.as_str() == expected),
        "{expected:?} in {evidence:#?}"
    );
    let quoting = evidence
        .iter()
        .filter(|e| e.contains("waits timed"))
        .count();
    assert_eq!(quoting, 1, "quoted once: {evidence:#?}");
}
