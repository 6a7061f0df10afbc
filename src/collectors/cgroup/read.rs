//! Reading one cgroup: which layout the host mounts, and each
//! controller's files parsed into `CgroupStats` (v2, and v1 with one
//! hierarchy per controller).

use super::*;

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
    crate::collectors::short_lines(text)
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

pub(super) fn get(flat: &[(&str, u64)], key: &str) -> Option<u64> {
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
pub(super) fn parsed<T>(path: &Path, r: Result<T, ParseError>) -> Result<T, CollectError> {
    r.map_err(|e| CollectError::parse(path, e))
}

/// Reads `name` in `dir` and parses it; `None` when the file is absent.
pub(super) fn read_parsed<'t, T>(
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

pub(super) fn read_pressure(dir: &Dir, stats: &mut CgroupStats) -> Result<(), CollectError> {
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

pub(super) fn read_pids(dir: &Dir, s: &mut CgroupStats) -> Result<(), CollectError> {
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
pub(super) fn user_hz() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// The v1 hierarchies a cgroup has no directory in, one bit each in the
/// order [`read_v1`] opens them (cpuacct, cpu, memory, pids, blkio,
/// unified): a cgroup holding processes has all the directories it will
/// have (runtimes make them before moving a process in), so an absence
/// found once is kept rather than looked up again at every scrape, until
/// the caller forgets it.
pub type Absent = u8;

/// `rel`'s stats, skipping the hierarchies `absent` names and adding those
/// found missing to it.
pub fn read_v1(
    layout: &Layout,
    rel: &str,
    absent: &mut Absent,
) -> Result<CgroupStats, CollectError> {
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
    let mut at = |bit: u8, base: &Option<PathBuf>| -> Result<Option<Dir>, CollectError> {
        let Some(b) = base else { return Ok(None) };
        if *absent & (1 << bit) != 0 {
            return Ok(None);
        }
        let dir = Dir::open(&b.join(rel.trim_start_matches('/')))?;
        if dir.is_none() {
            *absent |= 1 << bit;
        }
        Ok(dir)
    };
    let mut s = CgroupStats::default();
    if let Some(dir) = at(0, cpuacct)? {
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
    if let Some(dir) = at(1, cpu)? {
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
    if let Some(dir) = at(2, memory)? {
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
    if let Some(dir) = at(3, pids)? {
        read_pids(&dir, &mut s)?;
    }
    if let Some(dir) = at(4, blkio)? {
        let bytes = dir.read("blkio.throttle.io_service_bytes")?;
        let ops = dir.read("blkio.throttle.io_serviced")?;
        if let (Some(b), Some(o)) = (bytes, ops) {
            s.io = parsed(&dir.path("blkio.throttle.io_serviced"), parse_blkio(&b, &o))?;
        }
    }
    if let Some(dir) = at(5, unified)? {
        read_pressure(&dir, &mut s)?;
    }
    Ok(s)
}
