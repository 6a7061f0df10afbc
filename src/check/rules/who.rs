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

fn named(names: &HashMap<&str, String>, cgroup: &str) -> String {
    names
        .get(cgroup)
        .cloned()
        .unwrap_or_else(|| format!("cgroup {cgroup}"))
}

/// Adds the USE method's next answer under a saturated row: who. The
/// users that took most of `total` (the resource's use over the window),
/// at least [`USER_SHARE`] each, at most [`USERS`], most first, each with
/// its amount (`show`) and its share, as a `who:` line of the evidence.
fn name_users(
    rows: &mut Rows,
    kind: Kind,
    resource: &str,
    users: Vec<(String, f64)>,
    total: f64,
    show: impl Fn(f64) -> String,
    of_what: &str,
) {
    name_top(rows, kind, resource, "who", users, total, show, of_what);
}

/// [`name_users`] with another heading for the line (`stalled:`).
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
    let metric = "sojourn_cgroup_pressure_stalled_seconds_total";
    let names = cgroup_names(w, metric);
    let waits = w
        .increase_by(metric, "cgroup", &[("resource", psi), ("kind", "some")])
        .into_iter()
        .map(|(cgroup, s)| (named(&names, &cgroup), s))
        .collect();
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
    let name = "sojourn_cpu_seconds_total";
    let idle = w.increase(name, &[("mode", "idle")]).unwrap_or(0.0)
        + w.increase(name, &[("mode", "iowait")]).unwrap_or(0.0);
    let used = w.increase(name, &[]).unwrap_or(0.0) - idle;
    let usage = "sojourn_cgroup_cpu_usage_seconds_total";
    let names = cgroup_names(w, usage);
    let users = w
        .increase_by(usage, "cgroup", &[])
        .into_iter()
        .map(|(cgroup, cpu)| (named(&names, &cgroup), cpu))
        .chain(
            w.increase_by("sojourn_process_cpu_seconds_total", "group", &[])
                .into_iter()
                .map(|(group, cpu)| (format!("processes {group}"), cpu)),
        )
        .collect();
    let seconds = w.seconds();
    name_users(
        rows,
        Kind::Cpu,
        "cpu",
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
    let last = w.last();
    let (Some(total), Some(avail)) = (
        last.value("sojourn_memory_mem_total_bytes", &[]),
        last.value("sojourn_memory_mem_available_bytes", &[]),
    ) else {
        return;
    };
    let metric = "sojourn_cgroup_memory_working_set_bytes";
    let names = cgroup_names(w, metric);
    let users = last
        .all(metric)
        .iter()
        .map(|s| (named(&names, s.label("cgroup")), s.value))
        .chain(
            last.all("sojourn_process_resident_memory_bytes")
                .iter()
                .map(|s| (format!("processes {}", s.label("group")), s.value)),
        )
        .collect();
    name_users(
        rows,
        Kind::Memory,
        "memory",
        users,
        total - avail,
        bytes,
        "the memory in use",
    );
}

/// Under a saturated disk: the bytes each read and wrote on it over the
/// window; under saturated I/O of all devices (PSI), on any.
fn disk_users(w: &Window, rows: &mut Rows) {
    let metric = "sojourn_cgroup_io_bytes_total";
    let names = cgroup_names(w, metric);
    let seconds = w.seconds();
    let devices: Vec<String> = w
        .last()
        .all("sojourn_disk_io_time_seconds_total")
        .iter()
        .map(|s| s.label("device").to_string())
        .collect();
    let moved = |want: &[(&str, &str)]| {
        w.increase("sojourn_disk_read_bytes_total", want)
            .unwrap_or(0.0)
            + w.increase("sojourn_disk_written_bytes_total", want)
                .unwrap_or(0.0)
    };
    let per_second = move |b: f64| format!("{}/s", bytes(b / seconds));
    for dev in &devices {
        let resource = format!("disk {dev}");
        if !saturated(rows, &resource) {
            continue;
        }
        let users = w
            .increase_by(metric, "cgroup", &[("device", dev.as_str())])
            .into_iter()
            .map(|(cgroup, b)| (named(&names, &cgroup), b))
            .collect();
        let total = moved(&[("device", dev.as_str())]);
        name_users(
            rows,
            Kind::Disk,
            &resource,
            users,
            total,
            per_second,
            "the bytes moved",
        );
    }
    let all = "disk io (all devices)";
    if saturated(rows, all) {
        let users = w
            .increase_by(metric, "cgroup", &[])
            .into_iter()
            .map(|(cgroup, b)| (named(&names, &cgroup), b))
            .chain(
                w.increase_by("sojourn_process_io_bytes_total", "group", &[])
                    .into_iter()
                    .map(|(group, b)| (format!("processes {group}"), b)),
            )
            .collect();
        name_users(
            rows,
            Kind::Disk,
            all,
            users,
            moved(&[]),
            per_second,
            "the bytes moved",
        );
    }
}
