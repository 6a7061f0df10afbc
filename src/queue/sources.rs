//! Turns successive readings of kernel counters into queue samples. Pure:
//! each source keeps its previous reading and is handed the new file text
//! and the time, so tests feed it synthetic sequences.

// foldhash: the listeners are hashed every tick (SipHash was 3 % of the
// sampler thread), its per-map random seeds keep them hard to collide.
use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;

use super::codel::Nanos;
use super::name::QueueName;
use super::{Measure, QueueId, Sample, Scope};
use crate::collectors::ParseError;
use crate::collectors::schedstat::{CpuSched, parse_schedstat};
use crate::inet_diag::{Socket, TCP_LISTEN};

const NANOS_PER_SECOND: f64 = 1e9;
const MILLIS_PER_SECOND: f64 = 1e3;

/// Seconds waited per timeslice. No timeslice ran: nothing waited, an idle queue.
fn delay_per_slice(wait_ns: u64, slices: u64) -> f64 {
    if slices == 0 {
        0.0
    } else {
        wait_ns as f64 / slices as f64 / NANOS_PER_SECOND
    }
}

/// Per-CPU run-queue delay from two cumulative counters per CPU, time
/// waited and waits (timeslices for schedstat, timed waits for eBPF): per
/// CPU and host-wide, Δwait ÷ Δwaits over the last sampling period. The
/// CPU sources differ only in where the counters come from.
#[derive(Debug)]
struct CpuDelays {
    source: &'static str,
    /// (cpu, wait_ns, waits) of the previous reading.
    prev: Option<Vec<(u32, u64, u64)>>,
    host: Arc<str>,
    /// `cpu<N>` names by CPU number, built once.
    names: Vec<(u32, Arc<str>)>,
}

impl CpuDelays {
    fn new(source: &'static str) -> Self {
        CpuDelays {
            source,
            prev: None,
            host: Arc::from(QueueName::Cpu.to_string()),
            names: Vec::new(),
        }
    }

    fn name(&mut self, cpu: u32) -> Arc<str> {
        if let Some((_, n)) = self.names.iter().find(|(c, _)| *c == cpu) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(QueueName::CpuOne(cpu).to_string());
        self.names.push((cpu, n.clone()));
        n
    }

    /// Samples of the reading `cur`; a CPU no longer in it has its queue
    /// name pushed to `gone`.
    fn sample(&mut self, cur: Vec<(u32, u64, u64)>, gone: &mut Vec<Arc<str>>) -> Vec<Sample> {
        // More names than CPUs listed: one went offline (a swap of one CPU
        // for another is seen a tick later, once the new one has its name).
        // The count spares the 10 ms tick a search per CPU.
        if self.names.len() > cur.len() {
            let (kept, offline) = std::mem::take(&mut self.names)
                .into_iter()
                .partition(|(n, _)| cur.iter().any(|c| c.0 == *n));
            self.names = kept;
            gone.extend(offline.into_iter().map(|(_, name)| name));
        }
        let Some(prev) = self.prev.take() else {
            self.prev = Some(cur);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(cur.len() + 1);
        let (mut wait, mut waits) = (0u64, 0u64);
        for &(cpu, w, n) in &cur {
            // A CPU that never ran a task (a possible CPU never brought
            // online) has no queue of its own.
            if n == 0 {
                continue;
            }
            let Some(&(_, pw, pn)) = prev.iter().find(|p| p.0 == cpu) else {
                continue;
            };
            let (dw, dn) = (w.saturating_sub(pw), n.saturating_sub(pn));
            wait += dw;
            waits += dn;
            out.push(Sample {
                queue: self.name(cpu),
                scope: None,
                measure: Measure::Delay,
                source: self.source,
                value: delay_per_slice(dw, dn),
            });
        }
        self.prev = Some(cur);
        out.push(Sample {
            queue: self.host.clone(),
            scope: None,
            measure: Measure::Delay,
            source: self.source,
            value: delay_per_slice(wait, waits),
        });
        out
    }
}

/// CPU run queue from /proc/schedstat: per CPU and host-wide, the delay per
/// timeslice over the last sampling period, Δwait_ns ÷ Δtimeslices.
#[derive(Debug)]
pub struct SchedstatSource(CpuDelays);

impl Default for SchedstatSource {
    fn default() -> Self {
        SchedstatSource(CpuDelays::new("schedstat"))
    }
}

impl SchedstatSource {
    /// Samples the CPUs of a /proc/schedstat text; a CPU that went offline
    /// since the last reading has its queue name pushed to `gone`.
    pub fn sample(
        &mut self,
        text: &str,
        gone: &mut Vec<Arc<str>>,
    ) -> Result<Vec<Sample>, ParseError> {
        let cur = parse_schedstat(text)?
            .cpus
            .iter()
            .map(|c: &CpuSched| (c.cpu, c.waiting_ns, c.timeslices))
            .collect();
        Ok(self.0.sample(cur, gone))
    }
}

/// CPU run queue timed by eBPF (`crate::ebpf`): per CPU and host-wide, the
/// mean wait of the waits that ended during the last sampling period,
/// Δwait ÷ Δwaits — schedstat's delay per timeslice, but with every wait
/// timed and wherever eBPF is permitted, schedstat or not. A period in
/// which no wait ended has no queue: 0.
#[derive(Debug)]
pub struct EbpfRunqueueSource(CpuDelays);

impl Default for EbpfRunqueueSource {
    fn default() -> Self {
        EbpfRunqueueSource(CpuDelays::new("ebpf"))
    }
}

impl EbpfRunqueueSource {
    /// Samples from every possible CPU's histogram, indexed by CPU number
    /// (a CPU that never ran a task has none, and no queue of its own).
    pub fn sample(&mut self, per_cpu: &[crate::ebpf::RawHistogram]) -> Vec<Sample> {
        let cur = (0u32..)
            .zip(per_cpu)
            .map(|(cpu, h)| (cpu, h.sum_ns, h.slots.iter().sum::<u64>()))
            .collect();
        // Possible CPUs are a fixed set: none goes.
        self.0.sample(cur, &mut Vec::new())
    }
}

/// CPU run queue without schedstat: runnable tasks beyond the CPU count, from
/// the running count of /proc/loadavg (which includes the sampler itself).
#[derive(Debug)]
pub struct LoadavgSource {
    name: Arc<str>,
    cpus: u32,
}

impl LoadavgSource {
    pub fn new(cpus: u32) -> Self {
        LoadavgSource {
            name: Arc::from(QueueName::Cpu.to_string()),
            cpus,
        }
    }

    /// Reads only field 4, `running/total`; the collector validates the rest.
    pub fn sample(&self, text: &str) -> Result<Sample, ParseError> {
        let running = text
            .split_ascii_whitespace()
            .nth(3)
            .and_then(|f| f.split_once('/'))
            .and_then(|(r, _)| r.parse::<u32>().ok())
            .ok_or_else(|| ParseError(format!("no running/total field in {text:?}")))?;
        let others = running.saturating_sub(1);
        Ok(Sample {
            queue: self.name.clone(),
            scope: None,
            measure: Measure::Length,
            source: "loadavg",
            value: f64::from(others.saturating_sub(self.cpus)),
        })
    }
}

/// The `total=` of the `some` line of a pressure file: the sampler's cheap
/// path (the collector's parser validates every field at scrape time).
pub fn some_total_us(text: &str) -> Result<Option<u64>, ParseError> {
    let Some(line) = text.lines().find(|l| l.starts_with("some ")) else {
        return Ok(None);
    };
    let total = line
        .split_ascii_whitespace()
        .find_map(|f| f.strip_prefix("total="))
        .ok_or_else(|| ParseError(format!("no total in {line:?}")))?;
    total
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ParseError(format!("total {total:?} is not an integer")))
}

/// When a pressure file was read, and its `some` total in µs.
type Reading = (Nanos, u64);

/// PSI `some` share per resource: Δ(total µs) ÷ Δ(wall µs) between readings.
#[derive(Debug, Default)]
pub struct PsiSource {
    /// Per resource: the queue name, and the previous reading.
    prev: HashMap<&'static str, (Arc<str>, Option<Reading>)>,
}

impl PsiSource {
    pub fn sample(
        &mut self,
        resource: &'static str,
        now: Nanos,
        text: &str,
    ) -> Result<Option<Sample>, ParseError> {
        let Some(some_us) = some_total_us(text)? else {
            return Ok(None);
        };
        let (name, prev) = self.prev.entry(resource).or_insert_with(|| {
            (
                Arc::from(QueueName::Psi(resource.to_string()).to_string()),
                None,
            )
        });
        let Some((then, prev_us)) = prev.replace((now, some_us)) else {
            return Ok(None);
        };
        let wall_us = now.saturating_sub(then) as f64 / 1e3;
        if wall_us <= 0.0 {
            return Ok(None);
        }
        let share = (some_us.saturating_sub(prev_us) as f64 / wall_us).clamp(0.0, 1.0);
        Ok(Some(Sample {
            queue: name.clone(),
            scope: None,
            measure: Measure::Share,
            source: "psi",
            value: share,
        }))
    }
}

#[derive(Debug, Clone, Copy)]
struct DiskReading {
    ios: u64,
    /// Milliseconds spent by reads and writes (iostat's await numerator).
    io_ms: u64,
    /// Milliseconds the device was busy (iostat's service-time numerator).
    busy_ms: u64,
}

/// Block-device queues from /proc/diskstats: the time an I/O waited before
/// service, await − service time over the period (`disk:<dev>`), and the
/// in-flight count (`disk_inflight:<dev>`). Where the block program
/// (`crate::ebpf::Block`) runs, the time waited is instead the mean of
/// the times the kernel measured, insert to issue, for the requests issued
/// during the period (source `ebpf`).
#[derive(Debug)]
pub struct DiskSource {
    exclude: Regex,
    devices: Vec<Device>,
    /// The block program's running totals by dev_t, set before each
    /// sampling; None where it does not run.
    timed: Option<HashMap<u32, Timed>>,
}

/// Requests issued on one disk since the block program was attached, and
/// the sum of the times they waited, ns.
pub type Timed = (u64, u64);

/// The block program's totals for the disks `devs`, each looked up by
/// its key (`lookup`: one map lookup a disk, where walking the map would
/// take three system calls a disk): a disk it has none for issued nothing
/// since it was attached, zeros — unless some request went untimed for
/// want of a disk slot (`missed`, asked only then), when such a disk is
/// left out and keeps the diskstats estimate.
pub fn timed_totals<E>(
    devs: impl Iterator<Item = u32>,
    mut lookup: impl FnMut(u32) -> Result<Option<Timed>, E>,
    missed: impl FnOnce() -> Result<u64, E>,
) -> Result<Vec<(u32, Timed)>, E> {
    let mut totals = Vec::new();
    let mut unseen = Vec::new();
    for dev in devs {
        match lookup(dev)? {
            Some(t) => totals.push((dev, t)),
            None => unseen.push(dev),
        }
    }
    if !unseen.is_empty() && missed()? == 0 {
        totals.extend(unseen.into_iter().map(|dev| (dev, (0, 0))));
    }
    Ok(totals)
}

#[derive(Debug)]
struct Device {
    name: String,
    /// `major << 20 | minor`, the block program's key.
    dev: u32,
    delay_queue: Arc<str>,
    inflight_queue: Arc<str>,
    /// None until the first reading.
    reading: Option<DiskReading>,
    /// The block program's totals at the last reading.
    timed: Option<Timed>,
}

/// The fields the queues need from the counters of one device, as
/// /sys/class/block/DEV/stat lists them (and /proc/diskstats after major,
/// minor and name): ios, milliseconds reading and writing, in flight,
/// milliseconds busy. Read without procfs-core, which would allocate per
/// device on every tick.
fn disk_counters(fields: &[&str]) -> Result<(DiskReading, u64), ParseError> {
    if fields.len() < 10 {
        return Err(ParseError(format!(
            "{} counters, at least 11 expected",
            fields.len()
        )));
    }
    let v = |i: usize| crate::collectors::parse_u64("diskstats field", fields[i]);
    Ok((
        DiskReading {
            ios: v(0)?.saturating_add(v(4)?),
            io_ms: v(3)?.saturating_add(v(7)?),
            busy_ms: v(9)?,
        },
        v(8)?,
    ))
}

/// Splits up to 13 whitespace-separated fields without allocating.
fn fields(text: &str) -> ([&str; 13], usize) {
    let mut f = [""; 13];
    let mut n = 0;
    for (slot, field) in f.iter_mut().zip(text.split_ascii_whitespace()) {
        *slot = field;
        n += 1;
    }
    (f, n)
}

fn diskstats_line(line: &str) -> Result<(&str, u32, DiskReading, u64), ParseError> {
    let (f, n) = fields(line);
    if n < 3 {
        return Err(ParseError(format!("line {line:?}: no device name")));
    }
    let number = |i: usize| crate::collectors::parse_u64("device number", f[i]);
    let dev = u32::try_from(number(0)? << 20 | number(1)?)
        .map_err(|_| ParseError(format!("line {line:?}: device number out of range")))?;
    let (reading, in_flight) =
        disk_counters(&f[3..n]).map_err(|e| ParseError(format!("line {line:?}: {e}")))?;
    Ok((f[2], dev, reading, in_flight))
}

impl DiskSource {
    pub fn new(exclude: Regex) -> Self {
        DiskSource {
            exclude,
            devices: Vec::new(),
            timed: None,
        }
    }

    /// The block program's running totals by dev_t, for the samplings
    /// until the next call (see [`timed_totals`]); a disk without any
    /// keeps the diskstats estimate.
    pub fn set_timed(&mut self, timed: impl IntoIterator<Item = (u32, Timed)>) {
        let map = self.timed.get_or_insert_with(HashMap::new);
        map.clear();
        map.extend(timed);
    }

    /// The dev_t of each device sampled, the block program's keys.
    pub fn devs(&self) -> impl Iterator<Item = u32> + '_ {
        self.devices.iter().map(|d| d.dev)
    }

    /// The devices sampled, in the order [`DiskSource::sample_device`] indexes them.
    pub fn device_names(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.name.as_str())
    }

    /// Samples every device of a /proc/diskstats text, learning devices
    /// that appeared and forgetting those gone (their queue names pushed to
    /// `gone`).
    pub fn sample(
        &mut self,
        text: &str,
        gone: &mut Vec<Arc<str>>,
    ) -> Result<Vec<Sample>, ParseError> {
        let mut out = Vec::new();
        let mut seen = Vec::with_capacity(self.devices.len());
        let mut lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lines += 1;
            let (name, dev, cur, in_flight) = diskstats_line(line)?;
            if self.exclude.is_match(name) {
                continue;
            }
            let mut device = match self.devices.iter().position(|d| d.name == name) {
                Some(i) => self.devices.swap_remove(i),
                None => Device {
                    name: name.to_string(),
                    dev,
                    delay_queue: Arc::from(QueueName::Disk(name.to_string()).to_string()),
                    inflight_queue: Arc::from(
                        QueueName::DiskInflight(name.to_string()).to_string(),
                    ),
                    reading: None,
                    timed: None,
                },
            };
            let timed = self.timed_of(dev);
            device.observe(cur, in_flight, timed, &mut out);
            seen.push(device);
        }
        if lines == 0 {
            return Err(ParseError::new("no devices listed"));
        }
        // Devices gone from the file are forgotten with their state.
        for d in std::mem::replace(&mut self.devices, seen) {
            gone.push(d.delay_queue);
            gone.push(d.inflight_queue);
        }
        Ok(out)
    }

    /// Samples device `index` from its /sys/class/block/DEV/stat text.
    pub fn sample_device(
        &mut self,
        index: usize,
        stat: &str,
        out: &mut Vec<Sample>,
    ) -> Result<(), ParseError> {
        let (f, n) = fields(stat);
        let (cur, in_flight) = disk_counters(&f[..n])?;
        let timed = self.devices.get(index).and_then(|d| self.timed_of(d.dev));
        if let Some(device) = self.devices.get_mut(index) {
            device.observe(cur, in_flight, timed, out);
        }
        Ok(())
    }

    /// The block program's totals for `dev`: none where it does not run,
    /// had no room for this disk or has not been asked for it yet.
    fn timed_of(&self, dev: u32) -> Option<Timed> {
        self.timed.as_ref()?.get(&dev).copied()
    }
}

impl Device {
    fn observe(
        &mut self,
        cur: DiskReading,
        in_flight: u64,
        timed: Option<Timed>,
        out: &mut Vec<Sample>,
    ) {
        let previous = self.reading.replace(cur);
        let previous_timed = std::mem::replace(&mut self.timed, timed);
        let delay = match (timed, previous_timed) {
            (Some((issued, waited_ns)), Some((then_issued, then_waited_ns))) => {
                let issued = issued.saturating_sub(then_issued);
                let value = if issued > 0 {
                    let waited = waited_ns.saturating_sub(then_waited_ns) as f64;
                    Some(waited / issued as f64 / NANOS_PER_SECOND)
                } else {
                    idle(in_flight)
                };
                value.map(|v| (v, "ebpf"))
            }
            // The block program's first reading: nothing to compare yet.
            (Some(_), None) => None,
            (None, _) => previous.and_then(|p| {
                let ios = cur.ios.saturating_sub(p.ios);
                let value = if ios > 0 {
                    let await_ms = cur.io_ms.saturating_sub(p.io_ms) as f64 / ios as f64;
                    let service_ms = cur.busy_ms.saturating_sub(p.busy_ms) as f64 / ios as f64;
                    Some((await_ms - service_ms).max(0.0) / MILLIS_PER_SECOND)
                } else {
                    idle(in_flight)
                };
                value.map(|v| (v, "diskstats"))
            }),
        };
        if let Some((value, source)) = delay {
            out.push(Sample {
                queue: self.delay_queue.clone(),
                scope: None,
                measure: Measure::Delay,
                source,
                value,
            });
        }
        out.push(Sample {
            queue: self.inflight_queue.clone(),
            scope: None,
            measure: Measure::Length,
            source: "diskstats",
            value: in_flight as f64,
        });
    }
}

/// The delay of a period in which no request was issued (eBPF) or
/// completed (diskstats): an empty queue when nothing is in flight, else
/// nothing measured yet.
fn idle(in_flight: u64) -> Option<f64> {
    (in_flight == 0).then_some(0.0)
}

/// TCP accept queues from an inet_diag dump of listening sockets: per
/// listener `tcp_accept:<addr>:<port>`, the connections waiting for
/// accept() (a length queue), and the backlog limit.
///
/// A listener becomes a queue only once a connection was found waiting in
/// it, or once it has listened for [`LISTENER_ADMIT_AFTER`]: a test runner
/// or a client library binding ephemeral ports for a moment would otherwise
/// make and drop some thirty series per port.
#[derive(Debug, Default)]
pub struct ListenerSource {
    listeners: HashMap<(IpAddr, u16), Listener>,
    /// Last tick's map, emptied: this tick's is built in it (no
    /// allocation a tick).
    spare: HashMap<(IpAddr, u16), Listener>,
    /// The namespace the listeners are in; None for the host's.
    scope: Option<Arc<Scope>>,
}

#[derive(Debug)]
struct Listener {
    name: Arc<str>,
    first_seen: Nanos,
    admitted: bool,
    /// The accept-queue program's totals at the last sampling.
    timed: Option<Timed>,
    /// When the queue was last known to hold nothing that had waited
    /// since: empty, or a connection just accepted.
    clear_at: Nanos,
}

/// The accept-queue program's running totals for a port of the source's
/// namespace: (connections accepted, ns they waited).
pub type AcceptTotals<'a> = &'a dyn Fn(u16) -> Option<Timed>;

/// How long a listener with an empty accept queue is watched before it
/// becomes a queue. Long enough that short-lived listeners (tests,
/// ephemeral servers) never do; short enough that `sojourn check`'s
/// default 10 s window sees a service that was listening when it started.
pub const LISTENER_ADMIT_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// What one dump of listeners gives the queues.
#[derive(Debug, Default)]
pub struct ListenerSamples {
    pub samples: Vec<Sample>,
    /// `(queue, backlog limit)` of each admitted listener.
    pub limits: Vec<(QueueId, u32)>,
    /// Queues of admitted listeners that closed since the last dump.
    pub gone: Vec<QueueId>,
}

/// `tcp_accept:0.0.0.0:8080`, `tcp_accept:[::1]:8080`.
pub fn listener_name(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => QueueName::TcpAccept(format!("{a}:{port}")).to_string(),
        IpAddr::V6(a) => QueueName::TcpAccept(format!("[{a}]:{port}")).to_string(),
    }
}

impl ListenerSource {
    /// The listeners of another network namespace, whose queues carry `scope`.
    pub fn in_scope(scope: Arc<Scope>) -> Self {
        ListenerSource {
            listeners: HashMap::new(),
            spare: HashMap::new(),
            scope: Some(scope),
        }
    }

    /// Names the listeners' namespace anew (the kubelet's pod names came):
    /// their next samples carry it.
    pub fn set_scope(&mut self, scope: Arc<Scope>) {
        self.scope = Some(scope);
    }

    pub fn scope(&self) -> Option<&Arc<Scope>> {
        self.scope.as_ref()
    }

    fn id(&self, name: &Arc<str>) -> QueueId {
        QueueId {
            name: name.clone(),
            netns: self.scope.as_ref().map_or(0, |s| s.netns),
        }
    }

    /// Samples the admitted listeners among those dumped at `now`.
    pub fn sample(&mut self, now: Nanos, listeners: &[Socket]) -> ListenerSamples {
        self.sample_timed(now, listeners, None)
    }

    /// [`ListenerSource::sample`]; with the accept-queue program's totals,
    /// each queue is the time its connections waited for accept() (source
    /// `ebpf`) rather than how many wait: the mean wait of those accepted
    /// since the last sampling; none accepted, 0 for an empty queue, else
    /// how long since one was (or the queue was empty), which the oldest
    /// waiting connection has waited at least — so a server that stopped
    /// accepting stands.
    pub fn sample_timed(
        &mut self,
        now: Nanos,
        listeners: &[Socket],
        timed: Option<AcceptTotals>,
    ) -> ListenerSamples {
        let admit_after = u64::try_from(LISTENER_ADMIT_AFTER.as_nanos()).unwrap_or(u64::MAX);
        let mut out = ListenerSamples::default();
        let mut seen = std::mem::take(&mut self.spare);
        seen.reserve(listeners.len());
        for l in listeners.iter().filter(|s| s.state == TCP_LISTEN) {
            let key = (l.local, l.local_port);
            // A SO_REUSEPORT group (several sockets, one address) is one queue.
            let entry = seen.entry(key).or_insert_with(|| {
                self.listeners.remove(&key).unwrap_or_else(|| Listener {
                    name: Arc::from(listener_name(l.local, l.local_port)),
                    first_seen: now,
                    admitted: false,
                    timed: None,
                    clear_at: now,
                })
            });
            entry.admitted |= l.rqueue > 0 || now.saturating_sub(entry.first_seen) >= admit_after;
            if !entry.admitted {
                continue;
            }
            let (name, id) = (entry.name.clone(), self.id(&entry.name));
            let (measure, source, value) = match timed {
                Some(totals) => {
                    let cur = totals(l.local_port).unwrap_or_default();
                    let prev = entry.timed.replace(cur);
                    let accepted = prev.map_or(0, |p| cur.0.saturating_sub(p.0));
                    let value = if accepted > 0 {
                        entry.clear_at = now;
                        let waited = cur.1.saturating_sub(prev.map_or(0, |p| p.1));
                        waited as f64 / accepted as f64 / NANOS_PER_SECOND
                    } else if l.rqueue == 0 {
                        entry.clear_at = now;
                        0.0
                    } else {
                        now.saturating_sub(entry.clear_at) as f64 / NANOS_PER_SECOND
                    };
                    (Measure::Delay, "ebpf", value)
                }
                None => (Measure::Length, "inet_diag", f64::from(l.rqueue)),
            };
            out.samples.push(Sample {
                queue: name,
                scope: self.scope.clone(),
                measure,
                source,
                value,
            });
            out.limits.push((id, l.wqueue));
        }
        // Listeners that closed go with their names.
        let mut closed = std::mem::replace(&mut self.listeners, seen);
        out.gone = closed
            .drain()
            .filter(|(_, l)| l.admitted)
            .map(|(_, l)| self.id(&l.name))
            .collect();
        self.spare = closed;
        out
    }

    /// Forgets every listener (the dump failed, or the namespace is gone:
    /// none of them is known to be there) and returns the queues of the
    /// admitted ones.
    pub fn forget_all(&mut self) -> Vec<QueueId> {
        let gone: Vec<Arc<str>> = self
            .listeners
            .drain()
            .filter(|(_, l)| l.admitted)
            .map(|(_, l)| l.name)
            .collect();
        gone.iter().map(|n| self.id(n)).collect()
    }
}

/// A cgroup's CFS counters: periods and throttled time in seconds, from
/// cpu.stat (`nr_periods`, and `throttled_usec` on v2 or `throttled_time`
/// in ns on v1).
pub fn cfs_counters(cpu_stat: &str) -> Result<(u64, f64), ParseError> {
    let flat = crate::collectors::cgroup::parse_flat(cpu_stat)?;
    let get = |k: &str| flat.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let periods = get("nr_periods").ok_or_else(|| ParseError::new("no nr_periods"))?;
    let throttled = match (get("throttled_usec"), get("throttled_time")) {
        (Some(us), _) => us as f64 / 1e6,
        (None, Some(ns)) => ns as f64 / 1e9,
        (None, None) => return Err(ParseError::new("no throttled_usec or throttled_time")),
    };
    Ok((periods, throttled))
}

/// Container CPU throttling as a delay queue: seconds throttled per CFS
/// period between two readings. No period elapsed means no runnable task
/// (an idle queue: 0).
pub fn throttle_delay(prev: (u64, f64), cur: (u64, f64)) -> f64 {
    let periods = cur.0.saturating_sub(prev.0);
    if periods == 0 {
        return 0.0;
    }
    (cur.1 - prev.1).max(0.0) / periods as f64
}

#[cfg(test)]
mod tests;
