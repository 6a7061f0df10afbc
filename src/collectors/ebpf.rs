//! Sojourn times measured by eBPF (`crate::ebpf`): every wait on a CPU's
//! run queue, timed in the kernel from wakeup or preemption to running;
//! and each disk request's time queued (inserted until issued to the
//! driver) and served (issued until completed), per disk; and each
//! connection's wait in its listener's accept queue, per listener in every
//! network namespace. Where this machine does not permit eBPF (no
//! CAP_BPF/CAP_PERFMON, no BTF, an old kernel, a verifier refusal) one log
//! line says why at start (one per program when only some load); the
//! collector reports itself unsupported when neither the run-queue nor
//! the block program runs, and the parts `ebpf_block` and `ebpf_accept`
//! when that program alone does not (`ebpf_accept_io_uring`, where asked
//! for, when the accept program's part on io_uring's completions does
//! not).

use super::{Collect, CollectError, Config};
use crate::ebpf::{Block, DiskTimes, RawHistogram, RunQueue, SLOT_OFFSET, SLOTS, slot_upper_bound};
use crate::metrics::{Family, Histogram, label};
use crate::native::NativeBuckets;

mod listeners;
use listeners::{Lifetimes, Namespaces};

crate::descs! {
    RUNQUEUE_WAIT = histogram("runqueue_wait", "Saturation: time tasks waited on a CPU's run queue before running, from wakeup or preemption, every wait timed (eBPF at sched_wakeup, sched_wakeup_new, sched_switch; all CPUs).") .seconds();
    RUNQUEUE_UNTIMED = counter("runqueue_wait_untimed", "Run-queue waits not timed because the task's storage slot could not be had: no memory, or the storage busy on that CPU (eBPF).");
    DISK_QUEUED = histogram("disk_request_queued", "Saturation: time each disk request waited before the driver had it, inserted into the I/O scheduler or dispatch list until issued; 0 when issued straight (eBPF at block_rq_insert, block_rq_issue).") .seconds();
    DISK_SERVED = histogram("disk_request_served", "Time the device took to serve each request, issued to the driver until completed: a slow device, where queued time is a deep queue (eBPF at block_rq_issue, block_rq_complete).") .seconds();
    CPU_WAIT = histogram("runqueue_cpu_wait", "Saturation: time tasks waited on this CPU's run queue before running, every wait timed (eBPF at sched_wakeup, sched_wakeup_new, sched_switch).") .seconds();
    ACCEPT_WAIT = histogram("tcp_accept_wait", "Saturation: time each connection waited in its listener's accept queue, established on the server's side until accept(2) or accept4(2) returned it, every connection timed, the host's and every pod's listeners (eBPF at inet_sock_set_state, sys_exit_accept4, sys_exit_accept).") .seconds();
    ACCEPT_UNTIMED = counter("tcp_accept_untimed", "Accepted connections not timed: their listener found no room among the 1 024 the program tracks (eBPF).");
    CGROUP_WAIT = histogram("cgroup_runqueue_wait", "Saturation: time the cgroup's tasks waited on a CPU's run queue before running, throttled time under a CPU quota included, every wait timed; cgroups as the cgroup collector selects them, in the cpu controller's hierarchy (eBPF at sched_wakeup, sched_wakeup_new, sched_switch).") .seconds();
    DISK_UNTIMED = counter("disk_requests_untimed", "Disk requests completed but not timed: their disk found no room among the 64 the program tracks (eBPF).");
}

/// The online CPUs as last read (None: unreadable), and when.
type OnlineCpus = (std::time::Instant, Option<std::sync::Arc<[u32]>>);

/// Most CPUs a CPU list may name (the kernel's NR_CPUS tops out at 8 192).
const MAX_CPUS: usize = 8192;

/// The exposed buckets: powers of two from 2^-20 s (~1 µs) to 16 s, each
/// the union of whole kernel slots, so no count is split or moved.
const FIRST_BUCKET_EXP: i32 = -20;
const LAST_BUCKET_EXP: i32 = 4;

/// A cgroup's or a CPU's buckets: fewer, as there may be hundreds of
/// either — 2^-13 s (122 µs) to 2^-1 s by factors of eight, each the union
/// of whole kernel slots; the native histogram keeps every slot.
const COARSE_BUCKET_EXPS: [i32; 5] = [-13, -10, -7, -4, -1];

/// [`fold`] into the coarse buckets.
fn fold_coarse(slots: &[u64; SLOTS], sum_ns: u64) -> Histogram {
    fold_into(
        COARSE_BUCKET_EXPS.iter().map(|e| 2f64.powi(*e)),
        slots,
        sum_ns,
    )
}

/// Each CPU's waits in the coarse buckets, by CPU number (a possible CPU
/// that never ran a task has none and is left out).
pub fn emit_cpus(per_cpu: &[RawHistogram], online: Option<&[u32]>) -> Family {
    let mut f = Family::new(CPU_WAIT);
    for (cpu, h) in per_cpu.iter().enumerate() {
        // The online list is ascending (`parse_cpu_list`).
        let is_online =
            online.is_none_or(|o| u32::try_from(cpu).is_ok_and(|c| o.binary_search(&c).is_ok()));
        if is_online && h.slots.iter().any(|&n| n > 0) {
            f.push(
                [label("cpu", cpu.to_string())],
                fold_coarse(&h.slots, h.sum_ns),
            );
        }
    }
    f
}

/// All CPUs' kernel histograms as one histogram of the exposed buckets,
/// and as a native histogram of schema 0 whose buckets are the kernel's
/// own (a scraper that negotiates protobuf gets every one, unmerged).
pub fn histogram(per_cpu: &[RawHistogram]) -> (Histogram, u64) {
    // All CPUs summed slot by slot, then folded once.
    let mut slots = [0u64; SLOTS];
    let (mut sum_ns, mut untimed) = (0u64, 0u64);
    for cpu in per_cpu {
        for (total, n) in slots.iter_mut().zip(cpu.slots) {
            *total += n;
        }
        sum_ns = sum_ns.saturating_add(cpu.sum_ns);
        untimed += cpu.missed;
    }
    (fold(&slots, sum_ns), untimed)
}

/// Kernel slots (`bpf/slots.h`) as a histogram of the exposed buckets,
/// each the union of whole slots, and as a native histogram whose buckets
/// are the slots themselves.
fn fold(slots: &[u64; SLOTS], sum_ns: u64) -> Histogram {
    fold_into(
        (FIRST_BUCKET_EXP..=LAST_BUCKET_EXP).map(|e| 2f64.powi(e)),
        slots,
        sum_ns,
    )
}

/// [`fold`] into buckets bounded by `bounds`, powers of two.
fn fold_into(bounds: impl Iterator<Item = f64>, slots: &[u64; SLOTS], sum_ns: u64) -> Histogram {
    let mut h = Histogram::new(bounds.collect());
    let last = h.counts.len() - 1;
    for (slot, &n) in slots.iter().enumerate() {
        let upper = slot_upper_bound(slot);
        let i = h.bounds.partition_point(|b| *b < upper).min(last);
        h.counts[i] += n;
        h.count += n;
    }
    h.sum = sum_ns as f64 / 1e9;
    h.native = Some(Box::new(NativeBuckets::from_counts(
        0,
        0.0,
        slots[0],
        1 - SLOT_OFFSET,
        &slots[1..],
    )));
    h
}

/// Each disk's two histograms, named as /proc/diskstats names the disk
/// (`major:minor` for one it does not list), without the disks `exclude`
/// matches (the disk collector's `--collector.disk.device-exclude`).
pub fn emit_disks(
    disks: &[DiskTimes],
    untimed: u64,
    name: impl Fn(&str) -> Option<String>,
    exclude: &regex::Regex,
) -> Vec<Family> {
    let mut queued = Family::new(DISK_QUEUED);
    let mut served = Family::new(DISK_SERVED);
    for d in disks {
        let dev = d.dev();
        let device = name(&dev).unwrap_or(dev);
        if exclude.is_match(&device) {
            continue;
        }
        queued.push(
            [label("device", device.clone())],
            fold(&d.queued.slots, d.queued.sum_ns),
        );
        served.push(
            [label("device", device)],
            fold(&d.served.slots, d.served.sum_ns),
        );
    }
    vec![queued, served, Family::single(DISK_UNTIMED, untimed)]
}

/// Each selected cgroup's run-queue waits, labelled as the cgroup
/// collector labels the cgroup (`rel` → its directory's inode, the id the
/// program counts under; pod names from the kubelet's list when given).
pub fn emit_cgroups(
    cgroups: &[(String, u64)],
    waits: &std::collections::HashMap<u64, crate::ebpf::TimedHistogram>,
    names: Option<&crate::kubelet::PodDirectory>,
) -> Family {
    let mut f = Family::new(CGROUP_WAIT);
    for (rel, id) in cgroups {
        let Some(h) = waits.get(id) else { continue };
        f.push(
            super::cgroup::identity_labels(rel, names),
            fold_coarse(&h.slots, h.sum_ns),
        );
    }
    f
}

/// Most listeners with series of their own, those that accepted the most
/// connections; the rest are summed as `port="other"`, `netns="other"`.
pub const MAX_ACCEPT_LISTENERS: usize = 64;

/// Each listener's accept-queue waits in the coarse buckets, named by port
/// and by its network namespace's identity (`identity`: empty values for
/// sojourn's own namespace); past [`MAX_ACCEPT_LISTENERS`] summed.
pub fn emit_listeners(
    listeners: &[(crate::ebpf::ListenerKey, crate::ebpf::TimedHistogram)],
    identity: impl Fn(u32) -> Vec<crate::metrics::Label>,
    other: Vec<crate::metrics::Label>,
) -> Family {
    let mut ranked: Vec<_> = listeners.iter().collect();
    ranked.sort_by_key(|(k, h)| (std::cmp::Reverse(h.slots.iter().sum::<u64>()), *k));
    let mut f = Family::new(ACCEPT_WAIT);
    let mut rest: Option<([u64; SLOTS], u64)> = None;
    for (i, (key, h)) in ranked.into_iter().enumerate() {
        if i < MAX_ACCEPT_LISTENERS {
            let mut labels = vec![label("port", key.port.to_string())];
            labels.extend(identity(key.netns));
            f.push(labels, fold_coarse(&h.slots, h.sum_ns));
        } else {
            let (slots, sum) = rest.get_or_insert(([0; SLOTS], 0));
            for (a, b) in slots.iter_mut().zip(h.slots) {
                *a += b;
            }
            *sum = sum.saturating_add(h.sum_ns);
        }
    }
    if let Some((slots, sum)) = rest {
        let mut labels = vec![label("port", "other")];
        labels.extend(other);
        f.push(labels, fold_coarse(&slots, sum));
    }
    f
}

/// The cgroups of the hierarchy the run-queue program counts in, as the
/// cgroup collector selects them, with their directories' inodes.
struct CgroupIds {
    tree: Option<super::cgroup::Tree>,
    /// Inodes by relative path, kept while the path is listed.
    inodes: std::collections::HashMap<String, u64>,
}

impl CgroupIds {
    fn list(&mut self, base: &std::path::Path, cfg: &Config) -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let tree = match &mut self.tree {
            Some(t) if t.base() == base => t,
            slot => slot.insert(super::cgroup::Tree::new(base)),
        };
        let (paths, _) = tree.walk(&cfg.cgroup, cfg.cgroup.max_cgroups);
        let mut inodes = std::collections::HashMap::with_capacity(paths.len());
        let mut out = Vec::with_capacity(paths.len());
        for rel in paths {
            let ino = match self.inodes.remove(&rel) {
                Some(ino) => Some(ino),
                None => std::fs::metadata(base.join(rel.trim_start_matches('/')))
                    .ok()
                    .map(|m| m.ino()),
            };
            if let Some(ino) = ino {
                inodes.insert(rel.clone(), ino);
                out.push((rel, ino));
            }
        }
        self.inodes = inodes;
        out
    }
}

/// The ebpf collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct EbpfConfig {
    #[arg(
        id = "collector.ebpf.accept",
        long = "collector.ebpf.accept",
        overrides_with = "no-collector.ebpf.accept",
        help = "Time each connection's wait in its listener's accept queue [default: on; --no-collector.ebpf.accept turns it off]. Its syscall tracepoints put every system call of the host on the kernel's traced path while loaded: +20-40 ns a call measured (docs/benchmarks.md)"
    )]
    accept_on: bool,
    #[arg(
        id = "no-collector.ebpf.accept",
        long = "no-collector.ebpf.accept",
        overrides_with = "collector.ebpf.accept",
        hide = true
    )]
    accept_off: bool,
    #[arg(
        id = "collector.ebpf.accept-io-uring",
        long = "collector.ebpf.accept-io-uring",
        help = "Time the accepts io_uring makes too [default: off]: its program runs at every io_uring completion of the host, ~160 ns each measured, accept or not (docs/benchmarks.md); Linux 6.3+; accepts into io_uring's own table of files (direct descriptors) stay untimed"
    )]
    pub accept_io_uring: bool,
}

impl EbpfConfig {
    /// Whether the accept program is loaded: on unless turned off (the
    /// later of the two flags wins).
    pub fn accept(&self) -> bool {
        self.accept_on || !self.accept_off
    }
}

impl Default for EbpfConfig {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

pub struct EbpfCollector {
    /// Whether io_uring's accepts were asked for: where the accept program
    /// is refused as a whole, they are untimed too.
    accept_io_uring: bool,
    cgroup_ids: std::sync::Mutex<CgroupIds>,
    /// None when turned off (`--no-collector.ebpf.accept`).
    accept: Option<Result<std::sync::Arc<crate::ebpf::Accept>, String>>,
    /// Listeners' namespaces and which are gone: one lock, as both are
    /// read and written at each scrape of the accept program.
    listeners: std::sync::Mutex<(Namespaces, Lifetimes)>,
    /// The cgroup collector's source of pod names, shared.
    kubelet: Option<std::sync::Arc<crate::kubelet::Kubelet>>,
    runqueue: Result<std::sync::Arc<RunQueue>, String>,
    block: Result<std::sync::Arc<Block>, String>,
    /// `8:0` → `sda`, for the disks the block program timed.
    disk_names: super::disk::DeviceNames,
    /// The online CPUs, read at most every rescan interval: the per-CPU
    /// map keeps a CPU's counts when it goes offline (hotplug, a VM's
    /// vCPU unplugged), and its series must go.
    online: std::sync::Mutex<Option<OnlineCpus>>,
}

impl EbpfCollector {
    pub fn new(cfg: &Config) -> EbpfCollector {
        // One parse of the kernel's BTF for both programs, shared with the
        // queue sampler.
        let crate::ebpf::Programs {
            runqueue,
            block,
            accept,
        } = crate::ebpf::shared_programs(cfg.ebpf.accept(), cfg.ebpf.accept_io_uring);
        let accept = cfg
            .ebpf
            .accept()
            .then(|| accept.unwrap_or_else(|| Err("not asked for".into())));
        match (&runqueue, &block, &accept) {
            // Refused as a whole (no capability, no BTF): one line says why.
            (Err(e), Err(_), None | Some(Err(_))) => tracing::warn!(
                reason = %e,
                "eBPF unavailable (it needs CAP_BPF and CAP_PERFMON, or root, and the \
                 kernel's BTF; --no-collector.ebpf turns it off); run-queue saturation \
                 comes from schedstat and load, disk saturation from diskstats, accept \
                 queues are sampled lengths"
            ),
            _ => {
                if let Err(e) = &runqueue {
                    tracing::warn!(
                        reason = %e,
                        "eBPF run-queue timing unavailable; run-queue saturation comes from schedstat and load"
                    );
                }
                if let Err(e) = &block {
                    tracing::warn!(
                        reason = %e,
                        "eBPF disk request timing unavailable; disk saturation comes from diskstats"
                    );
                }
                if let Some(Ok(a)) = &accept
                    && let Some(Err(why)) = a.io_uring()
                {
                    tracing::warn!(
                        reason = %why,
                        "eBPF: accepts made by io_uring are not timed on this kernel \
                         (--collector.ebpf.accept-io-uring)"
                    );
                }
                if let Some(Err(e)) = &accept {
                    tracing::warn!(
                        reason = %e,
                        "eBPF accept-queue timing unavailable; accept queues are sampled lengths"
                    );
                }
            }
        }
        let kubelet = super::netns::kubelet(cfg);
        EbpfCollector {
            accept_io_uring: cfg.ebpf.accept_io_uring,
            accept,
            listeners: std::sync::Mutex::new((Namespaces::new(cfg), Lifetimes::default())),
            kubelet,
            cgroup_ids: std::sync::Mutex::new(CgroupIds {
                tree: None,
                inodes: Default::default(),
            }),
            runqueue,
            block,
            disk_names: Default::default(),
            online: Default::default(),
        }
    }

    /// The online CPUs; None where the list cannot be read or parsed
    /// (every CPU that counted a wait is then shown).
    fn online_cpus(&self, cfg: &Config) -> Option<std::sync::Arc<[u32]>> {
        let mut online = self
            .online
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*online {
            Some((read, cpus)) if read.elapsed() < cfg.process.rescan_interval => cpus.clone(),
            _ => {
                let path = cfg.roots.sys("devices/system/cpu/online");
                let cpus = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| super::cpu::parse_cpu_list(&text, MAX_CPUS).ok())
                    .map(std::sync::Arc::from);
                *online = Some((std::time::Instant::now(), cpus.clone()));
                cpus
            }
        }
    }

    /// The selected cgroups' waits; None where the program counts in no
    /// hierarchy or none is mounted.
    fn cgroups(&self, rq: &RunQueue, cfg: &Config) -> Result<Option<Family>, CollectError> {
        use crate::collectors::cgroup::{Layout, detect};
        use crate::ebpf::CgroupMode;
        let Some(waits) = rq.cgroups() else {
            return Ok(None);
        };
        let waits: std::collections::HashMap<_, _> =
            waits.map_err(CollectError::Io)?.into_iter().collect();
        let root = cfg
            .cgroup
            .root
            .clone()
            .unwrap_or_else(|| cfg.roots.sys("fs/cgroup"));
        let base = match (detect(&root), rq.cgroup_mode()) {
            (Some(Layout::V2(r)), CgroupMode::Default) => r,
            (
                Some(Layout::V1 {
                    unified: Some(u), ..
                }),
                CgroupMode::Default,
            ) => u,
            (Some(Layout::V1 { cpu: Some(cpu), .. }), CgroupMode::Controller(_)) => cpu,
            _ => return Ok(None),
        };
        let listed = self
            .cgroup_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .list(&base, cfg);
        let names = self
            .kubelet
            .as_deref()
            .map(crate::kubelet::Kubelet::directory);
        Ok(Some(emit_cgroups(
            &listed,
            &waits,
            names.as_ref().map(|(directory, _)| &**directory),
        )))
    }

    fn listeners(
        &self,
        accept: &crate::ebpf::Accept,
        cfg: &Config,
    ) -> Result<Vec<Family>, CollectError> {
        let (mut listeners, untimed) = accept.read().map_err(CollectError::Io)?;
        let mut known = self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (ns, lifetimes) = &mut *known;
        ns.refresh(cfg, listeners.iter().map(|(k, _)| k.netns));
        listeners::forget_gone(accept, &mut listeners, ns, lifetimes, cfg);
        let names = self
            .kubelet
            .as_deref()
            .map(crate::kubelet::Kubelet::directory);
        let names = names.as_ref().map(|(directory, _)| &**directory);
        let own = ns.own.unwrap_or(0);
        // Every series has the same labels: sojourn's own namespace (the
        // host's, in a DaemonSet) has them empty.
        let blank = |netns: &str| {
            let mut labels = vec![
                label("netns", netns.to_string()),
                label("pod_uid", ""),
                label("qos_class", ""),
                label("process", ""),
            ];
            if names.is_some() {
                labels.push(label("namespace", ""));
                labels.push(label("pod", ""));
            }
            labels
        };
        let identity = |inode: u32| match ns.found().iter().find(|n| n.inode == u64::from(inode)) {
            Some(n) => super::netns::identity(n, names),
            None if u64::from(inode) == own => blank(""),
            None => blank(&inode.to_string()),
        };
        Ok(vec![
            emit_listeners(&listeners, identity, blank("other")),
            Family::single(ACCEPT_UNTIMED, untimed),
        ])
    }

    fn disks(&self, block: &Block, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let (mut disks, untimed) = block.read().map_err(CollectError::Io)?;
        // Read again when it lacks a timed disk (a new one), and at least
        // every rescan interval: a disk it no longer lists when read was
        // removed (a detached volume, a deleted loop device), and its
        // series go, with its room among the program's 64 (nothing is
        // dropped when the file cannot be read). Read at every scrape,
        // the check cost the collector 13 µs a scrape (37 → 51 µs median).
        let (names, read) = self.disk_names.current(
            &cfg.roots.proc("diskstats"),
            disks.iter().map(DiskTimes::dev),
            Some(cfg.process.rescan_interval),
        );
        if read {
            let gone: Vec<u32> = disks
                .iter()
                .filter(|d| !names.contains_key(&d.dev()))
                .map(DiskTimes::dev_t)
                .collect();
            if !gone.is_empty() {
                if let Err(e) = block.forget(&gone) {
                    tracing::warn!(error = %e, "removed disks' request times kept");
                }
                disks.retain(|d| !gone.contains(&d.dev_t()));
            }
        }
        Ok(emit_disks(
            &disks,
            untimed,
            |dev| names.get(dev).cloned(),
            &cfg.disk.device_exclude,
        ))
    }
}

impl Collect for EbpfCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let mut out = Vec::with_capacity(5);
        match (&self.runqueue, &self.block) {
            (Err(e), Err(_)) => return Err(CollectError::Unsupported(e.clone())),
            (Ok(rq), _) => {
                let per_cpu = rq.read().map_err(CollectError::Io)?;
                let (h, untimed) = histogram(&per_cpu[..]);
                out.push(Family::single(RUNQUEUE_WAIT, h));
                out.push(emit_cpus(&per_cpu[..], self.online_cpus(cfg).as_deref()));
                out.push(Family::single(RUNQUEUE_UNTIMED, untimed));
                out.extend(self.cgroups(rq, cfg)?);
            }
            (Err(_), Ok(_)) => {}
        }
        if let Ok(block) = &self.block {
            out.extend(self.disks(block, cfg)?);
        }
        if let Some(Ok(accept)) = &self.accept {
            out.extend(self.listeners(accept, cfg)?);
        }
        Ok(out)
    }

    fn parts(&self) -> Vec<(&'static str, bool)> {
        let mut parts = vec![("ebpf_block", self.block.is_err())];
        // Turned off is not unsupported: no series at all, as for a
        // collector turned off.
        match &self.accept {
            Some(Ok(accept)) => {
                parts.push(("ebpf_accept", false));
                if let Some(timed) = accept.io_uring() {
                    parts.push(("ebpf_accept_io_uring", timed.is_err()));
                }
            }
            Some(Err(_)) => {
                parts.push(("ebpf_accept", true));
                if self.accept_io_uring {
                    parts.push(("ebpf_accept_io_uring", true));
                }
            }
            None => {}
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup whose tasks wait behind its CPU quota has its own
    /// histogram, labelled as the cgroup collector labels it. Needs root,
    /// BTF and the cpu controller; CI requires it.
    #[test]
    fn a_throttled_cgroup_has_its_run_queue_waits() {
        let cfg = crate::cli::parse(["sojourn"]).unwrap().collect;
        let collector = EbpfCollector::new(&cfg);
        if let Err(e) = &collector.runqueue {
            assert!(std::env::var_os("SOJOURN_REQUIRE_EBPF").is_none(), "{e}");
            return;
        }
        let busy = crate::ebpf::testing::QuotaCgroup::start("sojourn-ebpf-collector");
        std::thread::sleep(std::time::Duration::from_millis(600));
        let fams = collector.collect(&cfg).unwrap();
        let f = fams
            .iter()
            .find(|f| f.desc.name == CGROUP_WAIT.name)
            .expect("a family per cgroup");
        let sample = f
            .samples
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|(k, v)| *k == "cgroup" && *v == busy.rel)
            })
            .unwrap_or_else(|| panic!("no histogram for {}: {f:?}", busy.rel));
        let crate::metrics::Value::Histogram(h) = &sample.value else {
            panic!("{sample:?}")
        };
        // Waits behind an 80 ms throttle: past the 2^-7 s (7.8 ms) bucket.
        assert_eq!(h.bounds.len(), COARSE_BUCKET_EXPS.len() + 1, "and +Inf");
        assert!(h.count > h.counts[..3].iter().sum::<u64>(), "{h:?}");
    }

    /// Each CPU that ran a task has its own histogram, its buckets the
    /// union of whole kernel slots; one that never did has none.
    #[test]
    fn each_cpu_has_its_waits() {
        let mut busy = RawHistogram::default();
        busy.slots[21] = 3; // (0.5, 1] ms: under 2^-10 s
        busy.slots[25] = 1; // (8, 16] ms: under 2^-4 s
        busy.sum_ns = 12_000_000;
        let per_cpu = [busy, RawHistogram::default(), busy];
        let f = emit_cpus(&per_cpu, None);
        let cpus = |f: &Family| -> Vec<String> {
            f.samples
                .iter()
                .map(|s| s.labels[0].1.to_string())
                .collect()
        };
        assert_eq!(cpus(&f), ["0", "2"]);
        // A CPU taken offline keeps its counts in the kernel's per-CPU
        // map, but not its series.
        assert_eq!(cpus(&emit_cpus(&per_cpu, Some(&[0, 1]))), ["0"]);
        let crate::metrics::Value::Histogram(h) = &f.samples[0].value else {
            panic!()
        };
        assert_eq!(h.counts, [0, 3, 0, 1, 0, 0]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 0.012).abs() < 1e-12);
    }

    #[test]
    fn disks_are_named_and_filtered_as_the_disk_collector_does() {
        let mut queued = crate::ebpf::TimedHistogram {
            sum_ns: 3_000_000,
            ..Default::default()
        };
        queued.slots[0] = 2; // issued straight
        queued.slots[21] = 1; // (0.5, 1] ms
        let mut served = queued;
        served.slots = [0; SLOTS];
        served.slots[22] = 3; // (1, 2] ms
        let disk = |major, minor| DiskTimes {
            major,
            minor,
            queued,
            served,
        };
        let exclude = regex::Regex::new(crate::collectors::disk::DEFAULT_DEVICE_EXCLUDE).unwrap();
        let fams = emit_disks(
            &[disk(8, 0), disk(7, 3), disk(259, 9)],
            4,
            |dev| match dev {
                "8:0" => Some("sda".into()),
                "7:3" => Some("loop3".into()),
                _ => None,
            },
            &exclude,
        );
        let devices = |f: &Family| -> Vec<String> {
            f.samples
                .iter()
                .map(|s| s.labels[0].1.to_string())
                .collect()
        };
        assert_eq!(
            devices(&fams[0]),
            ["sda", "259:9"],
            "loop3 excluded, 259:9 unnamed"
        );
        assert_eq!(devices(&fams[1]), ["sda", "259:9"]);
        let crate::metrics::Value::Histogram(q) = &fams[0].samples[0].value else {
            panic!("a histogram");
        };
        assert_eq!((q.count, q.sum), (3, 0.003));
        assert_eq!(q.counts[0], 2, "zero waits in the first bucket");
        let crate::metrics::Value::Histogram(s) = &fams[1].samples[0].value else {
            panic!("a histogram");
        };
        assert_eq!(s.count, 3);
        let two_ms = s.bounds.iter().position(|b| *b == 2f64.powi(-9)).unwrap();
        assert_eq!(s.counts[two_ms], 3, "(1, 2] ms in the bucket up to 2^-9 s");
        assert_eq!(fams[2].samples[0].value, crate::metrics::Value::Int(4));
    }

    #[test]
    fn kernel_slots_fold_into_whole_buckets() {
        let mut a = RawHistogram::default();
        a.slots[0] = 1; // zero wait
        a.slots[11] = 2; // (2^-21, 2^-20] s: the first bucket
        a.slots[12] = 3; // (2^-20, 2^-19]
        a.slots[31] = 4; // (0.5, 1] s
        a.slots[49] = 5; // the longest: +Inf
        a.sum_ns = 7_000_000_000;
        a.missed = 1;
        let mut b = RawHistogram::default();
        b.slots[31] = 1;
        b.missed = 2;
        let (h, untimed) = histogram(&[a, b]);
        assert_eq!(untimed, 3);
        assert_eq!(h.count, 16);
        assert_eq!(h.sum, 7.0);
        assert_eq!(h.bounds[0], 2f64.powi(-20));
        assert_eq!(h.counts[0], 3, "everything up to 2^-20 s");
        assert_eq!(h.counts[1], 3);
        let one = h.bounds.iter().position(|b| *b == 1.0).unwrap();
        assert_eq!(h.counts[one], 5);
        assert_eq!(*h.counts.last().unwrap(), 5);
        assert_eq!(h.counts.iter().sum::<u64>(), h.count);
        // Native: the kernel's buckets themselves, schema 0, from index -30.
        let n = h.native.unwrap();
        assert_eq!((n.schema, n.zero_threshold, n.zero_count), (0, 0.0, 1));
        // Slots 11, 12 (indices -20, -19), 31 (index 0), 49 (index 18).
        assert_eq!(n.spans, vec![(-20, 2), (18, 1), (17, 1)]);
        assert_eq!(n.deltas, vec![2, 1, 2, 0]);
    }
}
