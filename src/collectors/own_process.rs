//! The exporter's own process, as every Prometheus exporter serves it
//! (client_golang's process collector names): CPU, memory, file
//! descriptors and start time of sojourn itself, from `/proc/self`. Always
//! the real `/proc`, whatever `--path.procfs` says: these are the running
//! binary's, not the host's.

use std::sync::OnceLock;

use procfs_core::FromRead;
use procfs_core::process::{LimitValue, Limits, Stat};

use crate::metrics::{Desc, Family};

const CPU: Desc = Desc::counter(
    "process_cpu",
    "Total user and system CPU time spent by sojourn (/proc/self/stat).",
)
.seconds()
.without_namespace();
const OPEN_FDS: Desc = Desc::gauge(
    "process_open_fds",
    "File descriptors sojourn holds open (/proc/self/fd).",
)
.without_namespace();
const MAX_FDS: Desc = Desc::gauge(
    "process_max_fds",
    "Most file descriptors sojourn may open, its soft RLIMIT_NOFILE (/proc/self/limits).",
)
.without_namespace();
const VIRTUAL: Desc = Desc::gauge(
    "process_virtual_memory",
    "Virtual memory size of sojourn (/proc/self/stat vsize).",
)
.bytes()
.without_namespace();
const VIRTUAL_MAX: Desc = Desc::gauge(
    "process_virtual_memory_max",
    "Most virtual memory sojourn may map, its RLIMIT_AS; 2^64 - 1 when unlimited, as client_golang reports it (/proc/self/limits).",
)
.bytes()
.without_namespace();
const RESIDENT: Desc = Desc::gauge(
    "process_resident_memory",
    "Resident memory size of sojourn (/proc/self/stat rss).",
)
.bytes()
.without_namespace();
const START: Desc = Desc::gauge(
    "process_start_time",
    "Start time of sojourn since the Unix epoch (/proc/self/stat starttime and /proc/stat btime).",
)
.seconds()
.without_namespace();

/// The host's boot time, read once: it does not change while sojourn runs.
fn boot_time() -> Option<u64> {
    static BTIME: OnceLock<Option<u64>> = OnceLock::new();
    *BTIME.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        super::cpu::parse_proc_stat(&text).ok()?.boot_time
    })
}

/// The families, each present when its file could be read.
pub fn families() -> Vec<Family> {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    let mut out = Vec::with_capacity(7);
    if let Some(stat) = std::fs::read("/proc/self/stat")
        .ok()
        .and_then(|b| Stat::from_read(&b[..]).ok())
    {
        out.push(Family::single(
            CPU,
            (stat.utime + stat.stime) as f64 / ticks,
        ));
        out.push(Family::single(VIRTUAL, stat.vsize as f64));
        out.push(Family::single(RESIDENT, stat.rss as f64 * page));
        if let Some(btime) = boot_time() {
            out.push(Family::single(
                START,
                btime as f64 + stat.starttime as f64 / ticks,
            ));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push(Family::single(OPEN_FDS, fds.count() as u64));
    }
    if let Some(limits) = std::fs::read("/proc/self/limits")
        .ok()
        .and_then(|b| Limits::from_read(&b[..]).ok())
    {
        // Unlimited is RLIM_INFINITY, as the kernel and client_golang say it.
        let value = |l: LimitValue| match l {
            LimitValue::Value(v) => v as f64,
            LimitValue::Unlimited => u64::MAX as f64,
        };
        out.push(Family::single(
            MAX_FDS,
            value(limits.max_open_files.soft_limit),
        ));
        out.push(Family::single(
            VIRTUAL_MAX,
            value(limits.max_address_space.soft_limit),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_described_as_exporters_name_it() {
        let text = crate::metrics::encode(families(), crate::metrics::Format::Text);
        for name in [
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_virtual_memory_bytes ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name}missing:\n{text}"
            );
        }
        let started = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started}"
        );
    }
}
