//! What the USE verdicts are computed from: the scraper's families taken
//! at a few instants, and a window over them that answers Prometheus-like
//! questions (a counter's increase, a gauge's minimum) without a TSDB.

use std::collections::HashMap;

use crate::metrics::{Family, Value};

/// A classic histogram: per-bucket (not cumulative) counts, `+Inf` last.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Vec<(&'static str, String)>,
    /// A counter or gauge's value; a histogram's count.
    pub value: f64,
    pub buckets: Option<Buckets>,
}

impl Series {
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == *v)
    }

    fn sorted_labels(&self) -> Vec<(&str, &str)> {
        let mut l: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        l.sort_unstable();
        l
    }

    fn same_labels(&self, other: &Series) -> bool {
        self.labels.len() == other.labels.len()
            && self.labels.iter().all(|(k, v)| other.label(k) == v)
    }
}

/// Every series of one scrape, by exposed name.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds on a monotonic clock; only differences matter.
    pub at: f64,
    pub(crate) series: HashMap<String, Vec<Series>>,
}

impl Snapshot {
    pub fn from_families(at: f64, families: &[Family]) -> Self {
        let mut series: HashMap<String, Vec<Series>> = HashMap::with_capacity(families.len());
        for f in families {
            let out = series.entry(f.desc.exposed_name()).or_default();
            for s in &f.samples {
                let labels = s.labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
                let (value, buckets) = match &s.value {
                    Value::Int(v) => (*v as f64, None),
                    Value::Float(v) => (*v, None),
                    Value::Histogram(h) => (
                        h.count as f64,
                        Some(Buckets {
                            bounds: h.bounds.clone(),
                            counts: h.counts.clone(),
                        }),
                    ),
                };
                out.push(Series {
                    labels,
                    value,
                    buckets,
                });
            }
        }
        Snapshot { at, series }
    }

    /// An empty snapshot taken at `at`.
    pub fn new(at: f64) -> Self {
        Snapshot {
            at,
            series: HashMap::new(),
        }
    }

    /// Adds one series (tests build snapshots this way).
    pub fn push(&mut self, name: &str, labels: &[(&'static str, &str)], value: f64) {
        self.series
            .entry(name.to_string())
            .or_default()
            .push(Series {
                labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                value,
                buckets: None,
            });
    }

    /// Adds one classic histogram series with per-bucket counts.
    pub fn push_histogram(
        &mut self,
        name: &str,
        labels: &[(&'static str, &str)],
        bounds: &[f64],
        counts: &[u64],
    ) {
        self.series
            .entry(name.to_string())
            .or_default()
            .push(Series {
                labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                value: counts.iter().sum::<u64>() as f64,
                buckets: Some(Buckets {
                    bounds: bounds.to_vec(),
                    counts: counts.to_vec(),
                }),
            });
    }

    pub fn all(&self, name: &str) -> &[Series] {
        self.series.get(name).map_or(&[], |v| v.as_slice())
    }

    /// The first series of `name` whose labels include `want`.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<&Series> {
        self.all(name).iter().find(|s| s.matches(want))
    }

    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.get(name, want).map(|s| s.value)
    }

    /// The sum over every series of `name` whose labels include `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let total = self
            .all(name)
            .iter()
            .filter(|s| s.matches(want))
            .inspect(|_| found = true)
            .map(|s| s.value)
            .sum();
        found.then_some(total)
    }
}

impl Snapshot {
    /// `sum by (key) (name{want})`: one pass over the series, for rules
    /// that look at hundreds of cgroups.
    pub fn sum_by(&self, name: &str, key: &str, want: &[(&str, &str)]) -> HashMap<String, f64> {
        let mut out: HashMap<String, f64> = HashMap::new();
        for s in self.all(name).iter().filter(|s| s.matches(want)) {
            *out.entry(s.label(key).to_string()).or_default() += s.value;
        }
        out
    }
}

/// What a counter gained from `before` to `now`: after a reset (a smaller
/// value), all of `now`.
fn counter_gain(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// Snapshots in time order, at least one.
pub struct Window<'a> {
    snaps: &'a [Snapshot],
}

impl<'a> Window<'a> {
    /// None without two snapshots: nothing can be rated over one instant.
    pub fn new(snaps: &'a [Snapshot]) -> Option<Self> {
        (snaps.len() >= 2 && snaps[snaps.len() - 1].at > snaps[0].at).then_some(Window { snaps })
    }

    pub fn first(&self) -> &'a Snapshot {
        &self.snaps[0]
    }

    pub fn last(&self) -> &'a Snapshot {
        &self.snaps[self.snaps.len() - 1]
    }

    pub fn snapshots(&self) -> &'a [Snapshot] {
        self.snaps
    }

    pub fn seconds(&self) -> f64 {
        self.last().at - self.first().at
    }

    /// A counter's increase over the window, as Prometheus' `increase`
    /// without extrapolation: a series born in the window counts from 0, a
    /// reset from its new value.
    pub fn increase(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.last().all(name).iter().filter(|s| s.matches(want)) {
            found = true;
            let before = self
                .first()
                .all(name)
                .iter()
                .find(|p| p.same_labels(s))
                .map_or(0.0, |p| p.value);
            total += counter_gain(before, s.value);
        }
        found.then_some(total)
    }

    /// What the counters `names` (every series of each) gained together
    /// over the window; one the host does not export counts as 0.
    pub fn gained(&self, names: &[&str]) -> f64 {
        names
            .iter()
            .filter_map(|name| self.increase(name, &[]))
            .sum()
    }

    /// `sum by (key) (increase(name{want}))` in one pass, each series
    /// matched to its earlier self through a map rather than a search.
    pub fn increase_by(
        &self,
        name: &str,
        key: &str,
        want: &[(&str, &str)],
    ) -> HashMap<String, f64> {
        let before: HashMap<Vec<(&str, &str)>, f64> = self
            .first()
            .all(name)
            .iter()
            .filter(|s| s.matches(want))
            .map(|s| (s.sorted_labels(), s.value))
            .collect();
        let mut out: HashMap<String, f64> = HashMap::new();
        for s in self.last().all(name).iter().filter(|s| s.matches(want)) {
            let prior = before.get(&s.sorted_labels()).copied().unwrap_or(0.0);
            *out.entry(s.label(key).to_string()).or_default() += counter_gain(prior, s.value);
        }
        out
    }

    pub fn rate(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.increase(name, want).map(|d| d / self.seconds())
    }

    /// The smallest value of a gauge (summed over `want`'s matches) across
    /// the snapshots that have it: what stood the whole window.
    pub fn min(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.snaps
            .iter()
            .filter_map(|s| s.sum(name, want))
            .reduce(f64::min)
    }

    pub fn max(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.snaps
            .iter()
            .filter_map(|s| s.sum(name, want))
            .reduce(f64::max)
    }

    /// How many snapshots hold a series of `name` matching `want`.
    pub fn seen(&self, name: &str, want: &[(&str, &str)]) -> usize {
        self.snaps
            .iter()
            .filter(|s| s.get(name, want).is_some())
            .count()
    }

    /// The buckets a histogram gained over the window, summed over every
    /// series matching `want` (all with the same bounds).
    pub fn histogram_increase(&self, name: &str, want: &[(&str, &str)]) -> Option<Buckets> {
        let mut out: Option<Buckets> = None;
        for s in self.last().all(name).iter().filter(|s| s.matches(want)) {
            let Some(now) = &s.buckets else { continue };
            let before = self
                .first()
                .all(name)
                .iter()
                .find(|p| p.same_labels(s))
                .and_then(|p| p.buckets.clone())
                .filter(|b| {
                    b.bounds == now.bounds && b.counts.iter().sum::<u64>() <= s.value as u64
                });
            let gained: Vec<u64> = match before {
                Some(b) => now
                    .counts
                    .iter()
                    .zip(&b.counts)
                    .map(|(n, p)| n.saturating_sub(*p))
                    .collect(),
                None => now.counts.clone(),
            };
            match &mut out {
                Some(acc) if acc.bounds == now.bounds => {
                    for (a, g) in acc.counts.iter_mut().zip(gained) {
                        *a += g;
                    }
                }
                Some(_) => {}
                None => {
                    out = Some(Buckets {
                        bounds: now.bounds.clone(),
                        counts: gained,
                    })
                }
            }
        }
        out
    }
}

impl Buckets {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The q-quantile, interpolated linearly within its bucket as
    /// `histogram_quantile` does; the highest finite bound when it falls
    /// in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, (&bound, &count)) in self.bounds.iter().zip(&self.counts).enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                if bound.is_infinite() {
                    return Some(lower);
                }
                let into = (rank - below as f64) / count as f64;
                return Some(lower + (bound - lower) * into.clamp(0.0, 1.0));
            }
            below += count;
        }
        self.bounds.iter().rev().find(|b| b.is_finite()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Desc, Family, label};

    const REQS: Desc = Desc::counter("requests", "test");
    const QUEUED: Desc = Desc::gauge("queued", "test");

    fn snap(at: f64, requests: &[(&'static str, u64)], queued: u64) -> Snapshot {
        let mut f = Family::new(REQS);
        for (port, n) in requests {
            f.push([label("port", *port)], *n);
        }
        Snapshot::from_families(at, &[f, Family::single(QUEUED, queued)])
    }

    #[test]
    fn increase_counts_new_series_from_zero_and_resets_from_their_value() {
        let snaps = [
            snap(0.0, &[("80", 100), ("443", 50)], 3),
            snap(1.0, &[("80", 150), ("443", 60), ("22", 7)], 1),
            snap(2.0, &[("80", 160), ("443", 5), ("22", 9)], 2),
        ];
        let w = Window::new(&snaps).unwrap();
        assert_eq!(w.seconds(), 2.0);
        assert_eq!(
            w.increase("sojourn_requests_total", &[("port", "80")]),
            Some(60.0)
        );
        assert_eq!(
            w.increase("sojourn_requests_total", &[("port", "443")]),
            Some(5.0)
        );
        assert_eq!(
            w.increase("sojourn_requests_total", &[("port", "22")]),
            Some(9.0)
        );
        assert_eq!(w.increase("sojourn_requests_total", &[]), Some(74.0));
        assert_eq!(
            w.rate("sojourn_requests_total", &[("port", "80")]),
            Some(30.0)
        );
        assert_eq!(w.increase("sojourn_absent_total", &[]), None);
        assert_eq!(
            w.gained(&["sojourn_requests_total", "sojourn_absent_total"]),
            74.0
        );
        assert_eq!(w.min("sojourn_queued", &[]), Some(1.0));
        assert_eq!(w.max("sojourn_queued", &[]), Some(3.0));
        assert_eq!(w.seen("sojourn_requests_total", &[("port", "22")]), 2);
    }

    #[test]
    fn by_label_sums_agree_with_the_one_series_answers() {
        let snaps = [
            snap(0.0, &[("80", 100), ("443", 50)], 3),
            snap(2.0, &[("80", 160), ("443", 5), ("22", 9)], 2),
        ];
        let w = Window::new(&snaps).unwrap();
        let by = w.increase_by("sojourn_requests_total", "port", &[]);
        for port in ["80", "443", "22"] {
            assert_eq!(
                by.get(port).copied(),
                w.increase("sojourn_requests_total", &[("port", port)]),
                "{port}"
            );
        }
        let last = w.last().sum_by("sojourn_requests_total", "port", &[]);
        assert_eq!(last["443"], 5.0);
        assert_eq!(last.len(), 3);
    }

    #[test]
    fn one_snapshot_is_no_window() {
        let snaps = [snap(0.0, &[], 0)];
        assert!(Window::new(&snaps).is_none());
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = Buckets {
            bounds: vec![0.1, 0.5, 1.0, f64::INFINITY],
            counts: vec![50, 40, 10, 0],
        };
        assert!((b.quantile(0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((b.quantile(0.7).unwrap() - 0.3).abs() < 1e-9);
        assert!((b.quantile(0.99).unwrap() - 0.95).abs() < 1e-9);
        let inf = Buckets {
            bounds: vec![0.1, f64::INFINITY],
            counts: vec![1, 9],
        };
        assert_eq!(inf.quantile(0.99), Some(0.1));
        let empty = Buckets {
            bounds: vec![0.1, f64::INFINITY],
            counts: vec![0, 0],
        };
        assert_eq!(empty.quantile(0.5), None);
    }
}
