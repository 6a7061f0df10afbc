//! Sojourn times measured by eBPF (`crate::ebpf`): every wait on a CPU's
//! run queue, timed in the kernel from wakeup or preemption to running.
//! Where this machine does not permit eBPF (no CAP_BPF/CAP_PERFMON, no
//! BTF, an old kernel, a verifier refusal) one log line says why at start
//! and the collector reports itself unsupported at each scrape.

use super::{Collect, CollectError, Config};
use crate::ebpf::{RUNQUEUE_SLOTS, RawHistogram, RunQueue, SLOT_OFFSET, slot_upper_bound};
use crate::metrics::{Family, Histogram};
use crate::native::NativeBuckets;

crate::descs! {
    RUNQUEUE_WAIT = histogram("runqueue_wait", "Saturation: time tasks waited on a CPU's run queue before running, from wakeup or preemption, every wait timed (eBPF at sched_wakeup, sched_wakeup_new, sched_switch; all CPUs).") .seconds();
    RUNQUEUE_UNTIMED = counter("runqueue_wait_untimed", "Run-queue waits not timed because the task's storage slot could not be had: no memory, or the storage busy on that CPU (eBPF).");
}

/// The exposed buckets: powers of two from 2^-20 s (~1 µs) to 16 s, each
/// the union of whole kernel slots, so no count is split or moved.
const FIRST_BUCKET_EXP: i32 = -20;
const LAST_BUCKET_EXP: i32 = 4;

/// All CPUs' kernel histograms as one histogram of the exposed buckets,
/// and as a native histogram of schema 0 whose buckets are the kernel's
/// own (a scraper that negotiates protobuf gets every one, unmerged).
pub fn histogram(per_cpu: &[RawHistogram]) -> (Histogram, u64) {
    // All CPUs summed slot by slot, then folded once.
    let mut slots = [0u64; RUNQUEUE_SLOTS];
    let (mut sum_ns, mut untimed) = (0u64, 0u64);
    for cpu in per_cpu {
        for (total, n) in slots.iter_mut().zip(cpu.slots) {
            *total += n;
        }
        sum_ns = sum_ns.saturating_add(cpu.sum_ns);
        untimed += cpu.missed;
    }
    let bounds: Vec<f64> = (FIRST_BUCKET_EXP..=LAST_BUCKET_EXP)
        .map(|e| 2f64.powi(e))
        .collect();
    let mut h = Histogram::new(bounds);
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
    (h, untimed)
}

pub struct EbpfCollector {
    runqueue: Result<std::sync::Arc<RunQueue>, String>,
}

impl EbpfCollector {
    pub fn new() -> EbpfCollector {
        let runqueue = RunQueue::shared();
        if let Err(e) = &runqueue {
            tracing::warn!(
                reason = %e,
                "eBPF run-queue timing unavailable; run-queue saturation comes from schedstat and load"
            );
        }
        EbpfCollector { runqueue }
    }
}

impl Default for EbpfCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collect for EbpfCollector {
    fn collect(&self, _cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let rq = self
            .runqueue
            .as_ref()
            .map_err(|e| CollectError::Unsupported(e.clone()))?;
        let (h, untimed) = histogram(&rq.read().map_err(CollectError::Io)?[..]);
        Ok(vec![
            Family::single(RUNQUEUE_WAIT, h),
            Family::single(RUNQUEUE_UNTIMED, untimed),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
