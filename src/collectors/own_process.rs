//! The exporter's own process, as every Prometheus exporter serves it
//! (client_golang's process collector names): CPU, memory, file
//! descriptors and start time of sojourn itself, from `/proc/self`. Always
//! the real `/proc`, whatever `--path.procfs` says: these are the running
//! binary's, not the host's.

use std::path::Path;
use std::sync::OnceLock;

use procfs_core::FromRead;
use procfs_core::process::Stat;
use rustix::process::{Resource, getrlimit};

use crate::metrics::Family;

crate::descs! {
    CPU = counter("process_cpu", "Total user and system CPU time spent by sojourn (/proc/self/stat).") .seconds() .without_namespace();
    OPEN_FDS = gauge("process_open_fds", "File descriptors sojourn holds open (/proc/self/fd).") .without_namespace();
    MAX_FDS = gauge("process_max_fds", "Most file descriptors sojourn may open, its soft RLIMIT_NOFILE (getrlimit).") .without_namespace();
    VIRTUAL = gauge("process_virtual_memory", "Virtual memory size of sojourn (/proc/self/stat vsize).") .bytes() .without_namespace();
    VIRTUAL_MAX = gauge("process_virtual_memory_max", "Most virtual memory sojourn may map, its RLIMIT_AS; 2^64 - 1 when unlimited, as client_golang reports it (getrlimit).") .bytes() .without_namespace();
    RESIDENT = gauge("process_resident_memory", "Resident memory size of sojourn (/proc/self/stat rss).") .bytes() .without_namespace();
    START = gauge("process_start_time", "Start time of sojourn since the Unix epoch (/proc/self/stat starttime and /proc/stat btime).") .seconds() .without_namespace();
}

/// The host's boot time, read once: it does not change while sojourn runs.
fn boot_time() -> Option<u64> {
    static BTIME: OnceLock<Option<u64>> = OnceLock::new();
    *BTIME.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        super::cpu::parse_proc_stat(&text).ok()?.boot_time
    })
}

/// Descriptors sojourn holds open. Since Linux 6.2 the size stat(2)
/// reports for /proc/self/fd is that count, with no directory to list;
/// older kernels say 0 there, and the entries are counted.
fn open_fds() -> Option<u64> {
    let dir = Path::new("/proc/self/fd");
    match rustix::fs::stat(dir) {
        Ok(st) if st.st_size > 0 => Some(st.st_size as u64),
        _ => std::fs::read_dir(dir).ok().map(|d| d.count() as u64),
    }
}

/// The families, each present when its file could be read.
pub fn families() -> Vec<Family> {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as f64;
    let mut out = Vec::with_capacity(7);
    // Kept open between scrapes: it is sojourn's own, so the descriptor
    // pins nothing that could go away.
    if let Some(stat) = crate::roots::read_kept(Path::new("/proc/self/stat"))
        .ok()
        .and_then(|t| Stat::from_read(t.as_bytes()).ok())
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
    if let Some(fds) = open_fds() {
        out.push(Family::single(OPEN_FDS, fds));
    }
    // The limits from the kernel's own call, not /proc/self/limits: that
    // file formats sixteen rows to give two numbers. Unlimited is
    // RLIM_INFINITY, as the kernel and client_golang say it.
    let soft = |r: Resource| getrlimit(r).current.map_or(u64::MAX as f64, |v| v as f64);
    out.push(Family::single(MAX_FDS, soft(Resource::Nofile)));
    out.push(Family::single(VIRTUAL_MAX, soft(Resource::As)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_descriptors_are_counted_as_a_listing_counts_them() {
        // Other tests open files meanwhile: counts agree within a margin.
        let listed = || std::fs::read_dir("/proc/self/fd").unwrap().count() as i64;
        let before = open_fds().unwrap() as i64;
        assert!((before - listed()).abs() <= 8, "{before} vs {}", listed());
        let held: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let after = open_fds().unwrap() as i64;
        assert!((after - before - 64).abs() <= 8, "{before} -> {after}");
        drop(held);
    }

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
