//! Containers: USE per cgroup, from the cgroup filesystem (cAdvisor's
//! territory; node_exporter declines it). A slow call is often caused
//! inside one container — CFS quota throttling, reclaim under a memory
//! limit — which host metrics hide.
//!
//! Both layouts (Documentation/admin-guide/cgroup-v2.rst, and cgroup-v1/):
//! - v2 (unified): `cpu.stat` `usage_usec user_usec system_usec nr_periods
//!   nr_throttled throttled_usec`, `cpu.max` `20000 100000`, `memory.current`,
//!   `memory.max`, `memory.stat`, `memory.events`, `{cpu,memory,io}.pressure`,
//!   `io.stat` `8:0 rbytes=.. wbytes=.. rios=.. wios=..`, `pids.{current,max}`;
//! - v1 (one hierarchy per controller): `cpuacct.usage` (ns), `cpuacct.stat`
//!   (USER_HZ), `cpu.stat` `nr_periods nr_throttled throttled_time` (ns),
//!   `cpu.cfs_{quota,period}_us`, `memory.{usage,limit}_in_bytes`,
//!   `memory.stat`, `memory.failcnt`, `memory.oom_control`,
//!   `blkio.throttle.io_service{_bytes,d}`, `pids.{current,max}`; on a hybrid
//!   host the empty v2 hierarchy at `unified/` still has per-cgroup PSI.
//!
//! Which cgroups: those holding processes (which covers every container),
//! the root excepted, filtered by `--collector.cgroup.include`/`exclude` on
//! the path and capped at `--collector.cgroup.max-cgroups`. Kubelet paths
//! add `pod_uid`, `container_id` and `qos_class` labels.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::{Collect, CollectError, Config as CollectConfig, ParseError, parse_u64};
use crate::kubelet::{Kubelet, PodDirectory};
use crate::metrics::{Family, Label, label};
use crate::roots::Dir;

/// v1 `memory.limit_in_bytes` without a limit is PAGE_COUNTER_MAX pages,
/// about 2^63; anything this large means "no limit".
const UNLIMITED: u64 = 1 << 62;
const MICROS: f64 = 1e6;
const NANOS: f64 = 1e9;

/// The cgroup collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    /// The cgroup filesystem mount; default `<sysfs>/fs/cgroup`.
    #[arg(
        id = "collector.cgroup.root",
        long = "collector.cgroup.root",
        value_name = "DIR",
        value_parser = crate::flag::dir,
        help = "cgroup filesystem mount [default: <path.sysfs>/fs/cgroup]"
    )]
    pub root: Option<PathBuf>,
    #[arg(
        id = "collector.cgroup.include",
        long = "collector.cgroup.include",
        value_name = "REGEX",
        default_value = ".*",
        value_parser = crate::flag::regex,
        help = "Cgroup paths (relative to the hierarchy root, e.g. /kubepods/...) to report"
    )]
    pub include: Regex,
    #[arg(
        id = "collector.cgroup.exclude",
        long = "collector.cgroup.exclude",
        value_name = "REGEX",
        value_parser = crate::flag::regex,
        help = "Cgroup paths to leave out"
    )]
    pub exclude: Option<Regex>,
    #[arg(
        id = "collector.cgroup.max-cgroups",
        long = "collector.cgroup.max-cgroups",
        value_name = "N",
        default_value_t = DEFAULT_MAX_CGROUPS,
        help = "Most cgroups reported (about 30 series each); the rest are counted in sojourn_cgroup_omitted"
    )]
    pub max_cgroups: usize,
    #[arg(
        id = "collector.cgroup.kubelet-url",
        long = "collector.cgroup.kubelet-url",
        value_name = "URL",
        value_parser = crate::kubelet::parse_url,
        help = "The kubelet's pods endpoint: https://NODE:10250/pods (authenticated: the ServiceAccount's token, RBAC get on nodes/proxy or nodes/pods) or the read-only http://NODE:10255/pods; adds namespace, pod and container labels to cgroup series (fetched every 30 s; unreachable: uid labels only)"
    )]
    pub kubelet_url: Option<hyper::Uri>,
    #[arg(
        id = "collector.cgroup.kubelet-ca-file",
        long = "collector.cgroup.kubelet-ca-file",
        value_name = "FILE",
        requires = "collector.cgroup.kubelet-url",
        help = "CA that signed the kubelet's serving certificate (https); default the ServiceAccount's ca.crt where mounted, else the system's CAs"
    )]
    pub kubelet_ca_file: Option<PathBuf>,
    #[arg(
        id = "collector.cgroup.kubelet-insecure-skip-verify",
        long = "collector.cgroup.kubelet-insecure-skip-verify",
        requires = "collector.cgroup.kubelet-url",
        conflicts_with = "collector.cgroup.kubelet-ca-file",
        help = "Accept the kubelet's certificate unchecked (a self-signed serving certificate, as most clusters have; the token is still sent)"
    )]
    pub kubelet_insecure_skip_verify: bool,
    #[arg(
        id = "collector.cgroup.kubelet-token-file",
        long = "collector.cgroup.kubelet-token-file",
        value_name = "FILE",
        requires = "collector.cgroup.kubelet-url",
        help = "Bearer token for the kubelet (https), read at every fetch; default the ServiceAccount's token where mounted"
    )]
    pub kubelet_token_file: Option<PathBuf>,
    /// The kubelet's pods endpoint made from the flags above (the CLI
    /// builds it, as it can refuse a CA file), for pod and container names.
    #[arg(skip)]
    pub kubelet: Option<crate::kubelet::Endpoint>,
}

pub const DEFAULT_MAX_CGROUPS: usize = 500;

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

mod read;
mod walk;

pub use read::*;
pub use walk::*;

crate::descs! {
    CPU_USAGE = counter("cgroup_cpu_usage", "Utilization: CPU time used by the cgroup's tasks (cpu.stat usage_usec; v1 cpuacct.usage).") .seconds();
    CPU_USER = counter("cgroup_cpu_user", "Utilization: CPU time in user mode (cpu.stat user_usec; v1 cpuacct.stat).") .seconds();
    CPU_SYSTEM = counter("cgroup_cpu_system", "Utilization: CPU time in kernel mode (cpu.stat system_usec; v1 cpuacct.stat).") .seconds();
    PERIODS = counter("cgroup_cpu_periods", "CFS enforcement periods that elapsed while the cgroup had runnable tasks (cpu.stat nr_periods).");
    THROTTLED_PERIODS = counter("cgroup_cpu_throttled_periods", "Saturation: CFS periods in which the cgroup used its whole quota and was throttled (cpu.stat nr_throttled).");
    THROTTLED = counter("cgroup_cpu_throttled", "Saturation: time the cgroup's tasks were throttled by the CFS quota (cpu.stat throttled_usec; v1 throttled_time).") .seconds();
    QUOTA = gauge("cgroup_cpu_quota", "Utilization (denominator): CPU time allowed per period; quota/period is the limit in cores (cpu.max; v1 cpu.cfs_quota_us).") .seconds();
    PERIOD = gauge("cgroup_cpu_period", "CFS period (cpu.max; v1 cpu.cfs_period_us).") .seconds();
    MEM_USAGE = gauge("cgroup_memory_usage", "Utilization: memory charged to the cgroup, page cache included (memory.current; v1 memory.usage_in_bytes).") .bytes();
    MEM_WORKING_SET = gauge("cgroup_memory_working_set", "Utilization: usage less inactive file cache, what the OOM killer and kubelet eviction look at (memory.current - memory.stat inactive_file).") .bytes();
    MEM_LIMIT = gauge("cgroup_memory_limit", "Utilization (denominator): memory limit; absent when unlimited (memory.max; v1 memory.limit_in_bytes).") .bytes();
    MEM_EVENTS = counter("cgroup_memory_events", "Errors: memory events, event=high (throttled over memory.high), max (hit the limit; v1 failcnt), oom, oom_kill (memory.events; v1 memory.oom_control).");
    PGSCAN = counter("cgroup_memory_pages_scanned", "Saturation: pages scanned by reclaim within the cgroup (memory.stat pgscan).");
    PGSTEAL = counter("cgroup_memory_pages_reclaimed", "Saturation: pages reclaimed within the cgroup (memory.stat pgsteal).");
    PRESSURE = counter("cgroup_pressure_stalled", "Saturation: seconds some (kind=some) or all (kind=full) of the cgroup's tasks stalled on the resource (<resource>.pressure total).") .seconds();
    IO_BYTES = counter("cgroup_io", "Utilization: bytes read and written by the cgroup per device (io.stat; v1 blkio.throttle.io_service_bytes).") .bytes();
    IO_OPS = counter("cgroup_io_operations", "Utilization: read and write operations by the cgroup per device (io.stat; v1 blkio.throttle.io_serviced).");
    PIDS = gauge("cgroup_pids", "Utilization: tasks in the cgroup (pids.current).");
    PIDS_LIMIT = gauge("cgroup_pids_limit", "Utilization (denominator): most tasks allowed; absent when unlimited (pids.max).");
    OMITTED = gauge("cgroup_omitted", "Cgroups left out because --collector.cgroup.max-cgroups was reached (cgroupfs).");
    KUBELET_UP = gauge("cgroup_kubelet_up", "Whether the latest fetch of the kubelet's pod list (--collector.cgroup.kubelet-url) succeeded; on failure the names of the last good list are kept.");
    KUBELET_PODS = gauge("cgroup_kubelet_pods", "Pods in the kubelet's pod list used for namespace, pod and container labels.");
}

/// The cgroup's labels; with a pod directory, `namespace`, `pod` and
/// `container` too (empty when the kubelet does not list the ids).
pub(crate) fn identity_labels(rel: &str, names: Option<&PodDirectory>) -> Vec<Label> {
    let k = crate::kube::parse(rel);
    let mut labels = identity_id_labels(rel, k.as_ref());
    if let Some(dir) = names {
        let pod = k.as_ref().and_then(|k| dir.pods.get(&k.pod_uid));
        let container = k
            .as_ref()
            .and_then(|k| k.container_id.as_ref())
            .and_then(|id| dir.containers.get(id));
        labels.push(label(
            "namespace",
            pod.map(|p| p.namespace.clone()).unwrap_or_default(),
        ));
        labels.push(label("pod", pod.map(|p| p.pod.clone()).unwrap_or_default()));
        labels.push(label("container", container.cloned().unwrap_or_default()));
    }
    labels
}

pub(crate) fn identity_id_labels(rel: &str, k: Option<&crate::kube::KubeIdentity>) -> Vec<Label> {
    vec![
        label("cgroup", rel.to_string()),
        label("pod_uid", k.map(|k| k.pod_uid.clone()).unwrap_or_default()),
        label(
            "container_id",
            k.and_then(|k| k.container_id.clone()).unwrap_or_default(),
        ),
        label("qos_class", k.map(|k| k.qos.as_str()).unwrap_or_default()),
    ]
}

/// What the kubelet said, when `--collector.cgroup.kubelet-url` is set.
pub struct KubeletNames<'a> {
    pub directory: &'a PodDirectory,
    /// None until the first fetch has finished.
    pub up: Option<bool>,
}

/// Maps parsed stats onto families; `device_name` turns `8:0` into `sda`.
pub fn emit(
    cgroups: &[(String, CgroupStats)],
    omitted: usize,
    device_name: impl Fn(&str) -> String,
    kubelet: Option<KubeletNames<'_>>,
) -> Vec<Family> {
    let mut f: Vec<Family> = [
        CPU_USAGE,
        CPU_USER,
        CPU_SYSTEM,
        PERIODS,
        THROTTLED_PERIODS,
        THROTTLED,
        QUOTA,
        PERIOD,
        MEM_USAGE,
        MEM_WORKING_SET,
        MEM_LIMIT,
        MEM_EVENTS,
        PGSCAN,
        PGSTEAL,
        PRESSURE,
        IO_BYTES,
        IO_OPS,
        PIDS,
        PIDS_LIMIT,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    for (rel, s) in cgroups {
        let id = identity_labels(rel, kubelet.as_ref().map(|k| k.directory));
        let with = |extra: &[Label]| -> Vec<Label> { id.iter().chain(extra).cloned().collect() };
        let floats = [
            (0, s.cpu_usage_seconds),
            (1, s.cpu_user_seconds),
            (2, s.cpu_system_seconds),
            (5, s.throttled_seconds),
            (6, s.quota_seconds),
            (7, s.period_seconds),
        ];
        for (i, v) in floats {
            if let Some(v) = v {
                f[i].push(id.clone(), v);
            }
        }
        let ints = [
            (3, s.periods),
            (4, s.throttled_periods),
            (8, s.memory_usage_bytes),
            (9, s.memory_working_set_bytes),
            (10, s.memory_limit_bytes),
            (12, s.pages_scanned),
            (13, s.pages_reclaimed),
            (17, s.pids),
            (18, s.pids_limit),
        ];
        for (i, v) in ints {
            if let Some(v) = v {
                f[i].push(id.clone(), v);
            }
        }
        for (event, v) in &s.memory_events {
            f[11].push(with(&[label("event", *event)]), *v);
        }
        for (resource, p) in &s.pressure {
            for (kind, us) in [("some", p.some_us), ("full", p.full_us)] {
                if let Some(us) = us {
                    f[14].push(
                        with(&[label("resource", *resource), label("kind", kind)]),
                        us as f64 / MICROS,
                    );
                }
            }
        }
        for (dev, rb, wb, r, w) in &s.io {
            let name = device_name(dev);
            f[15].push(
                with(&[label("device", name.clone()), label("direction", "read")]),
                *rb,
            );
            f[15].push(
                with(&[label("device", name.clone()), label("direction", "write")]),
                *wb,
            );
            f[16].push(
                with(&[label("device", name.clone()), label("direction", "read")]),
                *r,
            );
            f[16].push(
                with(&[label("device", name), label("direction", "write")]),
                *w,
            );
        }
    }
    f.push(Family::single(OMITTED, omitted as u64));
    if let Some(k) = kubelet {
        if let Some(up) = k.up {
            f.push(Family::single(KUBELET_UP, u64::from(up)));
        }
        f.push(Family::single(KUBELET_PODS, k.directory.pods.len() as u64));
    }
    f
}

pub struct CgroupCollector {
    kubelet: Option<std::sync::Arc<Kubelet>>,
    /// `8:0` → `sda`, for the devices of the cgroups' I/O stats.
    device_names: super::disk::DeviceNames,
    /// The layout found at a root, and when: mounting a hierarchy is rare,
    /// and detecting it anew costs a dozen lookups at every scrape.
    layout: std::sync::Mutex<Option<(PathBuf, Layout, std::time::Instant)>>,
    /// The walked hierarchies' directories, kept between scrapes (one
    /// hierarchy on v2, cpu and memory on v1).
    trees: std::sync::Mutex<Vec<Tree>>,
    /// The v1 hierarchies each reported cgroup was found absent from, and
    /// since when: forgotten every [`LAYOUT_RECHECK`], so a directory made
    /// late is read within a minute.
    absent: std::sync::Mutex<(
        std::collections::HashMap<String, Absent>,
        Option<std::time::Instant>,
    )>,
}

/// How long a detected layout is trusted before it is looked at again.
const LAYOUT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

impl CgroupCollector {
    /// The layout at `root`, detected at most every [`LAYOUT_RECHECK`].
    fn layout(&self, root: &Path) -> Option<Layout> {
        let mut cached = self
            .layout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if let Some((at, layout, when)) = cached.as_ref()
            && at == root
            && now.duration_since(*when) < LAYOUT_RECHECK
        {
            return Some(layout.clone());
        }
        let layout = detect(root);
        *cached = layout.clone().map(|l| (root.to_path_buf(), l, now));
        layout
    }

    pub fn new(cfg: &Config) -> Self {
        let kubelet = cfg.kubelet.as_ref().and_then(|endpoint| {
            crate::kubelet::shared(endpoint)
                .map_err(|e| tracing::error!("kubelet pod names disabled: {e}"))
                .ok()
        });
        CgroupCollector {
            kubelet,
            device_names: Default::default(),
            layout: Default::default(),
            trees: Default::default(),
            absent: Default::default(),
        }
    }
}

impl Collect for CgroupCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let root = cfg
            .cgroup
            .root
            .clone()
            .unwrap_or_else(|| cfg.roots.sys("fs/cgroup"));
        let layout = self.layout(&root).ok_or_else(|| {
            CollectError::Unsupported(format!(
                "no cgroup filesystem at {} (--collector.cgroup.root)",
                root.display()
            ))
        })?;
        let limit = cfg.cgroup.max_cgroups;
        let mut trees = self
            .trees
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bases: Vec<&PathBuf> = match &layout {
            Layout::V2(r) => vec![r],
            Layout::V1 { cpu, memory, .. } => [cpu, memory].into_iter().flatten().collect(),
        };
        trees.retain(|t| bases.iter().any(|b| t.base() == b.as_path()));
        let mut walk = |base: &Path| {
            let at = match trees.iter().position(|t| t.base() == base) {
                Some(at) => at,
                None => {
                    trees.push(Tree::new(base));
                    trees.len() - 1
                }
            };
            trees[at].walk(&cfg.cgroup, limit)
        };
        let (paths, omitted) = match &layout {
            Layout::V2(r) => walk(r),
            // A cgroup may exist in one v1 hierarchy and not the other (a
            // memory-only cgroup made by hand or by a tool): both are walked.
            Layout::V1 { cpu, memory, .. } => {
                let mut all = std::collections::BTreeSet::new();
                let mut omitted = 0;
                for base in [cpu, memory].into_iter().flatten() {
                    let (p, o) = walk(base);
                    all.extend(p);
                    omitted = omitted.max(o);
                }
                let mut paths: Vec<String> = all.into_iter().collect();
                if paths.len() > limit {
                    omitted += paths.len() - limit;
                    paths.truncate(limit);
                }
                (paths, omitted)
            }
        };
        drop(trees);
        let mut absences = self
            .absent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (absent, since) = &mut *absences;
        let now = std::time::Instant::now();
        if since.is_none_or(|t| now.duration_since(t) >= LAYOUT_RECHECK) {
            absent.clear();
            *since = Some(now);
        }
        // Only the cgroups reported now are remembered.
        let mut seen = std::collections::HashMap::new();
        let mut stats = Vec::with_capacity(paths.len());
        for rel in paths {
            let s = match &layout {
                Layout::V2(r) => read_v2(&r.join(rel.trim_start_matches('/'))),
                Layout::V1 { .. } => {
                    let mut missing = absent.remove(&rel).unwrap_or_default();
                    let s = read_v1(&layout, &rel, &mut missing);
                    seen.insert(rel.clone(), missing);
                    s
                }
            };
            match s {
                Ok(s) => stats.push((rel, s)),
                // A container that exited between the walk and the read.
                Err(CollectError::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        *absent = seen;
        drop(absences);
        let names = self.device_names.covering(
            &cfg.roots.proc("diskstats"),
            stats.iter().flat_map(|(_, s)| &s.io).map(|(dev, ..)| dev),
        );
        let kubelet = self.kubelet.as_deref().map(Kubelet::directory);
        Ok(emit(
            &stats,
            omitted,
            |dev| names.get(dev).cloned().unwrap_or_else(|| dev.to_string()),
            kubelet
                .as_ref()
                .map(|(directory, up)| KubeletNames { directory, up: *up }),
        ))
    }
}

#[cfg(test)]
mod tests;
