//! CPU utilization and saturation from `/proc/stat`; thermal throttling
//! (errors) from sysfs.
//!
//! ```text
//! cpu0 6117 41 2547 258446 229 0 95 0 0 0
//! procs_running 2
//! ```
//! Columns are cumulative USER_HZ ticks: user nice system idle iowait irq
//! softirq steal guest guest_nice (Documentation/filesystems/proc.rst,
//! "1.7 Miscellaneous kernel statistics in /proc/stat"). Kernels before 2.6.11
//! lack steal, before 2.6.24 guest, before 2.6.33 guest_nice.
//!
//! procfs-core's `KernelStats` numbers CPUs by position, which mislabels every
//! CPU after an offline one, and drops `intr`; hence this parser.

use std::collections::BTreeMap;

use super::{Collect, CollectError, Config, ParseError, parse_u64};
use crate::metrics::{Desc, Family, label};
use crate::roots::read_attr;

/// CPU modes in /proc/stat column order (after the `cpuN` name).
pub const MODES: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// Ticks per mode for one CPU; `None` for columns this kernel does not print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTicks {
    pub cpu: u32,
    pub ticks: [Option<u64>; 10],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub cpus: Vec<CpuTicks>,
    pub interrupts: Option<u64>,
    pub context_switches: Option<u64>,
    pub boot_time: Option<u64>,
    pub forks: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

/// Parses /proc/stat. Unknown lines are ignored; a malformed known line is an error.
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, ParseError> {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(num) = key.strip_prefix("cpu") {
            if num.is_empty() {
                continue; // the all-CPU sum: PromQL sums per-CPU series itself
            }
            let cpu = num
                .parse::<u32>()
                .map_err(|_| ParseError(format!("bad CPU name {key:?}")))?;
            let mut ticks = [None; 10];
            let mut n = 0;
            for (slot, field) in ticks.iter_mut().zip(fields.by_ref()) {
                *slot = Some(parse_u64(key, field)?);
                n += 1;
            }
            if n < 4 {
                return Err(ParseError(format!(
                    "{key}: {n} columns, at least 4 expected"
                )));
            }
            stat.cpus.push(CpuTicks { cpu, ticks });
            continue;
        }
        let first = || {
            fields
                .clone()
                .next()
                .ok_or_else(|| ParseError(format!("{key}: no value")))
                .and_then(|v| parse_u64(key, v))
        };
        match key {
            "intr" => stat.interrupts = Some(first()?),
            "ctxt" => stat.context_switches = Some(first()?),
            "btime" => stat.boot_time = Some(first()?),
            "processes" => stat.forks = Some(first()?),
            "procs_running" => stat.procs_running = Some(first()?),
            "procs_blocked" => stat.procs_blocked = Some(first()?),
            _ => {}
        }
    }
    if stat.cpus.is_empty() {
        return Err(ParseError::new("no cpuN lines"));
    }
    Ok(stat)
}

/// USER_HZ: the unit of /proc/stat. Read from the C library; 100 everywhere
/// in practice, but architectures may differ.
fn user_hz() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

const CPU_SECONDS: Desc = Desc::counter(
    "cpu",
    "Utilization: seconds each CPU spent in each mode (/proc/stat; user and nice include guest time).",
)
.seconds();
const CPU_GUEST_SECONDS: Desc = Desc::counter(
    "cpu_guest",
    "Utilization: seconds each CPU spent running virtual-machine guests, also counted in user/nice (/proc/stat).",
)
.seconds();
const PROCS_RUNNING: Desc = Desc::gauge(
    "procs_running",
    "Saturation: tasks runnable right now, running or waiting on a CPU run queue, the reader included (/proc/stat procs_running).",
);
const PROCS_BLOCKED: Desc = Desc::gauge(
    "procs_blocked",
    "Saturation: tasks blocked waiting for I/O to complete (/proc/stat procs_blocked).",
);
const CONTEXT_SWITCHES: Desc = Desc::counter(
    "context_switches",
    "Context switches across all CPUs (/proc/stat ctxt).",
);
const FORKS: Desc = Desc::counter(
    "forks",
    "Processes and threads created (/proc/stat processes).",
);
const INTERRUPTS: Desc = Desc::counter(
    "interrupts",
    "Interrupts serviced across all CPUs (/proc/stat intr).",
);
const BOOT_TIME: Desc = Desc::gauge(
    "boot_time",
    "Time the system booted, in seconds since the Unix epoch (/proc/stat btime).",
)
.seconds();
const CORE_THROTTLES: Desc = Desc::counter(
    "cpu_core_throttles",
    "Errors: times a CPU core was throttled for exceeding its thermal limit (sysfs thermal_throttle/core_throttle_count).",
);
const PACKAGE_THROTTLES: Desc = Desc::counter(
    "cpu_package_throttles",
    "Errors: times a CPU package was throttled for exceeding its thermal limit (sysfs thermal_throttle/package_throttle_count).",
);

pub struct CpuCollector;

impl Collect for CpuCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("stat");
        let text = crate::roots::read_kept(&path)?;
        let stat = parse_proc_stat(&text).map_err(|e| CollectError::parse(&path, e))?;
        let mut families = emit(&stat, user_hz());
        families.extend(thermal_throttles(cfg, &stat));
        Ok(families)
    }
}

pub fn emit(stat: &ProcStat, user_hz: f64) -> Vec<Family> {
    let mut seconds = Family::new(CPU_SECONDS);
    let mut guest = Family::new(CPU_GUEST_SECONDS);
    for cpu in &stat.cpus {
        let id = label("cpu", cpu.cpu.to_string());
        for (mode, ticks) in MODES.iter().zip(cpu.ticks) {
            let Some(ticks) = ticks else { continue };
            let secs = ticks as f64 / user_hz;
            match *mode {
                "guest" => guest.push([id.clone(), label("mode", "user")], secs),
                "guest_nice" => guest.push([id.clone(), label("mode", "nice")], secs),
                m => seconds.push([id.clone(), label("mode", m)], secs),
            }
        }
    }
    let mut out = vec![seconds, guest];
    let singles = [
        (PROCS_RUNNING, stat.procs_running),
        (PROCS_BLOCKED, stat.procs_blocked),
        (CONTEXT_SWITCHES, stat.context_switches),
        (FORKS, stat.forks),
        (INTERRUPTS, stat.interrupts),
        (BOOT_TIME, stat.boot_time),
    ];
    for (desc, value) in singles {
        if let Some(v) = value {
            out.push(Family::single(desc, v));
        }
    }
    out
}

/// Thermal throttle counters, one per core and one per package. Each CPU
/// directory repeats its package's count, so counts are keyed by topology ids.
fn thermal_throttles(cfg: &Config, stat: &ProcStat) -> Vec<Family> {
    let mut cores: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut packages: BTreeMap<String, u64> = BTreeMap::new();
    for cpu in &stat.cpus {
        let dir = cfg.roots.sys(&format!("devices/system/cpu/cpu{}", cpu.cpu));
        let Some(core_count) = read_attr(&dir.join("thermal_throttle/core_throttle_count"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let package = read_attr(&dir.join("topology/physical_package_id")).unwrap_or_default();
        let core = read_attr(&dir.join("topology/core_id")).unwrap_or_else(|| cpu.cpu.to_string());
        cores.insert((package.clone(), core), core_count);
        if let Some(p) = read_attr(&dir.join("thermal_throttle/package_throttle_count"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            packages.insert(package, p);
        }
    }
    let mut out = Vec::new();
    if !cores.is_empty() {
        let mut f = Family::new(CORE_THROTTLES);
        for ((package, core), n) in cores {
            f.push([label("package", package), label("core", core)], n);
        }
        out.push(f);
    }
    if !packages.is_empty() {
        let mut f = Family::new(PACKAGE_THROTTLES);
        for (package, n) in packages {
            f.push([label("package", package)], n);
        }
        out.push(f);
    }
    out
}

/// A kernel CPU list (`/sys/devices/system/cpu/online`, `cpuset.cpus`):
/// comma-separated numbers and inclusive ranges, `0-3,8,10-11`; empty is
/// no CPU. Each CPU once, ascending. At most `max` CPUs (ranges come from
/// the file, not from the machine): an error past it.
pub fn parse_cpu_list(text: &str, max: usize) -> Result<Vec<u32>, ParseError> {
    let mut cpus = std::collections::BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || ParseError::new(format!("cpu list: bad entry {part:?}"));
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u32>().map_err(|_| bad())?,
                b.parse::<u32>().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse::<u32>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if first > last || (last - first) as usize >= max.saturating_sub(cpus.len()) {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    Ok(cpus.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODERN: &str = "cpu  301854 612 111922 8979004 3552 2 3944 0 0 0
cpu0 44490 19 21045 1087069 220 1 3410 0 0 0
cpu1 47869 23 16474 1110787 591 0 46 0 0 0
intr 8885917 17 0 0 0 0 0 0 0 1 79281 0 0 0 0 0 0 0 231237 0 0 0 0 250586 103 0 0 0 0
ctxt 38014093
btime 1418183276
processes 26442
procs_running 2
procs_blocked 1
softirq 5057579 250191 1481983 1647 211099 186066 0 1783454 622196 12499 510443
";

    #[test]
    fn parses_modern_kernel_stat() {
        let s = parse_proc_stat(MODERN).unwrap();
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[1].cpu, 1);
        assert_eq!(s.cpus[1].ticks[0], Some(47869));
        assert_eq!(s.cpus[1].ticks[9], Some(0));
        assert_eq!(s.context_switches, Some(38014093));
        assert_eq!(s.interrupts, Some(8885917));
        assert_eq!(s.forks, Some(26442));
        assert_eq!(s.procs_running, Some(2));
        assert_eq!(s.procs_blocked, Some(1));
        assert_eq!(s.boot_time, Some(1418183276));
    }

    #[test]
    fn old_kernel_without_steal_or_guest_omits_those_modes() {
        let old = "cpu  10 0 5 100 1 0 0\ncpu0 10 0 5 100 1 0 0\nctxt 5\n";
        let s = parse_proc_stat(old).unwrap();
        assert_eq!(s.cpus[0].ticks[6], Some(0));
        assert_eq!(s.cpus[0].ticks[7], None);
        let fams = emit(&s, 100.0);
        let modes: Vec<_> = fams[0]
            .samples
            .iter()
            .map(|s| s.labels[1].1.clone())
            .collect();
        assert_eq!(
            modes,
            ["user", "nice", "system", "idle", "iowait", "irq", "softirq"]
        );
        assert!(
            fams[1].samples.is_empty(),
            "no guest columns, no guest series"
        );
    }

    #[test]
    fn offline_cpu_keeps_numbering() {
        let s = parse_proc_stat("cpu0 1 2 3 4\ncpu2 5 6 7 8\n").unwrap();
        assert_eq!(s.cpus[1].cpu, 2);
    }

    #[test]
    fn ticks_become_seconds() {
        let s = parse_proc_stat(MODERN).unwrap();
        let fams = emit(&s, 100.0);
        let user_cpu1 = fams[0]
            .samples
            .iter()
            .find(|x| x.labels[0].1 == "1" && x.labels[1].1 == "user")
            .unwrap();
        assert_eq!(user_cpu1.value, crate::metrics::Value::Float(478.69));
    }

    #[test]
    fn rejects_garbage_in_known_lines() {
        assert!(parse_proc_stat("cpu0 1 2 x 4\n").is_err());
        assert!(parse_proc_stat("cpu0 1 2\n").is_err());
        assert!(parse_proc_stat("cpu0 1 2 3 4\nctxt -5\n").is_err());
        assert!(parse_proc_stat("ctxt 5\n").is_err(), "no CPUs");
        assert!(parse_proc_stat("cpuX 1 2 3 4\n").is_err());
    }

    #[test]
    fn real_fixture_from_another_machine() {
        let text = include_str!("../../tests/fixtures/proc/stat");
        let s = parse_proc_stat(text).unwrap();
        assert!(s.cpus.len() >= 2);
        assert!(s.procs_running.is_some());
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n", 64).unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("0\n", 64).unwrap(), [0]);
        assert_eq!(parse_cpu_list("\n", 64).unwrap(), [] as [u32; 0]);
        assert_eq!(parse_cpu_list("2,0-2", 64).unwrap(), [0, 1, 2]);
        assert!(parse_cpu_list("3-1", 64).is_err());
        assert!(parse_cpu_list("0-x", 64).is_err());
        assert!(parse_cpu_list("0-4294967295", 64).is_err(), "bounded");
        assert!(parse_cpu_list("0-63", 64).is_ok());
        assert!(parse_cpu_list("0-64", 64).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_proc_stat(&s);
            let _ = parse_cpu_list(&s, 4096);
        }
        #[test]
        fn cpu_lists_never_panic_and_stay_bounded(s in "([0-9]{1,4}(-[0-9]{1,4})?,){0,6}") {
            if let Ok(cpus) = parse_cpu_list(&s, 512) {
                proptest::prop_assert!(cpus.len() <= 512);
            }
        }
        #[test]
        fn never_panics_on_cpu_like_lines(s in "(cpu[0-9]{0,2}( [0-9]{1,20}){0,12}\n|ctxt [0-9a-z-]{0,22}\n){0,8}") {
            let _ = parse_proc_stat(&s);
        }
    }
}
