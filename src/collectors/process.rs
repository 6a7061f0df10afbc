//! Selected processes, grouped: CPU, memory (RSS, PSS, and VSZ with the
//! warning it deserves), threads, file descriptors against their limit,
//! context switches (nonvoluntary = preempted: the CPU saturation a process
//! feels), run-queue delay, major faults, I/O, and whether the binary is Go.
//!
//! Sources, per process (Documentation/filesystems/proc.rst): `stat`,
//! `status`, `io`, `schedstat` (`run_ns wait_ns slices`, all zero on kernels
//! without sched_info accounting, detected), `smaps_rollup` (Pss),
//! `limits`, `fd/`, and `exe` (Go build info). Parsed by procfs-core where it
//! has a parser.
//!
//! Selection: `--collector.process.include` is matched against the command
//! name, then the command line; the group is the regex's first capture
//! group, else the command name. The cost grows with the selected
//! processes: others are remembered by PID as ignored and not read again,
//! and /proc is listed for new processes once per
//! `--collector.process.rescan-interval` (30 s), the known ones re-read in
//! between. A PID reused by a new process is told apart by its start time
//! when it was selected; an ignored PID is looked at again only after it
//! disappeared from a listing.
//! Counters stay monotonic as processes come and go: an exited process's
//! last values are kept in its group's total.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use procfs_core::FromRead;
use procfs_core::process::{Io, LimitValue, Limits, Schedstat, Stat, Status};
use regex::Regex;

use super::{Collect, CollectError, Config as CollectConfig};
use crate::metrics::{Family, label};

pub const DEFAULT_MAX_GROUPS: usize = 100;

pub const DEFAULT_RESCAN_INTERVAL: &str = "30s";

/// The process collector's flags (`--collector.process.rescan-interval`
/// is the netns collector's walk of /proc too).
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    #[arg(
        id = "collector.process.include",
        long = "collector.process.include",
        value_name = "REGEX",
        value_parser = crate::flag::regex,
        help = "Processes to report, matched on the command name then the command line; the first capture group names the group, else the command name (enables the process collector)"
    )]
    pub include: Option<Regex>,
    #[arg(
        id = "collector.process.max-groups",
        long = "collector.process.max-groups",
        value_name = "N",
        default_value_t = DEFAULT_MAX_GROUPS,
        help = "Most process groups reported; the rest are counted in sojourn_process_groups_omitted"
    )]
    pub max_groups: usize,
    /// How often /proc is listed for new processes and network namespaces,
    /// and the eBPF programs' listeners and disks checked for being gone;
    /// zero: every scrape.
    #[arg(
        id = "collector.process.rescan-interval",
        long = "collector.process.rescan-interval",
        value_name = "DURATION",
        default_value = DEFAULT_RESCAN_INTERVAL,
        value_parser = crate::flag::duration_or_zero,
        help = "How often sojourn looks again for what comes and goes: /proc listed for new processes and network namespaces, closed listeners, removed disks and offline CPUs let go (0s: every scrape); known processes are read at every scrape"
    )]
    pub rescan_interval: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

/// Monotonic per-process counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub major_faults: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub voluntary_switches: u64,
    pub nonvoluntary_switches: u64,
    pub wait_seconds: f64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.user_seconds += o.user_seconds;
        self.system_seconds += o.system_seconds;
        self.major_faults += o.major_faults;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        self.voluntary_switches += o.voluntary_switches;
        self.nonvoluntary_switches += o.nonvoluntary_switches;
        self.wait_seconds += o.wait_seconds;
    }
}

/// One process's reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub counters: Counters,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
    pub vsz_bytes: u64,
    pub threads: u64,
    pub open_fds: Option<u64>,
    pub fd_limit: Option<u64>,
    /// CPU time consumed according to schedstat; 0 with CPU time used means
    /// the kernel does not account sched_info.
    pub sched_run_seconds: Option<f64>,
    pub go: bool,
}

/// `Pss:` of smaps_rollup, in bytes.
pub fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// True when the ELF image has a `.go.buildinfo` section: a Go binary.
pub fn is_go_elf(image: &[u8]) -> bool {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |o: usize| {
        image
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
    };
    // 64-bit little-endian ELF only (the machines sojourn runs on).
    if image.len() < 64 || &image[..4] != b"\x7fELF" || image[4] != 2 || image[5] != 1 {
        return false;
    }
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e))
    else {
        return false;
    };
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let Some(strtab_off) = section(shstrndx).and_then(|s| u64_at(s + 0x18)) else {
        return false;
    };
    (0..shnum).any(|i| {
        let Some(name_off) = section(i).and_then(&u32_at) else {
            return false;
        };
        let start = strtab_off.saturating_add(name_off);
        image.get(start..start + 14) == Some(b".go.buildinfo\0".as_slice())
    })
}

/// The executable image: section headers sit at the end of the file, so it
/// is read whole, once per binary (cached by device and inode).
fn read_exe(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

enum Known {
    Ignored,
    Member {
        group: String,
        starttime: u64,
        last: Counters,
    },
}

#[derive(Default)]
struct State {
    known: HashMap<u32, Known>,
    /// Counters of exited processes, per group: bounded by the groups.
    exited: HashMap<String, Counters>,
    /// Go or not, per executable (device, inode).
    go: HashMap<(u64, u64), bool>,
    /// When /proc was last listed for new processes.
    last_scan: Option<std::time::Instant>,
}

pub struct ProcessCollector {
    state: Mutex<State>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            state: Mutex::new(State::default()),
        }
    }
}

fn ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// Reads one selected process; files it lost meanwhile (it exited) read as zero.
fn read_process(
    dir: &Path,
    stat: &Stat,
    go_cache: &mut HashMap<(u64, u64), bool>,
    go_seen: &mut HashSet<(u64, u64)>,
) -> Reading {
    let text = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let status = text("status").and_then(|t| Status::from_read(t.as_bytes()).ok());
    let io = text("io").and_then(|t| Io::from_read(t.as_bytes()).ok());
    let sched = text("schedstat").and_then(|t| Schedstat::from_read(t.as_bytes()).ok());
    let limits = text("limits").and_then(|t| Limits::from_read(t.as_bytes()).ok());
    let page = rustix::param::page_size() as u64;
    let go = std::fs::metadata(dir.join("exe")).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        go_seen.insert((m.dev(), m.ino()));
        *go_cache
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| read_exe(&dir.join("exe")).is_some_and(|b| is_go_elf(&b)))
    });
    Reading {
        counters: Counters {
            user_seconds: stat.utime as f64 / ticks(),
            system_seconds: stat.stime as f64 / ticks(),
            major_faults: stat.majflt,
            read_bytes: io.as_ref().map_or(0, |i| i.read_bytes),
            write_bytes: io.as_ref().map_or(0, |i| i.write_bytes),
            voluntary_switches: status
                .as_ref()
                .and_then(|s| s.voluntary_ctxt_switches)
                .unwrap_or(0),
            nonvoluntary_switches: status
                .as_ref()
                .and_then(|s| s.nonvoluntary_ctxt_switches)
                .unwrap_or(0),
            wait_seconds: sched.as_ref().map_or(0.0, |s| s.run_delay as f64 / 1e9),
        },
        rss_bytes: stat.rss.saturating_mul(page),
        pss_bytes: text("smaps_rollup").and_then(|t| parse_pss(&t)),
        vsz_bytes: stat.vsize,
        threads: stat.num_threads.max(0) as u64,
        open_fds: std::fs::read_dir(dir.join("fd"))
            .ok()
            .map(|d| d.count() as u64),
        fd_limit: limits.and_then(|l| match l.max_open_files.soft_limit {
            LimitValue::Value(v) => Some(v),
            LimitValue::Unlimited => None,
        }),
        sched_run_seconds: sched.map(|s| s.sum_exec_runtime as f64 / 1e9),
        go: go.unwrap_or(false),
    }
}

/// Totals of one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub processes: u64,
    pub counters: Counters,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub vsz_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    /// Largest open fds ÷ RLIMIT_NOFILE among the group's processes.
    pub fd_limit_ratio: f64,
    pub go_processes: u64,
    /// False when schedstat reads all zeros though CPU time was used.
    pub sched_info: bool,
}

crate::descs! {
    COUNT = gauge("process_instances", "Processes in the group (/proc/<pid>, selected by --collector.process.include).");
    CPU = counter("process_cpu", "Utilization: CPU time of the group's processes by mode, exited ones included (/proc/<pid>/stat utime, stime).") .seconds();
    RSS = gauge("process_resident_memory", "Utilization: resident memory, shared pages counted in every process (/proc/<pid>/stat rss).") .bytes();
    PSS = gauge("process_proportional_memory", "Utilization: proportional set size, shared pages divided among their users: the fairest memory use (/proc/<pid>/smaps_rollup Pss).") .bytes();
    VSZ = gauge("process_virtual_memory", "Reserved address space (VSZ), not memory use: runtimes such as Go reserve large ranges up front, so gigabytes here are normal; use resident or proportional memory (/proc/<pid>/stat vsize).") .bytes();
    THREADS = gauge("process_threads", "Threads of the group's processes (/proc/<pid>/stat num_threads).");
    FDS = gauge("process_open_fds", "Utilization: open file descriptors (/proc/<pid>/fd).");
    FD_RATIO = gauge("process_open_fds_limit", "Utilization: largest open fds to RLIMIT_NOFILE ratio among the group's processes; at 1 opens fail with EMFILE (/proc/<pid>/limits).") .ratio();
    SWITCHES = counter("process_context_switches", "Context switches; kind=nonvoluntary (preempted while runnable) is the CPU saturation the process feels (/proc/<pid>/status).");
    WAIT = counter("process_run_queue_wait", "Saturation: time the group's threads waited on a run queue (/proc/<pid>/schedstat run_delay); absent where the kernel reports zeros.") .seconds();
    MAJFLT = counter("process_major_page_faults", "Saturation: page faults that waited for disk I/O (/proc/<pid>/stat majflt).");
    IO = counter("process_io", "Utilization: bytes read from and written to storage, direction=read|write (/proc/<pid>/io).") .bytes();
    GO = gauge("process_go_processes", "Processes of the group whose binary is Go (.go.buildinfo section in /proc/<pid>/exe), where VSZ misleads most.");
    OMITTED = gauge("process_groups_omitted", "Groups not reported because --collector.process.max-groups was reached (/proc).");
}

pub fn emit(groups: &[(String, Group)], omitted: usize) -> Vec<Family> {
    let mut f: Vec<Family> = [
        COUNT, CPU, RSS, PSS, VSZ, THREADS, FDS, FD_RATIO, SWITCHES, WAIT, MAJFLT, IO, GO,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    for (name, g) in groups {
        let l = || [label("group", name.clone())];
        let with = |k: &'static str, v: &'static str| [label("group", name.clone()), label(k, v)];
        f[0].push(l(), g.processes);
        f[1].push(with("mode", "user"), g.counters.user_seconds);
        f[1].push(with("mode", "system"), g.counters.system_seconds);
        f[2].push(l(), g.rss_bytes);
        f[3].push(l(), g.pss_bytes);
        f[4].push(l(), g.vsz_bytes);
        f[5].push(l(), g.threads);
        f[6].push(l(), g.open_fds);
        f[7].push(l(), g.fd_limit_ratio);
        f[8].push(with("kind", "voluntary"), g.counters.voluntary_switches);
        f[8].push(
            with("kind", "nonvoluntary"),
            g.counters.nonvoluntary_switches,
        );
        if g.sched_info {
            f[9].push(l(), g.counters.wait_seconds);
        }
        f[10].push(l(), g.counters.major_faults);
        f[11].push(with("direction", "read"), g.counters.read_bytes);
        f[11].push(with("direction", "write"), g.counters.write_bytes);
        f[12].push(l(), g.go_processes);
    }
    f.push(Family::single(OMITTED, omitted as u64));
    f
}

/// The group a process belongs to, if selected.
pub fn select(include: &Regex, comm: &str, cmdline: impl FnOnce() -> String) -> Option<String> {
    let by = |text: &str| {
        include.captures(text).map(|c| {
            c.get(1)
                .map_or_else(|| comm.to_string(), |g| g.as_str().to_string())
        })
    };
    by(comm).or_else(|| by(&cmdline()))
}

impl Collect for ProcessCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let include = cfg.process.include.as_ref().ok_or_else(|| {
            CollectError::Unsupported("no --collector.process.include: no process selected".into())
        })?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| CollectError::Panicked("process state poisoned".into()))?;
        let State {
            known,
            exited,
            go,
            last_scan,
        } = &mut *state;
        let proc_dir = &cfg.roots.procfs;
        // Listing /proc costs about 0.25 µs per process on the host (the
        // kernel walks every task): done once per rescan interval, and in
        // between only the known selected processes are read again.
        let rescan = last_scan.is_none_or(|t| t.elapsed() >= cfg.process.rescan_interval);
        let candidates: Vec<u32> = if rescan {
            *last_scan = Some(std::time::Instant::now());
            std::fs::read_dir(proc_dir)
                .map_err(|e| CollectError::Io(format!("{}: {e}", proc_dir.display())))?
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        } else {
            known
                .iter()
                .filter(|(_, k)| matches!(k, Known::Member { .. }))
                .map(|(pid, _)| *pid)
                .collect()
        };
        let mut live: HashSet<u32> = HashSet::new();
        let mut groups: HashMap<String, Group> = HashMap::new();
        let mut omitted: HashSet<String> = HashSet::new();
        let mut go_seen: HashSet<(u64, u64)> = HashSet::new();
        for pid in candidates {
            if matches!(known.get(&pid), Some(Known::Ignored)) {
                live.insert(pid);
                continue;
            }
            let dir = proc_dir.join(pid.to_string());
            // stat first: it tells a reused PID (another start time) from the one we know.
            let Some(stat) = std::fs::read(dir.join("stat"))
                .ok()
                .and_then(|b| Stat::from_read(&b[..]).ok())
            else {
                continue; // exited meanwhile
            };
            live.insert(pid);
            let group = match known.get(&pid) {
                Some(Known::Member {
                    group, starttime, ..
                }) if *starttime == stat.starttime => group.clone(),
                _ => {
                    let cmdline = || {
                        std::fs::read(dir.join("cmdline"))
                            .map(|b| {
                                String::from_utf8_lossy(&b)
                                    .replace('\0', " ")
                                    .trim_end()
                                    .to_string()
                            })
                            .unwrap_or_default()
                    };
                    match select(include, &stat.comm, cmdline) {
                        Some(g) => g,
                        None => {
                            known.insert(pid, Known::Ignored);
                            continue;
                        }
                    }
                }
            };
            if !groups.contains_key(&group) && groups.len() >= cfg.process.max_groups {
                omitted.insert(group);
                continue;
            }
            let r = read_process(&dir, &stat, go, &mut go_seen);
            let g = groups.entry(group.clone()).or_default();
            g.processes += 1;
            g.counters.add(&r.counters);
            g.rss_bytes += r.rss_bytes;
            g.pss_bytes += r.pss_bytes.unwrap_or(0);
            g.vsz_bytes += r.vsz_bytes;
            g.threads += r.threads;
            g.open_fds += r.open_fds.unwrap_or(0);
            if let (Some(fds), Some(limit)) = (r.open_fds, r.fd_limit.filter(|l| *l > 0)) {
                g.fd_limit_ratio = g.fd_limit_ratio.max(fds as f64 / limit as f64);
            }
            g.go_processes += u64::from(r.go);
            // sched_info accounting is on if any process shows a run time.
            if r.sched_run_seconds.is_some_and(|s| s > 0.0) {
                g.sched_info = true;
            }
            known.insert(
                pid,
                Known::Member {
                    group,
                    starttime: stat.starttime,
                    last: r.counters,
                },
            );
        }
        // Processes gone since the last scrape: their last counters stay in
        // their group. Between rescans the ignored were not looked at.
        known.retain(|pid, k| {
            if live.contains(pid) || (!rescan && matches!(k, Known::Ignored)) {
                return true;
            }
            if let Known::Member { group, last, .. } = k {
                exited.entry(group.clone()).or_default().add(last);
            }
            false
        });
        for (group, dead) in exited.iter() {
            if let Some(g) = groups.get_mut(group) {
                g.counters.add(dead);
            }
        }
        // Groups with no process left keep no series; their exited totals are dropped.
        exited.retain(|g, _| groups.contains_key(g));
        // Only the binaries of live selected processes stay cached.
        go.retain(|k, _| go_seen.contains(k));
        let mut out: Vec<(String, Group)> = groups.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(emit(&out, omitted.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_comm_cmdline_and_capture() {
        let re = Regex::new("^(postgres|nginx)").unwrap();
        assert_eq!(select(&re, "nginx", String::new), Some("nginx".into()));
        assert_eq!(select(&re, "bash", String::new), None);
        let by_cmd = Regex::new("java .*-jar (\\w+)\\.jar").unwrap();
        assert_eq!(
            select(&by_cmd, "java", || "java -Xmx1g -jar orders.jar".into()),
            Some("orders".into())
        );
        let no_capture = Regex::new("sleep").unwrap();
        assert_eq!(
            select(&no_capture, "sleep", String::new),
            Some("sleep".into())
        );
    }

    #[test]
    fn pss_from_smaps_rollup() {
        let text = "56386d39e000-7ffe68bbc000 ---p 00000000 00:00 0   [rollup]\nRss:   1728 kB\nPss:    374 kB\nPss_Dirty: 116 kB\n";
        assert_eq!(parse_pss(text), Some(374 * 1024));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
    }

    #[test]
    fn go_detection_on_real_binaries() {
        // This test binary is Rust: no .go.buildinfo.
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(!is_go_elf(&me));
        assert!(!is_go_elf(b"not an elf"));
        // promtool, when installed, is a Go binary.
        if let Ok(go) = std::fs::read("/usr/bin/promtool") {
            assert!(is_go_elf(&go));
        }
    }

    proptest::proptest! {
        #[test]
        fn elf_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut b = bytes.clone();
            if b.len() >= 6 {
                b[..6].copy_from_slice(b"\x7fELF\x02\x01");
            }
            let _ = is_go_elf(&b);
            let _ = parse_pss(&String::from_utf8_lossy(&bytes));
        }
    }
}
