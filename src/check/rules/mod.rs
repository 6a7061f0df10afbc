//! The rules that turn a window of snapshots into USE rows, one function per
//! resource, in USE-checklist order. Thresholds are the constants of
//! [`super`], documented in docs/check.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::snapshot::Window;
use super::{
    BUSY, FILESYSTEM_FULL, HOT_CPU, IMBALANCE_AVERAGE, Kind, NOTICE_SHARE, RETRANSMIT_RATIO,
    RETRANSMITS_MIN, Report, Row, SERVICE_ERROR_RATIO, SERVICE_MIN_REQUESTS, SOCKET_QUEUE_BYTES,
    STANDING_SHARE, Signal, TABLE_FULL, Verdict,
};

/// Rows in insertion order, one per resource name.
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    index: std::collections::HashMap<String, usize>,
}

impl Rows {
    fn row(&mut self, kind: Kind, resource: &str) -> &mut Row {
        let i = match self.index.get(resource) {
            Some(&i) => i,
            None => {
                self.rows.push(Row::new(kind, resource));
                self.index.insert(resource.to_string(), self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    fn find(&self, resource: &str) -> Option<&Row> {
        self.index.get(resource).map(|&i| &self.rows[i])
    }
}

mod who;

pub fn evaluate(w: &Window) -> Report {
    let mut rows = Rows::default();
    cpu(w, &mut rows);
    memory(w, &mut rows);
    disks(w, &mut rows);
    filesystems(w, &mut rows);
    network(w, &mut rows);
    tcp(w, &mut rows);
    tcp_ports(w, &mut rows);
    udp(w, &mut rows);
    tables(w, &mut rows);
    cgroups(w, &mut rows);
    queues(w, &mut rows);
    namespaces(w, &mut rows);
    probes(w, &mut rows);
    // Who, once the resources' verdicts are known.
    who::users(w, &mut rows);
    // Services last: a slow service names the host resources found above.
    services(w, &mut rows);
    let failures = w
        .last()
        .all("sojourn_scrape_collector_success")
        .iter()
        .filter(|s| s.value == 0.0)
        .map(|s| s.label("collector").to_string())
        .filter(|c| {
            w.last().value(
                "sojourn_scrape_collector_unsupported",
                &[("collector", c.as_str())],
            ) != Some(1.0)
        })
        .collect();
    Report::from_rows(w.seconds(), rows.rows, failures)
}

pub fn pct(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

pub fn duration(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.1} s")
    } else if seconds >= 0.001 {
        format!("{:.0} ms", seconds * 1e3)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn count(n: f64) -> String {
    format!("{n:.0}")
}

fn busy(row: &mut Row, share: f64, what: &str) {
    row.utilization = Some(Signal::new(share, pct(share)));
    if share >= BUSY {
        row.judge(Verdict::Busy, share, format!("{what} {}", pct(share)));
    }
}

/// CPU time over the window of the CPUs `want` selects: busy (neither
/// idle nor waiting on I/O), and in all.
fn cpu_time(w: &Window, want: &[(&str, &str)]) -> Option<(f64, f64)> {
    let name = "sojourn_cpu_seconds_total";
    let total = w.increase(name, want)?;
    let mode = |mode| {
        let mut with_mode = want.to_vec();
        with_mode.push(("mode", mode));
        w.increase(name, &with_mode).unwrap_or(0.0)
    };
    Some((total - mode("idle") - mode("iowait"), total))
}

/// The host's memory now: total, and in use (total less available).
fn memory_now(w: &Window) -> Option<(f64, f64)> {
    let last = w.last();
    let total = last.value("sojourn_memory_mem_total_bytes", &[])?;
    let avail = last.value("sojourn_memory_mem_available_bytes", &[])?;
    Some((total, total - avail))
}

mod host;
mod network;
mod queues;
mod services;

use host::*;
use network::*;
pub use queues::queue_resource;
use queues::*;
use services::*;

#[cfg(test)]
mod tests;
