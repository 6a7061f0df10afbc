//! Per-service TCP golden signals without touching the service: for each
//! local listening port, its established connections, the bytes queued in
//! their receive queues (data the application has not read: the service is
//! saturated) and send queues (data the peer has not acknowledged: the
//! network or the client is), their smoothed round-trip times and
//! retransmissions.
//!
//! One NETLINK_SOCK_DIAG dump of established sockets with `tcp_info`
//! (`ss -ti`), both address families at once, done at scrape time: the
//! kernel visits every socket of its established hash, TIME-WAIT ones
//! included, whatever the filter (about 175 µs with the table empty, 2 ms
//! per 10 000 sockets), too dear for the 10 ms sampler.
//!
//! Its cost follows the host's socket count, not what is reported, so a
//! dump is made only when its CPU budget allows: a dump that took `c` CPU
//! seconds is followed by the next no sooner than `c ÷ budget` seconds
//! later (`--collector.tcp_ports.cpu-budget`, 0.5 % of one CPU). Scrapes in
//! between serve the last dump, its age exported; whoever scrapes how often,
//! the dumps cost at most the budget (plus one dump).
//!
//! Cardinality: the `--collector.tcp_ports.max-ports` ports with the most
//! queued bytes (then the most connections) get their own `port` label; the
//! rest are summed under `port="other"`.
//!
//! Every other network namespace (each pod's, with the netns collector on)
//! gets the same view through a sock_diag socket made in it
//! ([`crate::netns::enter`]), its ports carrying the namespace's identity
//! labels. The kernel's socket hash is one for all namespaces, so each
//! namespace's dump walks all of it: a round over the namespaces runs
//! under the same CPU budget as the host's dump, on a clock of its own,
//! and the `--collector.tcp_ports.max-namespace-ports` (namespace, port)
//! pairs with the most queued bytes keep their labels, the rest summed
//! under `port="other"`, `netns="other"`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Collect, CollectError, Config};
use crate::inet_diag::{Dumper, RemotePorts, Socket, TCP_ESTABLISHED, TCP_LISTEN};
use crate::metrics::Label;

/// CPUs this process may use, asked once: std reads the cgroup's CPU quota
/// from files to answer, which a scrape need not repeat.
fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
use crate::metrics::Histogram;
use crate::metrics::{Desc, Family, label};

pub const DEFAULT_MAX_PORTS: usize = 32;
/// Most (namespace, port) pairs of other namespaces with labels of their
/// own: 16 series each.
pub const DEFAULT_MAX_NAMESPACE_PORTS: usize = 64;

/// RTT histogram bounds, seconds: loopback and LAN (tens of µs) up to
/// intercontinental paths and retransmission-inflated RTTs.
const RTT_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Aggregates of the established connections of one listening port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortStats {
    pub connections: u64,
    pub recv_queue_bytes: u64,
    pub recv_queue_max_bytes: u64,
    pub send_queue_bytes: u64,
    pub send_queue_max_bytes: u64,
    pub unacked_segments: u64,
    pub retransmitted_segments: u64,
    pub rtt: Histogram,
}

impl Default for PortStats {
    fn default() -> Self {
        PortStats {
            connections: 0,
            recv_queue_bytes: 0,
            recv_queue_max_bytes: 0,
            send_queue_bytes: 0,
            send_queue_max_bytes: 0,
            unacked_segments: 0,
            retransmitted_segments: 0,
            rtt: Histogram::new(RTT_BOUNDS.to_vec()),
        }
    }
}

impl PortStats {
    fn add(&mut self, s: &Socket) {
        self.connections += 1;
        self.recv_queue_bytes += u64::from(s.rqueue);
        self.recv_queue_max_bytes = self.recv_queue_max_bytes.max(u64::from(s.rqueue));
        self.send_queue_bytes += u64::from(s.wqueue);
        self.send_queue_max_bytes = self.send_queue_max_bytes.max(u64::from(s.wqueue));
        if let Some(info) = s.tcp_info {
            self.unacked_segments += u64::from(info.unacked);
            self.retransmitted_segments += u64::from(info.total_retrans);
            self.rtt.observe(f64::from(info.rtt_us) / 1e6);
        }
    }

    fn merge(&mut self, o: &PortStats) {
        self.connections += o.connections;
        self.recv_queue_bytes += o.recv_queue_bytes;
        self.recv_queue_max_bytes = self.recv_queue_max_bytes.max(o.recv_queue_max_bytes);
        self.send_queue_bytes += o.send_queue_bytes;
        self.send_queue_max_bytes = self.send_queue_max_bytes.max(o.send_queue_max_bytes);
        self.unacked_segments += o.unacked_segments;
        self.retransmitted_segments += o.retransmitted_segments;
        for (a, b) in self.rtt.counts.iter_mut().zip(&o.rtt.counts) {
            *a += b;
        }
        self.rtt.sum += o.rtt.sum;
        self.rtt.count += o.rtt.count;
    }

    fn queued(&self) -> u64 {
        self.recv_queue_bytes + self.send_queue_bytes
    }
}

/// The listening sockets, to tell a service's connections from outbound
/// ones that happen to have the same local port number on another address.
#[derive(Debug, Default)]
pub struct Listeners {
    exact: HashSet<(IpAddr, u16)>,
    wildcard: HashSet<u16>,
}

impl Listeners {
    pub fn add(&mut self, s: &Socket) {
        if s.local.is_unspecified() {
            self.wildcard.insert(s.local_port);
        } else {
            self.exact.insert((s.local, s.local_port));
        }
    }

    /// True when `s` was accepted on one of the listeners.
    pub fn accepted(&self, s: &Socket) -> bool {
        self.wildcard.contains(&s.local_port) || self.exact.contains(&(s.local, s.local_port))
    }

    /// Distinct listening ports, ascending.
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self
            .wildcard
            .iter()
            .copied()
            .chain(self.exact.iter().map(|(_, p)| *p))
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

/// Sums connections per local port as the dump streams in, so that a
/// hundred thousand sockets are never held at once.
pub struct Aggregator<'a> {
    listeners: &'a Listeners,
    by_port: HashMap<u16, PortStats>,
    /// Connections by remote port / 1024, to split the next dump evenly.
    remote_bins: [u32; 64],
}

impl<'a> Aggregator<'a> {
    pub fn new(listeners: &'a Listeners) -> Self {
        Aggregator {
            listeners,
            by_port: HashMap::new(),
            remote_bins: [0; 64],
        }
    }

    /// Counts `s` if it is an established connection accepted on a listener.
    pub fn add(&mut self, s: &Socket) {
        if s.state == TCP_ESTABLISHED && self.listeners.accepted(s) {
            self.by_port.entry(s.local_port).or_default().add(s);
            self.remote_bins[usize::from(s.remote_port >> 10)] += 1;
        }
    }

    /// Adds the counts of another share of the same dump.
    pub fn merge(&mut self, other: Aggregator<'_>) {
        for (port, stats) in other.by_port {
            self.by_port.entry(port).or_default().merge(&stats);
        }
        for (a, b) in self.remote_bins.iter_mut().zip(other.remote_bins) {
            *a += b;
        }
    }

    /// Connections counted.
    pub fn connections(&self) -> u64 {
        self.remote_bins.iter().map(|&n| u64::from(n)).sum()
    }

    /// A remote port that splits the connections counted about in half.
    pub fn remote_port_median(&self) -> u16 {
        let half = self.connections() / 2;
        let mut seen = 0;
        for (bin, &n) in self.remote_bins.iter().enumerate() {
            seen += u64::from(n);
            if seen > half {
                // The bin's upper bound; the bins hold 1024 ports each.
                return u16::try_from((bin + 1) << 10).unwrap_or(u16::MAX);
            }
        }
        u16::MAX
    }

    /// The top `max_ports` by queued bytes, then connections, then port
    /// number, and the rest summed as `None` (port "other").
    pub fn finish(self, max_ports: usize) -> Vec<(Option<u16>, PortStats)> {
        let mut ranked: Vec<(u16, PortStats)> = self.by_port.into_iter().collect();
        ranked.sort_by(|(pa, a), (pb, b)| {
            b.queued()
                .cmp(&a.queued())
                .then(b.connections.cmp(&a.connections))
                .then(pa.cmp(pb))
        });
        let mut out: Vec<(Option<u16>, PortStats)> =
            Vec::with_capacity(max_ports.min(ranked.len()).saturating_add(1));
        let mut other: Option<PortStats> = None;
        for (i, (port, stats)) in ranked.into_iter().enumerate() {
            if i < max_ports {
                out.push((Some(port), stats));
            } else {
                other.get_or_insert_with(PortStats::default).merge(&stats);
            }
        }
        out.sort_by_key(|(p, _)| *p);
        if let Some(o) = other {
            out.push((None, o));
        }
        out
    }
}

/// [`Aggregator`] over a slice.
pub fn aggregate(
    sockets: &[Socket],
    listeners: &Listeners,
    max_ports: usize,
) -> Vec<(Option<u16>, PortStats)> {
    let mut a = Aggregator::new(listeners);
    for s in sockets {
        a.add(s);
    }
    a.finish(max_ports)
}

const CONNECTIONS: Desc = Desc::gauge(
    "tcp_port_connections",
    "Utilization: established TCP connections accepted on this local listening port (inet_diag).",
);
const RECV_Q: Desc = Desc::gauge(
    "tcp_port_receive_queue",
    "Saturation: bytes received on the port's connections and not yet read by the application, summed (inet_diag rqueue).",
)
.bytes();
const RECV_Q_MAX: Desc = Desc::gauge(
    "tcp_port_receive_queue_max",
    "Saturation: largest receive queue among the port's connections (inet_diag rqueue).",
)
.bytes();
const SEND_Q: Desc = Desc::gauge(
    "tcp_port_send_queue",
    "Saturation: bytes sent on the port's connections and not yet acknowledged by the peers, summed (inet_diag wqueue).",
)
.bytes();
const SEND_Q_MAX: Desc = Desc::gauge(
    "tcp_port_send_queue_max",
    "Saturation: largest send queue among the port's connections (inet_diag wqueue).",
)
.bytes();
const UNACKED: Desc = Desc::gauge(
    "tcp_port_unacked_segments",
    "Saturation: segments in flight, sent and not yet acknowledged, summed over the port's connections (tcp_info tcpi_unacked).",
);
const RETRANS: Desc = Desc::gauge(
    "tcp_port_retransmitted_segments",
    "Errors: segments retransmitted over the lifetime of the port's open connections; falls when connections close, so prefer netstat_tcp_retrans_segs_total for rates (tcp_info tcpi_total_retrans).",
);
const RTT: Desc = Desc::histogram(
    "tcp_port_rtt",
    "Smoothed round-trip time of each of the port's connections at scrape time (tcp_info tcpi_rtt).",
)
.seconds();
const LISTENERS: Desc = Desc::gauge(
    "tcp_port_listening_ports",
    "Local TCP ports with a listening socket, the ports connections are grouped by (inet_diag).",
);
const DUMPS: Desc = Desc::counter(
    "tcp_port_dumps",
    "inet_diag dumps made for the tcp_port series; scrapes between dumps serve the last one (collector cost).",
);
const DUMP_AGE: Desc = Desc::gauge(
    "tcp_port_dump_age",
    "Age of the inet_diag dump the tcp_port series come from: a dump runs no sooner than its CPU cost divided by --collector.tcp_ports.cpu-budget after the last (collector cost).",
)
.seconds();
const DUMP_CPU: Desc = Desc::gauge(
    "tcp_port_dump_cpu",
    "CPU time the last inet_diag dump took, all threads; it grows with every socket in the kernel's hash, TIME-WAIT included (collector cost).",
)
.seconds();

/// One port of another namespace: the namespace's identity labels (none
/// for the sum of the ports past the cap), the port (None: that sum).
pub type NamespacePort = (Vec<Label>, Option<u16>, PortStats);

pub fn emit(
    ports: &[(Option<u16>, PortStats)],
    listening: usize,
    namespaced: &[NamespacePort],
) -> Vec<Family> {
    let mut f: Vec<Family> = [
        CONNECTIONS,
        RECV_Q,
        RECV_Q_MAX,
        SEND_Q,
        SEND_Q_MAX,
        UNACKED,
        RETRANS,
        RTT,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    let host = ports.iter().map(|(p, s)| (&[][..], p, s));
    let others = namespaced.iter().map(|(id, p, s)| (&id[..], p, s));
    for (id, port, s) in host.chain(others) {
        let l = || {
            let mut l = Vec::with_capacity(1 + id.len());
            l.push(label(
                "port",
                port.map_or_else(|| "other".to_string(), |p| p.to_string()),
            ));
            l.extend_from_slice(id);
            l
        };
        f[0].push(l(), s.connections);
        f[1].push(l(), s.recv_queue_bytes);
        f[2].push(l(), s.recv_queue_max_bytes);
        f[3].push(l(), s.send_queue_bytes);
        f[4].push(l(), s.send_queue_max_bytes);
        f[5].push(l(), s.unacked_segments);
        f[6].push(l(), s.retransmitted_segments);
        f[7].push(l(), s.rtt.clone());
    }
    f.push(Family::single(LISTENERS, listening as u64));
    f
}

/// Connections from which the established-socket dump is split in two,
/// run in parallel: the kernel fills each record (tcp_info included) in the
/// dumping thread, so two dumps over halves of the remote-port space take
/// about half the time on two CPUs, while each walks the hash table once
/// more (2 ms at 100 000 sockets).
const PARALLEL_FROM: u64 = 20_000;

pub struct TcpPortsCollector {
    state: std::sync::Mutex<Option<DumpState>>,
    /// None unless other namespaces are looked into (the netns collector on).
    rounds: Option<RoundWorker>,
}

mod namespaces;

use namespaces::*;
pub use namespaces::{NAMESPACES_PART, rank_namespace_ports};

struct DumpState {
    dumper: Dumper,
    /// The second dumper, opened when the host first has PARALLEL_FROM connections.
    helper: Option<Dumper>,
    /// Where the latest dump split the remote ports in half, if it was large.
    split: Option<u16>,
    /// The latest dump, served until the budget allows the next.
    last: Option<Dump>,
    dumps: u64,
}

/// What one dump found, and what it cost.
struct Dump {
    started: Instant,
    ports: Vec<(Option<u16>, PortStats)>,
    listening: usize,
    cpu: Duration,
}

impl TcpPortsCollector {
    pub fn new(cfg: &Config) -> Self {
        let rounds = cfg
            .netns
            .enabled
            .then(|| RoundWorker::start(cfg))
            .and_then(|w| {
                w.map_err(|e| tracing::error!("tcp_ports: pods' ports not reported: {e}"))
                    .ok()
            });
        TcpPortsCollector {
            state: std::sync::Mutex::new(None),
            rounds,
        }
    }

    /// Other namespaces' ports from the last round, with the rounds' own
    /// metrics, asking the worker for a new round when the budget allows;
    /// None when they are not looked into.
    fn namespaced(&self, cfg: &Config) -> Option<(std::sync::Arc<NamespaceDump>, Vec<Family>)> {
        let shared = &self.rounds.as_ref()?.shared;
        let mut s = shared.state.lock().ok()?;
        // With no namespace entered, a round can only find new ones, and
        // namespaces are looked for once per rescan interval: asking more
        // often would wake the round thread at every scrape for nothing.
        let due = s.last.as_ref().is_none_or(|d| match s.entered {
            0 => d.started.elapsed() >= cfg.process.rescan_interval,
            _ => super::budget_allows(d.started, d.cpu, cfg.tcp_ports.cpu_budget, Instant::now()),
        });
        if due && !s.running && !s.requested {
            s.requested = true;
            shared.wake.notify_one();
        }
        let last = s.last.clone()?;
        let families = vec![
            Family::single(NAMESPACE_DUMPS, s.dumps),
            Family::single(NAMESPACE_DUMP_AGE, last.started.elapsed().as_secs_f64()),
            Family::single(NAMESPACE_DUMP_CPU, last.cpu.as_secs_f64()),
            Family::single(NAMESPACES_ENTERED, s.entered as u64),
        ];
        Some((last, families))
    }
}

impl DumpState {
    /// Dumps the listeners, then their established connections, and
    /// aggregates them per port; returns what it found and the CPU time it
    /// took in every thread.
    fn dump(&mut self, max_ports: usize) -> Result<Dump, CollectError> {
        let started = Instant::now();
        let cpu_before = super::thread_cpu_time();
        let mut helper_cpu = Duration::ZERO;
        let mut listeners = Listeners::default();
        self.dumper
            .dump_all(1 << TCP_LISTEN, false, |s| listeners.add(&s))?;
        let ports = listeners.ports();
        // The kernel filters by local port, so outbound connections cost
        // nothing; those on another address with the same port number are
        // dropped by the aggregator.
        let mut agg = Aggregator::new(&listeners);
        let established = 1 << TCP_ESTABLISHED;
        match (self.split, cpus() > 1) {
            (Some(split), true) => {
                if self.helper.is_none() {
                    self.helper = Dumper::new().ok();
                }
                let mut other = Aggregator::new(&listeners);
                let (dumper, helper) = (&mut self.dumper, self.helper.as_mut());
                let (mine, theirs) = std::thread::scope(|scope| {
                    let theirs = helper.map(|h| {
                        let (other, ports) = (&mut other, &ports);
                        scope.spawn(move || {
                            let before = super::thread_cpu_time();
                            let r = h.dump_all_for_ports(
                                established,
                                true,
                                ports,
                                RemotePorts::AtLeast(split),
                                |s| other.add(&s),
                            );
                            r.map(|()| super::thread_cpu_time().saturating_sub(before))
                        })
                    });
                    let range = if theirs.is_some() {
                        RemotePorts::Below(split)
                    } else {
                        RemotePorts::All
                    };
                    let mine = dumper
                        .dump_all_for_ports(established, true, &ports, range, |s| agg.add(&s));
                    let theirs = theirs.map(|t| {
                        t.join()
                            .unwrap_or_else(|_| Err(CollectError::Panicked("dump thread".into())))
                    });
                    (mine, theirs)
                });
                mine?;
                if let Some(theirs) = theirs {
                    helper_cpu = theirs?;
                    agg.merge(other);
                }
            }
            _ => self.dumper.dump_all_for_ports(
                established,
                true,
                &ports,
                RemotePorts::All,
                |s| agg.add(&s),
            )?,
        }
        self.split = (agg.connections() >= PARALLEL_FROM).then(|| agg.remote_port_median());
        let cpu = super::thread_cpu_time().saturating_sub(cpu_before) + helper_cpu;
        Ok(Dump {
            started,
            ports: agg.finish(max_ports),
            listening: ports.len(),
            cpu,
        })
    }
}

impl Collect for TcpPortsCollector {
    fn parts(&self) -> Vec<(&'static str, bool)> {
        self.rounds
            .as_ref()
            .and_then(|w| w.shared.state.lock().ok())
            .map(|s| vec![(NAMESPACES_PART, s.refused)])
            .unwrap_or_default()
    }

    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        // Concurrent scrapes take turns on the netlink sockets and the last dump.
        let mut guard = self
            .state
            .lock()
            .map_err(|_| CollectError::Panicked("netlink socket poisoned".into()))?;
        if guard.is_none() {
            let dumper = Dumper::new().map_err(|e| {
                CollectError::Unsupported(format!("NETLINK_SOCK_DIAG socket refused: {e}"))
            })?;
            *guard = Some(DumpState {
                dumper,
                helper: None,
                split: None,
                last: None,
                dumps: 0,
            });
        }
        let Some(state) = guard.as_mut() else {
            return Err(CollectError::Io("netlink socket missing".into()));
        };
        let budget = cfg.tcp_ports.cpu_budget;
        let due = state
            .last
            .as_ref()
            .is_none_or(|d| super::budget_allows(d.started, d.cpu, budget, Instant::now()));
        if due {
            // A failed dump leaves nothing to serve: no series outlives its source.
            state.last = None;
            state.last = Some(state.dump(cfg.tcp_ports.max_ports)?);
            state.dumps += 1;
        }
        let Some(last) = &state.last else {
            return Err(CollectError::Io("no dump".into()));
        };
        let (ns_ports, ns_families) = match self.namespaced(cfg) {
            Some((dump, families)) => (Some(dump), families),
            None => (None, Vec::new()),
        };
        let ns_ports = ns_ports.as_ref().map_or(&[][..], |d| &d.ports[..]);
        let mut f = emit(&last.ports, last.listening, ns_ports);
        f.extend(ns_families);
        f.push(Family::single(DUMPS, state.dumps));
        f.push(Family::single(
            DUMP_AGE,
            last.started.elapsed().as_secs_f64(),
        ));
        f.push(Family::single(DUMP_CPU, last.cpu.as_secs_f64()));
        Ok(f)
    }
}

/// The tcp_ports collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct TcpPortsConfig {
    #[arg(
        id = "collector.tcp_ports.max-ports",
        long = "collector.tcp_ports.max-ports",
        value_name = "N",
        default_value_t = DEFAULT_MAX_PORTS,
        help = "Listening ports reported one by one, those with the most queued bytes; the rest are summed as port=\"other\""
    )]
    pub max_ports: usize,
    /// Most (namespace, port) pairs of other namespaces labelled.
    #[arg(
        id = "collector.tcp_ports.max-namespace-ports",
        long = "collector.tcp_ports.max-namespace-ports",
        value_name = "N",
        default_value_t = DEFAULT_MAX_NAMESPACE_PORTS,
        help = "Most (network namespace, port) pairs of other namespaces (pods') with series of their own (16 each), those with the most queued bytes; the rest are summed under port=\"other\", netns=\"other\""
    )]
    pub max_namespace_ports: usize,
    /// Share of one CPU the dumps may take.
    #[arg(
        id = "collector.tcp_ports.cpu-budget",
        long = "collector.tcp_ports.cpu-budget",
        value_name = "SHARE",
        default_value_t = super::DEFAULT_DUMP_CPU_BUDGET,
        value_parser = crate::flag::ratio,
        help = "Share of one CPU the socket dumps may use, whatever the scrape rate: a dump that took c seconds of CPU is followed by the next no sooner than c / SHARE seconds later; scrapes in between serve the last one (sojourn_tcp_port_dump_age_seconds)"
    )]
    pub cpu_budget: f64,
}

impl Default for TcpPortsConfig {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

#[cfg(test)]
mod tests;
