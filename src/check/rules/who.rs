//! The USE method's next question under a saturated resource: who. Who
//! uses it (CPU time, working set, bytes moved, by cgroup and process
//! group) and who waits on it (cgroup pressure), as `who:` and
//! `stalled:` lines of the row's evidence.

use super::*;

/// Most users named under a saturated resource.
const USERS: usize = 3;
/// Least share of the resource's use for a user to be named.
const USER_SHARE: f64 = 0.02;

/// How a cgroup is named in a `who:` line: with its pod's namespace and
/// name where the kubelet gave them, else its pod's uid, else its path.
fn cgroup_names<'w>(w: &'w Window, metric: &str) -> HashMap<&'w str, String> {
    w.last()
        .all(metric)
        .iter()
        .map(|s| {
            let cgroup = s.label("cgroup");
            let named = match (s.label("namespace"), s.label("pod"), s.label("pod_uid")) {
                (ns, pod, _) if !pod.is_empty() => format!("cgroup {cgroup} (pod {ns}/{pod})"),
                (_, _, uid) if !uid.is_empty() => format!("cgroup {cgroup} (pod {uid})"),
                _ => format!("cgroup {cgroup}"),
            };
            (cgroup, named)
        })
        .collect()
}

/// What each cgroup's series of `cgroup_metric` (those matching `want`)
/// gained over the window, and with `processes` each process group's of
/// that metric, named for a `who:` or `stalled:` line.
fn increases(
    w: &Window,
    cgroup_metric: &str,
    want: &[(&str, &str)],
    processes: Option<&str>,
) -> Vec<(String, f64)> {
    let names = cgroup_names(w, cgroup_metric);
    w.increase_by(cgroup_metric, "cgroup", want)
        .into_iter()
        .map(|(cgroup, gain)| {
            let named = names
                .get(cgroup.as_str())
                .cloned()
                .unwrap_or_else(|| format!("cgroup {cgroup}"));
            (named, gain)
        })
        .chain(processes.into_iter().flat_map(|metric| {
            w.increase_by(metric, "group", &[])
                .into_iter()
                .map(|(group, gain)| (format!("processes {group}"), gain))
        }))
        .collect()
}

/// Adds the USE method's next answer under a saturated row, as a
/// `heading:` line of its evidence (`who:` for who uses it, `stalled:` for
/// who waits on it): the users that took most of `total` (the resource's
/// use over the window), at least [`USER_SHARE`] each, at most [`USERS`],
/// most first, each with its amount (`show`) and its share.
#[allow(clippy::too_many_arguments)]
fn name_top(
    rows: &mut Rows,
    kind: Kind,
    resource: &str,
    heading: &str,
    mut users: Vec<(String, f64)>,
    total: f64,
    show: impl Fn(f64) -> String,
    of_what: &str,
) {
    if total <= 0.0 {
        return;
    }
    users.retain(|(_, used)| *used / total >= USER_SHARE);
    if users.is_empty() {
        return;
    }
    users.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    users.truncate(USERS);
    let named: Vec<String> = users
        .iter()
        .map(|(who, used)| format!("{who} {} ({})", show(*used), pct((used / total).min(1.0))))
        .collect();
    rows.row(kind, resource)
        .evidence
        .push(format!("{heading}: {} of {of_what}", named.join(", ")));
}

fn saturated(rows: &Rows, resource: &str) -> bool {
    rows.find(resource)
        .is_some_and(|r| r.verdict == Verdict::Saturated)
}

/// Who, under each saturated resource the kernel can attribute: CPU time,
/// memory and disk bytes by cgroup (containers, pods, services) and, with
/// the process collector, by process group.
pub(super) fn users(w: &Window, rows: &mut Rows) {
    cpu_users(w, rows);
    memory_users(w, rows);
    disk_users(w, rows);
    for (kind, resource, psi) in [
        (Kind::Cpu, "cpu", "cpu"),
        (Kind::Memory, "memory", "memory"),
        (Kind::Disk, "disk io (all devices)", "io"),
    ] {
        stalled(w, rows, kind, resource, psi);
    }
}

/// Under a saturated resource, the cgroups whose tasks waited on it the
/// longest (cgroup v2 pressure, `some`: time in which at least one of
/// their tasks stalled), as a `stalled:` line: who suffers, beside who
/// uses.
fn stalled(w: &Window, rows: &mut Rows, kind: Kind, resource: &str, psi: &str) {
    if !saturated(rows, resource) {
        return;
    }
    let waits = increases(
        w,
        "sojourn_cgroup_pressure_stalled_seconds_total",
        &[("resource", psi), ("kind", "some")],
        None,
    );
    name_top(
        rows,
        kind,
        resource,
        "stalled",
        waits,
        w.seconds(),
        duration,
        "the window (PSI some)",
    );
}

/// Under a saturated CPU: the CPU time each used over the window.
fn cpu_users(w: &Window, rows: &mut Rows) {
    if !saturated(rows, "cpu") {
        return;
    }
    let used = cpu_time(w, &[]).map_or(0.0, |(busy, _)| busy);
    let users = increases(
        w,
        "sojourn_cgroup_cpu_usage_seconds_total",
        &[],
        Some("sojourn_process_cpu_seconds_total"),
    );
    let seconds = w.seconds();
    name_top(
        rows,
        Kind::Cpu,
        "cpu",
        "who",
        users,
        used,
        |cpu| format!("{:.2} cores", cpu / seconds),
        "the CPU time used",
    );
}

/// Under saturated memory: each one's working set now, against the
/// memory in use.
fn memory_users(w: &Window, rows: &mut Rows) {
    if !saturated(rows, "memory") {
        return;
    }
    let Some((_, in_use)) = memory_now(w) else {
        return;
    };
    let metric = "sojourn_cgroup_memory_working_set_bytes";
    let names = cgroup_names(w, metric);
    let last = w.last();
    let users = last
        .all(metric)
        .iter()
        .map(|s| (names[s.label("cgroup")].clone(), s.value))
        .chain(
            last.all("sojourn_process_resident_memory_bytes")
                .iter()
                .map(|s| (format!("processes {}", s.label("group")), s.value)),
        )
        .collect();
    name_top(
        rows,
        Kind::Memory,
        "memory",
        "who",
        users,
        in_use,
        bytes,
        "the memory in use",
    );
}

/// Under a saturated disk: the bytes each read and wrote on it over the
/// window; under saturated I/O of all devices (PSI), on any.
fn disk_users(w: &Window, rows: &mut Rows) {
    let metric = "sojourn_cgroup_io_bytes_total";
    let seconds = w.seconds();
    let moved = |want: &[(&str, &str)]| {
        w.increase("sojourn_disk_read_bytes_total", want)
            .unwrap_or(0.0)
            + w.increase("sojourn_disk_written_bytes_total", want)
                .unwrap_or(0.0)
    };
    let per_second = |b: f64| format!("{}/s", bytes(b / seconds));
    let all = "disk io (all devices)";
    for s in w.last().all("sojourn_disk_io_time_seconds_total") {
        let want = [("device", s.label("device"))];
        let resource = format!("disk {}", want[0].1);
        if saturated(rows, &resource) {
            let users = increases(w, metric, &want, None);
            let total = moved(&want);
            name_top(
                rows,
                Kind::Disk,
                &resource,
                "who",
                users,
                total,
                per_second,
                "the bytes moved",
            );
        }
    }
    if saturated(rows, all) {
        let users = increases(w, metric, &[], Some("sojourn_process_io_bytes_total"));
        name_top(
            rows,
            Kind::Disk,
            all,
            "who",
            users,
            moved(&[]),
            per_second,
            "the bytes moved",
        );
    }
}
