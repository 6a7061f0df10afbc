//! Pressure stall information (PSI): the share of wall time in which some
//! (or all) non-idle tasks were stalled on a resource — a direct saturation
//! measure.
//!
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=14036781
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//! `total` is cumulative microseconds (Documentation/accounting/psi.rst).
//! Older kernels print no `full` line for cpu; `/proc/pressure/irq` (6.1+,
//! CONFIG_IRQ_TIME_ACCOUNTING) has only `full`. Lines are parsed with
//! procfs-core's record parser.

use procfs_core::parse_pressure_record;

use super::{Collect, CollectError, Config, ParseError};
use crate::metrics::{Desc, Family, label};

pub const RESOURCES: [&str; 4] = ["cpu", "memory", "io", "irq"];
const MICROS_PER_SECOND: f64 = 1e6;

/// Cumulative stall microseconds of one pressure file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: Option<u64>,
    pub full_us: Option<u64>,
}

pub fn parse_pressure(text: &str) -> Result<Pressure, ParseError> {
    let mut p = Pressure::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // procfs-core slices at byte 5; checking the prefix first keeps that in bounds.
        if !(line.starts_with("some ") || line.starts_with("full ")) {
            return Err(ParseError(format!(
                "line {line:?} is neither some nor full"
            )));
        }
        let record =
            parse_pressure_record(line).map_err(|e| ParseError(format!("line {line:?}: {e}")))?;
        if line.starts_with("some") {
            p.some_us = Some(record.total);
        } else {
            p.full_us = Some(record.total);
        }
    }
    if p.some_us.is_none() && p.full_us.is_none() {
        return Err(ParseError::new("neither a some nor a full line"));
    }
    Ok(p)
}

const STALLED: Desc = Desc::counter(
    "pressure_stalled",
    "Saturation: seconds in which some (kind=some) or all (kind=full) non-idle tasks were stalled waiting for the resource (/proc/pressure/<resource> total).",
)
.seconds();

pub fn emit(pressures: &[(&'static str, Pressure)]) -> Vec<Family> {
    let mut f = Family::new(STALLED);
    for (resource, p) in pressures {
        for (kind, us) in [("some", p.some_us), ("full", p.full_us)] {
            if let Some(us) = us {
                f.push(
                    [label("resource", *resource), label("kind", kind)],
                    us as f64 / MICROS_PER_SECOND,
                );
            }
        }
    }
    vec![f]
}

pub struct PressureCollector;

impl Collect for PressureCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let mut found = Vec::new();
        for resource in RESOURCES {
            let path = cfg.roots.proc(&format!("pressure/{resource}"));
            match crate::roots::read_kept(&path) {
                Ok(text) => {
                    let p = parse_pressure(&text).map_err(|e| CollectError::parse(&path, e))?;
                    found.push((resource, p));
                }
                // irq needs 6.1+; any single file may be absent.
                Err(CollectError::Missing(_)) => {}
                // PSI compiled in but disabled (psi=0) makes reads fail with EOPNOTSUPP.
                Err(CollectError::Io(e)) if e.contains("not supported") => {}
                Err(e) => return Err(e),
            }
        }
        if found.is_empty() {
            return Err(CollectError::Unsupported(
                "no /proc/pressure files: kernel older than 4.20, or PSI disabled (psi=0)".into(),
            ));
        }
        Ok(emit(&found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let p = parse_pressure(include_str!("../../tests/fixtures/proc/pressure/io")).unwrap();
        assert_eq!(p.some_us, Some(159886802));
        assert_eq!(p.full_us, Some(159229614));
    }

    #[test]
    fn some_only_as_on_older_kernels_for_cpu() {
        let p = parse_pressure("some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n").unwrap();
        assert_eq!(
            p,
            Pressure {
                some_us: Some(2500000),
                full_us: None
            }
        );
        let f = emit(&[("cpu", p)]);
        assert_eq!(f[0].samples.len(), 1);
        assert_eq!(f[0].samples[0].value, crate::metrics::Value::Float(2.5));
    }

    #[test]
    fn full_only_as_irq() {
        let p = parse_pressure(include_str!("../../tests/fixtures/proc/pressure/irq")).unwrap();
        assert_eq!(
            p,
            Pressure {
                some_us: None,
                full_us: Some(8494)
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_pressure("").is_err());
        assert!(parse_pressure("some avg10=x avg60=0 avg300=0 total=1\n").is_err());
        assert!(parse_pressure("some avg10=0 avg60=0 avg300=0 total=-1\n").is_err());
        assert!(parse_pressure("hello\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_pressure(&s);
        }
    }
}
