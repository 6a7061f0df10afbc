//! eBPF measurements of kernel queues, loaded with aya from the objects in
//! `bpf/` (C sources beside them; `scripts/build_bpf.sh` rebuilds them and
//! CI checks that the committed objects are what the sources build).
//!
//! The run-queue program (`bpf/runqueue.bpf.c`) times every wait on a CPU's
//! run queue, from wakeup (or preemption) to running, and counts it in a
//! per-CPU histogram of power-of-two buckets of seconds. Loading needs
//! CAP_BPF and CAP_PERFMON (or root), the kernel's BTF at
//! /sys/kernel/btf/vmlinux and kernel 5.11 or later (task local storage
//! in tracing programs); where any is missing, [`RunQueue::load`] says
//! which and nothing is attached.

use aya::maps::{MapData, PerCpuArray};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

/// The compiled program; see `bpf/runqueue.bpf.c`.
static RUNQUEUE_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/runqueue.bpf.o");

/// Mirrors `bpf/runqueue.h`: `RUNQUEUE_SLOTS`.
pub const RUNQUEUE_SLOTS: usize = 50;

/// Slot `s > 0` counts waits in (2^(s - OFFSET - 1), 2^(s - OFFSET)] seconds
/// — native histogram bucket `s - OFFSET` of schema 0; slot 0 waits the
/// clock saw as 0 ns.
pub const SLOT_OFFSET: i32 = 31;

/// Mirrors `struct runqueue_histogram` of `bpf/runqueue.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawHistogram {
    pub slots: [u64; RUNQUEUE_SLOTS],
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
            slots: [0; RUNQUEUE_SLOTS],
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
    /// Owns the programs and their links.
    _ebpf: Ebpf,
}

const RUNQUEUE_TRACEPOINTS: [&str; 3] = ["sched_wakeup", "sched_wakeup_new", "sched_switch"];

/// The attached program while anyone holds it: the collector and the
/// queue sampler share one, so each wait is timed once.
static SHARED: std::sync::Mutex<std::sync::Weak<RunQueue>> =
    std::sync::Mutex::new(std::sync::Weak::new());

impl RunQueue {
    /// The program attached for the process, loaded by the first caller
    /// and detached when the last holder drops it.
    pub fn shared() -> Result<std::sync::Arc<RunQueue>, String> {
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rq) = shared.upgrade() {
            return Ok(rq);
        }
        let rq = std::sync::Arc::new(RunQueue::load()?);
        *shared = std::sync::Arc::downgrade(&rq);
        Ok(rq)
    }

    /// Loads and attaches the program; the reason when this machine does
    /// not permit it.
    pub fn load() -> Result<RunQueue, String> {
        let btf = Btf::from_sys_fs()
            .map_err(|e| format!("no kernel BTF at /sys/kernel/btf/vmlinux: {e}"))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            // Task local storage (the enqueue times) is a map type aya
            // creates but has no typed wrapper for; only the program uses it.
            .allow_unsupported_maps()
            .load(RUNQUEUE_OBJECT)
            .map_err(|e| format!("loading the run-queue program: {}", causes(&e)))?;
        for name in RUNQUEUE_TRACEPOINTS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("the object has no program {name}"))?
                .try_into()
                .map_err(|e| format!("{name}: {}", causes(&e)))?;
            program
                .load(name, &btf)
                .map_err(|e| format!("loading {name}: {}", causes(&e)))?;
            program
                .attach()
                .map_err(|e| format!("attaching to tracepoint {name}: {}", causes(&e)))?;
        }
        let map = ebpf
            .take_map("histogram")
            .ok_or("the object has no map histogram")?;
        let histogram = PerCpuArray::try_from(map).map_err(|e| format!("histogram map: {e}"))?;
        Ok(RunQueue {
            histogram,
            _ebpf: ebpf,
        })
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
            (RUNQUEUE_SLOTS + 2) * 8,
            "mirrors struct runqueue_histogram"
        );
    }

    /// Waits are timed on this kernel: with three busy threads per CPU,
    /// tasks wait for milliseconds, and those waits land in the buckets
    /// around them. Needs root (CAP_BPF, CAP_PERFMON) and BTF; CI sets
    /// SOJOURN_REQUIRE_EBPF so that a refusal fails rather than skips.
    #[test]
    fn the_run_queue_program_times_waits_behind_busy_threads() {
        let rq = match RunQueue::load() {
            Ok(rq) => rq,
            Err(e) if std::env::var_os("SOJOURN_REQUIRE_EBPF").is_none() => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
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
