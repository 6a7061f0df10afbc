//! CPU run-queue delay from `/proc/schedstat`: the key saturation signal of
//! a CPU, time that runnable tasks spent waiting instead of running.
//!
//! ```text
//! version 15
//! timestamp 15819019232
//! cpu0 498494191 0 3533438552 2553969831 3853684107 2465731542 2045936778163039 343796328169361 4767485306
//! domain0 00000000,00000003 212499247 ...
//! ```
//! For `cpuN` lines, field 7 is nanoseconds tasks ran on this CPU, field 8
//! nanoseconds tasks waited on its run queue, field 9 timeslices run
//! (Documentation/scheduler/sched-stats.rst; unchanged from version 15 to 17).
//! The file exists only with CONFIG_SCHEDSTATS; its absence is reported as
//! unsupported, not as an error. No crate parses this file.

use super::{Collect, CollectError, Config, ParseError, parse_u64};
use crate::metrics::{Desc, Family, label};

/// Oldest format whose `cpuN` lines carry run/wait/timeslice in fields 7–9.
pub const MIN_VERSION: u64 = 15;

const NANOS_PER_SECOND: f64 = 1e9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSched {
    pub cpu: u32,
    pub running_ns: u64,
    pub waiting_ns: u64,
    pub timeslices: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedstat {
    pub version: u64,
    pub cpus: Vec<CpuSched>,
}

pub fn parse_schedstat(text: &str) -> Result<Schedstat, ParseError> {
    let mut version = None;
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if key == "version" {
            let v = parse_u64("version", fields.next().unwrap_or(""))?;
            if v < MIN_VERSION {
                return Err(ParseError(format!(
                    "schedstat version {v} is older than {MIN_VERSION}, whose field layout is documented"
                )));
            }
            version = Some(v);
            continue;
        }
        let Some(num) = key.strip_prefix("cpu") else {
            continue;
        };
        let cpu = num
            .parse::<u32>()
            .map_err(|_| ParseError(format!("bad CPU name {key:?}")))?;
        let values: Vec<&str> = fields.collect();
        if values.len() < 9 {
            return Err(ParseError(format!(
                "{key}: {} fields, at least 9 expected",
                values.len()
            )));
        }
        cpus.push(CpuSched {
            cpu,
            running_ns: parse_u64("running ns", values[6])?,
            waiting_ns: parse_u64("waiting ns", values[7])?,
            timeslices: parse_u64("timeslices", values[8])?,
        });
    }
    let version = version.ok_or_else(|| ParseError::new("no version line"))?;
    if cpus.is_empty() {
        return Err(ParseError::new("no cpuN lines"));
    }
    Ok(Schedstat { version, cpus })
}

const RUNNING: Desc = Desc::counter(
    "schedstat_running",
    "Utilization: seconds tasks spent running on each CPU (/proc/schedstat field 7).",
)
.seconds();
const WAITING: Desc = Desc::counter(
    "schedstat_waiting",
    "Saturation: seconds runnable tasks spent waiting on each CPU's run queue (/proc/schedstat field 8).",
)
.seconds();
const TIMESLICES: Desc = Desc::counter(
    "schedstat_timeslices",
    "Timeslices run on each CPU; waiting seconds divided by this is the run-queue delay per slice (/proc/schedstat field 9).",
);

pub fn emit(stat: &Schedstat) -> Vec<Family> {
    let mut running = Family::new(RUNNING);
    let mut waiting = Family::new(WAITING);
    let mut slices = Family::new(TIMESLICES);
    for c in &stat.cpus {
        let cpu = label("cpu", c.cpu.to_string());
        running.push([cpu.clone()], c.running_ns as f64 / NANOS_PER_SECOND);
        waiting.push([cpu.clone()], c.waiting_ns as f64 / NANOS_PER_SECOND);
        slices.push([cpu], c.timeslices);
    }
    vec![running, waiting, slices]
}

pub struct SchedstatCollector;

impl Collect for SchedstatCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("schedstat");
        let text = crate::roots::read_kept(&path)
            .map_err(|e| e.missing_means_unsupported("kernel built without CONFIG_SCHEDSTATS"))?;
        let stat = parse_schedstat(&text).map_err(|e| CollectError::parse(&path, e))?;
        Ok(emit(&stat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_15_fixture() {
        let s = parse_schedstat(include_str!("../../tests/fixtures/proc/schedstat")).unwrap();
        assert_eq!(s.version, 15);
        assert_eq!(
            s.cpus[0],
            CpuSched {
                cpu: 0,
                running_ns: 2045936778163039,
                waiting_ns: 343796328169361,
                timeslices: 4767485306
            }
        );
        assert_eq!(s.cpus.len(), 2);
    }

    #[test]
    fn parses_version_17_with_named_domains() {
        let v17 = "version 17\ntimestamp 4295044082\ncpu0 0 0 0 0 0 0 1000 2000 30\n\
                   domain0 SMT 00000003 1 2 3\ncpu1 0 0 0 0 0 0 4000 5000 60\n";
        let s = parse_schedstat(v17).unwrap();
        assert_eq!(s.version, 17);
        assert_eq!(s.cpus[1].waiting_ns, 5000);
        assert_eq!(s.cpus[1].timeslices, 60);
    }

    #[test]
    fn tolerates_extra_fields_from_newer_kernels() {
        let s = parse_schedstat("version 16\ncpu0 0 0 0 0 0 0 1 2 3 4 5\n").unwrap();
        assert_eq!(s.cpus[0].timeslices, 3);
    }

    #[test]
    fn rejects_old_versions_short_lines_and_garbage() {
        assert!(parse_schedstat("version 14\ncpu0 0 0 0 0 0 0 1 2 3\n").is_err());
        assert!(parse_schedstat("version 15\ncpu0 0 0 0 0 0 0 1 2\n").is_err());
        assert!(parse_schedstat("version 15\ncpu0 0 0 0 0 0 0 1 x 3\n").is_err());
        assert!(
            parse_schedstat("cpu0 0 0 0 0 0 0 1 2 3\n").is_err(),
            "no version"
        );
        assert!(parse_schedstat("version 15\n").is_err(), "no cpus");
        assert!(parse_schedstat("").is_err());
    }

    #[test]
    fn emits_seconds() {
        let s = parse_schedstat("version 15\ncpu3 0 0 0 0 0 0 1500000000 250000000 7\n").unwrap();
        let f = emit(&s);
        assert_eq!(f[1].samples[0].value, crate::metrics::Value::Float(0.25));
        assert_eq!(f[1].samples[0].labels[0].1, "3");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_schedstat(&s);
        }
        #[test]
        fn never_panics_on_near_valid(s in "version [0-9]{1,3}\n(cpu[0-9x]{0,3}( [0-9]{1,21}){0,11}\n|domain0 [0-9,]{1,9} [0-9 ]{0,30}\n){0,6}") {
            let _ = parse_schedstat(&s);
        }
    }
}
