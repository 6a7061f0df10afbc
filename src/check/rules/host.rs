//! The host's own resources: CPUs, memory, disks, filesystems, and the
//! containers (cgroups) that share them.

use super::*;

pub(super) fn cpu(w: &Window, rows: &mut Rows) {
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
        let cores = w.gained(&["sojourn_cpu_core_throttles_total"]);
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

pub(super) fn memory(w: &Window, rows: &mut Rows) {
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
    let scanned = w.gained(&["sojourn_vmstat_pgscan_direct_total"]);
    let swapped = w.gained(&["sojourn_vmstat_pswpin_total"]);
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

pub(super) fn disks(w: &Window, rows: &mut Rows) {
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

pub(super) fn filesystems(w: &Window, rows: &mut Rows) {
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

pub(super) fn cgroups(w: &Window, rows: &mut Rows) {
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
