//! Memory utilization from `/proc/meminfo`; saturation (reclaim, swapping,
//! major faults) and errors (OOM kills) from `/proc/vmstat`.
//!
//! ```text
//! MemTotal:        3742148 kB
//! HugePages_Total:       0
//! ```
//! Every meminfo key is exported, in bytes where the kernel prints `kB`
//! (which means KiB; Documentation/filesystems/proc.rst "meminfo"). A generic
//! key/value parser is used rather than procfs-core's fixed `Meminfo` struct
//! so that keys added by newer kernels appear without a code change.

use std::borrow::Cow;

use super::{Collect, CollectError, Config, ParseError, parse_u64};
use crate::metrics::{Desc, Family, Kind, Memo, snake_case};

const BYTES_PER_KIB: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeminfoEntry<'a> {
    pub key: &'a str,
    pub value: u64,
    /// True when the kernel printed the value in kB (converted to bytes here).
    pub bytes: bool,
}

pub fn parse_meminfo(text: &str) -> Result<Vec<MeminfoEntry<'_>>, ParseError> {
    let mut entries = Vec::with_capacity(64);
    for line in super::short_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let (key, rest) = line
            .split_once(':')
            .ok_or_else(|| ParseError(format!("line {line:?} has no colon")))?;
        let mut fields = rest.split_ascii_whitespace();
        let value = parse_u64(key, fields.next().unwrap_or(""))?;
        let (value, bytes) = match fields.next() {
            Some("kB") => (
                value
                    .checked_mul(BYTES_PER_KIB)
                    .ok_or_else(|| ParseError(format!("{key}: {value} kB overflows")))?,
                true,
            ),
            None => (value, false),
            Some(unit) => return Err(ParseError(format!("{key}: unknown unit {unit:?}"))),
        };
        entries.push(MeminfoEntry {
            key: key.trim(),
            value,
            bytes,
        });
    }
    if !entries.iter().any(|e| e.key == "MemTotal") {
        return Err(ParseError::new("no MemTotal line"));
    }
    Ok(entries)
}

/// `AnonHugePages` -> `memory_anon_huge_pages`. A count (no kB) whose name
/// ends in `_total` loses it, as that suffix is reserved for counters:
/// `HugePages_Total` -> `memory_huge_pages`, beside `memory_huge_pages_free`.
pub fn metric_name(key: &str, bytes: bool) -> String {
    // One-letter prefixes read as unit abbreviations (`_s_` = seconds): spell them out.
    let key = match key {
        "SReclaimable" => "SlabReclaimable",
        "SUnreclaim" => "SlabUnreclaimable",
        "KReclaimable" => "KernelReclaimable",
        "SecPageTables" => "SecondaryPageTables",
        k => k,
    };
    let mut name = format!("memory_{}", snake_case(key));
    if !bytes && name.ends_with("_total") {
        name.truncate(name.len() - "_total".len());
    }
    name
}

static NAMES: Memo = Memo::new();
static HELPS: Memo = Memo::new();
static VMSTAT_NAMES: Memo = Memo::new();

/// USE role of the meminfo keys an operator reads first.
fn meminfo_help(key: &str) -> &'static str {
    let role = match key {
        "MemTotal" => "Utilization (denominator): usable RAM",
        "MemAvailable" => {
            "Utilization: memory available for new work without swapping, reclaimable caches included"
        }
        "MemFree" => "Utilization: memory not used at all (caches excluded; prefer MemAvailable)",
        "SwapTotal" => "Utilization (denominator): swap space",
        "SwapFree" => "Utilization: unused swap space",
        "Dirty" => "Saturation: memory waiting to be written back to disk",
        "Writeback" => "Saturation: memory being written back to disk now",
        "HardwareCorrupted" => "Errors: memory poisoned by hardware faults",
        _ => "",
    };
    if role.is_empty() {
        HELPS.get(key, |key| {
            format!("Memory information field {key} (/proc/meminfo).")
        })
    } else {
        HELPS.get(key, |key| format!("{role} (/proc/meminfo {key})."))
    }
}

/// vmstat counters that measure memory saturation and errors: page scans and
/// steals (reclaim), direct-reclaim stalls, major faults, swap traffic, OOM kills.
fn vmstat_help(key: &str) -> Option<&'static str> {
    Some(if key.starts_with("pgscan_kswapd") {
        "Saturation: pages scanned by background reclaim (kswapd) (/proc/vmstat)."
    } else if key.starts_with("pgscan_direct") {
        "Saturation: pages scanned by direct reclaim, which stalls the allocating task (/proc/vmstat)."
    } else if key.starts_with("pgsteal_") {
        "Saturation: pages reclaimed (/proc/vmstat)."
    } else if key.starts_with("allocstall") {
        "Saturation: allocations that entered direct reclaim (/proc/vmstat)."
    } else {
        match key {
            "pgmajfault" => {
                "Saturation: major page faults, each waiting on disk I/O (/proc/vmstat)."
            }
            "pswpin" => "Saturation: pages swapped in (/proc/vmstat).",
            "pswpout" => "Saturation: pages swapped out (/proc/vmstat).",
            "oom_kill" => "Errors: processes killed by the out-of-memory killer (/proc/vmstat).",
            _ => return None,
        }
    })
}

/// Parses /proc/vmstat (`name value` per line), keeping the counters
/// [`vmstat_help`] exports. procfs-core's `VmStat` would allocate a String
/// for each of ~180 keys on every scrape to keep ~20.
pub fn parse_vmstat(text: &str) -> Result<Vec<(&str, u64)>, ParseError> {
    let mut kept = Vec::with_capacity(32);
    let mut lines = 0;
    for line in super::short_lines(text) {
        let mut f = line.split_ascii_whitespace();
        let Some(key) = f.next() else { continue };
        let value = f
            .next()
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| ParseError(format!("line {line:?} is not `name integer`")))?;
        lines += 1;
        if vmstat_help(key).is_some() {
            // Per-CPU drift can make a sum read slightly negative.
            kept.push((key, value.max(0) as u64));
        }
    }
    if lines == 0 {
        return Err(ParseError::new("empty file"));
    }
    kept.sort_unstable();
    Ok(kept)
}

/// The descriptors of the last scrape's fields, in the kernel's order
/// (meminfo's, then the kept vmstat keys'): that order only changes with
/// the kernel, so each field costs one compare with the key at its place
/// instead of a name table lookup.
#[derive(Default)]
pub struct Known(Vec<(Box<str>, bool, Desc)>);

impl Known {
    fn desc(&mut self, at: usize, key: &str, bytes: bool, make: impl FnOnce() -> Desc) -> Desc {
        if let Some((k, b, desc)) = self.0.get(at)
            && **k == *key
            && *b == bytes
        {
            return desc.clone();
        }
        let desc = make();
        self.0.truncate(at);
        self.0.push((key.into(), bytes, desc.clone()));
        desc
    }
}

pub fn emit(
    meminfo: &[MeminfoEntry<'_>],
    vmstat: &[(&str, u64)],
    known: &mut Known,
) -> Vec<Family> {
    let mut out = Vec::with_capacity(meminfo.len() + vmstat.len());
    for (at, e) in meminfo.iter().enumerate() {
        let desc = known.desc(at, e.key, e.bytes, || {
            let desc = Desc {
                name: Cow::Borrowed(NAMES.get(e.key, |key| metric_name(key, e.bytes))),
                help: Cow::Borrowed(meminfo_help(e.key)),
                kind: Kind::Gauge,
                unit: None,
                namespaced: true,
            };
            if e.bytes { desc.bytes() } else { desc }
        });
        out.push(Family::single(desc, e.value));
    }
    for (at, (key, value)) in vmstat.iter().enumerate() {
        let desc = known.desc(meminfo.len() + at, key, false, || Desc {
            name: Cow::Borrowed(VMSTAT_NAMES.get(key, |key| format!("vmstat_{key}"))),
            help: Cow::Borrowed(vmstat_help(key).unwrap_or_default()),
            kind: Kind::Counter,
            unit: None,
            namespaced: true,
        });
        out.push(Family::single(desc, *value));
    }
    out
}

#[derive(Default)]
pub struct MemoryCollector {
    known: std::sync::Mutex<Known>,
}

impl Collect for MemoryCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("meminfo");
        let meminfo_text = crate::roots::read_kept(&path)?;
        let meminfo = parse_meminfo(&meminfo_text).map_err(|e| CollectError::parse(&path, e))?;
        let path = cfg.roots.proc("vmstat");
        let vmstat_text = crate::roots::read_kept(&path)?;
        let vmstat = parse_vmstat(&vmstat_text).map_err(|e| CollectError::parse(&path, e))?;
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(emit(&meminfo, &vmstat, &mut known))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    #[test]
    fn meminfo_in_bytes_and_counts() {
        let m = parse_meminfo(include_str!("../../tests/fixtures/proc/meminfo")).unwrap();
        let total = m.iter().find(|e| e.key == "MemTotal").unwrap();
        assert_eq!(total.value, 3742148 * 1024);
        assert!(total.bytes);
        let huge = m.iter().find(|e| e.key == "HugePages_Total").unwrap();
        assert!(!huge.bytes);
    }

    #[test]
    fn names_follow_prometheus_practice() {
        assert_eq!(metric_name("Active(anon)", true), "memory_active_anon");
        assert_eq!(metric_name("MemTotal", true), "memory_mem_total");
        assert_eq!(metric_name("HugePages_Total", false), "memory_huge_pages");
        assert_eq!(
            metric_name("HugePages_Free", false),
            "memory_huge_pages_free"
        );
    }

    #[test]
    fn vmstat_subset_only() {
        let v = parse_vmstat(include_str!("../../tests/fixtures/proc/vmstat")).unwrap();
        let m = parse_meminfo("MemTotal: 1 kB\n").unwrap();
        let fams = emit(&m, &v, &mut Known::default());
        let names: Vec<String> = fams.iter().map(|f| f.desc.exposed_name()).collect();
        assert!(names.contains(&"sojourn_vmstat_pgmajfault_total".to_string()));
        assert!(names.contains(&"sojourn_vmstat_pswpin_total".to_string()));
        assert!(
            names.contains(&"sojourn_vmstat_pgscan_kswapd_normal_total".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("nr_free_pages")));
        assert_eq!(fams[0].samples[0].value, Value::Int(1024));
    }

    #[test]
    fn names_kept_from_the_last_scrape_follow_a_changed_list() {
        let mut known = Known::default();
        let names = |m: &str, known: &mut Known| -> Vec<String> {
            emit(&parse_meminfo(m).unwrap(), &[], known)
                .iter()
                .map(|f| f.desc.exposed_name())
                .collect()
        };
        assert_eq!(
            names("MemTotal: 1 kB\nDirty: 2 kB\n", &mut known),
            [
                "sojourn_memory_mem_total_bytes",
                "sojourn_memory_dirty_bytes"
            ]
        );
        assert_eq!(
            names("MemTotal: 1 kB\nHugePages_Total: 2\n", &mut known),
            [
                "sojourn_memory_mem_total_bytes",
                "sojourn_memory_huge_pages"
            ]
        );
        // The same key printed without a unit is another metric.
        assert_eq!(
            names("MemTotal: 1\n", &mut known),
            ["sojourn_memory_mem_total"]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_meminfo("").is_err());
        assert!(parse_meminfo("MemTotal 5 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: x kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 5 MB\n").is_err());
        assert!(parse_meminfo("MemTotal: 18446744073709551615 kB\n").is_err());
        assert!(parse_vmstat("pgmajfault x\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_meminfo(&s);
            let _ = parse_vmstat(&s);
        }
    }
}
