//! The queue engine: a CoDel-style estimator that tells a queue that drains
//! (a burst) from one that stands (K. Nichols, V. Jacobson, "Controlling
//! Queue Delay", 2012; RFC 8289).
//!
//! Pure: it is fed `(now, value)` samples and never reads a clock, so tests
//! drive it with synthetic time. `value` is whatever the queue exposes — a
//! delay in seconds, a length in items, or a stall share — compared with a
//! target of the same unit.
//!
//! The rules, from RFC 8289:
//! - the minimum over each `interval` is kept; mean or maximum cannot tell a
//!   burst from a standing queue, the minimum can;
//! - a sample at or above target starts the clock (`first_above_time = now +
//!   interval`); once `now >= first_above_time` the queue is *standing*;
//! - any sample below target — an empty or idle queue included — clears it.
//!
//! Prometheus scrapes every 15–60 s while the interval is 100 ms, so a 0/1
//! gauge aliases; the estimator therefore also keeps counters that survive
//! sampling: seconds spent standing and completed intervals by state.

use std::time::Duration;

/// Monotonic time in nanoseconds from an arbitrary origin.
pub type Nanos = u64;

/// Target and interval of one queue (RFC 8289 calls them TARGET and INTERVAL).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Acceptable standing value, in the queue's unit; must be positive.
    pub target: f64,
    pub interval: Duration,
}

impl Params {
    /// RFC 8289's defaults for a delay queue: 5 ms target, 100 ms interval.
    pub const DELAY: Params = Params {
        target: 0.005,
        interval: Duration::from_millis(100),
    };
}

// The histogram type belongs to the metrics model, which encodes it.
pub use crate::metrics::Histogram;

/// The state of one queue, updated by [`Estimator::observe`].
#[derive(Debug, Clone)]
pub struct Estimator {
    params: Params,
    interval_ns: Nanos,
    interval_start: Option<Nanos>,
    /// Minimum of the interval in progress (+Inf before its first sample).
    interval_min: f64,
    /// Minimum over the last completed interval that had samples.
    last_min: Option<f64>,
    first_above: Option<Nanos>,
    standing: bool,
    last_sample: Option<Nanos>,
    standing_ns: u128,
    intervals_ok: u64,
    intervals_standing: u64,
    histogram: Histogram,
}

/// What a scrape reads of an estimator.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub params: Params,
    pub last_min: Option<f64>,
    pub standing: bool,
    pub standing_seconds: f64,
    pub intervals_ok: u64,
    pub intervals_standing: u64,
    /// `min(1, last_min / (2 × target))`: folly Codel's getLoad, as a ratio.
    pub load: Option<f64>,
    pub histogram: Histogram,
}

impl Estimator {
    /// `bounds`: histogram upper bounds in the queue's unit.
    pub fn new(params: Params, bounds: Vec<f64>) -> Self {
        let interval_ns = u64::try_from(params.interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Estimator {
            params,
            interval_ns,
            interval_start: None,
            interval_min: f64::INFINITY,
            last_min: None,
            first_above: None,
            standing: false,
            last_sample: None,
            standing_ns: 0,
            intervals_ok: 0,
            intervals_standing: 0,
            histogram: Histogram::new(bounds),
        }
    }

    pub fn params(&self) -> Params {
        self.params
    }

    pub fn is_standing(&self) -> bool {
        self.standing
    }

    /// Feeds one sample taken at `now`. Samples must come in time order; one
    /// from the past is ignored. NaN is ignored; negative values count as 0.
    pub fn observe(&mut self, now: Nanos, value: f64) {
        if value.is_nan() || self.last_sample.is_some_and(|t| now < t) {
            return;
        }
        let value = value.max(0.0);
        // Time standing accrues over the gap since the previous sample when
        // the queue stood at that sample.
        if let Some(prev) = self.last_sample
            && self.standing
        {
            self.standing_ns += u128::from(now - prev);
        }
        self.close_intervals(now);
        self.interval_min = self.interval_min.min(value);

        if value < self.params.target {
            self.first_above = None;
            self.standing = false;
        } else {
            match self.first_above {
                None => self.first_above = Some(now.saturating_add(self.interval_ns)),
                Some(t) if now >= t => self.standing = true,
                Some(_) => {}
            }
        }
        self.histogram.observe(value);
        self.last_sample = Some(now);
    }

    /// Completes the interval in progress if `now` is past its end. An
    /// interval with no samples (the sampler was not running) is not counted.
    fn close_intervals(&mut self, now: Nanos) {
        let Some(start) = self.interval_start else {
            self.interval_start = Some(now);
            return;
        };
        let end = start.saturating_add(self.interval_ns);
        if now < end {
            return;
        }
        if self.interval_min.is_finite() {
            self.last_min = Some(self.interval_min);
            if self.interval_min >= self.params.target {
                self.intervals_standing += 1;
            } else {
                self.intervals_ok += 1;
            }
        }
        self.interval_min = f64::INFINITY;
        // Keep intervals aligned while samples keep coming; after a gap of a
        // whole interval or more, start afresh.
        self.interval_start = Some(if now < end.saturating_add(self.interval_ns) {
            end
        } else {
            now
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            params: self.params,
            last_min: self.last_min,
            standing: self.standing,
            standing_seconds: self.standing_ns as f64 / 1e9,
            intervals_ok: self.intervals_ok,
            intervals_standing: self.intervals_standing,
            load: self
                .last_min
                .map(|m| (m / (2.0 * self.params.target)).min(1.0)),
            histogram: self.histogram.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Nanos = 1_000_000;

    fn delay_queue() -> Estimator {
        Estimator::new(Params::DELAY, vec![0.001, 0.005, 0.01, 0.1])
    }

    /// Feeds `value_at(t)` every `step` from `from` to `to` (exclusive).
    fn feed(
        e: &mut Estimator,
        from: Nanos,
        to: Nanos,
        step: Nanos,
        value_at: impl Fn(Nanos) -> f64,
    ) {
        let mut t = from;
        while t < to {
            e.observe(t, value_at(t));
            t += step;
        }
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_never_stands() {
        let mut e = delay_queue();
        // 50 ms of 40 ms delay, then empty; repeated every 200 ms for 2 s.
        feed(&mut e, 0, 2000 * MS, 10 * MS, |t| {
            if t % (200 * MS) < 50 * MS { 0.040 } else { 0.0 }
        });
        let s = e.snapshot();
        assert!(!s.standing);
        assert_eq!(s.standing_seconds, 0.0);
        assert_eq!(s.intervals_standing, 0);
        assert!(s.intervals_ok >= 19);
        assert_eq!(s.last_min, Some(0.0));
    }

    #[test]
    fn a_constant_delay_above_target_stands_after_exactly_one_interval() {
        let mut e = delay_queue();
        e.observe(0, 0.020);
        e.observe(99 * MS, 0.020);
        assert!(!e.is_standing(), "not yet: one interval has not passed");
        e.observe(100 * MS, 0.020);
        assert!(e.is_standing(), "standing at exactly first_above_time");
    }

    #[test]
    fn the_standing_counter_advances_by_wall_time() {
        let mut e = delay_queue();
        feed(&mut e, 0, 1000 * MS + 1, 10 * MS, |_| 0.020);
        let s = e.snapshot();
        // Standing from t = 100 ms to t = 1000 ms.
        assert!(
            (s.standing_seconds - 0.9).abs() < 1e-9,
            "{}",
            s.standing_seconds
        );
        assert_eq!(s.last_min, Some(0.020));
        assert_eq!(s.load, Some(1.0));
        // Ten whole intervals closed, each with its minimum above target.
        assert_eq!(s.intervals_standing, 10);
        // Sampling at a different rate gives the same wall time.
        let mut e = delay_queue();
        feed(&mut e, 0, 1000 * MS + 1, MS, |_| 0.020);
        assert!((e.snapshot().standing_seconds - 0.9).abs() < 1e-9);
    }

    #[test]
    fn a_single_dip_below_target_resets_first_above_time() {
        let mut e = delay_queue();
        e.observe(0, 0.020);
        e.observe(60 * MS, 0.001); // dip
        e.observe(70 * MS, 0.020); // clock restarts: first_above = 170 ms
        e.observe(110 * MS, 0.020);
        assert!(!e.is_standing(), "the dip restarted the clock");
        e.observe(169 * MS, 0.020);
        assert!(!e.is_standing());
        e.observe(170 * MS, 0.020);
        assert!(e.is_standing());
        e.observe(180 * MS, 0.004);
        assert!(!e.is_standing(), "one sample below target clears standing");
    }

    #[test]
    fn idle_clears() {
        let mut e = Estimator::new(
            Params {
                target: 1.0,
                interval: Duration::from_millis(100),
            },
            vec![1.0, 2.0, 4.0],
        );
        feed(&mut e, 0, 500 * MS, 10 * MS, |_| 5.0);
        assert!(e.is_standing());
        e.observe(500 * MS, 0.0);
        assert!(!e.is_standing());
        let standing = e.snapshot().standing_seconds;
        feed(&mut e, 510 * MS, 1000 * MS, 10 * MS, |_| 0.0);
        assert_eq!(
            e.snapshot().standing_seconds,
            standing,
            "no time accrues while idle"
        );
    }

    #[test]
    fn load_is_min_over_twice_target_capped_at_one() {
        let mut e = delay_queue();
        feed(&mut e, 0, 201 * MS, 10 * MS, |_| 0.0025);
        assert_eq!(e.snapshot().load, Some(0.25));
    }

    #[test]
    fn a_gap_in_sampling_does_not_count_empty_intervals() {
        let mut e = delay_queue();
        feed(&mut e, 0, 100 * MS, 10 * MS, |_| 0.0);
        e.observe(10_000 * MS, 0.0);
        let s = e.snapshot();
        assert_eq!(s.intervals_ok + s.intervals_standing, 1);
    }

    #[test]
    fn histogram_counts_every_sample() {
        let mut e = delay_queue();
        for (i, v) in [0.0005, 0.003, 0.007, 0.5, 0.005].into_iter().enumerate() {
            e.observe(i as Nanos * MS, v);
        }
        let h = e.snapshot().histogram;
        assert_eq!(h.counts, vec![1, 2, 1, 0, 1]);
        assert_eq!(h.count, 5);
        assert!((h.sum - 0.5155).abs() < 1e-12);
    }

    proptest! {
        /// Standing implies every sample in the last interval was at or above target.
        #[test]
        fn standing_implies_no_sample_below_target_within_the_interval(
            steps in proptest::collection::vec((1u64..40, 0u32..30), 1..400)
        ) {
            let mut e = delay_queue();
            let mut t: Nanos = 0;
            let mut history: Vec<(Nanos, f64)> = Vec::new();
            for (dt, v) in steps {
                t += dt * MS;
                let value = v as f64 / 1000.0;
                e.observe(t, value);
                history.push((t, value));
                if e.is_standing() {
                    let since = t.saturating_sub(100 * MS);
                    prop_assert!(history.iter().filter(|(at, _)| *at >= since).all(|(_, v)| *v >= 0.005));
                }
                let s = e.snapshot();
                prop_assert!(s.standing_seconds <= t as f64 / 1e9 + 1e-9);
                prop_assert_eq!(s.histogram.count as usize, history.len());
            }
        }
    }
}
