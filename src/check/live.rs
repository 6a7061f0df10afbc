//! The USE table kept live for the `/` page: while someone looks at it
//! (an `/api/use` request in the last minute), a task scrapes once a
//! second, keeps the last [`WINDOW`] of snapshots and a short history per
//! resource. Nobody looking costs nothing: the task stops and its memory
//! is freed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Report, Snapshot, Verdict};

/// The span the live verdicts are computed over: shorter than `check`'s
/// default so that the page turns red within seconds of a fault.
pub const WINDOW: Duration = Duration::from_secs(5);
pub const STEP: Duration = Duration::from_secs(1);
/// Points of history kept per resource (one per [`STEP`]).
pub const HISTORY_POINTS: usize = 120;
/// Resources with history; more (hundreds of cgroups) get none, until a
/// resource that has gone (a removed cgroup) is forgotten: one not seen
/// for the span the history covers.
pub const HISTORY_RESOURCES: usize = 200;
/// The task stops this long after the last request.
pub const IDLE_STOP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub t: f64,
    pub u: Option<f64>,
    pub s: Option<f64>,
    pub v: Verdict,
}

#[derive(Default)]
struct State {
    report: Option<Report>,
    history: HashMap<String, VecDeque<Point>>,
    last_request: Option<Instant>,
    running: bool,
}

#[derive(Default)]
pub struct Live {
    state: Mutex<State>,
}

/// The snapshots of the last [`WINDOW`], owned by the sampling task: the
/// evaluation over them runs on the blocking pool, never under the lock
/// the HTTP handler takes.
#[derive(Default)]
pub struct Recent {
    snaps: VecDeque<Snapshot>,
}

impl Recent {
    /// Adds a snapshot, drops those older than the window, and returns the
    /// table over what is left (None until there are two).
    pub fn push(&mut self, snap: Snapshot) -> Option<Report> {
        let at = snap.at;
        self.snaps.push_back(snap);
        while self
            .snaps
            .front()
            .is_some_and(|f| at - f.at > WINDOW.as_secs_f64() + 0.5)
        {
            self.snaps.pop_front();
        }
        super::evaluate(self.snaps.make_contiguous())
    }
}

#[derive(Serialize)]
struct View<'a> {
    /// False until two snapshots a step apart exist.
    ready: bool,
    window_seconds: f64,
    report: Option<&'a Report>,
    /// Per resource shown; every resource's with `all`.
    history: HashMap<&'a str, &'a VecDeque<Point>>,
}

impl Live {
    /// Notes a request; true when the caller must start the sampling task.
    pub fn touch(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.last_request = Some(Instant::now());
        let start = !s.running;
        s.running = true;
        start
    }

    /// False once nobody has asked for [`IDLE_STOP`]: the task ends and
    /// the state is dropped.
    pub fn keep_running(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.last_request.is_some_and(|t| t.elapsed() < IDLE_STOP) {
            return true;
        }
        *s = State::default();
        false
    }

    /// Stores the latest table and appends each resource's point to its
    /// history; forgets the history of a resource not seen for the span
    /// the history covers (a collector failing for a scrape or two does
    /// not lose it).
    pub fn publish(&self, report: Report, unix_now: f64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let span = STEP.as_secs_f64() * HISTORY_POINTS as f64;
        s.history
            .retain(|_, h| h.back().is_some_and(|last| unix_now - last.t < span));
        for row in &report.resources {
            let known = s.history.len();
            let entry = match s.history.get_mut(&row.resource) {
                Some(h) => h,
                None if known < HISTORY_RESOURCES => {
                    s.history.entry(row.resource.clone()).or_default()
                }
                None => continue,
            };
            entry.push_back(Point {
                t: unix_now,
                u: row.utilization.as_ref().map(|u| u.value),
                s: row.saturation.as_ref().map(|s| s.value),
                v: row.verdict,
            });
            while entry.len() > HISTORY_POINTS {
                entry.pop_front();
            }
        }
        s.report = Some(report);
    }

    /// The view as JSON. The page draws history only for the rows it
    /// shows (host-wide ones and findings) unless asked for `all`: a
    /// history of every cgroup would be a megabyte every two seconds.
    pub fn json(&self, all: bool) -> String {
        let Ok(s) = self.state.lock() else {
            return "{}".into();
        };
        let history = match &s.report {
            Some(r) => r
                .resources
                .iter()
                .filter(|row| all || row.headline || row.verdict != super::Verdict::Ok)
                .filter_map(|row| {
                    s.history
                        .get_key_value(&row.resource)
                        .map(|(k, h)| (k.as_str(), h))
                })
                .collect(),
            None => HashMap::new(),
        };
        serde_json::to_string(&View {
            ready: s.report.is_some(),
            window_seconds: WINDOW.as_secs_f64(),
            report: s.report.as_ref(),
            history,
        })
        .unwrap_or_else(|_| "{}".into())
    }
}

/// Scrapes and evaluates every [`STEP`], on the blocking pool (the
/// serving thread also carries scrapes and the proxy), while
/// [`Live::keep_running`] says so.
pub async fn sample(live: Arc<Live>, scraper: Arc<crate::scrape::Scraper>) {
    let origin = Instant::now();
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recent = Recent::default();
    loop {
        tick.tick().await;
        if !live.keep_running() {
            return;
        }
        let scraper = scraper.clone();
        let work = tokio::task::spawn_blocking(move || {
            let snap = Snapshot::from_families(origin.elapsed().as_secs_f64(), &scraper.scrape());
            let report = recent.push(snap);
            (recent, report)
        });
        // A panicking rule loses the window, not the page.
        let report;
        (recent, report) = work.await.unwrap_or_default();
        if let Some(report) = report {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            live.publish(report, unix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Row;

    fn snap(at: f64, busy: f64) -> Snapshot {
        let mut s = Snapshot::new(at);
        s.push(
            "sojourn_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "user")],
            busy * at,
        );
        s.push(
            "sojourn_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "idle")],
            (1.0 - busy) * at,
        );
        s
    }

    #[test]
    fn the_window_slides_and_history_is_bounded() {
        let live = Live::default();
        assert!(live.touch(), "the first request starts the task");
        assert!(!live.touch(), "later ones do not");
        let v: serde_json::Value = serde_json::from_str(&live.json(false)).unwrap();
        assert_eq!(v["ready"], false);
        let mut recent = Recent::default();
        assert!(
            recent.push(snap(0.0, 0.5)).is_none(),
            "one snapshot is no table"
        );
        for i in 1..(HISTORY_POINTS + 10) {
            let report = recent.push(snap(i as f64, 0.5)).unwrap();
            live.publish(report, 1e9 + i as f64);
        }
        assert!(
            recent.snaps.len() <= WINDOW.as_secs() as usize + 1,
            "{}",
            recent.snaps.len()
        );
        assert_eq!(
            live.state.lock().unwrap().history["cpu"].len(),
            HISTORY_POINTS
        );
        let v: serde_json::Value = serde_json::from_str(&live.json(false)).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["report"]["resources"][0]["resource"], "cpu");
        assert_eq!(v["history"]["cpu"][0]["u"], 0.5);
        assert!(
            v["history"].get("cpu0").is_none(),
            "an ok per-CPU row's history is left out"
        );
        let v: serde_json::Value = serde_json::from_str(&live.json(true)).unwrap();
        assert_eq!(
            v["history"]["cpu0"][0]["u"], 0.5,
            "unless every resource is asked for"
        );
        assert!(live.keep_running());
    }

    fn report_of(resources: &[&str]) -> Report {
        let mut recent = Recent::default();
        recent.push(snap(0.0, 0.5));
        let cpu = recent.push(snap(1.0, 0.5)).unwrap().resources[0].clone();
        let rows = resources
            .iter()
            .map(|r| Row {
                resource: r.to_string(),
                ..cpu.clone()
            })
            .collect();
        Report::from_rows(5.0, rows, vec![])
    }

    #[test]
    fn a_resource_gone_for_the_history_span_is_forgotten_and_frees_its_slot() {
        let live = Live::default();
        let full: Vec<String> = (0..HISTORY_RESOURCES)
            .map(|i| format!("cgroup /old{i}"))
            .collect();
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        live.publish(report_of(&full), 1e9);
        live.publish(report_of(&["cgroup /new"]), 1e9 + 1.0);
        let kept = |r: &str| live.state.lock().unwrap().history.contains_key(r);
        assert!(!kept("cgroup /new"), "every slot is taken");
        assert!(kept("cgroup /old0"), "gone for a step: kept");
        let span = (STEP * HISTORY_POINTS as u32).as_secs_f64();
        live.publish(report_of(&["cgroup /new"]), 1e9 + span + 1.0);
        assert!(!kept("cgroup /old0"), "gone for the whole span: forgotten");
        assert!(kept("cgroup /new"), "and its slot taken by a new resource");
        assert_eq!(live.state.lock().unwrap().history.len(), 1);
    }
}
