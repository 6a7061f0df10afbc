//! Containers: USE per cgroup, from the cgroup filesystem (cAdvisor's
//! territory; node_exporter declines it). A slow call is often caused
//! inside one container — CFS quota throttling, reclaim under a memory
//! limit — which host metrics hide.
//!
//! Both layouts (Documentation/admin-guide/cgroup-v2.rst, and cgroup-v1/):
//! - v2 (unified): `cpu.stat` `usage_usec user_usec system_usec nr_periods
//!   nr_throttled throttled_usec`, `cpu.max` `20000 100000`, `memory.current`,
//!   `memory.max`, `memory.stat`, `memory.events`, `{cpu,memory,io}.pressure`,
//!   `io.stat` `8:0 rbytes=.. wbytes=.. rios=.. wios=..`, `pids.{current,max}`;
//! - v1 (one hierarchy per controller): `cpuacct.usage` (ns), `cpuacct.stat`
//!   (USER_HZ), `cpu.stat` `nr_periods nr_throttled throttled_time` (ns),
//!   `cpu.cfs_{quota,period}_us`, `memory.{usage,limit}_in_bytes`,
//!   `memory.stat`, `memory.failcnt`, `memory.oom_control`,
//!   `blkio.throttle.io_service{_bytes,d}`, `pids.{current,max}`; on a hybrid
//!   host the empty v2 hierarchy at `unified/` still has per-cgroup PSI.
//!
//! Which cgroups: those holding processes (which covers every container),
//! the root excepted, filtered by `--collector.cgroup.include`/`exclude` on
//! the path and capped at `--collector.cgroup.max-cgroups`. Kubelet paths
//! add `pod_uid`, `container_id` and `qos_class` labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::{Collect, CollectError, Config as CollectConfig, ParseError, parse_u64};
use crate::kubelet::{Kubelet, PodDirectory};
use crate::metrics::{Family, Label, label};
use crate::roots::{Dir, read};

/// v1 `memory.limit_in_bytes` without a limit is PAGE_COUNTER_MAX pages,
/// about 2^63; anything this large means "no limit".
const UNLIMITED: u64 = 1 << 62;
const MICROS: f64 = 1e6;
const NANOS: f64 = 1e9;

/// The cgroup collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    /// The cgroup filesystem mount; default `<sysfs>/fs/cgroup`.
    #[arg(
        id = "collector.cgroup.root",
        long = "collector.cgroup.root",
        value_name = "DIR",
        value_parser = crate::flag::dir,
        help = "cgroup filesystem mount [default: <path.sysfs>/fs/cgroup]"
    )]
    pub root: Option<PathBuf>,
    #[arg(
        id = "collector.cgroup.include",
        long = "collector.cgroup.include",
        value_name = "REGEX",
        default_value = ".*",
        value_parser = crate::flag::regex,
        help = "Cgroup paths (relative to the hierarchy root, e.g. /kubepods/...) to report"
    )]
    pub include: Regex,
    #[arg(
        id = "collector.cgroup.exclude",
        long = "collector.cgroup.exclude",
        value_name = "REGEX",
        value_parser = crate::flag::regex,
        help = "Cgroup paths to leave out"
    )]
    pub exclude: Option<Regex>,
    #[arg(
        id = "collector.cgroup.max-cgroups",
        long = "collector.cgroup.max-cgroups",
        value_name = "N",
        default_value_t = DEFAULT_MAX_CGROUPS,
        help = "Most cgroups reported (about 30 series each); the rest are counted in sojourn_cgroup_omitted"
    )]
    pub max_cgroups: usize,
    #[arg(
        id = "collector.cgroup.kubelet-url",
        long = "collector.cgroup.kubelet-url",
        value_name = "URL",
        value_parser = crate::kubelet::parse_url,
        help = "The kubelet's pods endpoint: https://NODE:10250/pods (authenticated: the ServiceAccount's token, RBAC get on nodes/proxy or nodes/pods) or the read-only http://NODE:10255/pods; adds namespace, pod and container labels to cgroup series (fetched every 30 s; unreachable: uid labels only)"
    )]
    pub kubelet_url: Option<hyper::Uri>,
    #[arg(
        id = "collector.cgroup.kubelet-ca-file",
        long = "collector.cgroup.kubelet-ca-file",
        value_name = "FILE",
        requires = "collector.cgroup.kubelet-url",
        help = "CA that signed the kubelet's serving certificate (https); default the ServiceAccount's ca.crt where mounted, else the system's CAs"
    )]
    pub kubelet_ca_file: Option<PathBuf>,
    #[arg(
        id = "collector.cgroup.kubelet-insecure-skip-verify",
        long = "collector.cgroup.kubelet-insecure-skip-verify",
        requires = "collector.cgroup.kubelet-url",
        conflicts_with = "collector.cgroup.kubelet-ca-file",
        help = "Accept the kubelet's certificate unchecked (a self-signed serving certificate, as most clusters have; the token is still sent)"
    )]
    pub kubelet_insecure_skip_verify: bool,
    #[arg(
        id = "collector.cgroup.kubelet-token-file",
        long = "collector.cgroup.kubelet-token-file",
        value_name = "FILE",
        requires = "collector.cgroup.kubelet-url",
        help = "Bearer token for the kubelet (https), read at every fetch; default the ServiceAccount's token where mounted"
    )]
    pub kubelet_token_file: Option<PathBuf>,
    /// The kubelet's pods endpoint made from the flags above (the CLI
    /// builds it, as it can refuse a CA file), for pod and container names.
    #[arg(skip)]
    pub kubelet: Option<crate::kubelet::Endpoint>,
}

pub const DEFAULT_MAX_CGROUPS: usize = 500;

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

/// How the cgroup filesystem is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V2(PathBuf),
    /// Per-controller hierarchies, and the v2 mount of a hybrid host.
    V1 {
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        blkio: Option<PathBuf>,
        unified: Option<PathBuf>,
    },
}

pub fn detect(root: &Path) -> Option<Layout> {
    if root.join("cgroup.controllers").exists() {
        return Some(Layout::V2(root.to_path_buf()));
    }
    let dir = |names: &[&str]| names.iter().map(|n| root.join(n)).find(|p| p.is_dir());
    let cpu = dir(&["cpu", "cpu,cpuacct"]);
    let memory = dir(&["memory"]);
    if cpu.is_none() && memory.is_none() {
        return None;
    }
    Some(Layout::V1 {
        cpu,
        cpuacct: dir(&["cpuacct", "cpu,cpuacct"]),
        memory,
        pids: dir(&["pids"]),
        blkio: dir(&["blkio"]),
        unified: dir(&["unified"]).filter(|p| p.join("cgroup.controllers").exists()),
    })
}

/// `key value` lines (cpu.stat, memory.stat, memory.events, oom_control).
pub fn parse_flat(text: &str) -> Result<Vec<(&str, u64)>, ParseError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_ascii_whitespace();
            let key = f.next().unwrap_or_default();
            let value = f
                .next()
                .ok_or_else(|| ParseError(format!("line {l:?} has no value")))?;
            Ok((key, parse_u64(key, value)?))
        })
        .collect()
}

fn get(flat: &[(&str, u64)], key: &str) -> Option<u64> {
    flat.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `cpu.max`: `max 100000` or `20000 100000` -> (quota µs, period µs).
pub fn parse_cpu_max(text: &str) -> Result<(Option<u64>, u64), ParseError> {
    let mut f = text.split_ascii_whitespace();
    let quota = f.next().ok_or_else(|| ParseError::new("empty cpu.max"))?;
    let period = parse_u64("period", f.next().unwrap_or(""))?;
    let quota = if quota == "max" {
        None
    } else {
        Some(parse_u64("quota", quota)?)
    };
    Ok((quota, period))
}

/// `memory.max`, `pids.max`: a number or `max`.
pub fn parse_limit(text: &str) -> Result<Option<u64>, ParseError> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let v = parse_u64("limit", t)?;
    Ok((v < UNLIMITED).then_some(v))
}

/// I/O per device: `(major:minor, read bytes, written bytes, reads, writes)`.
pub type DeviceIo = (String, u64, u64, u64, u64);

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
pub fn parse_io_stat(text: &str) -> Result<Vec<DeviceIo>, ParseError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_ascii_whitespace();
        let dev = f.next().unwrap_or_default().to_string();
        let (mut rb, mut wb, mut r, mut w) = (0, 0, 0, 0);
        for kv in f {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ParseError(format!("{kv:?} is not key=value")))?;
            let v = parse_u64(k, v)?;
            match k {
                "rbytes" => rb = v,
                "wbytes" => wb = v,
                "rios" => r = v,
                "wios" => w = v,
                _ => {}
            }
        }
        out.push((dev, rb, wb, r, w));
    }
    Ok(out)
}

/// v1 `blkio.throttle.io_service_bytes` and `io_serviced`, read together:
/// `8:0 Read 123` lines, `Total` lines skipped.
pub fn parse_blkio(bytes: &str, ops: &str) -> Result<Vec<DeviceIo>, ParseError> {
    let mut by_dev: Vec<DeviceIo> = Vec::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for line in text.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() != 3 {
                continue; // "Total N"
            }
            let v = parse_u64(f[1], f[2])?;
            let i = match by_dev.iter().position(|d| d.0 == f[0]) {
                Some(i) => i,
                None => {
                    by_dev.push((f[0].to_string(), 0, 0, 0, 0));
                    by_dev.len() - 1
                }
            };
            let d = &mut by_dev[i];
            match (f[1], is_bytes) {
                ("Read", true) => d.1 = v,
                ("Write", true) => d.2 = v,
                ("Read", false) => d.3 = v,
                ("Write", false) => d.4 = v,
                _ => {}
            }
        }
    }
    Ok(by_dev)
}

/// Everything read for one cgroup; `None` where its controller or file is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    pub quota_seconds: Option<f64>,
    pub period_seconds: Option<f64>,
    pub memory_usage_bytes: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    /// `(event, count)`: v2 low/high/max/oom/oom_kill; v1 max (failcnt), oom_kill, under_oom.
    pub memory_events: Vec<(&'static str, u64)>,
    pub pages_scanned: Option<u64>,
    pub pages_reclaimed: Option<u64>,
    pub pressure: Vec<(&'static str, crate::collectors::pressure::Pressure)>,
    pub io: Vec<DeviceIo>,
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
}

/// Reads a file that may be absent (a controller not enabled here).
fn parsed<T>(path: &Path, r: Result<T, ParseError>) -> Result<T, CollectError> {
    r.map_err(|e| CollectError::parse(path, e))
}

/// Reads `name` in `dir` and parses it; `None` when the file is absent.
fn read_parsed<'t, T>(
    dir: &Dir,
    name: &str,
    text: &'t mut Option<String>,
    parse: impl FnOnce(&'t str) -> Result<T, ParseError>,
) -> Result<Option<T>, CollectError> {
    *text = dir.read(name)?;
    match text.as_deref() {
        Some(t) => parse(t)
            .map(Some)
            .map_err(|e| CollectError::parse(&dir.path(name), e)),
        None => Ok(None),
    }
}

fn read_pressure(dir: &Dir, stats: &mut CgroupStats) -> Result<(), CollectError> {
    for (resource, file) in [
        ("cpu", "cpu.pressure"),
        ("memory", "memory.pressure"),
        ("io", "io.pressure"),
    ] {
        if let Some(t) = dir.read(file)? {
            stats.pressure.push((
                resource,
                parsed(
                    &dir.path(file),
                    crate::collectors::pressure::parse_pressure(&t),
                )?,
            ));
        }
    }
    Ok(())
}

/// The stats of one cgroup v2 directory; [`CollectError::Missing`] when the
/// cgroup is gone (removed between the walk and the read).
pub fn read_v2(path: &Path) -> Result<CgroupStats, CollectError> {
    let dir = Dir::open(path)?.ok_or_else(|| CollectError::Missing(path.display().to_string()))?;
    let mut s = CgroupStats::default();
    let mut text = None;
    if let Some(f) = read_parsed(&dir, "cpu.stat", &mut text, parse_flat)? {
        // Every kernel with cpu.stat prints usage_usec: without it the read was cut short.
        if get(&f, "usage_usec").is_none() {
            return Err(CollectError::parse(&dir.path("cpu.stat"), "no usage_usec"));
        }
        s.cpu_usage_seconds = get(&f, "usage_usec").map(|v| v as f64 / MICROS);
        s.cpu_user_seconds = get(&f, "user_usec").map(|v| v as f64 / MICROS);
        s.cpu_system_seconds = get(&f, "system_usec").map(|v| v as f64 / MICROS);
        s.periods = get(&f, "nr_periods");
        s.throttled_periods = get(&f, "nr_throttled");
        s.throttled_seconds = get(&f, "throttled_usec").map(|v| v as f64 / MICROS);
    }
    let mut text = None;
    if let Some((quota, period)) = read_parsed(&dir, "cpu.max", &mut text, parse_cpu_max)? {
        s.quota_seconds = quota.map(|q| q as f64 / MICROS);
        s.period_seconds = Some(period as f64 / MICROS);
    }
    let mut text = None;
    s.memory_usage_bytes = read_parsed(&dir, "memory.current", &mut text, |t| {
        parse_u64("memory.current", t)
    })?;
    let mut text = None;
    if let Some(limit) = read_parsed(&dir, "memory.max", &mut text, parse_limit)? {
        s.memory_limit_bytes = limit;
    }
    let mut text = None;
    if let Some(f) = read_parsed(&dir, "memory.stat", &mut text, parse_flat)? {
        if let (Some(usage), Some(inactive)) = (s.memory_usage_bytes, get(&f, "inactive_file")) {
            s.memory_working_set_bytes = Some(usage.saturating_sub(inactive));
        }
        s.pages_scanned = get(&f, "pgscan");
        s.pages_reclaimed = get(&f, "pgsteal");
    }
    let mut text = None;
    if let Some(f) = read_parsed(&dir, "memory.events", &mut text, parse_flat)? {
        for event in ["low", "high", "max", "oom", "oom_kill"] {
            if let Some(v) = get(&f, event) {
                s.memory_events.push((event, v));
            }
        }
    }
    read_pressure(&dir, &mut s)?;
    let mut text = None;
    if let Some(io) = read_parsed(&dir, "io.stat", &mut text, parse_io_stat)? {
        s.io = io;
    }
    read_pids(&dir, &mut s)?;
    Ok(s)
}

fn read_pids(dir: &Dir, s: &mut CgroupStats) -> Result<(), CollectError> {
    let mut text = None;
    s.pids = read_parsed(dir, "pids.current", &mut text, |t| {
        parse_u64("pids.current", t)
    })?;
    let mut text = None;
    if let Some(limit) = read_parsed(dir, "pids.max", &mut text, parse_limit)? {
        s.pids_limit = limit;
    }
    Ok(())
}

/// USER_HZ, the unit of cpuacct.stat.
fn user_hz() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

pub fn read_v1(layout: &Layout, rel: &str) -> Result<CgroupStats, CollectError> {
    let Layout::V1 {
        cpu,
        cpuacct,
        memory,
        pids,
        blkio,
        unified,
    } = layout
    else {
        return Err(CollectError::Io("not a v1 layout".into()));
    };
    // A cgroup made in one hierarchy only (by hand or by a tool) has no
    // directory in the others: one failed open says so for all its files.
    let at = |base: &Option<PathBuf>| -> Result<Option<Dir>, CollectError> {
        match base {
            Some(b) => Dir::open(&b.join(rel.trim_start_matches('/'))),
            None => Ok(None),
        }
    };
    let mut s = CgroupStats::default();
    if let Some(dir) = at(cpuacct)? {
        let mut text = None;
        s.cpu_usage_seconds = read_parsed(&dir, "cpuacct.usage", &mut text, |t| {
            parse_u64("cpuacct.usage", t)
        })?
        .map(|v| v as f64 / NANOS);
        let mut text = None;
        if let Some(f) = read_parsed(&dir, "cpuacct.stat", &mut text, parse_flat)? {
            s.cpu_user_seconds = get(&f, "user").map(|v| v as f64 / user_hz());
            s.cpu_system_seconds = get(&f, "system").map(|v| v as f64 / user_hz());
        }
    }
    if let Some(dir) = at(cpu)? {
        let mut text = None;
        if let Some(f) = read_parsed(&dir, "cpu.stat", &mut text, parse_flat)? {
            if get(&f, "nr_periods").is_none() {
                return Err(CollectError::parse(&dir.path("cpu.stat"), "no nr_periods"));
            }
            s.periods = get(&f, "nr_periods");
            s.throttled_periods = get(&f, "nr_throttled");
            s.throttled_seconds = get(&f, "throttled_time").map(|v| v as f64 / NANOS);
        }
        let quota = dir.read("cpu.cfs_quota_us")?;
        let period = dir.read("cpu.cfs_period_us")?;
        if let (Some(q), Some(p)) = (quota, period) {
            // -1 means no quota.
            s.quota_seconds = q.trim().parse::<u64>().ok().map(|q| q as f64 / MICROS);
            let path = dir.path("cpu.cfs_period_us");
            s.period_seconds = Some(parsed(&path, parse_u64("cfs_period_us", &p))? as f64 / MICROS);
        }
    }
    if let Some(dir) = at(memory)? {
        let mut text = None;
        s.memory_usage_bytes = read_parsed(&dir, "memory.usage_in_bytes", &mut text, |t| {
            parse_u64("usage_in_bytes", t)
        })?;
        let mut text = None;
        if let Some(limit) = read_parsed(&dir, "memory.limit_in_bytes", &mut text, parse_limit)? {
            s.memory_limit_bytes = limit;
        }
        let mut text = None;
        if let Some(f) = read_parsed(&dir, "memory.stat", &mut text, parse_flat)?
            && let (Some(usage), Some(inactive)) =
                (s.memory_usage_bytes, get(&f, "total_inactive_file"))
        {
            s.memory_working_set_bytes = Some(usage.saturating_sub(inactive));
        }
        let mut text = None;
        if let Some(v) = read_parsed(&dir, "memory.failcnt", &mut text, |t| {
            parse_u64("failcnt", t)
        })? {
            s.memory_events.push(("max", v));
        }
        let mut text = None;
        if let Some(f) = read_parsed(&dir, "memory.oom_control", &mut text, parse_flat)?
            && let Some(v) = get(&f, "oom_kill")
        {
            s.memory_events.push(("oom_kill", v));
        }
    }
    if let Some(dir) = at(pids)? {
        read_pids(&dir, &mut s)?;
    }
    if let Some(dir) = at(blkio)? {
        let bytes = dir.read("blkio.throttle.io_service_bytes")?;
        let ops = dir.read("blkio.throttle.io_serviced")?;
        if let (Some(b), Some(o)) = (bytes, ops) {
            s.io = parsed(&dir.path("blkio.throttle.io_serviced"), parse_blkio(&b, &o))?;
        }
    }
    if let Some(dir) = at(unified)? {
        read_pressure(&dir, &mut s)?;
    }
    Ok(s)
}

/// Whether cgroup.procs lists a process: its first bytes say, however
/// many thousands of pids follow.
fn holds_processes(dir: impl rustix::fd::AsFd) -> bool {
    use rustix::fs::{Mode, OFlags};
    let mut first = [0u8; 1];
    rustix::fs::openat(
        dir,
        "cgroup.procs",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| rustix::io::read(&fd, &mut first))
    .is_ok_and(|n| n > 0)
}

/// The names of a directory's subdirectories, sorted. Read with getdents
/// into a buffer on the stack: a cgroup directory lists a few dozen
/// control files for each subdirectory, none of which is worth an
/// allocation.
fn subdirectories(dir: &rustix::fd::OwnedFd) -> Vec<String> {
    use rustix::fs::{FileType, RawDir};
    use std::mem::MaybeUninit;
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    let mut entries = RawDir::new(dir, &mut buf);
    let mut names = Vec::new();
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            // A filesystem that does not say in the entry (cgroupfs does).
            FileType::Unknown => rustix::fs::statat(
                dir,
                entry.file_name(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            _ => false,
        };
        if is_dir {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    names.sort();
    names
}

/// Cgroups under `base` holding processes, as paths relative to it
/// (`/a/b`), the root excepted: the first `limit` in path order, and how
/// many more there were. Each directory is opened relative to its parent
/// and its cgroup.procs relative to it, so no path is walked from `/` again:
/// a node's hundreds of cgroups cost one short lookup each.
pub fn walk(base: &Path, cfg: &Config, limit: usize) -> (Vec<String>, usize) {
    use rustix::fs::{Mode, OFlags};
    use std::rc::Rc;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut out = Vec::new();
    let mut omitted = 0;
    let Ok(root) = rustix::fs::open(base, flags, Mode::empty()) else {
        return (out, omitted);
    };
    // Pending directories: the parent (open while a child of it waits),
    // the name in it, the relative path. Descriptors held at once are at
    // most the depth of the tree, not its breadth.
    type Parent = Option<(Rc<rustix::fd::OwnedFd>, String)>;
    let mut stack: Vec<(Parent, String)> = Vec::new();
    let mut first = Some(root);
    stack.push((None, String::new()));
    while let Some((parent, rel)) = stack.pop() {
        let fd = match (&parent, first.take()) {
            (None, Some(root)) => root,
            (Some((dir, name)), _) => {
                let Ok(fd) = rustix::fs::openat(&**dir, name.as_str(), flags, Mode::empty()) else {
                    // Removed since its parent was listed.
                    continue;
                };
                fd
            }
            (None, None) => continue,
        };
        drop(parent);
        let children = subdirectories(&fd);
        if !rel.is_empty() {
            let holds = holds_processes(&fd);
            let selected = cfg.include.is_match(&rel)
                && !cfg.exclude.as_ref().is_some_and(|x| x.is_match(&rel));
            if holds && selected {
                if out.len() < limit {
                    out.push(rel.clone());
                } else {
                    omitted += 1;
                }
            }
        }
        if children.is_empty() {
            continue;
        }
        let dir = Rc::new(fd);
        // Depth first, in name order.
        for name in children.into_iter().rev() {
            let child = format!("{rel}/{name}");
            stack.push((Some((dir.clone(), name)), child));
        }
    }
    (out, omitted)
}

crate::descs! {
    CPU_USAGE = counter("cgroup_cpu_usage", "Utilization: CPU time used by the cgroup's tasks (cpu.stat usage_usec; v1 cpuacct.usage).") .seconds();
    CPU_USER = counter("cgroup_cpu_user", "Utilization: CPU time in user mode (cpu.stat user_usec; v1 cpuacct.stat).") .seconds();
    CPU_SYSTEM = counter("cgroup_cpu_system", "Utilization: CPU time in kernel mode (cpu.stat system_usec; v1 cpuacct.stat).") .seconds();
    PERIODS = counter("cgroup_cpu_periods", "CFS enforcement periods that elapsed while the cgroup had runnable tasks (cpu.stat nr_periods).");
    THROTTLED_PERIODS = counter("cgroup_cpu_throttled_periods", "Saturation: CFS periods in which the cgroup used its whole quota and was throttled (cpu.stat nr_throttled).");
    THROTTLED = counter("cgroup_cpu_throttled", "Saturation: time the cgroup's tasks were throttled by the CFS quota (cpu.stat throttled_usec; v1 throttled_time).") .seconds();
    QUOTA = gauge("cgroup_cpu_quota", "Utilization (denominator): CPU time allowed per period; quota/period is the limit in cores (cpu.max; v1 cpu.cfs_quota_us).") .seconds();
    PERIOD = gauge("cgroup_cpu_period", "CFS period (cpu.max; v1 cpu.cfs_period_us).") .seconds();
    MEM_USAGE = gauge("cgroup_memory_usage", "Utilization: memory charged to the cgroup, page cache included (memory.current; v1 memory.usage_in_bytes).") .bytes();
    MEM_WORKING_SET = gauge("cgroup_memory_working_set", "Utilization: usage less inactive file cache, what the OOM killer and kubelet eviction look at (memory.current - memory.stat inactive_file).") .bytes();
    MEM_LIMIT = gauge("cgroup_memory_limit", "Utilization (denominator): memory limit; absent when unlimited (memory.max; v1 memory.limit_in_bytes).") .bytes();
    MEM_EVENTS = counter("cgroup_memory_events", "Errors: memory events, event=high (throttled over memory.high), max (hit the limit; v1 failcnt), oom, oom_kill (memory.events; v1 memory.oom_control).");
    PGSCAN = counter("cgroup_memory_pages_scanned", "Saturation: pages scanned by reclaim within the cgroup (memory.stat pgscan).");
    PGSTEAL = counter("cgroup_memory_pages_reclaimed", "Saturation: pages reclaimed within the cgroup (memory.stat pgsteal).");
    PRESSURE = counter("cgroup_pressure_stalled", "Saturation: seconds some (kind=some) or all (kind=full) of the cgroup's tasks stalled on the resource (<resource>.pressure total).") .seconds();
    IO_BYTES = counter("cgroup_io", "Utilization: bytes read and written by the cgroup per device (io.stat; v1 blkio.throttle.io_service_bytes).") .bytes();
    IO_OPS = counter("cgroup_io_operations", "Utilization: read and write operations by the cgroup per device (io.stat; v1 blkio.throttle.io_serviced).");
    PIDS = gauge("cgroup_pids", "Utilization: tasks in the cgroup (pids.current).");
    PIDS_LIMIT = gauge("cgroup_pids_limit", "Utilization (denominator): most tasks allowed; absent when unlimited (pids.max).");
    OMITTED = gauge("cgroup_omitted", "Cgroups left out because --collector.cgroup.max-cgroups was reached (cgroupfs).");
    KUBELET_UP = gauge("cgroup_kubelet_up", "Whether the latest fetch of the kubelet's pod list (--collector.cgroup.kubelet-url) succeeded; on failure the names of the last good list are kept.");
    KUBELET_PODS = gauge("cgroup_kubelet_pods", "Pods in the kubelet's pod list used for namespace, pod and container labels.");
}

/// The cgroup's labels; with a pod directory, `namespace`, `pod` and
/// `container` too (empty when the kubelet does not list the ids).
fn identity_labels(rel: &str, names: Option<&PodDirectory>) -> Vec<Label> {
    let k = crate::kube::parse(rel);
    let mut labels = identity_id_labels(rel, k.as_ref());
    if let Some(dir) = names {
        let pod = k.as_ref().and_then(|k| dir.pods.get(&k.pod_uid));
        let container = k
            .as_ref()
            .and_then(|k| k.container_id.as_ref())
            .and_then(|id| dir.containers.get(id));
        labels.push(label(
            "namespace",
            pod.map(|p| p.namespace.clone()).unwrap_or_default(),
        ));
        labels.push(label("pod", pod.map(|p| p.pod.clone()).unwrap_or_default()));
        labels.push(label("container", container.cloned().unwrap_or_default()));
    }
    labels
}

fn identity_id_labels(rel: &str, k: Option<&crate::kube::KubeIdentity>) -> Vec<Label> {
    vec![
        label("cgroup", rel.to_string()),
        label("pod_uid", k.map(|k| k.pod_uid.clone()).unwrap_or_default()),
        label(
            "container_id",
            k.and_then(|k| k.container_id.clone()).unwrap_or_default(),
        ),
        label("qos_class", k.map(|k| k.qos.as_str()).unwrap_or_default()),
    ]
}

/// What the kubelet said, when `--collector.cgroup.kubelet-url` is set.
pub struct KubeletNames<'a> {
    pub directory: &'a PodDirectory,
    /// None until the first fetch has finished.
    pub up: Option<bool>,
}

/// Maps parsed stats onto families; `device_name` turns `8:0` into `sda`.
pub fn emit(
    cgroups: &[(String, CgroupStats)],
    omitted: usize,
    device_name: impl Fn(&str) -> String,
    kubelet: Option<KubeletNames<'_>>,
) -> Vec<Family> {
    let mut f: Vec<Family> = [
        CPU_USAGE,
        CPU_USER,
        CPU_SYSTEM,
        PERIODS,
        THROTTLED_PERIODS,
        THROTTLED,
        QUOTA,
        PERIOD,
        MEM_USAGE,
        MEM_WORKING_SET,
        MEM_LIMIT,
        MEM_EVENTS,
        PGSCAN,
        PGSTEAL,
        PRESSURE,
        IO_BYTES,
        IO_OPS,
        PIDS,
        PIDS_LIMIT,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    for (rel, s) in cgroups {
        let id = identity_labels(rel, kubelet.as_ref().map(|k| k.directory));
        let with = |extra: &[Label]| -> Vec<Label> { id.iter().chain(extra).cloned().collect() };
        let floats = [
            (0, s.cpu_usage_seconds),
            (1, s.cpu_user_seconds),
            (2, s.cpu_system_seconds),
            (5, s.throttled_seconds),
            (6, s.quota_seconds),
            (7, s.period_seconds),
        ];
        for (i, v) in floats {
            if let Some(v) = v {
                f[i].push(id.clone(), v);
            }
        }
        let ints = [
            (3, s.periods),
            (4, s.throttled_periods),
            (8, s.memory_usage_bytes),
            (9, s.memory_working_set_bytes),
            (10, s.memory_limit_bytes),
            (12, s.pages_scanned),
            (13, s.pages_reclaimed),
            (17, s.pids),
            (18, s.pids_limit),
        ];
        for (i, v) in ints {
            if let Some(v) = v {
                f[i].push(id.clone(), v);
            }
        }
        for (event, v) in &s.memory_events {
            f[11].push(with(&[label("event", *event)]), *v);
        }
        for (resource, p) in &s.pressure {
            for (kind, us) in [("some", p.some_us), ("full", p.full_us)] {
                if let Some(us) = us {
                    f[14].push(
                        with(&[label("resource", *resource), label("kind", kind)]),
                        us as f64 / MICROS,
                    );
                }
            }
        }
        for (dev, rb, wb, r, w) in &s.io {
            let name = device_name(dev);
            f[15].push(
                with(&[label("device", name.clone()), label("direction", "read")]),
                *rb,
            );
            f[15].push(
                with(&[label("device", name.clone()), label("direction", "write")]),
                *wb,
            );
            f[16].push(
                with(&[label("device", name.clone()), label("direction", "read")]),
                *r,
            );
            f[16].push(
                with(&[label("device", name), label("direction", "write")]),
                *w,
            );
        }
    }
    f.push(Family::single(OMITTED, omitted as u64));
    if let Some(k) = kubelet {
        if let Some(up) = k.up {
            f.push(Family::single(KUBELET_UP, u64::from(up)));
        }
        f.push(Family::single(KUBELET_PODS, k.directory.pods.len() as u64));
    }
    f
}

pub struct CgroupCollector {
    kubelet: Option<std::sync::Arc<Kubelet>>,
    /// `8:0` → `sda`, from /proc/diskstats: read again only when a cgroup
    /// names a device not in it, not at every scrape (the disk collector
    /// reads that file too).
    device_names: std::sync::Mutex<HashMap<String, String>>,
    /// The layout found at a root, and when: mounting a hierarchy is rare,
    /// and detecting it anew costs a dozen lookups at every scrape.
    layout: std::sync::Mutex<Option<(PathBuf, Layout, std::time::Instant)>>,
}

/// How long a detected layout is trusted before it is looked at again.
const LAYOUT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

impl CgroupCollector {
    /// The device names the stats need, refreshed if one is unknown.
    fn device_names(
        &self,
        cfg: &CollectConfig,
        stats: &[(String, CgroupStats)],
    ) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A panic while refreshing left a map that is still a map.
        let mut names = self
            .device_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unknown = stats
            .iter()
            .flat_map(|(_, s)| &s.io)
            .any(|(dev, ..)| !names.contains_key(dev));
        if unknown {
            *names = read(&cfg.roots.proc("diskstats"))
                .ok()
                .and_then(|t| super::disk::parse_diskstats(&t).ok())
                .map(|d| {
                    d.into_iter()
                        .map(|d| (format!("{}:{}", d.major, d.minor), d.name))
                        .collect()
                })
                .unwrap_or_default();
        }
        names
    }
}

impl CgroupCollector {
    /// The layout at `root`, detected at most every [`LAYOUT_RECHECK`].
    fn layout(&self, root: &Path) -> Option<Layout> {
        let mut cached = self
            .layout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if let Some((at, layout, when)) = cached.as_ref()
            && at == root
            && now.duration_since(*when) < LAYOUT_RECHECK
        {
            return Some(layout.clone());
        }
        let layout = detect(root);
        *cached = layout.clone().map(|l| (root.to_path_buf(), l, now));
        layout
    }

    pub fn new(cfg: &Config) -> Self {
        let kubelet = cfg.kubelet.as_ref().and_then(|endpoint| {
            crate::kubelet::shared(endpoint)
                .map_err(|e| tracing::error!("kubelet pod names disabled: {e}"))
                .ok()
        });
        CgroupCollector {
            kubelet,
            device_names: Default::default(),
            layout: Default::default(),
        }
    }
}

impl Collect for CgroupCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let root = cfg
            .cgroup
            .root
            .clone()
            .unwrap_or_else(|| cfg.roots.sys("fs/cgroup"));
        let layout = self.layout(&root).ok_or_else(|| {
            CollectError::Unsupported(format!(
                "no cgroup filesystem at {} (--collector.cgroup.root)",
                root.display()
            ))
        })?;
        let limit = cfg.cgroup.max_cgroups;
        let (paths, omitted) = match &layout {
            Layout::V2(r) => walk(r, &cfg.cgroup, limit),
            // A cgroup may exist in one v1 hierarchy and not the other (a
            // memory-only cgroup made by hand or by a tool): both are walked.
            Layout::V1 { cpu, memory, .. } => {
                let mut all = std::collections::BTreeSet::new();
                let mut omitted = 0;
                for base in [cpu, memory].into_iter().flatten() {
                    let (p, o) = walk(base, &cfg.cgroup, limit);
                    all.extend(p);
                    omitted = omitted.max(o);
                }
                let mut paths: Vec<String> = all.into_iter().collect();
                if paths.len() > limit {
                    omitted += paths.len() - limit;
                    paths.truncate(limit);
                }
                (paths, omitted)
            }
        };
        let mut stats = Vec::with_capacity(paths.len());
        for rel in paths {
            let s = match &layout {
                Layout::V2(r) => read_v2(&r.join(rel.trim_start_matches('/'))),
                Layout::V1 { .. } => read_v1(&layout, &rel),
            };
            match s {
                Ok(s) => stats.push((rel, s)),
                // A container that exited between the walk and the read.
                Err(CollectError::Missing(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let names = self.device_names(cfg, &stats);
        let kubelet = self.kubelet.as_deref().map(Kubelet::directory);
        Ok(emit(
            &stats,
            omitted,
            |dev| names.get(dev).cloned().unwrap_or_else(|| dev.to_string()),
            kubelet
                .as_ref()
                .map(|(directory, up)| KubeletNames { directory, up: *up }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_limits() {
        let f = parse_flat("nr_periods 10\nnr_throttled 4\nthrottled_usec 2500000\n").unwrap();
        assert_eq!(get(&f, "nr_throttled"), Some(4));
        assert!(parse_flat("nr_periods x\n").is_err());
        assert_eq!(parse_cpu_max("max 100000\n").unwrap(), (None, 100000));
        assert_eq!(
            parse_cpu_max("20000 100000\n").unwrap(),
            (Some(20000), 100000)
        );
        assert!(parse_cpu_max("20000\n").is_err());
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(
            parse_limit("9223372036854771712\n").unwrap(),
            None,
            "v1 'unlimited'"
        );
        assert_eq!(parse_limit("536870912\n").unwrap(), Some(536870912));
    }

    #[test]
    fn io_stat_and_blkio() {
        let io =
            parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n").unwrap();
        assert_eq!(io, vec![("8:0".to_string(), 4096, 8192, 1, 2)]);
        assert!(parse_io_stat("8:0 rbytes\n").is_err());
        let b = parse_blkio(
            "8:0 Read 100\n8:0 Write 200\n8:0 Sync 0\n8:0 Async 300\n8:0 Total 300\nTotal 300\n",
            "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
        )
        .unwrap();
        assert_eq!(b, vec![("8:0".to_string(), 100, 200, 1, 2)]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_flat(&s);
            let _ = parse_cpu_max(&s);
            let _ = parse_limit(&s);
            let _ = parse_io_stat(&s);
            let _ = parse_blkio(&s, &s);
        }
    }
}
