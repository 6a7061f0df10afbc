//! Load averages and task counts from `/proc/loadavg`.
//!
//! ```text
//! 0.21 0.37 0.39 1/719 19737
//! ```
//! 1, 5 and 15 minute load (runnable plus uninterruptible tasks, exponentially
//! averaged), then runnable/total scheduling entities, then the last PID
//! (Documentation/filesystems/proc.rst). Parsed by procfs-core.

use procfs_core::{FromRead, LoadAverage};

use super::{Collect, CollectError, Config, ParseError};
use crate::metrics::{Desc, Family};

pub fn parse_loadavg(text: &str) -> Result<LoadAverage, ParseError> {
    let load = LoadAverage::from_read(text.as_bytes()).map_err(|e| ParseError(e.to_string()))?;
    if ![load.one, load.five, load.fifteen]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0)
    {
        return Err(ParseError::new(
            "load averages must be finite and non-negative",
        ));
    }
    Ok(load)
}

const LOAD1: Desc = Desc::gauge(
    "load1",
    "Saturation: 1-minute load average, runnable plus uninterruptible tasks (/proc/loadavg).",
);
const LOAD5: Desc = Desc::gauge(
    "load5",
    "Saturation: 5-minute load average (/proc/loadavg).",
);
const LOAD15: Desc = Desc::gauge(
    "load15",
    "Saturation: 15-minute load average (/proc/loadavg).",
);
const RUNNABLE: Desc = Desc::gauge(
    "load_runnable_tasks",
    "Saturation: scheduling entities runnable now, the reader included (/proc/loadavg field 4, before the slash).",
);
const TASKS: Desc = Desc::gauge(
    "load_tasks",
    "Scheduling entities (processes and threads) that exist now (/proc/loadavg field 4, after the slash).",
);

pub fn emit(load: &LoadAverage) -> Vec<Family> {
    // f32 -> f64 through the decimal form so 0.21 stays 0.21 and not 0.20999999344.
    let exact = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
    vec![
        Family::single(LOAD1, exact(load.one)),
        Family::single(LOAD5, exact(load.five)),
        Family::single(LOAD15, exact(load.fifteen)),
        Family::single(RUNNABLE, u64::from(load.cur)),
        Family::single(TASKS, u64::from(load.max)),
    ]
}

pub struct LoadavgCollector;

impl Collect for LoadavgCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("loadavg");
        let text = crate::roots::read_kept(&path)?;
        let load = parse_loadavg(&text).map_err(|e| CollectError::parse(&path, e))?;
        Ok(emit(&load))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    #[test]
    fn parses_fixture() {
        let l = parse_loadavg(include_str!("../../tests/fixtures/proc/loadavg")).unwrap();
        assert_eq!((l.cur, l.max), (1, 719));
        let f = emit(&l);
        assert_eq!(f[0].samples[0].value, Value::Float(0.21));
        assert_eq!(f[4].samples[0].value, Value::Int(719));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_loadavg("").is_err());
        assert!(parse_loadavg("0.1 0.2\n").is_err());
        assert!(parse_loadavg("a b c 1/2 3\n").is_err());
        assert!(parse_loadavg("0.1 0.2 0.3 12 3\n").is_err());
        assert!(parse_loadavg("NaN 0.2 0.3 1/2 3\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_loadavg(&s);
        }
    }
}
