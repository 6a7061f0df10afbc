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
/// Resources with history; more (hundreds of cgroups) get none.
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
    snaps: VecDeque<Snapshot>,
    report: Option<Report>,
    history: HashMap<String, VecDeque<Point>>,
    last_request: Option<Instant>,
    running: bool,
}

#[derive(Default)]
pub struct Live {
    state: Mutex<State>,
}

#[derive(Serialize)]
struct View<'a> {
    /// False until two snapshots a step apart exist.
    ready: bool,
    window_seconds: f64,
    report: Option<&'a Report>,
    history: &'a HashMap<String, VecDeque<Point>>,
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

    /// Adds a snapshot, recomputes the table over the last [`WINDOW`] and
    /// appends each resource's point to its history.
    pub fn push(&self, snap: Snapshot, unix_now: f64) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let at = snap.at;
        s.snaps.push_back(snap);
        while s
            .snaps
            .front()
            .is_some_and(|f| at - f.at > WINDOW.as_secs_f64() + 0.5)
        {
            s.snaps.pop_front();
        }
        let Some(report) = super::evaluate(s.snaps.make_contiguous()) else {
            return;
        };
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

    pub fn json(&self) -> String {
        let Ok(s) = self.state.lock() else {
            return "{}".into();
        };
        serde_json::to_string(&View {
            ready: s.report.is_some(),
            window_seconds: WINDOW.as_secs_f64(),
            report: s.report.as_ref(),
            history: &s.history,
        })
        .unwrap_or_else(|_| "{}".into())
    }
}

/// Scrapes every [`STEP`] while [`Live::keep_running`] says so.
pub async fn sample(live: Arc<Live>, scraper: Arc<crate::scrape::Scraper>) {
    let origin = Instant::now();
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !live.keep_running() {
            return;
        }
        let scraper = scraper.clone();
        let Ok(families) = tokio::task::spawn_blocking(move || scraper.scrape()).await else {
            continue;
        };
        let snap = Snapshot::from_families(origin.elapsed().as_secs_f64(), &families);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        live.push(snap, unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: f64, busy: f64) -> Snapshot {
        let mut s = Snapshot {
            at,
            ..Default::default()
        };
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
        let v: serde_json::Value = serde_json::from_str(&live.json()).unwrap();
        assert_eq!(v["ready"], false);
        for i in 0..(HISTORY_POINTS + 10) {
            live.push(snap(i as f64, 0.5), 1e9 + i as f64);
        }
        let s = live.state.lock().unwrap();
        assert!(
            s.snaps.len() <= WINDOW.as_secs() as usize + 1,
            "{}",
            s.snaps.len()
        );
        assert_eq!(s.history["cpu"].len(), HISTORY_POINTS);
        drop(s);
        let v: serde_json::Value = serde_json::from_str(&live.json()).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["report"]["resources"][0]["resource"], "cpu");
        assert_eq!(v["history"]["cpu"][0]["u"], 0.5);
        assert!(live.keep_running());
    }
}
