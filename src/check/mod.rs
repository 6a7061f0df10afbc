//! The USE table: every resource's utilization, saturation and errors over
//! a window of scrapes, with a verdict and the evidence for it. `sojourn
//! check` prints it once; the exporter's `/` page shows it live.
//!
//! A resource is *saturated* when one of its queues stood (CoDel: at or above
//! target for whole intervals) for at least [`STANDING_SHARE`] of the window,
//! or when work was turned away for lack of room (drops, overflows, limits
//! hit); it *has errors* when the kernel counted failures; a service is
//! *slow* when its p99 passed its latency target. High utilization alone is
//! *busy*, not a finding: a resource can be fully used with nobody waiting.

pub mod live;
pub mod page;
pub mod render;
pub mod rules;
pub mod snapshot;

use serde::Serialize;

pub use snapshot::{Snapshot, Window};

/// Share of the window a queue must stand for its resource to be saturated.
pub const STANDING_SHARE: f64 = 0.5;
/// Share of the window below which a standing queue is not even mentioned.
pub const NOTICE_SHARE: f64 = 0.1;
/// Utilization at which a resource is called busy.
pub const BUSY: f64 = 0.8;
/// One CPU at least this busy while the other CPUs average at most
/// [`IMBALANCE_AVERAGE`]: per-CPU imbalance (the USE checklist's "single
/// hot CPU"). The others', not all CPUs' average: on a 2-CPU host the hot
/// CPU alone would otherwise put the average at 50 %, and any 20 % on the
/// other (a build, sojourn itself) would hide the imbalance.
pub const HOT_CPU: f64 = 0.9;
pub const IMBALANCE_AVERAGE: f64 = 0.5;
/// A filesystem this full is saturated (writes are about to fail).
pub const FILESYSTEM_FULL: f64 = 0.95;
/// A table (fds, conntrack) this full is saturated.
pub const TABLE_FULL: f64 = 0.9;
/// Retransmitted share of sent TCP segments (SYNs aside) that is an error
/// finding, once at least [`RETRANSMITS_MIN`] segments were retransmitted.
pub const RETRANSMIT_RATIO: f64 = 0.01;
pub const RETRANSMITS_MIN: f64 = 10.0;
/// Bytes a socket queue must hold at every snapshot to be standing.
pub const SOCKET_QUEUE_BYTES: f64 = 4096.0;
/// Share of a service's requests answered 5xx that is an error finding.
pub const SERVICE_ERROR_RATIO: f64 = 0.01;
/// A service needs this many requests in the window for its p99 to count.
pub const SERVICE_MIN_REQUESTS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Busy,
    Slow,
    Saturated,
    Errors,
}

impl Verdict {
    /// Saturated, erroring or slow: what `check` exits 1 for.
    pub fn is_finding(self) -> bool {
        self >= Verdict::Slow
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Busy => "busy",
            Verdict::Slow => "slow",
            Verdict::Saturated => "saturated",
            Verdict::Errors => "errors",
        }
    }
}

/// One USE signal of a resource: a number for scripts and charts, and how
/// a person reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub value: f64,
    pub text: String,
}

impl Signal {
    pub fn new(value: f64, text: impl Into<String>) -> Self {
        Signal {
            value,
            text: text.into(),
        }
    }
}

/// What a row of the USE table is about; written in the JSON and the live
/// page as its snake_case name. Declared in the order of those names,
/// which is the order rows of one verdict and score are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Conntrack,
    ContainerCpu,
    ContainerMemory,
    Cpu,
    Disk,
    Fd,
    Filesystem,
    Memory,
    Network,
    Probe,
    Queue,
    Service,
    Tcp,
    TcpAccept,
    TcpPort,
    Udp,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Conntrack,
        Kind::ContainerCpu,
        Kind::ContainerMemory,
        Kind::Cpu,
        Kind::Disk,
        Kind::Fd,
        Kind::Filesystem,
        Kind::Memory,
        Kind::Network,
        Kind::Probe,
        Kind::Queue,
        Kind::Service,
        Kind::Tcp,
        Kind::TcpAccept,
        Kind::TcpPort,
        Kind::Udp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Conntrack => "conntrack",
            Kind::ContainerCpu => "container_cpu",
            Kind::ContainerMemory => "container_memory",
            Kind::Cpu => "cpu",
            Kind::Disk => "disk",
            Kind::Fd => "fd",
            Kind::Filesystem => "filesystem",
            Kind::Memory => "memory",
            Kind::Network => "network",
            Kind::Probe => "probe",
            Kind::Queue => "queue",
            Kind::Service => "service",
            Kind::Tcp => "tcp",
            Kind::TcpAccept => "tcp_accept",
            Kind::TcpPort => "tcp_port",
            Kind::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The kind of resource.
    pub kind: Kind,
    /// Which one, as the table names it: `cpu`, `cpu1`, `disk vda`,
    /// `tcp_accept 127.0.0.1:8080`, `service checkout`.
    pub resource: String,
    /// Share of capacity used, 0–1, where the resource has a capacity.
    pub utilization: Option<Signal>,
    /// Share of the window a queue stood (0–1), or work turned away.
    pub saturation: Option<Signal>,
    /// Errors counted in the window.
    pub errors: Option<Signal>,
    pub verdict: Verdict,
    /// Why the verdict, one sentence per fact.
    pub evidence: Vec<String>,
    /// Orders rows of one verdict: the worst first.
    #[serde(skip)]
    pub score: f64,
    /// Shown in the table even when ok (host-wide resources); per-CPU,
    /// per-port and per-cgroup rows only when they have something to say.
    pub headline: bool,
}

impl Row {
    pub fn new(kind: Kind, resource: impl Into<String>) -> Self {
        Row {
            kind,
            resource: resource.into(),
            utilization: None,
            saturation: None,
            errors: None,
            verdict: Verdict::Ok,
            evidence: Vec::new(),
            score: 0.0,
            headline: false,
        }
    }

    /// Raises the verdict (never lowers it) and adds the reason.
    pub fn judge(&mut self, verdict: Verdict, score: f64, evidence: impl Into<String>) {
        if verdict > self.verdict {
            self.verdict = verdict;
            self.score = score;
        } else if verdict == self.verdict {
            self.score = self.score.max(score);
        }
        self.evidence.push(evidence.into());
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds the window spans.
    pub window_seconds: f64,
    /// Every resource seen, worst first.
    pub resources: Vec<Row>,
    /// The resources named as saturated, erroring or slow, worst first.
    pub findings: Vec<String>,
    /// Collectors that failed (not merely unsupported): their resources
    /// are missing from the table.
    pub collector_failures: Vec<String>,
}

impl Report {
    pub fn from_rows(window_seconds: f64, mut rows: Vec<Row>, failures: Vec<String>) -> Self {
        // Two stable sorts: names in natural order (each key made once),
        // then severity, which keeps that order among equals.
        rows.sort_by_cached_key(|r| natural(&r.resource));
        rows.sort_by(|a, b| {
            b.verdict
                .cmp(&a.verdict)
                .then(b.score.total_cmp(&a.score))
                .then_with(|| a.kind.cmp(&b.kind))
        });
        let findings = rows
            .iter()
            .filter(|r| r.verdict.is_finding())
            .map(|r| r.resource.clone())
            .collect();
        Report {
            window_seconds,
            resources: rows,
            findings,
            collector_failures: failures,
        }
    }

    pub fn has_findings(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// `cpu10` after `cpu9`: digits compared as numbers.
fn natural(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = s.split_at(s.len() - digits);
    (head.to_string(), tail.parse().unwrap_or(0))
}

/// The USE table of a window of snapshots; None with fewer than two.
pub fn evaluate(snaps: &[Snapshot]) -> Option<Report> {
    let w = Window::new(snaps)?;
    Some(rules::evaluate(&w))
}

/// Scrapes `scraper` at the start, every `step` and at the end of `window`
/// (the queue sampler runs between), calling `progress` with the seconds
/// done after each scrape.
pub fn sample(
    scraper: &crate::scrape::Scraper,
    window: std::time::Duration,
    mut progress: impl FnMut(f64),
) -> Vec<Snapshot> {
    let start = std::time::Instant::now();
    // About ten snapshots, at most a second apart: enough to tell a socket
    // queue that stood from one caught once.
    let step = (window / 10).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(1),
    );
    let mut snaps = Vec::new();
    let mut next = start;
    loop {
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let at = start.elapsed().as_secs_f64();
        snaps.push(Snapshot::from_families(at, &scraper.scrape()));
        progress(at);
        if start.elapsed() >= window {
            return snaps;
        }
        next = (next + step).min(start + window);
    }
}

/// `sojourn check`: the USE table of this host over `window` (`--for`),
/// as JSON or a table; 0 when nothing is saturated, erroring or slow, 1
/// otherwise.
pub fn run(
    scraper: &crate::scrape::Scraper,
    window: std::time::Duration,
    json: bool,
) -> std::process::ExitCode {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    // NO_COLOR (no-color.org): set to anything but empty, no colours.
    let colours = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let total = window.as_secs_f64();
    let snaps = sample(scraper, window, |done| {
        if tty {
            let _ = write!(std::io::stderr(), "\rsampling {done:4.1} s of {total:.1} s");
        }
    });
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    let Some(report) = evaluate(&snaps) else {
        eprintln!("sojourn check: fewer than two snapshots were taken");
        return std::process::ExitCode::FAILURE;
    };
    let text = if json {
        render::json(&report)
    } else {
        render::table(&report, colours && std::io::stdout().is_terminal())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", text.trim_end());
    if report.has_findings() {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_written_and_ordered_by_their_names() {
        let mut by_name = Kind::ALL.to_vec();
        by_name.sort_by_key(|k| k.as_str());
        assert_eq!(by_name, Kind::ALL, "declared in the order of their names");
        let mut declared = Kind::ALL.to_vec();
        declared.sort();
        assert_eq!(declared, Kind::ALL);
        for k in Kind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
    }

    #[test]
    fn rows_are_ordered_worst_first_then_by_kind_then_naturally() {
        let mut hot = Row::new(Kind::Cpu, "cpu3");
        hot.judge(Verdict::Saturated, 0.9, "hot");
        let mut full = Row::new(Kind::Filesystem, "filesystem /");
        full.judge(Verdict::Saturated, 0.97, "full");
        let rows = ["cpu10", "cpu9", "cpu2"]
            .into_iter()
            .map(|n| Row::new(Kind::Cpu, n))
            .chain([Row::new(Kind::Memory, "memory"), hot, full])
            .collect();
        let r = Report::from_rows(1.0, rows, Vec::new());
        let order: Vec<&str> = r.resources.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(
            order,
            ["filesystem /", "cpu3", "cpu2", "cpu9", "cpu10", "memory"]
        );
        assert_eq!(r.findings, ["filesystem /", "cpu3"]);
    }
}
