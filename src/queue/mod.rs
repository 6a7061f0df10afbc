//! Queue delay: CoDel-style standing-queue metrics for every queue sojourn
//! can see. [`codel`] is the pure estimator; [`sources`] turns kernel
//! counters into per-queue samples; [`sampler`] reads them between scrapes;
//! [`QueueSet`] holds one estimator per queue and renders the metrics.

pub mod codel;
pub mod collector;
pub mod name;
pub mod sampler;
pub mod sources;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use codel::{Estimator, Nanos, Params};

use crate::metrics::{Desc, Family, label};

/// What a queue's samples measure, which fixes their unit and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Seconds an item waited (run-queue delay per timeslice, disk queue time).
    Delay,
    /// Items waiting (runnable tasks beyond the CPUs, accept-queue length).
    Length,
    /// Share of wall time some task was stalled (PSI), 0 to 1.
    Share,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Delay => "delay",
            Measure::Length => "length",
            Measure::Share => "share",
        }
    }

    /// Histogram bounds as multiples of the target: dense around it, where
    /// the question "is this queue standing?" is decided.
    fn bounds(self, target: f64) -> Vec<f64> {
        let multiples: &[f64] = match self {
            Measure::Delay | Measure::Share => &[
                0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0,
            ],
            // Lengths are whole items: 0 and powers of two.
            Measure::Length => &[
                0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
            ],
        };
        let mut b: Vec<f64> = multiples.iter().map(|m| m * target).collect();
        if self == Measure::Share {
            b.retain(|v| *v < 1.0);
            b.push(1.0);
        }
        b.dedup();
        b
    }
}

/// Share of one CPU that a round over other namespaces' listeners may
/// use. The host's queues take 0.35-0.5 % here, and pods' listeners make
/// the host's own listener dump dearer outside the round (the kernel's
/// listening hash is one for all namespaces), so the sampler stays within
/// 1 % of a core with 200 namespaces of 5 listeners (scripts/bench_netns.py).
pub const DEFAULT_NAMESPACE_CPU_BUDGET: f64 = 0.003;

/// Targets and interval for every queue: the `--queue.*` flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct QueueConfig {
    /// Seconds.
    #[arg(
        id = "queue.delay-target",
        long = "queue.delay-target",
        value_name = "DURATION",
        default_value = "5ms",
        value_parser = crate::flag::seconds,
        help = "CoDel target for delay queues (CPU run queue with schedstat, disks)"
    )]
    pub delay_target: f64,
    #[arg(
        id = "queue.length-target",
        long = "queue.length-target",
        value_name = "ITEMS",
        default_value = "1",
        value_parser = crate::flag::positive,
        help = "Target for length queues (runnable tasks beyond the CPUs, accept queues)"
    )]
    pub length_target: f64,
    #[arg(
        id = "queue.share-target",
        long = "queue.share-target",
        value_name = "RATIO",
        default_value = "0.1",
        value_parser = crate::flag::ratio,
        help = "Target for stall-share queues (PSI), between 0 and 1"
    )]
    pub share_target: f64,
    #[arg(
        id = "queue.interval",
        long = "queue.interval",
        value_name = "DURATION",
        default_value = "100ms",
        value_parser = crate::flag::duration,
        help = "CoDel interval: a queue stands when it stayed at or above target this long"
    )]
    pub interval: Duration,
    #[arg(
        id = "queue.sample-interval",
        long = "queue.sample-interval",
        value_name = "DURATION",
        default_value = "10ms",
        value_parser = crate::flag::duration,
        help = "How often the queue sampler reads its sources between scrapes"
    )]
    pub sample_interval: Duration,
    /// Most queues of the host tracked; more are counted in `sojourn_queue_omitted`.
    #[arg(
        id = "queue.max-queues",
        long = "queue.max-queues",
        value_name = "N",
        default_value = "64",
        help = "Most queues of the host tracked (about 26 series each); the rest are counted in sojourn_queue_omitted"
    )]
    pub max_queues: usize,
    /// Most queues of other network namespaces (pods' listeners) tracked,
    /// apart from the host's so that pods cannot crowd the host's out.
    #[arg(
        id = "queue.max-namespace-queues",
        long = "queue.max-namespace-queues",
        value_name = "N",
        default_value = "256",
        help = "Most accept queues of listeners in other network namespaces (pods') tracked, apart from the host's (29 series each); the rest are counted in sojourn_queue_omitted"
    )]
    pub max_namespace_queues: usize,
    /// Share of one CPU that sampling other namespaces' listeners may use.
    #[arg(
        id = "queue.namespace-cpu-budget",
        long = "queue.namespace-cpu-budget",
        value_name = "SHARE",
        default_value_t = DEFAULT_NAMESPACE_CPU_BUDGET,
        value_parser = crate::flag::ratio,
        help = "Share of one CPU that sampling other network namespaces' listeners may use: a round over them that took c seconds of CPU is followed by the next no sooner than c / SHARE seconds later (sojourn_queue_namespace_sample_interval_seconds)"
    )]
    pub namespace_cpu_budget: f64,
    /// Whether the CPU run queue and the disks' queues may be timed by
    /// eBPF: the ebpf collector is on (set from the enabled collectors, not
    /// a flag of its own).
    #[arg(skip)]
    pub ebpf: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

impl QueueConfig {
    pub fn params(&self, m: Measure) -> Params {
        let target = match m {
            Measure::Delay => self.delay_target,
            Measure::Length => self.length_target,
            Measure::Share => self.share_target,
        };
        Params {
            target,
            interval: self.interval,
        }
    }
}

/// Whose a queue is when it is not the host's: a network namespace (a
/// pod's), by inode, with the labels that name it on every series.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub netns: u64,
    pub labels: Vec<crate::metrics::Label>,
}

/// A queue's identity: its name (`tcp_accept:0.0.0.0:8080`) and the
/// namespace it is in (0 for the host's), so two pods listening on the
/// same address and port are two queues of one name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    pub name: Arc<str>,
    pub netns: u64,
}

impl QueueId {
    /// A queue of the host.
    pub fn host(name: &str) -> Self {
        QueueId {
            name: Arc::from(name),
            netns: 0,
        }
    }
}

/// One sample for one queue, as the sources produce them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Shared name: sources build each name once, not on every tick.
    pub queue: Arc<str>,
    /// None for the host's queues.
    pub scope: Option<Arc<Scope>>,
    pub measure: Measure,
    /// Where the value comes from (`ebpf`, `schedstat`, `loadavg`, `psi`, `diskstats`, `cgroup`, `inet_diag`).
    pub source: &'static str,
    pub value: f64,
}

impl Sample {
    pub fn id(&self) -> QueueId {
        QueueId {
            name: self.queue.clone(),
            netns: self.scope.as_ref().map_or(0, |s| s.netns),
        }
    }
}

struct Tracked {
    estimator: Estimator,
    scope: Option<Arc<Scope>>,
    /// The queue's capacity where the kernel has one (a listener's backlog).
    limit: Option<f64>,
    measure: Measure,
    source: &'static str,
    last_seen: Nanos,
}

/// Queues not sampled for this long are dropped. Sources say when a queue's
/// source goes away ([`QueueSet::remove`]); this only catches a queue that
/// stopped being sampled without its source saying so.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// One estimator per queue.
pub struct QueueSet {
    config: QueueConfig,
    queues: BTreeMap<QueueId, Tracked>,
    /// How many of `queues` are other namespaces'.
    namespaced: usize,
    omitted: std::collections::BTreeSet<QueueId>,
}

impl QueueSet {
    pub fn new(config: QueueConfig) -> Self {
        QueueSet {
            config,
            queues: BTreeMap::new(),
            namespaced: 0,
            omitted: Default::default(),
        }
    }

    pub fn observe(&mut self, now: Nanos, s: &Sample) {
        let id = s.id();
        if let Some(t) = self.queues.get_mut(&id) {
            t.estimator.observe(now, s.value);
            t.last_seen = now;
            t.source = s.source;
            // Renamed (its pod's names arrived): the series follow.
            if !matches!((&t.scope, &s.scope), (Some(a), Some(b)) if Arc::ptr_eq(a, b)) {
                t.scope = s.scope.clone();
            }
            return;
        }
        let (tracked, cap) = match s.scope {
            None => (self.queues.len() - self.namespaced, self.config.max_queues),
            Some(_) => (self.namespaced, self.config.max_namespace_queues),
        };
        if tracked >= cap {
            // Bounded like the tracked set: queues beyond the cap are only counted.
            let bound = (self.config.max_queues).saturating_add(self.config.max_namespace_queues);
            if self.omitted.len() < bound {
                self.omitted.insert(id);
            }
            return;
        }
        self.namespaced += usize::from(s.scope.is_some());
        let params = self.config.params(s.measure);
        let mut estimator = Estimator::new(params, s.measure.bounds(params.target));
        estimator.observe(now, s.value);
        self.queues.insert(
            id,
            Tracked {
                estimator,
                scope: s.scope.clone(),
                limit: None,
                measure: s.measure,
                source: s.source,
                last_seen: now,
            },
        );
    }

    /// Records the capacity of a tracked queue (a listener's backlog).
    pub fn set_limit(&mut self, queue: &QueueId, limit: f64) {
        if let Some(t) = self.queues.get_mut(queue) {
            t.limit = Some(limit);
        }
    }

    /// Drops a queue whose source is gone (a listener closed, a disk or a
    /// cgroup removed) with every series it had: a gauge left behind would
    /// go on saying the queue stands. Returns whether it was tracked.
    pub fn remove(&mut self, queue: &QueueId) -> bool {
        let removed = self.queues.remove(queue);
        if removed.as_ref().is_some_and(|t| t.scope.is_some()) {
            self.namespaced -= 1;
        }
        removed.is_some()
    }

    /// Drops queues not seen for [`FORGET_AFTER`].
    pub fn forget_stale(&mut self, now: Nanos) {
        let horizon = u64::try_from(FORGET_AFTER.as_nanos()).unwrap_or(u64::MAX);
        self.queues
            .retain(|_, t| now.saturating_sub(t.last_seen) < horizon);
        self.namespaced = self.queues.values().filter(|t| t.scope.is_some()).count();
        self.omitted.clear();
    }

    /// Whether the host's queue `queue` stands.
    pub fn is_standing(&self, queue: &str) -> Option<bool> {
        self.queues
            .get(&QueueId::host(queue))
            .map(|t| t.estimator.is_standing())
    }

    /// The names of the tracked queues, in order (a name once per namespace).
    pub fn names(&self) -> Vec<String> {
        self.queues.keys().map(|k| k.name.to_string()).collect()
    }

    /// The state of the host's queue `queue`.
    pub fn snapshot(&self, queue: &str) -> Option<codel::Snapshot> {
        self.queues
            .get(&QueueId::host(queue))
            .map(|t| t.estimator.snapshot())
    }

    pub fn emit(&self) -> Vec<Family> {
        let mut f: Vec<Family> = [
            MIN_DELAY,
            MIN_LENGTH,
            MIN_SHARE,
            DELAY_HIST,
            LENGTH_HIST,
            SHARE_HIST,
            STANDING,
            STANDING_SECONDS,
            INTERVALS,
            LOAD,
            TARGET_DELAY,
            TARGET_LENGTH,
            TARGET_SHARE,
            INTERVAL,
            INFO,
            LIMIT,
        ]
        .into_iter()
        .map(Family::new)
        .collect();
        for (id, t) in &self.queues {
            let s = t.estimator.snapshot();
            let name = &id.name;
            // The queue, then whose it is when not the host's.
            let scoped = t.scope.as_ref().map_or(0, |s| s.labels.len());
            let with = |extra: &[crate::metrics::Label]| {
                let mut l = Vec::with_capacity(1 + extra.len() + scoped);
                l.push(label("queue", name.to_string()));
                l.extend_from_slice(extra);
                if let Some(scope) = &t.scope {
                    l.extend(scope.labels.iter().cloned());
                }
                l
            };
            let q = || with(&[]);
            let (min, hist, target) = match t.measure {
                Measure::Delay => (0, 3, 10),
                Measure::Length => (1, 4, 11),
                Measure::Share => (2, 5, 12),
            };
            if let Some(m) = s.last_min {
                f[min].push(q(), m);
            }
            f[hist].push(q(), s.histogram);
            f[6].push(q(), u64::from(s.standing));
            f[7].push(q(), s.standing_seconds);
            f[8].push(with(&[label("state", "ok")]), s.intervals_ok);
            f[8].push(with(&[label("state", "standing")]), s.intervals_standing);
            if let Some(l) = s.load {
                f[9].push(q(), l);
            }
            f[target].push(q(), s.params.target);
            f[13].push(q(), s.params.interval.as_secs_f64());
            f[14].push(
                with(&[
                    label("measure", t.measure.as_str()),
                    label("source", t.source),
                ]),
                1u64,
            );
            if let Some(limit) = t.limit {
                f[15].push(q(), limit);
            }
        }
        f.push(Family::single(OMITTED, self.omitted.len() as u64));
        f
    }
}

const MIN_DELAY: Desc = Desc::gauge(
    "queue_min_delay",
    "Saturation: minimum delay over the last completed interval; above target means a standing queue (CoDel; sampled from schedstat or diskstats).",
)
.seconds();
const MIN_LENGTH: Desc = Desc::gauge(
    "queue_min_length",
    "Saturation: minimum queue length over the last completed interval (CoDel; sampled from loadavg or inet_diag).",
);
const MIN_SHARE: Desc = Desc::gauge(
    "queue_min_stall",
    "Saturation: minimum share of time tasks were stalled over the last completed interval (CoDel; sampled from /proc/pressure).",
)
.ratio();
const DELAY_HIST: Desc = Desc::histogram(
    "queue_delay",
    "Saturation: sampled queue delays, buckets dense around the target (sampled every --queue.sample-interval).",
)
.seconds();
const LENGTH_HIST: Desc = Desc::histogram(
    "queue_length",
    "Saturation: sampled queue lengths (sampled every --queue.sample-interval).",
);
const SHARE_HIST: Desc = Desc::histogram(
    "queue_stall",
    "Saturation: sampled stall shares (sampled every --queue.sample-interval).",
)
.ratio();
const STANDING: Desc = Desc::gauge(
    "queue_standing",
    "Saturation: 1 while every sample for at least one interval was at or above target (RFC 8289 first_above_time); aliases at scrape rate, prefer rate() of queue_standing_seconds_total (sampler).",
);
const STANDING_SECONDS: Desc = Desc::counter(
    "queue_standing",
    "Saturation: seconds the queue spent standing; its rate is the standing share of wall time (sampler).",
)
.seconds();
const INTERVALS: Desc = Desc::counter(
    "queue_intervals",
    "Completed intervals by state: standing when their minimum was at or above target, else ok (sampler).",
);
const LOAD: Desc = Desc::gauge(
    "queue_load",
    "Saturation: last interval's minimum over twice the target, capped at 1 (folly Codel getLoad) (sampler).",
)
.ratio();
const TARGET_DELAY: Desc = Desc::gauge(
    "queue_target_delay",
    "Target delay of the queue, --queue.delay-target (configuration).",
)
.seconds();
const TARGET_LENGTH: Desc = Desc::gauge(
    "queue_target_length",
    "Target length of the queue, --queue.length-target (configuration).",
);
const TARGET_SHARE: Desc = Desc::gauge(
    "queue_target_stall",
    "Target stall share of the queue, --queue.share-target (configuration).",
)
.ratio();
const INTERVAL: Desc = Desc::gauge(
    "queue_interval",
    "Interval over which the minimum is taken, --queue.interval (configuration).",
)
.seconds();
const INFO: Desc = Desc::gauge(
    "queue_info",
    "Always 1; what the queue measures and which kernel source feeds it (sampler).",
);
const LIMIT: Desc = Desc::gauge(
    "queue_limit",
    "Utilization (denominator): most items the queue can hold, e.g. a listener's accept backlog (inet_diag).",
);
const OMITTED: Desc = Desc::gauge(
    "queue_omitted",
    "Queues not tracked because --queue.max-queues (host) or --queue.max-namespace-queues (pods' and other namespaces' listeners) was reached (sampler).",
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Format, Value, encode};

    fn sample(queue: &str, measure: Measure, value: f64) -> Sample {
        Sample {
            queue: std::sync::Arc::from(queue),
            scope: None,
            measure,
            source: "test",
            value,
        }
    }

    #[test]
    fn each_measure_gets_its_own_target_and_names() {
        let mut set = QueueSet::new(QueueConfig::default());
        for i in 0..30u64 {
            let now = i * 10_000_000;
            set.observe(now, &sample("cpu", Measure::Length, 3.0));
            set.observe(now, &sample("disk:sda", Measure::Delay, 0.001));
            set.observe(now, &sample("memory:psi", Measure::Share, 0.5));
        }
        assert_eq!(set.is_standing("cpu"), Some(true));
        assert_eq!(set.is_standing("disk:sda"), Some(false));
        assert_eq!(set.is_standing("memory:psi"), Some(true));
        let text = encode(set.emit(), Format::Text);
        assert!(
            text.contains("sojourn_queue_min_length{queue=\"cpu\"} 3"),
            "{text}"
        );
        assert!(text.contains("sojourn_queue_target_delay_seconds{queue=\"disk:sda\"} 0.005"));
        assert!(text.contains("sojourn_queue_target_stall_ratio{queue=\"memory:psi\"} 0.1"));
        assert!(
            text.contains(
                "sojourn_queue_delay_seconds_bucket{queue=\"disk:sda\",le=\"0.00125\"} 30"
            )
        );
        assert!(text.contains("sojourn_queue_intervals_total{queue=\"cpu\",state=\"standing\"} 2"));
        assert!(text.contains(
            "sojourn_queue_info{queue=\"memory:psi\",measure=\"share\",source=\"test\"} 1"
        ));
    }

    #[test]
    fn the_number_of_queues_is_capped() {
        let mut set = QueueSet::new(QueueConfig {
            max_queues: 2,
            ..QueueConfig::default()
        });
        for q in ["a", "b", "c", "d"] {
            set.observe(0, &sample(q, Measure::Length, 0.0));
        }
        assert_eq!(set.names(), ["a", "b"]);
        let omitted = set.emit().into_iter().last().unwrap();
        assert_eq!(omitted.samples[0].value, Value::Int(2));
    }

    #[test]
    fn queues_not_seen_for_five_minutes_are_forgotten() {
        let mut set = QueueSet::new(QueueConfig::default());
        set.observe(0, &sample("gone", Measure::Length, 0.0));
        set.observe(299 * 1_000_000_000, &sample("kept", Measure::Length, 0.0));
        set.forget_stale(300 * 1_000_000_000);
        assert_eq!(set.names(), ["kept"]);
    }

    #[test]
    fn a_removed_queue_leaves_no_series_and_comes_back_fresh() {
        let mut set = QueueSet::new(QueueConfig::default());
        for i in 0..30u64 {
            set.observe(
                i * 10_000_000,
                &sample("tcp_accept:x", Measure::Length, 5.0),
            );
        }
        let x = QueueId::host("tcp_accept:x");
        set.set_limit(&x, 4.0);
        assert_eq!(set.is_standing("tcp_accept:x"), Some(true));
        assert!(set.remove(&x));
        assert!(!set.remove(&x), "removed once");
        let text = encode(set.emit(), Format::Text);
        assert!(!text.contains("tcp_accept:x"), "{text}");
        // The same name again starts from nothing: not standing, no history.
        set.observe(400_000_000, &sample("tcp_accept:x", Measure::Length, 5.0));
        let s = set.snapshot("tcp_accept:x").unwrap();
        assert!(!s.standing);
        assert_eq!(s.standing_seconds, 0.0);
        assert_eq!(s.intervals_standing, 0);
        let text = encode(set.emit(), Format::Text);
        assert!(
            !text.contains("sojourn_queue_limit{"),
            "limit forgotten: {text}"
        );
    }

    #[test]
    fn one_name_in_two_namespaces_is_two_queues_each_with_its_labels() {
        let mut set = QueueSet::new(QueueConfig {
            max_queues: 1,
            max_namespace_queues: 2,
            ..QueueConfig::default()
        });
        let pod = |netns: u64, uid: &str| {
            Some(Arc::new(Scope {
                netns,
                labels: vec![
                    label("netns", netns.to_string()),
                    label("pod_uid", uid.to_string()),
                ],
            }))
        };
        let name = "tcp_accept:0.0.0.0:8080";
        for (scope, value) in [
            (None, 0.0),
            (pod(7, "a"), 5.0),
            (pod(8, "b"), 0.0),
            // Past the namespaces' cap: counted, not tracked.
            (pod(9, "c"), 0.0),
        ] {
            for i in 0..30u64 {
                let s = Sample {
                    scope: scope.clone(),
                    ..sample(name, Measure::Length, value)
                };
                set.observe(i * 10_000_000, &s);
            }
        }
        // The host's cap is its own: a full namespaces' side leaves it room.
        set.observe(0, &sample("cpu", Measure::Length, 0.0));
        assert_eq!(set.names(), [name, name, name]);
        assert_eq!(set.is_standing(name), Some(false), "the host's");
        let text = encode(set.emit(), Format::Text);
        assert!(
            text.contains(&format!(
                "sojourn_queue_standing{{queue=\"{name}\",netns=\"7\",pod_uid=\"a\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "sojourn_queue_standing{{queue=\"{name}\",netns=\"8\",pod_uid=\"b\"}} 0"
        )));
        assert!(text.contains(&format!("sojourn_queue_standing{{queue=\"{name}\"}} 0")));
        assert!(text.contains(&format!(
            "sojourn_queue_intervals_total{{queue=\"{name}\",state=\"ok\",netns=\"8\",pod_uid=\"b\"}}"
        )));
        assert!(!text.contains("pod_uid=\"c\""));
        assert!(text.contains("sojourn_queue_omitted 2"), "{text}");
        // A namespace's queue removed frees its place for another.
        let gone = QueueId {
            name: Arc::from(name),
            netns: 7,
        };
        assert!(set.remove(&gone));
        set.observe(
            0,
            &Sample {
                scope: pod(9, "c"),
                ..sample(name, Measure::Length, 0.0)
            },
        );
        assert!(encode(set.emit(), Format::Text).contains("pod_uid=\"c\""));
    }

    #[test]
    fn share_buckets_end_at_one() {
        let b = Measure::Share.bounds(0.1);
        assert_eq!(b.last(), Some(&1.0));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }
}
