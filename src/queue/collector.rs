//! Queue delay metrics: the CoDel estimators fed by the background sampler
//! (`crate::queue::sampler`). A scrape only reads their state. The sampler
//! starts with the collector and stops when it is dropped.

use std::sync::atomic::Ordering;

use super::QueueConfig;
use super::sampler::Sampler;
use crate::collectors::{Collect, CollectError, Config};
use crate::metrics::{Desc, Family};

const SAMPLER_CPU: Desc = Desc::counter(
    "queue_sampler_cpu",
    "CPU time used by the queue sampler thread; its rate is the share of one core sampling costs (CLOCK_THREAD_CPUTIME_ID).",
)
.seconds();
const SAMPLER_TICKS: Desc = Desc::counter(
    "queue_sampler_ticks",
    "Times the queue sampler read its sources (every --queue.sample-interval) (sampler).",
);
const SAMPLER_OVERRUNS: Desc = Desc::counter(
    "queue_sampler_overruns",
    "Sampler ticks that ran past the next one's start, so that one was skipped (sampler).",
);

const NAMESPACE_INTERVAL: Desc = Desc::gauge(
    "queue_namespace_sample_interval",
    "Seconds between the last two samplings of other network namespaces' listeners: --queue.sample-interval, or longer where --queue.namespace-cpu-budget stretches it (sampler).",
)
.seconds();

pub struct QueueCollector {
    sampler: Result<Sampler, String>,
}

impl QueueCollector {
    pub fn new(cfg: &Config, queue: &QueueConfig) -> Self {
        let sampler = Sampler::start(cfg, queue)
            .map_err(|e| format!("cannot start the queue sampler thread: {e}"));
        QueueCollector { sampler }
    }
}

/// The part of the queue collector that reads other network namespaces'
/// sockets; unsupported where sojourn may not enter them.
pub const NAMESPACES_PART: &str = "queue_netns";

impl Collect for QueueCollector {
    fn parts(&self) -> Vec<(&'static str, bool)> {
        let asked = self
            .sampler
            .as_ref()
            .ok()
            .and_then(|s| s.shared.namespaces.lock().ok().and_then(|n| *n));
        asked
            .map(|entered| vec![(NAMESPACES_PART, !entered)])
            .unwrap_or_default()
    }

    fn collect(&self, _: &Config) -> Result<Vec<Family>, CollectError> {
        let sampler = self
            .sampler
            .as_ref()
            .map_err(|e| CollectError::Io(e.clone()))?;
        let shared = &sampler.shared;
        if let Some(e) = shared.last_error.lock().ok().and_then(|e| e.clone()) {
            return Err(e);
        }
        let mut out = shared
            .queues
            .lock()
            .map(|q| q.emit())
            .map_err(|_| CollectError::Panicked("queue state poisoned".into()))?;
        let stats = &shared.stats;
        out.push(Family::single(
            SAMPLER_CPU,
            stats.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9,
        ));
        out.push(Family::single(
            SAMPLER_TICKS,
            stats.ticks.load(Ordering::Relaxed),
        ));
        out.push(Family::single(
            SAMPLER_OVERRUNS,
            stats.overruns.load(Ordering::Relaxed),
        ));
        let interval = stats.namespace_interval_ns.load(Ordering::Relaxed);
        if interval > 0 {
            out.push(Family::single(NAMESPACE_INTERVAL, interval as f64 / 1e9));
        }
        Ok(out)
    }
}
