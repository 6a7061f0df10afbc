//! Latency quantiles over a sliding window, from HdrHistograms.
//!
//! The buckets of `http_server_request_duration_seconds` answer "how many
//! requests took under 250 ms", and `histogram_quantile` interpolates
//! within a bucket; an on-call asking "what is p99 right now" wants the
//! value itself. Here every request is also recorded, at 1 % precision
//! (two significant digits) from 1 µs to one hour, into an HdrHistogram of
//! the current sub-window; a window is six sub-windows, rotated by a
//! timer, so the quantiles cover between one window and one window plus a
//! sixth (60 to 70 s by default).
//!
//! Recording: each thread records into its own shard (a lock nobody else
//! takes but the rotation, every sub-window), so two threads never contend;
//! merging the shards and sub-windows happens at scrape time, off the
//! request path.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Sub-windows per window.
pub const SUBWINDOWS: u32 = 6;

/// The quantiles exported.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

const HIGHEST_MICROS: u64 = 3_600_000_000;

fn empty() -> Histogram<u32> {
    // Bounds and precision are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 2).expect("valid histogram bounds")
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Option<Histogram<u32>>>);

/// One series' window: per-thread shards of the current sub-window, and
/// the finished sub-windows, oldest first (`None` for an empty one, so an
/// idle route holds no histogram at all).
#[derive(Debug)]
pub struct WindowedQuantiles {
    shards: Box<[Shard]>,
    finished: Mutex<VecDeque<Option<Histogram<u32>>>>,
}

impl Default for WindowedQuantiles {
    fn default() -> Self {
        WindowedQuantiles {
            shards: (0..super::stats::SHARDS)
                .map(|_| Shard::default())
                .collect(),
            finished: Mutex::new(VecDeque::with_capacity(SUBWINDOWS as usize + 1)),
        }
    }
}

/// A window's quantiles, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSnapshot {
    pub count: u64,
    /// One per [`QUANTILES`].
    pub values: [f64; QUANTILES.len()],
}

impl WindowedQuantiles {
    pub fn record(&self, seconds: f64) {
        let micros = (seconds * 1e6) as u64;
        let Ok(mut h) = self.shards[super::stats::shard_index()].0.lock() else {
            return;
        };
        h.get_or_insert_with(empty).saturating_record(micros.max(1));
    }

    /// Ends the current sub-window; the oldest one leaves the window.
    pub fn rotate(&self) {
        let mut current: Option<Histogram<u32>> = None;
        for shard in self.shards.iter() {
            let taken = shard.0.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = taken {
                match &mut current {
                    None => current = Some(h),
                    // Same bounds: adding cannot fail.
                    Some(c) => {
                        let _ = c.add(&h);
                    }
                }
            }
        }
        if let Ok(mut finished) = self.finished.lock() {
            finished.push_back(current);
            while finished.len() > SUBWINDOWS as usize {
                finished.pop_front();
            }
        }
    }

    /// The quantiles of the finished sub-windows and the current one; None
    /// when the window holds no request.
    pub fn snapshot(&self) -> Option<WindowSnapshot> {
        let mut all = empty();
        if let Ok(finished) = self.finished.lock() {
            for h in finished.iter().flatten() {
                let _ = all.add(h);
            }
        }
        for shard in self.shards.iter() {
            if let Ok(h) = shard.0.lock()
                && let Some(h) = h.as_ref()
            {
                let _ = all.add(h);
            }
        }
        if all.is_empty() {
            return None;
        }
        Some(WindowSnapshot {
            count: all.len(),
            values: QUANTILES.map(|q| all.value_at_quantile(q) as f64 / 1e6),
        })
    }
}

/// How often the sub-windows turn for a `window`.
pub fn rotation_interval(window: Duration) -> Duration {
    window / SUBWINDOWS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let w = WindowedQuantiles::default();
        // 1 ms .. 1000 ms, one each: p50 = 500 ms, p99 = 990 ms.
        for ms in 1..=1000 {
            w.record(ms as f64 / 1000.0);
        }
        let s = w.snapshot().unwrap();
        assert_eq!(s.count, 1000);
        for (got, want) in s.values.iter().zip([0.5, 0.9, 0.99, 0.999]) {
            assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        }
    }

    #[test]
    fn old_sub_windows_leave_the_window() {
        let w = WindowedQuantiles::default();
        w.record(2.0);
        w.rotate();
        assert_eq!(w.snapshot().unwrap().count, 1);
        for _ in 0..SUBWINDOWS - 1 {
            w.record(0.001);
            w.rotate();
        }
        // The 2 s request is in the oldest of six finished sub-windows.
        let s = w.snapshot().unwrap();
        assert_eq!(s.count, SUBWINDOWS as u64);
        assert!(s.values[3] > 1.9);
        w.rotate();
        let s = w.snapshot().unwrap();
        assert_eq!(s.count, u64::from(SUBWINDOWS) - 1);
        assert!(s.values[3] < 0.0011, "the slow request has left: {s:?}");
        for _ in 0..SUBWINDOWS {
            w.rotate();
        }
        assert_eq!(w.snapshot(), None, "an idle window has no quantiles");
    }

    #[test]
    fn threads_record_into_their_own_shards_and_nothing_is_lost() {
        let w = std::sync::Arc::new(WindowedQuantiles::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| w.record(0.01)))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        w.rotate();
        assert_eq!(w.snapshot().unwrap().count, 40_000);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let w = WindowedQuantiles::default();
        w.record(0.0);
        w.record(10_000.0);
        assert_eq!(w.snapshot().unwrap().count, 2);
    }
}
