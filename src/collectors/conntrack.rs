//! Netfilter connection-tracking table utilization from
//! `/proc/sys/net/netfilter/nf_conntrack_{count,max}`. When the table is
//! full new connections are dropped ("nf_conntrack: table full"), so the
//! ratio is a saturation warning for every NATed or firewalled service. The
//! files exist only while the nf_conntrack module is loaded.

use super::{Collect, CollectError, Config, parse_u64};
use crate::metrics::{Desc, Family};

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
            let text = crate::roots::read(&path)
                .map_err(|e| e.missing_means_unsupported("nf_conntrack module not loaded"))?;
            parse_u64(file, &text).map_err(|e| CollectError::parse(&path, e))
        };
        Ok(vec![
            Family::single(ENTRIES, read("nf_conntrack_count")?),
            Family::single(LIMIT, read("nf_conntrack_max")?),
        ])
    }
}
