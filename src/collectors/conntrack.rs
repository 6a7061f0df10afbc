//! Netfilter connection-tracking table utilization from
//! `/proc/sys/net/netfilter/nf_conntrack_{count,max}`. When the table is
//! full new connections are dropped ("nf_conntrack: table full"), so the
//! ratio is a saturation warning for every NATed or firewalled service. The
//! files exist only while the nf_conntrack module is loaded.
//!
//! Errors come from `/proc/net/stat/nf_conntrack`, one hex line per CPU
//! under a header naming the columns (which vary by kernel):
//! ```text
//! entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop ...
//! 0000000a  00000000 00000003 ...
//! ```

use super::{Collect, CollectError, Config, ParseError, parse_u64};
use crate::metrics::{Desc, Family, label};

/// Per-CPU event counters exported, summed over CPUs.
const STAT_COLUMNS: &[&str] = &[
    "found",
    "invalid",
    "insert_failed",
    "drop",
    "early_drop",
    "search_restart",
];

/// Sums each column of /proc/net/stat/nf_conntrack over the CPU lines.
pub fn parse_conntrack_stat(text: &str) -> Result<Vec<(&str, u64)>, ParseError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| ParseError::new("empty file"))?
        .split_ascii_whitespace()
        .collect();
    if header.first() != Some(&"entries") {
        return Err(ParseError::new("header does not start with `entries`"));
    }
    let mut sums = vec![0u64; header.len()];
    let mut cpus = 0;
    for line in lines {
        let values: Vec<&str> = line.split_ascii_whitespace().collect();
        if values.len() != header.len() {
            return Err(ParseError(format!(
                "{} columns under a header of {}",
                values.len(),
                header.len()
            )));
        }
        for (sum, v) in sums.iter_mut().zip(values) {
            let n =
                u64::from_str_radix(v, 16).map_err(|_| ParseError(format!("{v:?} is not hex")))?;
            *sum = sum.saturating_add(n);
        }
        cpus += 1;
    }
    if cpus == 0 {
        return Err(ParseError::new("no CPU lines"));
    }
    Ok(header.into_iter().zip(sums).collect())
}

const STAT: Desc = Desc::counter(
    "nf_conntrack_events",
    "Connection-tracking events by type, summed over CPUs; drop and early_drop (table full) are saturation, invalid and insert_failed errors (/proc/net/stat/nf_conntrack).",
);

const ENTRIES: Desc = Desc::gauge(
    "nf_conntrack_entries",
    "Utilization: connection-tracking entries in use (/proc/sys/net/netfilter/nf_conntrack_count).",
);
const LIMIT: Desc = Desc::gauge(
    "nf_conntrack_entries_limit",
    "Utilization (denominator): size of the connection-tracking table; new flows are dropped when full (/proc/sys/net/netfilter/nf_conntrack_max).",
);

pub struct ConntrackCollector;

impl Collect for ConntrackCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let read = |file: &str| -> Result<u64, CollectError> {
            let path = cfg.roots.proc(&format!("sys/net/netfilter/{file}"));
            let text = crate::roots::read_kept(&path)
                .map_err(|e| e.missing_means_unsupported("nf_conntrack module not loaded"))?;
            parse_u64(file, &text).map_err(|e| CollectError::parse(&path, e))
        };
        let mut out = vec![
            Family::single(ENTRIES, read("nf_conntrack_count")?),
            Family::single(LIMIT, read("nf_conntrack_max")?),
        ];
        let path = cfg.roots.proc("net/stat/nf_conntrack");
        match crate::roots::read_kept(&path) {
            Ok(text) => {
                let sums =
                    parse_conntrack_stat(&text).map_err(|e| CollectError::parse(&path, e))?;
                let mut events = Family::new(STAT);
                for column in STAT_COLUMNS {
                    if let Some((_, v)) = sums.iter().find(|(c, _)| c == column) {
                        events.push([label("event", *column)], *v);
                    }
                }
                out.push(events);
            }
            // Older kernels, or a network namespace without the stat file.
            Err(CollectError::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000000a  00000000 00000003 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000000 00000000 00000000  00000000 00000000 00000000 00000000
0000000a  00000000 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000010 00000001 00000000  00000000 00000000 00000000 00000001
";

    #[test]
    fn sums_columns_over_cpus() {
        let s = parse_conntrack_stat(STAT).unwrap();
        let get = |c: &str| s.iter().find(|(k, _)| *k == c).unwrap().1;
        assert_eq!(get("found"), 7);
        assert_eq!(get("insert_failed"), 2);
        assert_eq!(get("drop"), 16);
        assert_eq!(get("search_restart"), 1);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_conntrack_stat("").is_err());
        assert!(parse_conntrack_stat("found drop\n1 2\n").is_err());
        assert!(parse_conntrack_stat("entries found\n1\n").is_err());
        assert!(parse_conntrack_stat("entries found\nzz 1\n").is_err());
        assert!(parse_conntrack_stat("entries found\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_conntrack_stat(&s);
        }
    }
}
