//! The rules that turn a window of snapshots into USE rows, one function per
//! resource, in USE-checklist order. Thresholds are the constants of
//! [`super`], documented in docs/check.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::snapshot::Window;
use super::{
    BUSY, FILESYSTEM_FULL, HOT_CPU, IMBALANCE_AVERAGE, Kind, NOTICE_SHARE, RETRANSMIT_RATIO,
    RETRANSMITS_MIN, Report, Row, SERVICE_ERROR_RATIO, SERVICE_MIN_REQUESTS, SOCKET_QUEUE_BYTES,
    STANDING_SHARE, Signal, TABLE_FULL, Verdict,
};

/// Rows in insertion order, one per resource name.
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    index: std::collections::HashMap<String, usize>,
}

impl Rows {
    fn row(&mut self, kind: Kind, resource: &str) -> &mut Row {
        let i = match self.index.get(resource) {
            Some(&i) => i,
            None => {
                self.rows.push(Row::new(kind, resource));
                self.index.insert(resource.to_string(), self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    fn find(&self, resource: &str) -> Option<&Row> {
        self.index.get(resource).map(|&i| &self.rows[i])
    }
}

mod who;

pub fn evaluate(w: &Window) -> Report {
    let mut rows = Rows::default();
    cpu(w, &mut rows);
    memory(w, &mut rows);
    disks(w, &mut rows);
    filesystems(w, &mut rows);
    network(w, &mut rows);
    tcp(w, &mut rows);
    tcp_ports(w, &mut rows);
    udp(w, &mut rows);
    tables(w, &mut rows);
    cgroups(w, &mut rows);
    queues(w, &mut rows);
    namespaces(w, &mut rows);
    probes(w, &mut rows);
    // Who, once the resources' verdicts are known.
    who::users(w, &mut rows);
    // Services last: a slow service names the host resources found above.
    services(w, &mut rows);
    let failures = w
        .last()
        .all("sojourn_scrape_collector_success")
        .iter()
        .filter(|s| s.value == 0.0)
        .map(|s| s.label("collector").to_string())
        .filter(|c| {
            w.last().value(
                "sojourn_scrape_collector_unsupported",
                &[("collector", c.as_str())],
            ) != Some(1.0)
        })
        .collect();
    Report::from_rows(w.seconds(), rows.rows, failures)
}

pub fn pct(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

pub fn duration(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.1} s")
    } else if seconds >= 0.001 {
        format!("{:.0} ms", seconds * 1e3)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn count(n: f64) -> String {
    format!("{n:.0}")
}

fn busy(row: &mut Row, share: f64, what: &str) {
    row.utilization = Some(Signal::new(share, pct(share)));
    if share >= BUSY {
        row.judge(Verdict::Busy, share, format!("{what} {}", pct(share)));
    }
}

/// CPU time over the window of the CPUs `want` selects: busy (neither
/// idle nor waiting on I/O), and in all.
fn cpu_time(w: &Window, want: &[(&str, &str)]) -> Option<(f64, f64)> {
    let name = "sojourn_cpu_seconds_total";
    let total = w.increase(name, want)?;
    let mode = |mode| {
        let mut with_mode = want.to_vec();
        with_mode.push(("mode", mode));
        w.increase(name, &with_mode).unwrap_or(0.0)
    };
    Some((total - mode("idle") - mode("iowait"), total))
}

/// The host's memory now: total, and in use (total less available).
fn memory_now(w: &Window) -> Option<(f64, f64)> {
    let last = w.last();
    let total = last.value("sojourn_memory_mem_total_bytes", &[])?;
    let avail = last.value("sojourn_memory_mem_available_bytes", &[])?;
    Some((total, total - avail))
}

fn cpu(w: &Window, rows: &mut Rows) {
    let name = "sojourn_cpu_seconds_total";
    let cpus: BTreeSet<String> = w
        .last()
        .all(name)
        .iter()
        .map(|s| s.label("cpu").to_string())
        .collect();
    if cpus.is_empty() {
        return;
    }
    let share_of = |cpu: &str| {
        let (busy, total) = cpu_time(w, &[("cpu", cpu)])?;
        (total > 0.0).then(|| (busy / total).clamp(0.0, 1.0))
    };
    let shares: Vec<(String, f64)> = cpus
        .iter()
        .filter_map(|c| share_of(c).map(|s| (c.clone(), s)))
        .collect();
    if shares.is_empty() {
        return;
    }
    let average = shares.iter().map(|(_, s)| s).sum::<f64>() / shares.len() as f64;
    let host = rows.row(Kind::Cpu, "cpu");
    host.headline = true;
    busy(host, average, &format!("all {} CPUs busy", shares.len()));
    if let Some(t) = w.increase("sojourn_cpu_package_throttles_total", &[]) {
        let cores = w
            .increase("sojourn_cpu_core_throttles_total", &[])
            .unwrap_or(0.0);
        if t + cores > 0.0 {
            host.errors = Some(Signal::new(t + cores, count(t + cores)));
            host.judge(
                Verdict::Errors,
                t + cores,
                format!("{} thermal throttling events", count(t + cores)),
            );
        }
    }
    for (cpu, share) in &shares {
        let row = rows.row(Kind::Cpu, &format!("cpu{cpu}"));
        row.utilization = Some(Signal::new(*share, pct(*share)));
        let n = shares.len() as f64;
        let others = (average * n - share) / (n - 1.0).max(1.0);
        if shares.len() > 1 && *share >= HOT_CPU && others <= IMBALANCE_AVERAGE {
            row.judge(
                Verdict::Saturated,
                *share,
                format!(
                    "cpu{cpu} busy {} while the other {} average {}: one hot thread, or work pinned to this CPU",
                    pct(*share),
                    if shares.len() == 2 { "CPU".to_string() } else { format!("{} CPUs", shares.len() - 1) },
                    pct(others)
                ),
            );
        }
    }
}

fn memory(w: &Window, rows: &mut Rows) {
    let Some((total, in_use)) = memory_now(w) else {
        return;
    };
    let row = rows.row(Kind::Memory, "memory");
    row.headline = true;
    if total > 0.0 {
        let used = (in_use / total).clamp(0.0, 1.0);
        busy(
            row,
            used,
            &format!("{} of {} in use", bytes(in_use), bytes(total)),
        );
    }
    let scanned = w
        .increase("sojourn_vmstat_pgscan_direct_total", &[])
        .unwrap_or(0.0);
    let swapped = w
        .increase("sojourn_vmstat_pswpin_total", &[])
        .unwrap_or(0.0);
    if scanned > 0.0 || swapped > 0.0 {
        row.saturation = Some(Signal::new(
            scanned + swapped,
            format!("{} pages reclaimed directly", count(scanned)),
        ));
        row.evidence.push(format!(
            "{} pages scanned by direct reclaim, {} pages swapped in",
            count(scanned),
            count(swapped)
        ));
    }
    if let Some(k) = w
        .increase("sojourn_vmstat_oom_kill_total", &[])
        .filter(|k| *k > 0.0)
    {
        row.errors = Some(Signal::new(k, format!("{} OOM kills", count(k))));
        row.judge(
            Verdict::Errors,
            k,
            format!("{} processes killed by the OOM killer", count(k)),
        );
    }
}

fn disks(w: &Window, rows: &mut Rows) {
    for s in w.last().all("sojourn_disk_io_time_seconds_total") {
        let dev = s.label("device");
        let row = rows.row(Kind::Disk, &format!("disk {dev}"));
        row.headline = true;
        if let Some(share) = w.rate("sojourn_disk_io_time_seconds_total", &[("device", dev)]) {
            busy(row, share.clamp(0.0, 1.0), "I/O in flight");
        }
        if let Some(e) = w
            .increase("sojourn_disk_io_errors_total", &[("device", dev)])
            .filter(|e| *e > 0.0)
        {
            row.errors = Some(Signal::new(e, count(e)));
            row.judge(Verdict::Errors, e, format!("{} I/O errors", count(e)));
        }
    }
}

fn filesystems(w: &Window, rows: &mut Rows) {
    let last = w.last();
    for s in last.all("sojourn_filesystem_size_bytes") {
        let mp = s.label("mountpoint");
        let want = [("mountpoint", mp)];
        let row = rows.row(Kind::Filesystem, &format!("filesystem {mp}"));
        row.headline = true;
        let avail = last.value("sojourn_filesystem_avail_bytes", &want);
        let free = last.value("sojourn_filesystem_free_bytes", &want);
        // As df: the blocks reserved for root count as neither used nor
        // available.
        if let (Some(avail), Some(free)) = (avail, free)
            && s.value - free + avail > 0.0
        {
            let used = ((s.value - free) / (s.value - free + avail)).clamp(0.0, 1.0);
            row.utilization = Some(Signal::new(used, pct(used)));
            if used >= FILESYSTEM_FULL {
                row.judge(
                    Verdict::Saturated,
                    used,
                    format!(
                        "{} used, {} left for unprivileged writers",
                        pct(used),
                        bytes(avail)
                    ),
                );
            } else if used >= BUSY {
                row.judge(Verdict::Busy, used, format!("{} used", pct(used)));
            }
        }
        if let (Some(files), Some(free)) = (
            last.value("sojourn_filesystem_files", &want),
            last.value("sojourn_filesystem_files_free", &want),
        ) && files > 0.0
            && 1.0 - free / files >= FILESYSTEM_FULL
        {
            row.judge(
                Verdict::Saturated,
                1.0 - free / files,
                format!("{} of inodes used", pct(1.0 - free / files)),
            );
        }
        // A read-only mount is often meant to be: only an error once it
        // was writable when the window began.
        let went_readonly = last.value("sojourn_filesystem_readonly", &want) == Some(1.0)
            && w.first().value("sojourn_filesystem_readonly", &want) != Some(1.0);
        let failures = [
            (went_readonly, "mounted read-only"),
            (
                last.value("sojourn_filesystem_device_error", &want) == Some(1.0),
                "statvfs failed",
            ),
            (
                last.value("sojourn_filesystem_stale", &want) == Some(1.0),
                "statvfs did not answer (stale mount)",
            ),
        ];
        for (failed, what) in failures {
            if failed {
                row.errors = Some(Signal::new(1.0, what));
                row.judge(Verdict::Errors, 1.0, what);
            }
        }
    }
}

fn network(w: &Window, rows: &mut Rows) {
    let last = w.last();
    for s in last.all("sojourn_network_receive_bytes_total") {
        let dev = s.label("device");
        let want = [("device", dev)];
        let inc = |n: &str| w.increase(n, &want).unwrap_or(0.0);
        let row = rows.row(Kind::Network, &format!("network {dev}"));
        row.headline = dev != "lo";
        if let Some(speed) = last
            .value("sojourn_network_speed_bytes", &want)
            .filter(|s| *s > 0.0)
        {
            let rx = inc("sojourn_network_receive_bytes_total") / w.seconds();
            let tx = inc("sojourn_network_transmit_bytes_total") / w.seconds();
            busy(row, (rx.max(tx) / speed).clamp(0.0, 1.0), "link used");
        }
        let packets = inc("sojourn_network_receive_packets_total")
            + inc("sojourn_network_transmit_packets_total");
        let drops = inc("sojourn_network_receive_drop_total")
            + inc("sojourn_network_receive_fifo_total")
            + inc("sojourn_network_transmit_drop_total")
            + inc("sojourn_network_transmit_fifo_total");
        if drops > 0.0 {
            row.saturation = Some(Signal::new(drops, format!("{} drops", count(drops))));
            // Some drivers count frames of unknown protocols as receive
            // drops, a trickle on an idle link: only a share of traffic counts.
            let share = drops / (packets + drops);
            if drops >= 10.0 && share >= 0.01 {
                row.judge(
                    Verdict::Saturated,
                    share,
                    format!(
                        "{} packets dropped ({} of packets): queue or ring full",
                        count(drops),
                        pct(share)
                    ),
                );
            }
        }
        let errors = inc("sojourn_network_receive_errs_total")
            + inc("sojourn_network_receive_frame_total")
            + inc("sojourn_network_transmit_errs_total")
            + inc("sojourn_network_transmit_carrier_total")
            + inc("sojourn_network_transmit_colls_total");
        if errors > 0.0 {
            row.errors = Some(Signal::new(errors, count(errors)));
            row.judge(
                Verdict::Errors,
                errors,
                format!("{} interface errors", count(errors)),
            );
        }
        if last.value("sojourn_network_up", &want) == Some(0.0)
            && w.first().value("sojourn_network_up", &want) == Some(1.0)
        {
            row.judge(Verdict::Errors, 1.0, "went down during the window");
        }
    }
    let dropped = w
        .increase("sojourn_softnet_dropped_total", &[])
        .unwrap_or(0.0);
    if dropped > 0.0 {
        let row = rows.row(Kind::Network, "network softnet backlog");
        row.saturation = Some(Signal::new(dropped, format!("{} drops", count(dropped))));
        row.judge(
            Verdict::Saturated,
            dropped,
            format!(
                "{} packets dropped: a CPU's input backlog was full",
                count(dropped)
            ),
        );
    }
}

fn tcp(w: &Window, rows: &mut Rows) {
    let Some(out) = w.increase("sojourn_netstat_tcp_out_segs_total", &[]) else {
        return;
    };
    let row = rows.row(Kind::Tcp, "tcp");
    row.headline = true;
    if let Some(estab) = w.last().value("sojourn_netstat_tcp_curr_estab", &[]) {
        row.evidence
            .push(format!("{} connections established", count(estab)));
    }
    let retrans = w
        .increase("sojourn_netstat_tcp_retrans_segs_total", &[])
        .unwrap_or(0.0);
    // A SYN to a full listener is retransmitted too: that is the accept
    // queue's saturation, not the path's loss.
    let syn = w
        .increase("sojourn_netstat_tcpext_tcp_syn_retrans_total", &[])
        .unwrap_or(0.0);
    let data = (retrans - syn).max(0.0);
    if out > 0.0 {
        let ratio = data / out;
        row.errors = Some(Signal::new(ratio, format!("{} retransmitted", pct(ratio))));
        if lossy(data, out).is_some() {
            row.judge(
                Verdict::Errors,
                ratio,
                format!(
                    "{} of {} segments retransmitted ({}): loss on the path or a peer not acknowledging",
                    count(data),
                    count(out),
                    pct(ratio)
                ),
            );
        }
    }
    let timeouts = w
        .increase("sojourn_netstat_tcpext_tcp_timeouts_total", &[])
        .unwrap_or(0.0);
    if timeouts > 0.0 && row.verdict == Verdict::Errors {
        row.evidence
            .push(format!("{} retransmission timeouts", count(timeouts)));
    }
    let drops = w
        .increase("sojourn_netstat_tcpext_tcp_backlog_drop_total", &[])
        .unwrap_or(0.0)
        + w.increase("sojourn_netstat_tcpext_tcp_rcv_q_drop_total", &[])
            .unwrap_or(0.0);
    if drops > 0.0 {
        row.saturation = Some(Signal::new(drops, format!("{} drops", count(drops))));
        row.judge(
            Verdict::Saturated,
            drops,
            format!(
                "{} segments dropped: socket backlog or receive queue full",
                count(drops)
            ),
        );
    }
}

fn tcp_ports(w: &Window, rows: &mut Rows) {
    // Enough snapshots to call a queue standing rather than caught once.
    let needed = w.snapshots().len().min(3);
    for s in w.last().all("sojourn_tcp_port_connections") {
        let port = s.label("port");
        let netns = s.label("netns");
        let want = [("port", port), ("netns", netns)];
        // A port in another namespace is its pod's.
        let name = match netns {
            "" => format!("tcp_port {port}"),
            "other" => format!("tcp_port {port} (pods' ports past the cap)"),
            _ => format!("tcp_port {port} of {}", namespace_owner(s)),
        };
        for (gauge, largest, what, why) in [
            (
                "sojourn_tcp_port_receive_queue_bytes",
                "sojourn_tcp_port_receive_queue_max_bytes",
                "receive queue",
                "the application is not reading as fast as data arrives",
            ),
            (
                "sojourn_tcp_port_send_queue_bytes",
                "sojourn_tcp_port_send_queue_max_bytes",
                "send queue",
                "peers or the path are not taking data as fast as it is written",
            ),
        ] {
            if w.seen(gauge, &want) < needed {
                continue;
            }
            let Some(stood) = w.min(gauge, &want).filter(|b| *b >= SOCKET_QUEUE_BYTES) else {
                continue;
            };
            let row = rows.row(Kind::TcpPort, &name);
            row.saturation = Some(Signal::new(stood, format!("{what} {}", bytes(stood))));
            row.judge(
                Verdict::Saturated,
                1.0,
                format!(
                    "{what} stood at ≥ {} for {} over {} connections (largest {}): {why}",
                    bytes(stood),
                    duration(w.seconds()),
                    count(s.value),
                    bytes(w.last().value(largest, &want).unwrap_or(stood)),
                ),
            );
        }
    }
}

fn udp(w: &Window, rows: &mut Rows) {
    let rcv = w.increase("sojourn_netstat_udp_rcvbuf_errors_total", &[]);
    let Some(rcv) = rcv else { return };
    let row = rows.row(Kind::Udp, "udp");
    let full = rcv
        + w.increase("sojourn_netstat_udp_sndbuf_errors_total", &[])
            .unwrap_or(0.0)
        + w.increase("sojourn_netstat_udp6_rcvbuf_errors_total", &[])
            .unwrap_or(0.0)
        + w.increase("sojourn_netstat_udp6_sndbuf_errors_total", &[])
            .unwrap_or(0.0);
    if full > 0.0 {
        row.saturation = Some(Signal::new(full, format!("{} drops", count(full))));
        row.judge(
            Verdict::Saturated,
            full,
            format!(
                "{} datagrams dropped: a socket buffer was full",
                count(full)
            ),
        );
    }
    let csum = w
        .increase("sojourn_netstat_udp_in_csum_errors_total", &[])
        .unwrap_or(0.0)
        + w.increase("sojourn_netstat_udp6_in_csum_errors_total", &[])
            .unwrap_or(0.0);
    if csum > 0.0 {
        row.errors = Some(Signal::new(csum, count(csum)));
        row.judge(
            Verdict::Errors,
            csum,
            format!("{} datagrams with a bad checksum", count(csum)),
        );
    }
}

fn tables(w: &Window, rows: &mut Rows) {
    let last = w.last();
    for (kind, name, used, limit, what) in [
        (
            Kind::Fd,
            "file descriptors",
            "sojourn_filefd_allocated",
            "sojourn_filefd_maximum",
            "file handles allocated",
        ),
        (
            Kind::Conntrack,
            "conntrack",
            "sojourn_nf_conntrack_entries",
            "sojourn_nf_conntrack_entries_limit",
            "connection-tracking entries",
        ),
    ] {
        let (Some(u), Some(l)) = (last.value(used, &[]), last.value(limit, &[])) else {
            continue;
        };
        let row = rows.row(kind, name);
        row.headline = true;
        if l > 0.0 {
            let share = (u / l).clamp(0.0, 1.0);
            row.utilization = Some(Signal::new(share, pct(share)));
            if share >= TABLE_FULL {
                row.judge(
                    Verdict::Saturated,
                    share,
                    format!("{} of {} {what}", count(u), count(l)),
                );
            }
        }
    }
    let failed: f64 = ["drop", "early_drop", "insert_failed"]
        .iter()
        .filter_map(|e| w.increase("sojourn_nf_conntrack_events_total", &[("event", e)]))
        .sum();
    if failed > 0.0 {
        let row = rows.row(Kind::Conntrack, "conntrack");
        row.errors = Some(Signal::new(failed, count(failed)));
        row.judge(
            Verdict::Errors,
            failed,
            format!(
                "{} flows dropped or not inserted: the table is full",
                count(failed)
            ),
        );
    }
}

fn cgroups(w: &Window, rows: &mut Rows) {
    // Each family is read once into a map by cgroup: hundreds of cgroups
    // must not mean hundreds of scans of every family.
    let last = w.last();
    let cg = "cgroup";
    let limits = last.sum_by("sojourn_cgroup_memory_limit_bytes", cg, &[]);
    let working_sets = last.sum_by("sojourn_cgroup_memory_working_set_bytes", cg, &[]);
    let events = |e: &[&str]| {
        let mut sum: std::collections::HashMap<String, f64> = Default::default();
        for e in e {
            for (k, v) in w.increase_by("sojourn_cgroup_memory_events_total", cg, &[("event", e)]) {
                *sum.entry(k).or_default() += v;
            }
        }
        sum
    };
    let hits = events(&["max", "high"]);
    let kills = events(&["oom_kill", "oom"]);
    let stalls = w.increase_by(
        "sojourn_cgroup_pressure_stalled_seconds_total",
        cg,
        &[("resource", "memory"), ("kind", "some")],
    );
    let scans = w.increase_by("sojourn_cgroup_memory_pages_scanned_total", cg, &[]);
    for s in last.all("sojourn_cgroup_memory_usage_bytes") {
        let name = s.label(cg);
        let limit = limits.get(name).copied();
        let working = working_sets.get(name).copied().unwrap_or(s.value);
        let hit = hits.get(name).copied().unwrap_or(0.0);
        let killed = kills.get(name).copied().unwrap_or(0.0);
        let stalled = stalls.get(name).copied().unwrap_or(0.0) / w.seconds();
        let used = limit
            .filter(|l| *l > 0.0)
            .map(|l| (working / l).clamp(0.0, 1.0));
        if hit == 0.0 && killed == 0.0 && stalled < NOTICE_SHARE && used.is_none_or(|u| u < BUSY) {
            continue;
        }
        let row = rows.row(Kind::ContainerMemory, &format!("cgroup {name} memory"));
        if let (Some(u), Some(l)) = (used, limit) {
            busy(
                row,
                u,
                &format!("{} of its {} limit in use", bytes(working), bytes(l)),
            );
        }
        if hit > 0.0 {
            let scanned = scans
                .get(name)
                .map(|p| format!(", {} pages scanned", count(*p)))
                .unwrap_or_default();
            row.saturation = Some(Signal::new(hit, format!("limit hit {} times", count(hit))));
            row.judge(
                Verdict::Saturated,
                1.0,
                format!(
                    "hit its memory limit {} times in {}{scanned}: its tasks reclaim before they allocate",
                    count(hit),
                    duration(w.seconds())
                ),
            );
        }
        if stalled >= NOTICE_SHARE {
            row.judge(
                if stalled >= STANDING_SHARE {
                    Verdict::Saturated
                } else {
                    row.verdict
                },
                stalled,
                format!("some task stalled on memory {} of the time", pct(stalled)),
            );
        }
        if killed > 0.0 {
            row.errors = Some(Signal::new(killed, format!("{} OOM kills", count(killed))));
            row.judge(
                Verdict::Errors,
                killed,
                format!("{} tasks killed by the OOM killer", count(killed)),
            );
        }
    }
    let periods_by = last.sum_by("sojourn_cgroup_cpu_period_seconds", cg, &[]);
    let usages = w.increase_by("sojourn_cgroup_cpu_usage_seconds_total", cg, &[]);
    let all_periods = w.increase_by("sojourn_cgroup_cpu_periods_total", cg, &[]);
    let throttled_by = w.increase_by("sojourn_cgroup_cpu_throttled_periods_total", cg, &[]);
    for s in last.all("sojourn_cgroup_cpu_quota_seconds") {
        let name = s.label(cg);
        let (Some(&period), Some(&used)) = (periods_by.get(name), usages.get(name)) else {
            continue;
        };
        if period <= 0.0 || s.value <= 0.0 {
            continue;
        }
        let cores = s.value / period;
        let share = (used / w.seconds() / cores).clamp(0.0, 1.0);
        let periods = all_periods.get(name).copied().unwrap_or(0.0);
        let throttled = throttled_by.get(name).copied().unwrap_or(0.0);
        if share < BUSY && throttled == 0.0 {
            continue;
        }
        let row = rows.row(Kind::ContainerCpu, &format!("cgroup {name} cpu"));
        row.utilization = Some(Signal::new(
            share,
            format!("{} of {:.2} cores", pct(share), cores),
        ));
        if periods > 0.0 && throttled > 0.0 {
            // The kernel's own count, seen from the first two scrapes; the
            // cgroup_cpu queue (its delay per period) joins once the
            // sampler lists the cgroup (every 10 s).
            let share = throttled / periods;
            let line = format!(
                "throttled in {} of {} CFS periods ({}): the quota of {:.2} cores runs out",
                count(throttled),
                count(periods),
                pct(share),
                cores
            );
            if share >= STANDING_SHARE {
                row.saturation = Some(Signal::new(share, format!("throttled {}", pct(share))));
                row.judge(Verdict::Saturated, share, line);
            } else {
                row.evidence.push(line);
            }
        }
    }
}

/// Splits a queue name into the kind and name of the resource it belongs to.
pub fn queue_resource(queue: &str) -> (Kind, String) {
    use crate::queue::name::QueueName;
    let Ok(name) = queue.parse::<QueueName>();
    match name {
        QueueName::Cpu => (Kind::Cpu, "cpu".into()),
        QueueName::CpuOne(_) => (Kind::Cpu, queue.into()),
        QueueName::Psi(r) => match r.as_str() {
            "cpu" => (Kind::Cpu, "cpu".into()),
            "memory" => (Kind::Memory, "memory".into()),
            "io" => (Kind::Disk, "disk io (all devices)".into()),
            _ => (Kind::Queue, format!("queue {queue}")),
        },
        QueueName::Disk(d) | QueueName::DiskInflight(d) => (Kind::Disk, format!("disk {d}")),
        QueueName::CgroupCpu(c) => (Kind::ContainerCpu, format!("cgroup {c} cpu")),
        QueueName::TcpAccept(a) => (Kind::TcpAccept, format!("tcp_accept {a}")),
        QueueName::Proxy(s) => (Kind::Service, format!("service {s}")),
        QueueName::Other(_) => (Kind::Queue, format!("queue {queue}")),
    }
}

fn queues(w: &Window, rows: &mut Rows) {
    let last = w.last();
    let host_overflows = w
        .increase("sojourn_netstat_tcpext_listen_overflows_total", &[])
        .unwrap_or(0.0);
    let mut overflow_named = false;
    // (queue, measure, netns, whose): a listener in another namespace (a
    // pod's) is named by its owner, as the netns collector's rows are.
    let infos: Vec<(String, String, String, Option<String>)> = last
        .all("sojourn_queue_info")
        .iter()
        .map(|s| {
            let netns = s.label("netns").to_string();
            let whose = (!netns.is_empty()).then(|| namespace_owner(s));
            (
                s.label("queue").to_string(),
                s.label("measure").to_string(),
                netns,
                whose,
            )
        })
        .collect();
    for (queue, measure, netns, whose) in infos {
        let want = [("queue", queue.as_str()), ("netns", netns.as_str())];
        let standing = w
            .increase("sojourn_queue_standing_seconds_total", &want)
            .unwrap_or(0.0);
        let share = (standing / w.seconds()).clamp(0.0, 1.0);
        let (kind, mut resource) = queue_resource(&queue);
        let overflows = match &whose {
            None => host_overflows,
            Some(_) => w
                .increase(
                    "sojourn_netns_tcp_listen_overflows_total",
                    &[("netns", netns.as_str())],
                )
                .unwrap_or(0.0),
        };
        if share < NOTICE_SHARE && !(kind == Kind::TcpAccept && overflows > 0.0 && share > 0.0) {
            continue;
        }
        let (gauge, target, show): (&str, &str, fn(f64) -> String) = match measure.as_str() {
            "delay" => (
                "sojourn_queue_min_delay_seconds",
                "sojourn_queue_target_delay_seconds",
                duration,
            ),
            "share" => (
                "sojourn_queue_min_stall_ratio",
                "sojourn_queue_target_stall_ratio",
                pct,
            ),
            _ => (
                "sojourn_queue_min_length",
                "sojourn_queue_target_length",
                count,
            ),
        };
        let worst = w.max(gauge, &want).unwrap_or(0.0);
        let target = last.value(target, &want).unwrap_or(0.0);
        let what = match (queue.as_str(), &whose) {
            ("cpu", _) => "run queue".to_string(),
            ("cpu:psi" | "memory:psi" | "io:psi", _) => "stall (PSI some)".to_string(),
            (q, Some(_)) => format!(
                "accept queue {}",
                q.strip_prefix("tcp_accept:").unwrap_or(q)
            ),
            (q, None) => format!("queue {q}"),
        };
        let mut line = format!(
            "{what} standing {} of {} ({}), min {measure} up to {} (target {})",
            duration(standing),
            duration(w.seconds()),
            pct(share),
            show(worst),
            show(target)
        );
        if let Some(limit) = last.value("sojourn_queue_limit", &want) {
            line.push_str(&format!(", backlog {}", count(limit)));
        }
        if kind == Kind::TcpAccept && overflows > 0.0 {
            match &whose {
                None => {
                    line.push_str(&format!(
                        "; {} connections dropped by full accept queues on this host",
                        count(overflows)
                    ));
                    overflow_named = true;
                }
                Some(owner) => line.push_str(&format!(
                    "; {} connections dropped by full accept queues in {owner}",
                    count(overflows)
                )),
            }
        }
        if let Some(owner) = &whose {
            // One row per pod: its listeners' queues and its overflows.
            resource = format!("tcp_accept of {owner}");
        }
        let row = rows.row(kind, &resource);
        let prior = row.saturation.as_ref().map_or(0.0, |s| s.value);
        if share >= prior {
            row.saturation = Some(Signal::new(share, format!("standing {}", pct(share))));
        }
        let saturated = share >= STANDING_SHARE || (kind == Kind::TcpAccept && overflows > 0.0);
        row.judge(
            if saturated {
                Verdict::Saturated
            } else {
                Verdict::Ok
            },
            share,
            line,
        );
    }
    if host_overflows > 0.0 && !overflow_named {
        overflowed(
            rows,
            "tcp_accept (all listeners)",
            host_overflows,
            "a listener's accept queue was full (it did not stand at 10 ms samples: bursts)",
        );
    }
}

/// Listen overflows: connections turned away, a saturation finding of
/// their own.
fn overflowed(rows: &mut Rows, resource: &str, overflows: f64, why: &str) {
    let row = rows.row(Kind::TcpAccept, resource);
    row.saturation = Some(Signal::new(
        overflows,
        format!("{} overflows", count(overflows)),
    ));
    row.judge(
        Verdict::Saturated,
        1.0,
        format!("{} connections dropped: {why}", count(overflows)),
    );
}

/// The retransmitted share of sent segments when it is a finding: at
/// least [`RETRANSMITS_MIN`] segments and [`RETRANSMIT_RATIO`] of those sent.
fn lossy(retransmitted: f64, sent: f64) -> Option<f64> {
    let ratio = retransmitted / sent;
    (sent > 0.0 && retransmitted >= RETRANSMITS_MIN && ratio >= RETRANSMIT_RATIO).then_some(ratio)
}

/// Whose a network namespace is, as a finding says it: the pod's
/// namespace and name (with the kubelet's list) or uid, or the process
/// sojourn reads it through.
fn namespace_owner(s: &crate::check::snapshot::Series) -> String {
    match (s.label("pod_uid"), s.label("pod")) {
        ("", _) => format!(
            "{}'s network namespace ({})",
            s.label("process"),
            s.label("netns")
        ),
        (uid, "") => format!("pod {uid}"),
        (_, pod) => format!("pod {}/{pod}", s.label("namespace")),
    }
}

/// Each workload's network namespace (a pod's): listeners overflowing and
/// retransmits, attributed to the pod.
fn namespaces(w: &Window, rows: &mut Rows) {
    for s in w.last().all("sojourn_netns_tcp_listen_overflows_total") {
        let netns = s.label("netns");
        let want = [("netns", netns)];
        let owner = namespace_owner(s);
        let overflows = w
            .increase("sojourn_netns_tcp_listen_overflows_total", &want)
            .unwrap_or(0.0);
        if overflows > 0.0 {
            overflowed(
                rows,
                &format!("tcp_accept of {owner}"),
                overflows,
                &format!("full accept queues in {owner}: its server does not accept() fast enough"),
            );
        }
        let out = w
            .increase("sojourn_netns_tcp_segments_sent_total", &want)
            .unwrap_or(0.0);
        let retrans = w
            .increase("sojourn_netns_tcp_retransmitted_segments_total", &want)
            .unwrap_or(0.0);
        if let Some(ratio) = lossy(retrans, out) {
            let row = rows.row(Kind::Tcp, &format!("tcp of {owner}"));
            row.errors = Some(Signal::new(ratio, format!("{} retransmitted", pct(ratio))));
            row.judge(
                Verdict::Errors,
                ratio,
                format!(
                    "{} of {} segments retransmitted in {owner} ({}): loss on its path or a peer not acknowledging",
                    count(retrans),
                    count(out),
                    pct(ratio)
                ),
            );
        }
    }
}

fn probes(w: &Window, rows: &mut Rows) {
    for s in w.last().all("sojourn_probe_attempts_total") {
        let probe = s.label("probe");
        let want = [("probe", probe)];
        let attempts = w
            .increase("sojourn_probe_attempts_total", &want)
            .unwrap_or(0.0);
        let row = rows.row(Kind::Probe, &format!("probe {probe}"));
        row.headline = true;
        let mut reasons = BTreeMap::new();
        for f in w.last().all("sojourn_probe_failures_total") {
            if f.label("probe") != probe {
                continue;
            }
            let reason = f.label("reason");
            let n = w
                .increase(
                    "sojourn_probe_failures_total",
                    &[("probe", probe), ("reason", reason)],
                )
                .unwrap_or(0.0);
            if n > 0.0 {
                reasons.insert(reason.to_string(), n);
            }
        }
        let failed: f64 = reasons.values().sum();
        if failed > 0.0 {
            let why: Vec<String> = reasons
                .iter()
                .map(|(r, n)| format!("{} {r}", count(*n)))
                .collect();
            row.errors = Some(Signal::new(failed, format!("{} failed", count(failed))));
            row.judge(
                Verdict::Errors,
                failed / attempts.max(failed),
                format!(
                    "{} of {} probes failed: {}",
                    count(failed),
                    count(attempts.max(failed)),
                    why.join(", ")
                ),
            );
        } else if w.last().value("sojourn_probe_success", &want) == Some(0.0) {
            row.judge(Verdict::Errors, 1.0, "the last probe failed");
        }
    }
}

fn services(w: &Window, rows: &mut Rows) {
    let hist = "http_server_request_duration_seconds";
    let names: BTreeSet<String> = w
        .last()
        .all(hist)
        .iter()
        .map(|s| s.label("service").to_string())
        .chain(
            w.last()
                .all("sojourn_proxy_active_requests")
                .iter()
                .map(|s| s.label("service").to_string()),
        )
        .collect();
    let host_findings: Vec<String> = rows
        .rows
        .iter()
        .filter(|r| r.verdict.is_finding() && r.kind != Kind::Service && r.kind != Kind::Probe)
        .map(|r| r.resource.clone())
        .collect();
    for svc in names {
        let want = [("service", svc.as_str())];
        let resource = format!("service {svc}");
        let target = w
            .last()
            .value("sojourn_proxy_latency_target_seconds", &want)
            .unwrap_or(0.5);
        let all = w.histogram_increase(hist, &want);
        let requests = all.as_ref().map_or(0, |b| b.total());
        let row = rows.row(Kind::Service, &resource);
        row.headline = true;
        let rate = requests as f64 / w.seconds();
        row.utilization = Some(Signal::new(rate, format!("{rate:.1} req/s")));
        if let Some(inflight) = w.last().value("sojourn_proxy_active_requests", &want) {
            row.evidence.push(format!(
                "{} requests in {}, {} in flight",
                requests,
                duration(w.seconds()),
                count(inflight)
            ));
        }
        let p99 = all.as_ref().and_then(|b| b.quantile(0.99));
        if let Some(p99) = p99.filter(|_| requests >= SERVICE_MIN_REQUESTS)
            && p99 > target
        {
            let ttfb = w
                .histogram_increase("sojourn_proxy_time_to_first_byte_seconds", &want)
                .and_then(|b| b.quantile(0.99));
            let mut line = format!(
                "p99 {} over the {} target ({} requests)",
                duration(p99),
                duration(target),
                requests
            );
            if let Some(t) = ttfb {
                line.push_str(&format!(
                    "; time to the upstream's first byte p99 {}",
                    duration(t)
                ));
            }
            let queued = rows
                .find(&resource)
                .is_some_and(|r| r.verdict == Verdict::Saturated);
            if queued {
                line.push_str("; requests wait in the proxy's own queue");
            } else if host_findings.is_empty() {
                line.push_str(
                    "; no resource on this host is saturated: the time is spent upstream",
                );
            } else {
                line.push_str(&format!(
                    "; while {} on this host",
                    host_findings.join(", ")
                ));
            }
            let row = rows.row(Kind::Service, &resource);
            row.judge(Verdict::Slow, p99 / target, line);
        }
        let row = rows.row(Kind::Service, &resource);
        let errors: f64 = w
            .last()
            .all(hist)
            .iter()
            .filter(|s| {
                s.label("service") == svc && s.label("http_response_status_code").starts_with('5')
            })
            .filter_map(|s| {
                let labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                w.increase(hist, &labels)
            })
            .sum();
        let upstream = w
            .increase("sojourn_proxy_upstream_errors_total", &want)
            .unwrap_or(0.0);
        if requests > 0 {
            let ratio = errors / requests as f64;
            row.errors = Some(Signal::new(ratio, format!("{} 5xx", pct(ratio))));
            if ratio >= SERVICE_ERROR_RATIO {
                row.judge(
                    Verdict::Errors,
                    ratio,
                    format!(
                        "{} of {requests} requests answered 5xx ({})",
                        count(errors),
                        pct(ratio)
                    ),
                );
            }
        }
        if upstream > 0.0 {
            row.evidence.push(format!(
                "{} upstream connect, timeout or reset errors",
                count(upstream)
            ));
        }
        let shed = w
            .increase("sojourn_proxy_requests_shed_total", &want)
            .unwrap_or(0.0);
        if shed > 0.0 {
            row.judge(
                Verdict::Saturated,
                1.0,
                format!(
                    "{} requests shed (503) by CoDel: the request queue stood",
                    count(shed)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
