//! The sampler: a dedicated thread that reads the cheap queue sources every
//! `--queue.sample-interval` and feeds the estimators, so that scrapes only
//! read state. It measures its own CPU time (CLOCK_THREAD_CPUTIME_ID) so the
//! cost of sampling is itself a metric.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Measure;
use super::sources::{
    AcceptTotals, DiskSource, EbpfRunqueueSource, ListenerSource, LoadavgSource, PsiSource,
    SchedstatSource, cfs_counters, throttle_delay,
};
use super::{QueueId, QueueSet, Sample, Scope};
use crate::collectors::CollectError;
use crate::inet_diag::{Dumper, Socket, TCP_LISTEN};
use crate::roots::KeptFile;

/// Counters about the sampler itself.
#[derive(Debug, Default)]
pub struct SamplerStats {
    pub cpu_ns: AtomicU64,
    pub ticks: AtomicU64,
    /// Ticks that started late because the previous one overran its period.
    pub overruns: AtomicU64,
    /// Nanoseconds between the last two samplings of other namespaces'
    /// listeners (0 before the second).
    pub namespace_interval_ns: AtomicU64,
}

/// Shared between the sampler thread and scrapes.
pub struct Shared {
    pub queues: Mutex<QueueSet>,
    pub stats: SamplerStats,
    /// The error of the latest tick, if a required source failed.
    pub last_error: Mutex<Option<CollectError>>,
    /// Whether other network namespaces' sockets are read: None when not
    /// asked (`--no-collector.netns`), Some(false) when the kernel refused.
    pub namespaces: Mutex<Option<bool>>,
}

pub struct Sampler {
    pub shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Every source the sampler reads, kept open, with its state between ticks.
pub struct Sources {
    cpu: CpuSource,
    psi: PsiSource,
    pressure: [(&'static str, KeptFile); 3],
    disks: Disks,
    /// None where the kernel or a sandbox refuses NETLINK_SOCK_DIAG.
    listeners: Option<Listeners>,
    /// None unless asked to look into other namespaces.
    namespaces: Option<Namespaces>,
    sockets: Vec<Socket>,
    /// `(queue, backlog)` of the listeners in the latest dump.
    pub limits: Vec<(QueueId, u32)>,
    /// Queues whose source went away during the latest read.
    pub gone: Vec<QueueId>,
    /// The host's queues gone, by name, before they join `gone`.
    host_gone: Vec<Arc<str>>,
    /// Time between the last two rounds over other namespaces' listeners.
    pub namespace_interval: Option<Duration>,
    /// None without a cgroup filesystem.
    throttle: Option<ThrottleSource>,
    /// The accept-queue program, where it runs: the listeners' queues are
    /// then the time their connections waited.
    accept: Option<Arc<crate::ebpf::Accept>>,
    /// sojourn's own network namespace, as the program keys listeners.
    own_netns: Option<u32>,
}

/// Reads every selected cgroup's cpu.stat once per CFS period (100 ms by
/// default, every `every` ticks), and lists the cgroups again every 10 s.
struct ThrottleSource {
    base: std::path::PathBuf,
    cfg: crate::collectors::cgroup::Config,
    every: u64,
    tick: u64,
    cgroups: Vec<Throttled>,
}

struct Throttled {
    rel: String,
    queue: Arc<str>,
    cpu_stat: KeptFile,
    prev: Option<(u64, f64)>,
}

/// How often the cgroup list is walked again (containers come and go).
const REWALK_TICKS_OF_PERIOD: u64 = 100;
/// One CFS period, the default `cpu.cfs_period_us`: throttling is decided per period.
const CFS_PERIOD: Duration = Duration::from_millis(100);

impl ThrottleSource {
    fn new(cfg: &crate::collectors::Config, sample_interval: Duration) -> Option<Self> {
        use crate::collectors::cgroup::{Layout, detect};
        let root = cfg
            .cgroup
            .root
            .clone()
            .unwrap_or_else(|| cfg.roots.sys("fs/cgroup"));
        let base = match detect(&root)? {
            Layout::V2(r) => r,
            Layout::V1 { cpu, .. } => cpu?,
        };
        let every = ticks_per(CFS_PERIOD, sample_interval);
        Some(ThrottleSource {
            base,
            cfg: cfg.cgroup.clone(),
            every,
            tick: 0,
            cgroups: Vec::new(),
        })
    }

    fn rewalk(&mut self, gone: &mut Vec<Arc<str>>) {
        // Throttling queues go through the QueueSet cap; walk no further than it.
        let (paths, _) =
            crate::collectors::cgroup::walk(&self.base, &self.cfg, self.cfg.max_cgroups);
        let mut old = std::mem::take(&mut self.cgroups);
        for rel in paths {
            let kept = old
                .iter()
                .position(|c| c.rel == rel)
                .map(|i| old.swap_remove(i));
            self.cgroups.push(kept.unwrap_or_else(|| Throttled {
                queue: Arc::from(super::name::QueueName::CgroupCpu(rel.to_string()).to_string()),
                cpu_stat: KeptFile::new(
                    self.base.join(rel.trim_start_matches('/')).join("cpu.stat"),
                ),
                prev: None,
                rel,
            }));
        }
        gone.extend(old.into_iter().map(|c| c.queue));
    }

    fn read(&mut self, out: &mut Vec<Sample>, gone: &mut Vec<Arc<str>>) {
        if self
            .tick
            .is_multiple_of(self.every.saturating_mul(REWALK_TICKS_OF_PERIOD))
        {
            self.rewalk(gone);
        }
        let due = self.tick.is_multiple_of(self.every);
        self.tick = self.tick.wrapping_add(1);
        if !due {
            return;
        }
        self.cgroups.retain_mut(|c| {
            // A container that exited (its kept file reads ENODEV), or a
            // cgroup without the cpu controller: let go until the next walk
            // finds it again.
            let Ok(Ok(cur)) = c.cpu_stat.read().map(cfs_counters) else {
                gone.push(c.queue.clone());
                return false;
            };
            if let Some(prev) = c.prev.replace(cur) {
                out.push(Sample {
                    queue: c.queue.clone(),
                    scope: None,
                    measure: Measure::Delay,
                    source: "cgroup",
                    value: throttle_delay(prev, cur),
                });
            }
            true
        });
    }
}

/// Listening sockets, read cheaply: a dump visits every slot of the
/// kernel's listening hash (16 384 slots on this 24 GB VM, 14 µs; it grows
/// with RAM), so the sampler dumps once a second to learn the listeners and
/// in between asks for each one by its cookie, a direct hash lookup. A
/// SO_REUSEPORT group (one address and port, several sockets) or more than
/// [`MAX_LOOKUPS`] listeners make it dump every tick instead.
struct Listeners {
    dumper: Dumper,
    source: ListenerSource,
    /// Listeners to look up between dumps; None: dump every tick.
    known: Option<Vec<Socket>>,
    /// When the last dump was: by the clock, not by ticks, as other
    /// namespaces' listeners are read less often than every tick.
    dumped: Option<Instant>,
}

/// Block devices, read cheaply: /proc/diskstats sums per-CPU counters and
/// formats 20 numbers for every device, loop and zram devices included, so
/// the sampler reads it once a second to learn the devices and in between
/// reads only the selected devices' /sys/class/block/DEV/stat.
struct Disks {
    source: DiskSource,
    diskstats: KeptFile,
    roots: crate::roots::Roots,
    /// The selected devices' stat files; None: read diskstats every tick
    /// (no sysfs, e.g. a fixture tree).
    stats: Option<Vec<KeptFile>>,
    reread_every: u64,
    tick: u64,
    /// The block program, where it runs: the disks' delay is then what it
    /// timed.
    block: Option<Arc<crate::ebpf::Block>>,
}

impl Disks {
    fn new(
        exclude: regex::Regex,
        roots: &crate::roots::Roots,
        interval: Duration,
        block: Option<Arc<crate::ebpf::Block>>,
    ) -> Self {
        Disks {
            source: DiskSource::new(exclude),
            diskstats: KeptFile::new(roots.proc("diskstats")),
            roots: roots.clone(),
            stats: None,
            reread_every: ticks_per(RELIST_PERIOD, interval),
            tick: 0,
            block,
        }
    }

    fn read(
        &mut self,
        out: &mut Vec<Sample>,
        gone: &mut Vec<Arc<str>>,
    ) -> Result<(), CollectError> {
        if let Some(block) = &self.block {
            // The disks known from the last reading; one first seen now is
            // looked up from the next tick on.
            let totals = super::sources::timed_totals(
                self.source.devs(),
                |dev| block.queued(dev),
                || block.missed(),
            )
            .map_err(CollectError::Io)?;
            self.source.set_timed(totals);
        }
        let due = self.tick.is_multiple_of(self.reread_every);
        self.tick = self.tick.wrapping_add(1);
        if let (false, Some(stats)) = (due, &mut self.stats) {
            let before = out.len();
            let all_read = stats.iter_mut().enumerate().all(|(i, f)| {
                f.read()
                    .is_ok_and(|t| self.source.sample_device(i, t, out).is_ok())
            });
            if all_read {
                return Ok(());
            }
            // A device went away: diskstats says which.
            out.truncate(before);
        }
        let text = self.diskstats.read()?;
        let samples = self
            .source
            .sample(text, gone)
            .map_err(|e| CollectError::parse(self.diskstats.path(), e))?;
        out.extend(samples);
        let paths: Vec<std::path::PathBuf> = self
            .source
            .device_names()
            .map(|d| self.roots.sys(&format!("class/block/{d}/stat")))
            .collect();
        // The same devices as before: keep the files open.
        let same = self.stats.as_ref().is_some_and(|files| {
            files.len() == paths.len() && files.iter().zip(&paths).all(|(f, p)| f.path() == p)
        });
        if !same {
            self.stats = paths
                .iter()
                .all(|p| p.exists())
                .then(|| paths.into_iter().map(KeptFile::new).collect());
        }
        Ok(())
    }
}

fn ticks_per(period: Duration, interval: Duration) -> u64 {
    u64::try_from(period.as_nanos() / interval.as_nanos().max(1))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Most listeners looked up one by one; beyond, one dump is cheaper.
const MAX_LOOKUPS: usize = 32;
/// How often listeners are dumped and diskstats read in full, to find new ones.
const RELIST_PERIOD: Duration = Duration::from_secs(1);

impl Listeners {
    fn new() -> Option<Self> {
        Some(Self::with(Dumper::new().ok()?, ListenerSource::default()))
    }

    fn with(dumper: Dumper, source: ListenerSource) -> Self {
        Listeners {
            dumper,
            source,
            known: None,
            dumped: None,
        }
    }

    /// Fills `sockets` with every listener's current record.
    fn read(&mut self, sockets: &mut Vec<Socket>) -> Result<(), CollectError> {
        let now = Instant::now();
        let due = self
            .dumped
            .is_none_or(|t| now.duration_since(t) >= RELIST_PERIOD);
        sockets.clear();
        if let (false, Some(known)) = (due, &self.known)
            && self.dumper.lookup(known, |s| sockets.push(s))?
        {
            return Ok(());
        }
        sockets.clear();
        self.dumper
            .dump_all(1 << TCP_LISTEN, false, |s| sockets.push(s))?;
        self.known = lookup_plan(sockets);
        self.dumped = Some(now);
        Ok(())
    }
}

/// The listeners to look up one by one, or None when a dump is cheaper or
/// lookups cannot find them all (a SO_REUSEPORT group: the kernel's lookup
/// selects one socket of the group).
fn lookup_plan(listeners: &[Socket]) -> Option<Vec<Socket>> {
    if listeners.len() > MAX_LOOKUPS {
        return None;
    }
    let mut keys: Vec<_> = listeners
        .iter()
        .map(|s| (s.family, s.local, s.local_port))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    (keys.len() == listeners.len()).then(|| listeners.to_vec())
}

/// The share of one core the whole sampler keeps to when rounds over other
/// namespaces are due: they wait while it is above (the host's queues
/// vary here between 0.35 and 0.66 %).
const SAMPLER_SHARE: f64 = 0.01;
/// Longest wait between two rounds over other namespaces, whatever the
/// sampler's share, so that pods' queues are never left unsampled.
const MAX_ROUND_GAP: Duration = Duration::from_secs(2);

/// The listeners of the other network namespaces (every pod's), each read
/// through a sock_diag socket made in its namespace
/// ([`crate::netns::enter`]), the same way as the host's. The namespaces are
/// found by a walk of /proc every `--collector.process.rescan-interval`; a
/// socket holds its namespace alive, so it is closed at the first walk that
/// finds no process in it, and the namespace's queues go with it.
///
/// Reading them costs what their number costs (one lookup per listener,
/// a dump per namespace each second), so a round over all of them runs
/// only as often as `--queue.namespace-cpu-budget` allows: every tick for
/// a few pods, less often for hundreds.
struct Namespaces {
    rescan_interval: Duration,
    scanned: Option<Instant>,
    budget: f64,
    /// When the last round started, the CPU time it took, and this
    /// thread's CPU clock when it started.
    last_round: Option<(Instant, Duration, u64)>,
    entered: crate::netns::Entered<Listeners>,
    /// Pod names, with `--collector.cgroup.kubelet-url`.
    kubelet: Option<Arc<crate::kubelet::Kubelet>>,
}

impl Namespaces {
    fn new(cfg: &crate::collectors::Config, budget: f64) -> Option<Self> {
        if !cfg.netns.enabled {
            return None;
        }
        crate::netns::own_namespace(&cfg.roots.procfs)?;
        Some(Namespaces {
            rescan_interval: cfg.process.rescan_interval,
            scanned: None,
            budget,
            last_round: None,
            entered: crate::netns::Entered::new(&cfg.roots.procfs, cfg.netns.max_namespaces),
            kubelet: crate::collectors::netns::kubelet(cfg),
        })
    }

    /// Enters the namespaces new since the last walk, lets go of those
    /// with no process left, and renames those whose pod's names came.
    fn rescan(&mut self, gone: &mut Vec<QueueId>) {
        let names = self.kubelet.as_ref().map(|k| k.directory().0);
        let scope = |ns: &crate::netns::Netns| {
            Arc::new(Scope {
                netns: ns.inode,
                labels: crate::collectors::netns::identity(ns, names.as_deref()),
            })
        };
        let left = self.entered.rescan(self.rescan_interval, |ns, dumper| {
            Listeners::with(dumper, ListenerSource::in_scope(scope(ns)))
        });
        for mut l in left {
            gone.extend(l.source.forget_all());
        }
        for (ns, l) in self.entered.iter_mut() {
            let fresh = scope(ns);
            if l.source.scope().is_some_and(|s| s.labels != fresh.labels) {
                l.source.set_scope(fresh);
            }
        }
    }

    /// Samples every entered namespace's listeners when a round is due;
    /// returns the time since the previous round when one ran.
    fn read(
        &mut self,
        now: u64,
        sockets: &mut Vec<Socket>,
        out: &mut Vec<Sample>,
        limits: &mut Vec<(QueueId, u32)>,
        gone: &mut Vec<QueueId>,
        accept: Option<&crate::ebpf::Accept>,
    ) -> Option<Duration> {
        let started = Instant::now();
        if self
            .scanned
            .is_none_or(|t| started.duration_since(t) >= self.rescan_interval)
        {
            self.rescan(gone);
            self.scanned = Some(started);
        }
        let cpu_before = thread_cpu_ns();
        if let Some((last, cpu, thread_cpu)) = self.last_round {
            let within_budget = crate::collectors::budget_allows(last, cpu, self.budget, started);
            // The whole sampler, the host's queues and the bookkeeping of
            // the namespaces' samples included, within its share; a round at
            // least every MAX_ROUND_GAP all the same.
            let since = started.duration_since(last);
            let whole =
                cpu_before.saturating_sub(thread_cpu) as f64 / since.as_nanos().max(1) as f64;
            // A round over no namespace costs nothing: never held back.
            let held = !self.entered.is_empty() && whole > SAMPLER_SHARE && since < MAX_ROUND_GAP;
            if !within_budget || held {
                return None;
            }
        }
        self.entered.retain(|_, l| match l.read(sockets) {
            Ok(()) => {
                let netns = l.source.scope().map(|s| s.netns as u32);
                let totals = |port| accept?.totals(netns?, port);
                let timed: Option<AcceptTotals> = accept.is_some().then_some(&totals);
                let s = l.source.sample_timed(now, sockets, timed);
                out.extend(s.samples);
                limits.extend(s.limits);
                gone.extend(s.gone);
                true
            }
            // Nothing is known of its listeners now; the next walk enters
            // the namespace again if it still lives.
            Err(_) => {
                gone.extend(l.source.forget_all());
                false
            }
        });
        let cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu_before));
        let since = self
            .last_round
            .map(|(last, ..)| started.duration_since(last));
        self.last_round = Some((started, cpu, cpu_before));
        since
    }
}

pub enum CpuSource {
    /// Every wait timed in the kernel, where eBPF is on and permitted.
    Ebpf(EbpfRunqueueSource, std::sync::Arc<crate::ebpf::RunQueue>),
    Schedstat(SchedstatSource, KeptFile),
    Loadavg(LoadavgSource, KeptFile),
}

impl Sources {
    pub fn new(cfg: &crate::collectors::Config, queue: &super::QueueConfig) -> Self {
        let roots = cfg.roots.clone();
        let disk_exclude = cfg.disk.device_exclude.clone();
        // The kernel has schedstat or not for the life of the process.
        let schedstat = roots.proc("schedstat");
        // The ebpf collector logs why when eBPF is not permitted.
        let (runqueue, block, accept) = match queue.ebpf {
            true => {
                let programs =
                    crate::ebpf::shared_programs(cfg.ebpf.accept(), cfg.ebpf.accept_io_uring);
                (
                    programs.runqueue.ok(),
                    programs.block.ok(),
                    programs.accept.and_then(Result::ok),
                )
            }
            false => (None, None, None),
        };
        // Inodes fit in 32 bits (procfs's are), as the program keys them.
        let own_netns = crate::netns::own_namespace(&roots.procfs).map(|n| n as u32);
        let cpu = if let Some(rq) = runqueue {
            CpuSource::Ebpf(EbpfRunqueueSource::default(), rq)
        } else if schedstat.exists() {
            CpuSource::Schedstat(SchedstatSource::default(), KeptFile::new(schedstat))
        } else {
            let cpus = crate::roots::read(&roots.proc("stat"))
                .ok()
                .and_then(|t| crate::collectors::cpu::parse_proc_stat(&t).ok())
                .map(|s| s.cpus.len() as u32)
                .unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
                });
            CpuSource::Loadavg(
                LoadavgSource::new(cpus),
                KeptFile::new(roots.proc("loadavg")),
            )
        };
        let pressure = ["cpu", "memory", "io"]
            .map(|r| (r, KeptFile::new(roots.proc(&format!("pressure/{r}")))));
        Sources {
            cpu,
            psi: PsiSource::default(),
            pressure,
            disks: Disks::new(disk_exclude, &roots, queue.sample_interval, block),
            listeners: Listeners::new(),
            namespaces: Namespaces::new(cfg, queue.namespace_cpu_budget),
            sockets: Vec::new(),
            limits: Vec::new(),
            gone: Vec::new(),
            host_gone: Vec::new(),
            namespace_interval: None,
            throttle: ThrottleSource::new(cfg, queue.sample_interval),
            accept,
            own_netns,
        }
    }

    /// Reads every source once. Errors of required sources (the CPU queue,
    /// diskstats) are returned with whatever samples the others gave. The
    /// queues whose source went away are left in [`Sources::gone`].
    pub fn read(&mut self, now: u64, out: &mut Vec<Sample>) -> Option<CollectError> {
        let mut error = None;
        self.gone.clear();
        self.host_gone.clear();
        self.limits.clear();
        let parse = |path: &std::path::Path, e| CollectError::parse(path, e);
        match &mut self.cpu {
            CpuSource::Ebpf(src, rq) => match rq.read() {
                Ok(per_cpu) => out.extend(src.sample(&per_cpu[..])),
                Err(e) => error = Some(CollectError::Io(e)),
            },
            CpuSource::Schedstat(src, file) => match file.read() {
                Ok(t) => match src.sample(t, &mut self.host_gone) {
                    Ok(s) => out.extend(s),
                    Err(e) => error = Some(parse(file.path(), e)),
                },
                Err(e) => error = Some(e),
            },
            CpuSource::Loadavg(src, file) => match file.read() {
                Ok(t) => match src.sample(t) {
                    Ok(s) => out.push(s),
                    Err(e) => error = Some(parse(file.path(), e)),
                },
                Err(e) => error = Some(e),
            },
        }
        for (resource, file) in &mut self.pressure {
            // PSI is optional (kernel < 4.20 or psi=0): absence is not an error.
            if let Ok(text) = file.read() {
                match self.psi.sample(resource, now, text) {
                    Ok(s) => out.extend(s),
                    Err(e) => error = Some(parse(file.path(), e)),
                }
            }
        }
        if let Err(e) = self.disks.read(out, &mut self.host_gone) {
            error = Some(e);
        }
        if let Some(listeners) = &mut self.listeners {
            match listeners.read(&mut self.sockets) {
                Ok(()) => {
                    let totals = |port| {
                        let accept = self.accept.as_ref()?;
                        accept.totals(self.own_netns?, port)
                    };
                    let timed: Option<AcceptTotals> = self.accept.is_some().then_some(&totals);
                    let l = listeners.source.sample_timed(now, &self.sockets, timed);
                    out.extend(l.samples);
                    self.limits.extend(l.limits);
                    self.gone.extend(l.gone);
                }
                Err(e) => {
                    // Nothing is known of any listener: none may go on standing.
                    self.gone.extend(listeners.source.forget_all());
                    error = Some(e);
                }
            }
        }
        if let Some(n) = &mut self.namespaces {
            self.namespace_interval = n
                .read(
                    now,
                    &mut self.sockets,
                    out,
                    &mut self.limits,
                    &mut self.gone,
                    self.accept.as_deref(),
                )
                .or(self.namespace_interval);
        }
        if let Some(t) = &mut self.throttle {
            t.read(out, &mut self.host_gone);
        }
        self.gone.extend(
            self.host_gone
                .drain(..)
                .map(|name| QueueId { name, netns: 0 }),
        );
        error
    }
}

/// CPU time this thread has used.
fn thread_cpu_ns() -> u64 {
    u64::try_from(crate::collectors::thread_cpu_time().as_nanos()).unwrap_or(u64::MAX)
}

impl Sampler {
    pub fn start(
        cfg: &crate::collectors::Config,
        queue: &super::QueueConfig,
    ) -> std::io::Result<Self> {
        let config = queue.clone();
        let period = config.sample_interval;
        let sources = Sources::new(cfg, queue);
        let namespaces = sources.namespaces.as_ref().map(|_| true);
        let shared = Arc::new(Shared {
            queues: Mutex::new(QueueSet::new(config)),
            stats: SamplerStats::default(),
            last_error: Mutex::new(None),
            namespaces: Mutex::new(namespaces),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("queue-sampler".into())
                .spawn(move || run(sources, period, &shared, &stop))?
        };
        Ok(Sampler {
            shared,
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// How often stale queues are dropped.
const FORGET_EVERY: Duration = Duration::from_secs(10);

fn run(mut sources: Sources, period: Duration, shared: &Shared, stop: &AtomicBool) {
    let origin = Instant::now();
    let mut next = origin;
    let mut last_forget = origin;
    let mut samples = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let now_ns = u64::try_from(now.duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
        samples.clear();
        let error = sources.read(now_ns, &mut samples);
        if let Ok(mut queues) = shared.queues.lock() {
            for s in &samples {
                queues.observe(now_ns, s);
            }
            for (queue, limit) in &sources.limits {
                queues.set_limit(queue, f64::from(*limit));
            }
            for queue in &sources.gone {
                queues.remove(queue);
            }
            if now.duration_since(last_forget) >= FORGET_EVERY {
                queues.forget_stale(now_ns);
                last_forget = now;
            }
        }
        if let Ok(mut last) = shared.last_error.lock() {
            *last = error;
        }
        if let Some(d) = sources.namespace_interval {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            shared
                .stats
                .namespace_interval_ns
                .store(ns, Ordering::Relaxed);
        }
        if let Ok(mut n) = shared.namespaces.lock() {
            *n = sources.namespaces.as_ref().map(|n| !n.entered.refused());
        }
        shared.stats.ticks.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .cpu_ns
            .store(thread_cpu_ns(), Ordering::Relaxed);

        next += period;
        let now = Instant::now();
        if next <= now {
            // Overran: skip the missed ticks rather than bursting to catch up.
            shared.stats.overruns.fetch_add(1, Ordering::Relaxed);
            next = now + period;
        }
        std::thread::park_timeout(next - now);
    }
}

#[cfg(test)]
mod tests;
