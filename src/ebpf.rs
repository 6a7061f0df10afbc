//! eBPF measurements of kernel queues, loaded with aya from the objects in
//! `bpf/` (C sources beside them; `scripts/build_bpf.sh` rebuilds them and
//! CI checks that the committed objects are what the sources build).
//!
//! The run-queue program (`bpf/runqueue.bpf.c`) times every wait on a CPU's
//! run queue, from wakeup (or preemption) to running, and counts it in a
//! per-CPU histogram of power-of-two buckets of seconds. The block program
//! (`bpf/block.bpf.c`) times each disk request twice: queued (inserted
//! until issued to the driver) and served (issued until completed). Loading
//! needs CAP_BPF and CAP_PERFMON (or root), the kernel's BTF at
//! /sys/kernel/btf/vmlinux and kernel 5.11 or later (task local storage
//! in tracing programs); where any is missing, [`RunQueue::load`] and
//! [`Block::load`] say which and nothing is attached.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};

mod attach;
mod loader;

pub use loader::set_executable as set_loader_executable;
use loader::{Attached, Object, Request};

/// Serves as the eBPF loader when this process was started as one (see
/// [`set_loader_executable`]): the exit code; None in any other process.
/// Call first thing in `main`.
pub fn serve_loader_if_asked() -> Option<std::process::ExitCode> {
    loader::serve_if_asked(&OBJECTS)
}

/// The compiled program; see `bpf/runqueue.bpf.c`.
static RUNQUEUE_BYTES: &[u8] = aya::include_bytes_aligned!("../bpf/runqueue.bpf.o");
/// The compiled program; see `bpf/block.bpf.c`.
static BLOCK_BYTES: &[u8] = aya::include_bytes_aligned!("../bpf/block.bpf.o");
/// `bpf/accept.bpf.c`, built by `scripts/build_bpf.sh`.
static ACCEPT_BYTES: &[u8] = aya::include_bytes_aligned!("../bpf/accept.bpf.o");

/// Mirrors `bpf/slots.h`: `SOJOURN_SLOTS`, the slots of every histogram.
pub const SLOTS: usize = 50;

/// Slot `s > 0` counts waits in (2^(s - OFFSET - 1), 2^(s - OFFSET)] seconds
/// — native histogram bucket `s - OFFSET` of schema 0; slot 0 waits the
/// clock saw as 0 ns.
pub const SLOT_OFFSET: i32 = 31;

/// Mirrors `struct runqueue_histogram` of `bpf/runqueue.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawHistogram {
    pub slots: [u64; SLOTS],
    pub sum_ns: u64,
    /// Waits not timed: the task's storage slot could not be had.
    pub missed: u64,
}

// SAFETY: plain integers, no padding (every field is a u64), any bit
// pattern valid: what aya copies out of the map.
unsafe impl aya::Pod for RawHistogram {}

impl Default for RawHistogram {
    fn default() -> Self {
        RawHistogram {
            slots: [0; SLOTS],
            sum_ns: 0,
            missed: 0,
        }
    }
}

/// The upper bound, in seconds, of histogram slot `slot`: 2^(slot − 31)
/// (slot 0: 2^-31 s, below which only a zero wait falls).
pub fn slot_upper_bound(slot: usize) -> f64 {
    let exp = i32::try_from(slot).unwrap_or(i32::MAX) - SLOT_OFFSET + 1;
    2f64.powi(exp - 1)
}

/// An error and each of its causes, `a: b: c` (aya's top-level errors
/// leave out the errno that says why, e.g. EPERM without CAP_BPF).
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // Some wrap their cause's text into their own.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The run-queue program, attached to the scheduler's tracepoints while
/// this lives (aya detaches and unloads on drop).
pub struct RunQueue {
    histogram: PerCpuArray<MapData, RawHistogram>,
    /// Per cgroup, where the kernel's cgroups can be told apart.
    cgroups: Option<HashMap<MapData, u64, TimedHistogram>>,
    cgroup_mode: CgroupMode,
    /// Its programs' links: detached when this drops.
    _attached: Attached,
}

static RUNQUEUE_OBJECT: Object = Object {
    name: "runqueue",
    what: "run-queue",
    bytes: RUNQUEUE_BYTES,
    btf_tracepoints: &["sched_wakeup", "sched_wakeup_new", "sched_switch"],
    optional_btf_tracepoints: &[],
    tracepoints: &[],
    maps: &["histogram", "cgroups"],
};

static BLOCK_OBJECT: Object = Object {
    name: "block",
    what: "block",
    bytes: BLOCK_BYTES,
    btf_tracepoints: &["block_rq_insert", "block_rq_issue", "block_rq_complete"],
    optional_btf_tracepoints: &[],
    tracepoints: &[],
    maps: &["histograms", "missed"],
};

static ACCEPT_OBJECT: Object = Object {
    name: "accept",
    what: "accept-queue",
    bytes: ACCEPT_BYTES,
    // A connection established on the server's side.
    btf_tracepoints: &["inet_sock_set_state"],
    // io_uring's completions, for the accepts io_uring makes (6.3+).
    optional_btf_tracepoints: &[IO_URING_COMPLETE],
    // The exits of accept(2) and accept4(2).
    tracepoints: &[
        ("accept4_exit", "syscalls", "sys_exit_accept4"),
        ("accept_exit", "syscalls", "sys_exit_accept"),
    ],
    maps: &["listeners", "missed"],
};

/// The accept object's program on io_uring's completions.
const IO_URING_COMPLETE: &str = "io_uring_complete";

/// Every object, as the loader process finds them by name.
static OBJECTS: [&Object; 3] = [&RUNQUEUE_OBJECT, &BLOCK_OBJECT, &ACCEPT_OBJECT];

/// The attached programs while anyone holds them: the collector and the
/// queue sampler share each, so each wait is timed once.
static RUNQUEUE_SHARED: Mutex<Weak<RunQueue>> = Mutex::new(Weak::new());
static BLOCK_SHARED: Mutex<Weak<Block>> = Mutex::new(Weak::new());
static ACCEPT_SHARED: Mutex<Weak<Accept>> = Mutex::new(Weak::new());

/// Loads the one object `request` asks for.
fn load_one(request: Request) -> Result<Attached, String> {
    loader::load(&OBJECTS, std::slice::from_ref(&request))
        .pop()
        .unwrap_or_else(|| Err("the loader answered nothing".into()))
}

/// The programs, each attached once per process while anyone holds it.
pub struct Programs {
    pub runqueue: Result<Arc<RunQueue>, String>,
    pub block: Result<Arc<Block>, String>,
    /// Only when asked for (the collector exports it; the sampler does not
    /// read it).
    pub accept: Option<Result<Arc<Accept>, String>>,
}

/// The programs, the accept-queue one too with `accept` (timing io_uring's
/// accepts too with `accept_io_uring`): those another holder has attached
/// already are shared, the rest loaded together (one loader process, one
/// parse of the kernel's BTF).
pub fn shared_programs(accept: bool, accept_io_uring: bool) -> Programs {
    // Always locked in this order.
    let mut runqueue_slot = RUNQUEUE_SHARED
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut block_slot = BLOCK_SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut accept_slot = ACCEPT_SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let runqueue = runqueue_slot.upgrade();
    let block = block_slot.upgrade();
    let held_accept = accept_slot.upgrade();
    let mut requests = Vec::new();
    // The hierarchy the program is told to count in is the one it reports.
    let mode = RunQueue::mode();
    if runqueue.is_none() {
        requests.push(RunQueue::request(mode));
    }
    if block.is_none() {
        requests.push(Request::plain(&BLOCK_OBJECT));
    }
    if accept && held_accept.is_none() {
        requests.push(Accept::request(accept_io_uring));
    }
    let mut loaded = loader::load(&OBJECTS, &requests).into_iter();
    let mut next = || {
        loaded
            .next()
            .unwrap_or_else(|| Err("the loader answered nothing".into()))
    };
    fn keep<T>(slot: &mut Weak<T>, made: Result<T, String>) -> Result<Arc<T>, String> {
        let program = Arc::new(made?);
        *slot = Arc::downgrade(&program);
        Ok(program)
    }
    let runqueue = match runqueue {
        Some(held) => Ok(held),
        None => keep(
            &mut runqueue_slot,
            next().and_then(|a| RunQueue::from_attached(a, mode)),
        ),
    };
    let block = match block {
        Some(held) => Ok(held),
        None => keep(&mut block_slot, next().and_then(Block::from_attached)),
    };
    let accept = accept.then(|| match held_accept {
        Some(held) => Ok(held),
        None => keep(
            &mut accept_slot,
            next().and_then(|a| Accept::from_attached(a, accept_io_uring)),
        ),
    });
    Programs {
        runqueue,
        block,
        accept,
    }
}

impl RunQueue {
    /// The program attached for the process, loaded by the first caller
    /// and detached when the last holder drops it.
    pub fn shared() -> Result<Arc<RunQueue>, String> {
        shared_programs(false, false).runqueue
    }

    /// Loads and attaches the program; the reason when this machine does
    /// not permit it.
    pub fn load() -> Result<RunQueue, String> {
        let mode = RunQueue::mode();
        load_one(RunQueue::request(mode)).and_then(|a| RunQueue::from_attached(a, mode))
    }

    /// The load of the program counting in the cpu controller's hierarchy
    /// of this host.
    fn request(mode: CgroupMode) -> Request {
        let (mode_value, controller) = match mode {
            CgroupMode::Off => (CGROUPS_OFF, 0),
            CgroupMode::Default => (CGROUPS_DEFAULT, 0),
            CgroupMode::Controller(i) => (CGROUPS_CONTROLLER, i),
        };
        Request {
            globals: vec![
                ("cgroup_mode".into(), mode_value),
                ("cgroup_controller".into(), controller),
            ],
            ..Request::plain(&RUNQUEUE_OBJECT)
        }
    }

    fn mode() -> CgroupMode {
        cgroup_mode(
            std::path::Path::new("/sys/fs/cgroup"),
            &std::fs::read_to_string("/proc/cgroups").unwrap_or_default(),
        )
    }

    fn from_attached(mut attached: Attached, mode: CgroupMode) -> Result<RunQueue, String> {
        let histogram: PerCpuArray<_, _> = attached.take_map("histogram")?;
        let cgroups: HashMap<_, _, _> = attached.take_map("cgroups")?;
        Ok(RunQueue {
            histogram,
            cgroups: (mode != CgroupMode::Off).then_some(cgroups),
            cgroup_mode: mode,
            _attached: attached,
        })
    }

    /// The hierarchy whose cgroups [`RunQueue::cgroups`] are.
    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroup_mode
    }

    /// Each cgroup's waits since the program was attached, by the id of
    /// its directory (its inode number) in the hierarchy the program
    /// counts in ([`cgroup_mode`]); None where it counts in none.
    pub fn cgroups(&self) -> Option<Result<Vec<(u64, TimedHistogram)>, String>> {
        let map = self.cgroups.as_ref()?;
        Some(
            map.iter()
                .map(|e| e.map_err(|e| format!("reading the cgroups' run-queue histograms: {e}")))
                .collect(),
        )
    }

    /// Each possible CPU's histogram since the program was attached,
    /// indexed by CPU number (as aya copies them out: the sampler reads
    /// this every tick, so it is not copied again).
    pub fn read(&self) -> Result<aya::maps::PerCpuValues<RawHistogram>, String> {
        self.histogram
            .get(&0, 0)
            .map_err(|e| format!("reading the run-queue histogram: {e}"))
    }
}

/// `SOJOURN_CGROUPS_*` of `bpf/runqueue.h`.
const CGROUPS_OFF: u32 = 0;
const CGROUPS_DEFAULT: u32 = 1;
const CGROUPS_CONTROLLER: u32 = 2;
/// `SOJOURN_MAX_CONTROLLERS`.
const MAX_CONTROLLERS: u32 = 64;

/// Which hierarchy a task's run-queue waits are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    Off,
    /// The default (v2) hierarchy's cgroup.
    Default,
    /// A v1 controller's, by its index in the kernel's controller list.
    Controller(u32),
}

/// The cpu controller's hierarchy: on a v1 (or hybrid) host the cgroup
/// that CPU limits apply to, as the unified one is empty there; on a v2
/// host the default hierarchy. `/proc/cgroups` lists the controllers in
/// the kernel's order (their index in a task's css_set), each with its
/// hierarchy id: 0 when it is on the v2 hierarchy. Off when no cgroup
/// filesystem is mounted at `root`.
pub fn cgroup_mode(root: &std::path::Path, proc_cgroups: &str) -> CgroupMode {
    if root.join("cgroup.controllers").exists() {
        return CgroupMode::Default;
    }
    let controllers = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            Some((f.next()?, f.next()?.parse::<u32>().ok()?))
        });
    for (index, (name, hierarchy)) in (0u32..).zip(controllers) {
        if name == "cpu" {
            return match hierarchy {
                0 if root.join("unified/cgroup.controllers").exists() => CgroupMode::Default,
                0 => CgroupMode::Off,
                _ if index < MAX_CONTROLLERS => CgroupMode::Controller(index),
                _ => CgroupMode::Off,
            };
        }
    }
    CgroupMode::Off
}

/// Mirrors `struct block_key` of `bpf/block.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The disk as the kernel's dev_t: `major << 20 | first minor`.
    pub dev: u32,
    /// [`BLOCK_QUEUED`] or [`BLOCK_SERVED`].
    pub phase: u32,
}

// SAFETY: two u32, no padding, any bit pattern valid.
unsafe impl aya::Pod for BlockKey {}

/// `BLOCK_QUEUED` of `bpf/block.h`: inserted until issued to the driver.
pub const BLOCK_QUEUED: u32 = 0;
/// `BLOCK_SERVED`: issued until completed.
pub const BLOCK_SERVED: u32 = 1;
/// `BLOCK_MAX_DISKS` of `bpf/block.h`.
pub const BLOCK_MAX_DISKS: usize = 64;

/// Mirrors `struct timed_histogram` of `bpf/slots.h`: the waits of one
/// disk and phase, one cgroup or one listener, added to by every CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TimedHistogram {
    pub slots: [u64; SLOTS],
    pub sum_ns: u64,
}

// SAFETY: u64s only, any bit pattern valid.
unsafe impl aya::Pod for TimedHistogram {}

impl Default for TimedHistogram {
    fn default() -> Self {
        TimedHistogram {
            slots: [0; SLOTS],
            sum_ns: 0,
        }
    }
}

/// One disk's times, as read from the block program.
#[derive(Debug, Clone)]
pub struct DiskTimes {
    pub major: u32,
    pub minor: u32,
    pub queued: TimedHistogram,
    pub served: TimedHistogram,
}

impl DiskTimes {
    /// `major:minor`, as /proc/diskstats and cgroups name a device.
    pub fn dev(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The kernel's dev_t (`major << 20 | minor`), as the program keys it.
    pub fn dev_t(&self) -> u32 {
        self.major << 20 | self.minor
    }
}

/// The block program, attached to the block layer's request tracepoints
/// while this lives.
pub struct Block {
    /// Locked only to remove a disk that is gone ([`Block::forget`]).
    histograms: std::sync::Mutex<HashMap<MapData, BlockKey, TimedHistogram>>,
    missed: Array<MapData, u64>,
    _attached: Attached,
}

impl Block {
    /// The program attached for the process, loaded by the first caller
    /// and detached when the last holder drops it.
    pub fn shared() -> Result<Arc<Block>, String> {
        shared_programs(false, false).block
    }

    /// Loads and attaches the program; the reason when this machine does
    /// not permit it.
    pub fn load() -> Result<Block, String> {
        load_one(Request::plain(&BLOCK_OBJECT)).and_then(Block::from_attached)
    }

    fn from_attached(mut attached: Attached) -> Result<Block, String> {
        let histograms: HashMap<_, _, _> = attached.take_map("histograms")?;
        let missed: Array<_, _> = attached.take_map("missed")?;
        Ok(Block {
            histograms: std::sync::Mutex::new(histograms),
            missed,
            _attached: attached,
        })
    }

    /// One disk's requests issued since the program was attached and the
    /// ns they waited queued, by dev_t (`major << 20 | minor`); None
    /// before its first.
    pub fn queued(&self, dev: u32) -> Result<Option<(u64, u64)>, String> {
        let key = BlockKey {
            dev,
            phase: BLOCK_QUEUED,
        };
        match locked(&self.histograms).get(&key, 0) {
            Ok(h) => Ok(Some((h.slots.iter().sum(), h.sum_ns))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(format!("reading the block histograms: {e}")),
        }
    }

    /// The completions no disk slot was left for.
    pub fn missed(&self) -> Result<u64, String> {
        self.missed
            .get(&0, 0)
            .map_err(|e| format!("reading the block program's missed count: {e}"))
    }

    /// Every disk's queued and served times since the program was
    /// attached, by dev_t; and the completions no disk slot was left for.
    pub fn read(&self) -> Result<(Vec<DiskTimes>, u64), String> {
        let mut by_dev: std::collections::BTreeMap<u32, DiskTimes> = Default::default();
        for entry in locked(&self.histograms).iter() {
            let (key, h) = entry.map_err(|e| format!("reading the block histograms: {e}"))?;
            let disk = by_dev.entry(key.dev).or_insert(DiskTimes {
                major: key.dev >> 20,
                minor: key.dev & 0xf_ffff,
                queued: TimedHistogram::default(),
                served: TimedHistogram::default(),
            });
            match key.phase {
                BLOCK_QUEUED => disk.queued = h,
                BLOCK_SERVED => disk.served = h,
                _ => {}
            }
        }
        Ok((by_dev.into_values().collect(), self.missed()?))
    }

    /// Drops the times of disks that are gone (by dev_t), making room in
    /// the kernel's map, so that a disk later given the same number starts
    /// from none.
    pub fn forget(&self, gone: &[u32]) -> Result<(), String> {
        let keys = gone
            .iter()
            .flat_map(|&dev| [BLOCK_QUEUED, BLOCK_SERVED].map(|phase| BlockKey { dev, phase }));
        remove_all(&self.histograms, keys, "a removed disk's times")
    }
}

/// A histogram map shared by the sampler and the collector.
type SharedHistograms<K> = std::sync::Mutex<HashMap<MapData, K, TimedHistogram>>;

fn locked<K>(
    map: &SharedHistograms<K>,
) -> std::sync::MutexGuard<'_, HashMap<MapData, K, TimedHistogram>> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes `keys` from `map`; one already absent is no error.
fn remove_all<K: aya::Pod>(
    map: &SharedHistograms<K>,
    keys: impl IntoIterator<Item = K>,
    what: &str,
) -> Result<(), String> {
    let mut map = locked(map);
    for key in keys {
        match map.remove(&key) {
            Ok(()) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {what}: {e}")),
        }
    }
    Ok(())
}

/// Mirrors `struct listener_key` of `bpf/accept.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    /// The network namespace's inode, as /proc/PID/ns/net names it.
    pub netns: u32,
    pub port: u32,
}

// SAFETY: two u32, no padding, any bit pattern valid.
unsafe impl aya::Pod for ListenerKey {}

/// The accept-queue program: on the tracepoint of a TCP socket's state
/// changes (a connection established on the server's side) and on the
/// exits of accept(2) and accept4(2).
pub struct Accept {
    /// Locked only to remove a listener that is gone ([`Accept::forget`]):
    /// aya removes through exclusive access.
    listeners: SharedHistograms<ListenerKey>,
    missed: Array<MapData, u64>,
    /// Whether the program on io_uring's completions was asked for.
    io_uring: bool,
    attached: Attached,
}

impl Accept {
    /// Loads and attaches the program; the reason when this machine does
    /// not permit it.
    pub fn load() -> Result<Accept, String> {
        load_one(Accept::request(false)).and_then(|a| Accept::from_attached(a, false))
    }

    /// [`Accept::load`], timing io_uring's accepts too where this kernel
    /// permits it ([`Accept::io_uring`] says why not).
    pub fn load_with_io_uring() -> Result<Accept, String> {
        load_one(Accept::request(true)).and_then(|a| Accept::from_attached(a, true))
    }

    /// The program on io_uring's completions is asked for only with
    /// `io_uring`: it costs every io_uring completion of the host (~160 ns
    /// measured, docs/benchmarks.md), not only accepts.
    fn request(io_uring: bool) -> Request {
        Request {
            optional: if io_uring {
                vec![IO_URING_COMPLETE.into()]
            } else {
                Vec::new()
            },
            ..Request::plain(&ACCEPT_OBJECT)
        }
    }

    /// `io_uring`: whether `attached` was asked for with the program on
    /// io_uring's completions.
    fn from_attached(mut attached: Attached, io_uring: bool) -> Result<Accept, String> {
        let listeners: HashMap<_, _, _> = attached.take_map("listeners")?;
        let missed: Array<_, _> = attached.take_map("missed")?;
        Ok(Accept {
            listeners: std::sync::Mutex::new(listeners),
            missed,
            io_uring,
            attached,
        })
    }

    /// Whether io_uring's accepts are timed: None where that was not asked
    /// for; the reason where this kernel refused the program.
    pub fn io_uring(&self) -> Option<Result<(), &str>> {
        if !self.io_uring {
            return None;
        }
        let refused = self
            .attached
            .left_out()
            .iter()
            .find(|(name, _)| name == IO_URING_COMPLETE);
        Some(match refused {
            Some((_, why)) => Err(why.as_str()),
            None => Ok(()),
        })
    }

    /// One listener's totals since the program was attached: connections
    /// accepted and the ns they waited; None before its first accept.
    pub fn totals(&self, netns: u32, port: u16) -> Option<(u64, u64)> {
        let key = ListenerKey {
            netns,
            port: u32::from(port),
        };
        let h = locked(&self.listeners).get(&key, 0).ok()?;
        Some((h.slots.iter().sum(), h.sum_ns))
    }

    /// Drops the histograms of listeners that are gone, making room in
    /// the kernel's map for new ones.
    pub fn forget(&self, gone: &[ListenerKey]) -> Result<(), String> {
        remove_all(
            &self.listeners,
            gone.iter().copied(),
            "a closed listener's histogram",
        )
    }

    /// Every listener's waits since the program was attached; and the
    /// connections accepted but not counted (no room for their listener).
    pub fn read(&self) -> Result<(Vec<(ListenerKey, TimedHistogram)>, u64), String> {
        let listeners = locked(&self.listeners)
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading the accept-queue histograms: {e}"))?;
        let missed = self
            .missed
            .get(&0, 0)
            .map_err(|e| format!("reading the accept program's missed count: {e}"))?;
        Ok((listeners, missed))
    }
}

/// Returns the heap freed after a BTF parse to the system: glibc keeps
/// freed memory below its trim threshold, and the parse frees ~19 MB at
/// once, which would stay in the exporter's RSS for its whole life.
fn give_back_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas; any state of
        // the heap is valid for it.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// What tests of the programs share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Three busy processes in a cgroup of the cpu controller's hierarchy
    /// limited to a fifth of a CPU (20 ms per 100 ms period); killed and
    /// the cgroup removed when dropped.
    pub struct QuotaCgroup {
        pub dir: std::path::PathBuf,
        /// Relative to the hierarchy's root: `/NAME`.
        pub rel: String,
        children: Vec<std::process::Child>,
    }

    impl QuotaCgroup {
        pub fn start(name: &str) -> QuotaCgroup {
            let root = std::path::Path::new("/sys/fs/cgroup");
            let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
            let (base, procs) = match cgroup_mode(root, &proc_cgroups) {
                CgroupMode::Controller(_) => (root.join("cpu"), "tasks"),
                CgroupMode::Default => (root.to_path_buf(), "cgroup.procs"),
                CgroupMode::Off => panic!("no cgroup hierarchy to count in"),
            };
            let name = format!("{name}-{}", std::process::id());
            let dir = base.join(&name);
            std::fs::create_dir(&dir).unwrap();
            let mut cg = QuotaCgroup {
                dir,
                rel: format!("/{name}"),
                children: Vec::new(),
            };
            if cg.dir.join("cpu.max").exists() {
                std::fs::write(cg.dir.join("cpu.max"), "20000 100000").unwrap();
            } else {
                std::fs::write(cg.dir.join("cpu.cfs_period_us"), "100000").unwrap();
                std::fs::write(cg.dir.join("cpu.cfs_quota_us"), "20000").unwrap();
            }
            for _ in 0..3 {
                let child = std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .unwrap();
                std::fs::write(cg.dir.join(procs), child.id().to_string()).unwrap();
                cg.children.push(child);
            }
            cg
        }

        /// The cgroup's id: its directory's inode.
        pub fn id(&self) -> u64 {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&self.dir).unwrap().ino()
        }
    }

    impl Drop for QuotaCgroup {
        fn drop(&mut self) {
            for c in &mut self.children {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_powers_of_two_seconds() {
        assert_eq!(slot_upper_bound(31), 1.0);
        assert_eq!(slot_upper_bound(32), 2.0);
        assert_eq!(slot_upper_bound(21), 1.0 / 1024.0);
        assert_eq!(slot_upper_bound(1), 2f64.powi(-30));
        assert_eq!(slot_upper_bound(0), 2f64.powi(-31));
        assert_eq!(
            std::mem::size_of::<RawHistogram>(),
            (SLOTS + 2) * 8,
            "mirrors struct runqueue_histogram"
        );
    }

    /// The slot `bpf/slots.h` gives each wait is the bucket this side reads
    /// it as: a wait of `ns` in slot s > 0 lies in (2^(s−32), 2^(s−31)]
    /// seconds, exactly (integer arithmetic, no float), at every bucket
    /// bound and its neighbours and at 20 000 waits spread over the whole
    /// range; 0 ns in slot 0; waits past the cap in the last slot counted.
    /// The header is compiled for this host by the C compiler Cargo links
    /// with, the map helpers it also defines stubbed.
    #[test]
    fn the_kernels_slot_of_each_wait_is_the_bucket_read_here() {
        const MAX_NS: u64 = 1 << 42; // SOJOURN_MAX_NS
        let header = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf/slots.h");
        let harness = format!(
            "#include <stdio.h>\n#include <stdint.h>\n\
             typedef uint64_t __u64; typedef uint32_t __u32;\n\
             static inline void *bpf_map_lookup_elem(void *m, const void *k)\n\
             {{ (void)m; (void)k; return 0; }}\n\
             static inline long bpf_map_update_elem(void *m, const void *k,\n\
             const void *v, __u64 f) {{ (void)m; (void)k; (void)v; (void)f; return 0; }}\n\
             #define BPF_NOEXIST 1\n\
             #include \"{}\"\n\
             int main(void) {{ unsigned long long ns;\n\
             while (scanf(\"%llu\", &ns) == 1) printf(\"%u\\n\", seconds_slot(ns));\n\
             return 0; }}\n",
            header.display()
        );
        let (_dir, exe) = build_c(&harness, &[]).unwrap_or_else(|e| panic!("{e}"));

        let mut waits: Vec<u64> = vec![0, 1, 2, 3, MAX_NS - 1, MAX_NS, MAX_NS + 1, u64::MAX];
        for s in 1..SLOTS as u32 {
            // The bucket's upper bound in ns, 10^9 · 2^(s−31), rounded down.
            let bound = (1_000_000_000u128 << s >> 31) as u64;
            waits.extend((bound.saturating_sub(2)..=bound + 2).filter(|&ns| ns > 0));
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            // xorshift: waits of every magnitude, 1 ns to 2^42 ns.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            waits.push((x >> (x % 42 + 22)).max(1));
        }
        let input: String = waits.iter().map(|w| format!("{w}\n")).collect();
        let mut run = std::process::Command::new(&exe)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        run.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = run.wait_with_output().unwrap();
        let slots: Vec<u32> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(slots.len(), waits.len());

        let last = SLOTS as u32 - 1;
        for (&ns, &slot) in waits.iter().zip(&slots) {
            if ns == 0 {
                assert_eq!(slot, 0, "a wait of 0 ns");
                continue;
            }
            let ns = u128::from(ns.min(MAX_NS));
            // ns / 10^9 <= 2^(s−31)  ⟺  ns · 2^31 <= 10^9 · 2^s; and the
            // slot below's bound (slot 1 has none below it) is exceeded.
            let within = |s: u32| (ns << 31) <= (1_000_000_000u128 << s);
            assert!(slot >= 1 && slot <= last, "{ns} ns in slot {slot}");
            assert!(within(slot), "{ns} ns is past slot {slot}'s bound");
            assert!(
                slot == 1 || !within(slot - 1),
                "{ns} ns fits slot {}",
                slot - 1
            );
            let seconds = ns as f64 / 1e9;
            assert!(seconds <= slot_upper_bound(slot as usize) * (1.0 + 1e-12));
        }
    }

    /// `source` (C) built by the host's cc, the linker Cargo uses, with
    /// `libs`: the directory holding it and the executable's path.
    fn build_c(
        source: &str,
        libs: &[&str],
    ) -> Result<(tempfile::TempDir, std::path::PathBuf), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = dir.path().join("program.c");
        std::fs::write(&file, source).map_err(|e| e.to_string())?;
        let exe = dir.path().join("program");
        let built = std::process::Command::new("cc")
            .args(["-O2", "-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg(&file)
            .args(libs)
            .output()
            .map_err(|e| format!("cc: {e}"))?;
        if !built.status.success() {
            return Err(String::from_utf8_lossy(&built.stderr).into_owned());
        }
        Ok((dir, exe))
    }

    /// A loaded program; None (the test skipped) where this machine does
    /// not permit it, unless SOJOURN_REQUIRE_EBPF is set, as CI sets it:
    /// then the refusal fails the test.
    fn permitted<T>(loaded: Result<T, String>) -> Option<T> {
        match loaded {
            Ok(program) => Some(program),
            Err(e) if std::env::var_os("SOJOURN_REQUIRE_EBPF").is_none() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A listener that accepts one connection every 50 ms, starting 20 ms
    /// after ten connected at once, has each wait 50 ms longer than the one
    /// before: ten waits, 20 + 225 = 245 ms on average (246.6 ms measured
    /// here), counted under its namespace and port. Needs root and BTF; CI
    /// requires it.
    #[test]
    fn the_accept_program_times_waits_in_a_listeners_queue() {
        use std::os::unix::fs::MetadataExt;
        let Some(accept) = permitted(Accept::load()) else {
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(listener.local_addr().unwrap().port());
        let netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let clients: Vec<_> = (0..10)
            .map(|_| std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap())
            .collect();
        // Every handshake done before the first accept.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut accepted = Vec::new();
        for _ in 0..10 {
            accepted.push(listener.accept().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (listeners, _) = accept.read().unwrap();
        let ours = listeners
            .iter()
            .find(|(k, _)| *k == ListenerKey { netns, port })
            .unwrap_or_else(|| panic!("no waits for port {port}: {listeners:?}"))
            .1;
        let waits: u64 = ours.slots.iter().sum();
        assert_eq!(waits, 10);
        let mean_ms = ours.sum_ns as f64 / 10.0 / 1e6;
        assert!((200.0..300.0).contains(&mean_ms), "mean wait {mean_ms} ms");
        drop(clients);
    }

    /// Accepts made by io_uring are timed too, one request an accept or
    /// one multishot request for all: three connections wait 200 ms and
    /// more before a C program takes them through liburing, and their
    /// listener counts three waits of 200–400 ms on average. Needs root,
    /// BTF, io_uring and liburing's header (Debian's liburing-dev); CI
    /// requires them.
    #[test]
    fn accepts_made_by_io_uring_are_timed() {
        use std::os::unix::fs::MetadataExt;
        let Some(accept) = permitted(Accept::load_with_io_uring()) else {
            return;
        };
        assert_eq!(accept.io_uring(), Some(Ok(())), "this kernel's program");
        let (_dir, exe) = match build_c(IO_URING_ACCEPTS, &["-luring"]) {
            Ok(built) => built,
            Err(e) if std::env::var_os("SOJOURN_REQUIRE_EBPF").is_some() => {
                panic!("building the io_uring client: {e}")
            }
            Err(e) => {
                eprintln!("skipped: no liburing to build with: {e}");
                return;
            }
        };
        let netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        for mode in ["single", "multishot"] {
            let out = std::process::Command::new(&exe).arg(mode).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{mode}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let port: u32 = stdout.lines().next().unwrap().parse().unwrap();
            let (listeners, _) = accept.read().unwrap();
            let ours = listeners
                .iter()
                .find(|(k, _)| *k == ListenerKey { netns, port })
                .unwrap_or_else(|| panic!("{mode}: no waits for port {port}: {listeners:?}"))
                .1;
            assert_eq!(ours.slots.iter().sum::<u64>(), 3, "{mode}");
            let mean_ms = ours.sum_ns as f64 / 3.0 / 1e6;
            assert!(
                (200.0..400.0).contains(&mean_ms),
                "{mode}: mean wait {mean_ms} ms"
            );
        }
    }

    /// Listens on a loopback port (printed), connects three clients, and
    /// 200 ms later takes the three connections with io_uring: one accept
    /// request each (`single`) or one multishot request (`multishot`).
    const IO_URING_ACCEPTS: &str = r#"
#include <liburing.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int multishot = argc > 1 && strcmp(argv[1], "multishot") == 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
	socklen_t len = sizeof a;
	struct io_uring ring;
	int l = socket(AF_INET, SOCK_STREAM, 0), c[3], got = 0;

	if (bind(l, (void *)&a, sizeof a) || listen(l, 8) || getsockname(l, (void *)&a, &len))
		return perror("listen"), 1;
	printf("%d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (int i = 0; i < 3; i++) {
		c[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c[i], (void *)&a, sizeof a))
			return perror("connect"), 1;
	}
	usleep(200000);
	if (io_uring_queue_init(8, &ring, 0))
		return fprintf(stderr, "io_uring_queue_init failed\n"), 1;
	if (multishot) {
		io_uring_prep_multishot_accept(io_uring_get_sqe(&ring), l, NULL, NULL, 0);
		io_uring_submit(&ring);
	}
	while (got < 3) {
		struct io_uring_cqe *cqe;

		if (!multishot) {
			io_uring_prep_accept(io_uring_get_sqe(&ring), l, NULL, NULL, 0);
			io_uring_submit(&ring);
		}
		if (io_uring_wait_cqe(&ring, &cqe) || cqe->res < 0)
			return fprintf(stderr, "accept failed\n"), 1;
		io_uring_cqe_seen(&ring, cqe);
		got++;
	}
	return 0;
}
"#;

    /// Which hierarchy waits are counted in, from /proc/cgroups: the cpu
    /// controller's index where it has a v1 hierarchy, the default one
    /// where it is on v2.
    #[test]
    fn waits_are_counted_in_the_cpu_controllers_hierarchy() {
        let v1 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\n";
        let none = std::path::Path::new("/nonexistent");
        assert_eq!(cgroup_mode(none, v1), CgroupMode::Controller(1));
        assert_eq!(
            cgroup_mode(none, "cpu 0 1 1\n"),
            CgroupMode::Off,
            "nothing mounted"
        );
        assert_eq!(cgroup_mode(none, ""), CgroupMode::Off);
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu io memory\n").unwrap();
        assert_eq!(cgroup_mode(v2.path(), v1), CgroupMode::Default);
    }

    /// Busy processes in a cgroup of their own, limited to a fifth of a
    /// CPU, wait for the quota to refill: those waits (tens of ms) are
    /// counted under the cgroup's directory inode. Needs root, BTF and
    /// the cpu controller; CI requires it.
    #[test]
    fn the_run_queue_program_counts_waits_per_cgroup() {
        let Some(rq) = permitted(RunQueue::load()) else {
            return;
        };
        let busy = testing::QuotaCgroup::start("sojourn-ebpf-program");
        std::thread::sleep(std::time::Duration::from_millis(600));
        let cgroups = rq.cgroups().expect("counted per cgroup here").unwrap();
        let ours = cgroups
            .iter()
            .find(|(cg, _)| *cg == busy.id())
            .unwrap_or_else(|| panic!("no waits under {}: {} cgroups", busy.id(), cgroups.len()))
            .1;
        // Throttled for ~80 ms of each 100 ms period: waits of 16 ms and
        // more (slot 25 holds up to 2^-6 s).
        let long: u64 = ours.slots[25..].iter().sum();
        assert!(long > 0, "no long wait behind the quota: {:?}", ours.slots);
        assert!(ours.sum_ns > 0);
    }

    /// Waits are timed on this kernel: with three busy threads per CPU,
    /// tasks wait for milliseconds, and those waits land in the buckets
    /// around them. Needs root (CAP_BPF, CAP_PERFMON) and BTF; CI sets
    /// SOJOURN_REQUIRE_EBPF so that a refusal fails rather than skips.
    #[test]
    fn the_run_queue_program_times_waits_behind_busy_threads() {
        let Some(rq) = permitted(RunQueue::load()) else {
            return;
        };
        let before: u64 = rq.read().unwrap().iter().flat_map(|h| h.slots).sum();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..3 * cpus)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in busy {
            t.join().unwrap();
        }
        let after = rq.read().unwrap();
        let total: u64 = after.iter().flat_map(|h| h.slots).sum();
        assert!(total > before, "no wait was timed");
        // Waits over 1 ms (slot 21 and up): a busy thread waits for others'
        // slices, which are milliseconds long.
        let long: u64 = after
            .iter()
            .map(|h| h.slots[21..].iter().sum::<u64>())
            .sum();
        assert!(
            long > 0,
            "no wait over 1 ms behind {} busy threads",
            3 * cpus
        );
        let sum_ns: u64 = after.iter().map(|h| h.sum_ns).sum();
        assert!(sum_ns > 0);
    }
}
