//! TCP, UDP, socket and interface counters of every network namespace on the host
//! other than sojourn's own: on a Kubernetes node, each pod's. Read from
//! `/proc/PID/net/{snmp,netstat,sockstat,dev}` of a process in the namespace, the
//! namespaces found by a walk of /proc every
//! `--collector.process.rescan-interval` (see [`crate::netns`]). A pod's
//! namespace carries its `pod_uid` and `qos_class` (from the kubelet's
//! cgroup layout), any other its `process`; all carry `netns`, the
//! namespace's inode. With `--collector.cgroup.kubelet-url`, a pod's also
//! carry its `namespace` and `pod` names.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::netstat::{Counters, lookup, parse_snmp_pairs, sockstat_pairs};
use super::network::parse_net_dev;
use super::{Collect, CollectError, Config as CollectConfig};
use crate::metrics::{Desc, Family, Label, label};
use crate::netns::{Netns, Walk, namespace_of, own_namespace, rewalk};
use crate::roots::Dir;

/// Namespaces tracked at most (14 series each, 8 more per
/// interface); the rest are counted in `sojourn_netns_omitted`.
pub const DEFAULT_MAX_NAMESPACES: usize = 256;

/// Interfaces reported per namespace (in name order, loopback left out).
pub const MAX_DEVICES_PER_NAMESPACE: usize = 8;

crate::descs! {
    LISTEN_OVERFLOWS = counter("netns_tcp_listen_overflows", "Saturation: connections dropped because a listener's accept queue was full, in this namespace (/proc/PID/net/netstat TcpExt ListenOverflows).");
    LISTEN_DROPS = counter("netns_tcp_listen_drops", "Errors: SYNs and connections dropped at a listener for any reason, overflows included (TcpExt ListenDrops).");
    RETRANS = counter("netns_tcp_retransmitted_segments", "Errors: TCP segments retransmitted (/proc/PID/net/snmp Tcp RetransSegs).");
    OUT_SEGS = counter("netns_tcp_segments_sent", "Utilization: TCP segments sent, the denominator of the retransmit ratio (Tcp OutSegs).");
    IN_SEGS = counter("netns_tcp_segments_received", "Utilization: TCP segments received (Tcp InSegs).");
    IN_ERRS = counter("netns_tcp_receive_errors", "Errors: TCP segments received in error (Tcp InErrs).");
    OUT_RSTS = counter("netns_tcp_resets_sent", "Errors: TCP resets sent (Tcp OutRsts).");
    TIMEOUTS = counter("netns_tcp_timeouts", "Errors: TCP retransmission timer expiries (TcpExt TCPTimeouts).");
    ESTABLISHED = gauge("netns_tcp_established", "Utilization: TCP connections established or in CLOSE-WAIT (Tcp CurrEstab).");
    UDP_RCVBUF = counter("netns_udp_receive_buffer_errors", "Saturation: UDP datagrams dropped because a socket's receive buffer was full (Udp RcvbufErrors).");
    UDP_IN_ERRS = counter("netns_udp_receive_errors", "Errors: UDP datagrams received in error (Udp InErrors).");
    SOCK_TCP_INUSE = gauge("netns_sockstat_tcp_inuse", "Utilization: TCP over IPv4 sockets in use in this namespace, listening ones included (/proc/PID/net/sockstat TCP inuse).");
    SOCK_TCP_TW = gauge("netns_sockstat_tcp_tw", "TCP sockets of this namespace in TIME_WAIT, both families (/proc/PID/net/sockstat TCP tw).");
    SOCK_UDP_INUSE = gauge("netns_sockstat_udp_inuse", "Utilization: UDP over IPv4 sockets in use in this namespace (/proc/PID/net/sockstat UDP inuse).");
    RX_BYTES = counter("netns_network_receive", "Utilization: bytes received by the interface (/proc/PID/net/dev).") .bytes();
    TX_BYTES = counter("netns_network_transmit", "Utilization: bytes sent by the interface (/proc/PID/net/dev).") .bytes();
    RX_PACKETS = counter("netns_network_receive_packets", "Utilization: packets received by the interface (/proc/PID/net/dev).");
    TX_PACKETS = counter("netns_network_transmit_packets", "Utilization: packets sent by the interface (/proc/PID/net/dev).");
    RX_ERRS = counter("netns_network_receive_errors", "Errors: receive errors on the interface (/proc/PID/net/dev).");
    TX_ERRS = counter("netns_network_transmit_errors", "Errors: transmit errors on the interface (/proc/PID/net/dev).");
    RX_DROPS = counter("netns_network_receive_drops", "Saturation: received packets dropped by the interface (/proc/PID/net/dev).");
    TX_DROPS = counter("netns_network_transmit_drops", "Saturation: packets dropped on transmit by the interface (/proc/PID/net/dev).");
    OMITTED = gauge("netns_omitted", "Network namespaces left out because --collector.netns.max-namespaces was reached (/proc/PID/ns/net).");
}

/// The TCP and UDP counters kept per namespace: (desc, proto, name);
/// `Tcp`/`Udp` are snmp's, `TcpExt` netstat's, `TCP`/`UDP` sockstat's
/// (only its per-namespace fields: orphans, allocations and memory are the
/// whole host's there).
const COUNTERS: [(Desc, &str, &str); 14] = [
    (LISTEN_OVERFLOWS, "TcpExt", "ListenOverflows"),
    (LISTEN_DROPS, "TcpExt", "ListenDrops"),
    (RETRANS, "Tcp", "RetransSegs"),
    (OUT_SEGS, "Tcp", "OutSegs"),
    (IN_SEGS, "Tcp", "InSegs"),
    (IN_ERRS, "Tcp", "InErrs"),
    (OUT_RSTS, "Tcp", "OutRsts"),
    (TIMEOUTS, "TcpExt", "TCPTimeouts"),
    (ESTABLISHED, "Tcp", "CurrEstab"),
    (UDP_RCVBUF, "Udp", "RcvbufErrors"),
    (UDP_IN_ERRS, "Udp", "InErrors"),
    (SOCK_TCP_INUSE, "TCP", "inuse"),
    (SOCK_TCP_TW, "TCP", "tw"),
    (SOCK_UDP_INUSE, "UDP", "inuse"),
];

/// The netns collector's flag.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    #[arg(
        id = "collector.netns.max-namespaces",
        long = "collector.netns.max-namespaces",
        value_name = "N",
        default_value_t = DEFAULT_MAX_NAMESPACES,
        help = "Most network namespaces reported by the netns collector; the rest are counted in sojourn_netns_omitted"
    )]
    pub max_namespaces: usize,
    /// Whether other namespaces are looked into at all: the netns
    /// collector on. The queue sampler and tcp_ports then read their
    /// sockets too. Set from the collectors chosen, not a flag of its own.
    #[arg(skip)]
    pub enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

/// One namespace's counters, read at a scrape.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub counters: Vec<(usize, u64)>,
    /// (device, [rx bytes, tx bytes, rx packets, tx packets, rx errs, tx errs, rx drops, tx drops]).
    pub devices: Vec<(String, [u64; 8])>,
}

/// Parses a namespace's snmp, netstat, dev and (where it was read)
/// sockstat files.
pub fn parse(
    snmp: &str,
    netstat: &str,
    dev: &str,
    sockstat: Option<&str>,
) -> Result<Reading, super::ParseError> {
    let mut c = Counters::with_capacity(256);
    parse_snmp_pairs(snmp, &mut c)?;
    parse_snmp_pairs(netstat, &mut c)?;
    if let Some(text) = sockstat {
        sockstat_pairs(text, &mut c)?;
    }
    let counters = COUNTERS
        .iter()
        .enumerate()
        .filter_map(|(i, (_, proto, name))| Some((i, lookup(&c, proto, name)?.max(0) as u64)))
        .collect();
    let devices = parse_net_dev(dev)?
        .into_iter()
        // Loopback carries the pod's talk to itself, not its network's.
        .filter(|d| d.name != "lo")
        // A pod has one or two; a bound like the host's for the rest.
        .take(MAX_DEVICES_PER_NAMESPACE)
        .map(|d| {
            let v = [
                d.recv_bytes,
                d.sent_bytes,
                d.recv_packets,
                d.sent_packets,
                d.recv_errs,
                d.sent_errs,
                d.recv_drop,
                d.sent_drop,
            ];
            (d.name, v)
        })
        .collect();
    Ok(Reading { counters, devices })
}

/// A namespace's identity labels; with the kubelet's pod list (`names`),
/// the pod's `namespace` and `pod` too (empty for a pod it does not list
/// and for a namespace of no pod).
pub fn identity(ns: &Netns, names: Option<&crate::kubelet::PodDirectory>) -> Vec<Label> {
    let pod = ns.pod.as_ref();
    let mut labels = vec![
        label("netns", ns.inode.to_string()),
        label(
            "pod_uid",
            pod.map(|k| k.pod_uid.clone()).unwrap_or_default(),
        ),
        label("qos_class", pod.map(|k| k.qos.as_str()).unwrap_or_default()),
        // A pod is named by its uid; any other namespace by who holds it.
        label(
            "process",
            if pod.is_some() {
                String::new()
            } else {
                ns.comm.clone()
            },
        ),
    ];
    if let Some(dir) = names {
        let named = pod.and_then(|k| dir.pods.get(&k.pod_uid));
        labels.push(label(
            "namespace",
            named.map(|p| p.namespace.clone()).unwrap_or_default(),
        ));
        labels.push(label(
            "pod",
            named.map(|p| p.pod.clone()).unwrap_or_default(),
        ));
    }
    labels
}

pub fn emit(readings: &[(Vec<Label>, Reading)], omitted: usize) -> Vec<Family> {
    let mut counters: Vec<Family> = COUNTERS
        .iter()
        .map(|(d, ..)| Family::new(d.clone()))
        .collect();
    let device_descs = [
        RX_BYTES, TX_BYTES, RX_PACKETS, TX_PACKETS, RX_ERRS, TX_ERRS, RX_DROPS, TX_DROPS,
    ];
    let mut devices: Vec<Family> = device_descs.into_iter().map(Family::new).collect();
    for (id, r) in readings {
        for (i, v) in &r.counters {
            counters[*i].push(id.clone(), *v);
        }
        for (name, values) in &r.devices {
            for (f, v) in devices.iter_mut().zip(values) {
                let mut labels = id.clone();
                labels.push(label("device", name.clone()));
                f.push(labels, *v);
            }
        }
    }
    let mut out = counters;
    out.extend(devices);
    out.push(Family::new(OMITTED).with([], omitted as u64));
    out
}

#[derive(Default)]
struct State {
    /// The last walk taken, shared with the scrapes reading its namespaces.
    walk: Option<Arc<Walk>>,
}

#[derive(Default)]
pub struct NetnsCollector {
    state: Mutex<State>,
    /// Pod names, with `--collector.cgroup.kubelet-url`.
    kubelet: Option<Arc<crate::kubelet::Kubelet>>,
}

impl NetnsCollector {
    pub fn new(cfg: &CollectConfig) -> Self {
        NetnsCollector {
            state: Mutex::default(),
            kubelet: kubelet(cfg),
        }
    }

    /// The walk whose namespaces to read: taken anew when the rescan is
    /// due, or fresh when a namespace's process is gone (a new one may
    /// hold it now).
    fn namespaces(&self, cfg: &CollectConfig, own: u64, rescan: bool) -> Arc<Walk> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let interval = cfg.process.rescan_interval;
        let last = state.walk.clone();
        if let Some(w) = last
            .as_ref()
            .filter(|w| !rescan && w.started.elapsed() < interval)
        {
            return w.clone();
        }
        let max_age = if rescan { Duration::ZERO } else { interval };
        let walked = rewalk(
            &cfg.roots.procfs,
            own,
            cfg.netns.max_namespaces,
            last.as_deref(),
            max_age,
        );
        let d = &walked.discovery;
        if d.unreadable > 0 && last.is_none() {
            tracing::info!(
                processes = d.unreadable,
                "netns: some processes' namespaces are unreadable (reading them needs CAP_SYS_PTRACE, and no security module refusing it: Yama, Landlock, AppArmor); their namespaces are not reported"
            );
        }
        state.walk = Some(walked.clone());
        walked
    }
}

/// The kubelet's pod list, shared with the other readers, when its URL is set.
pub fn kubelet(cfg: &CollectConfig) -> Option<Arc<crate::kubelet::Kubelet>> {
    let endpoint = cfg.cgroup.kubelet.as_ref()?;
    crate::kubelet::shared(endpoint)
        .map_err(|e| tracing::error!("kubelet pod names disabled: {e}"))
        .ok()
}

/// Reads one namespace through its process; `None` when that process is
/// gone or is in another namespace now (its pid reused).
fn read_namespace(cfg: &CollectConfig, ns: &Netns) -> Option<Result<Reading, CollectError>> {
    let path = cfg.roots.procfs.join(ns.pid.to_string()).join("net");
    // One path walk for the three files.
    let files = match Dir::open(&path) {
        Ok(Some(dir)) => (
            dir.read("snmp"),
            dir.read("netstat"),
            dir.read("dev"),
            dir.read("sockstat"),
        ),
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    // Checked after the reads: what was read is this namespace's.
    if namespace_of(&cfg.roots.procfs, ns.pid) != Some(ns.inode) {
        return None;
    }
    let (snmp, netstat, dev, sockstat) = files;
    let (snmp, netstat, dev) = match (snmp, netstat, dev) {
        (Ok(Some(a)), Ok(Some(b)), Ok(Some(c))) => (a, b, c),
        // The process exited between the reads.
        (Ok(None), ..) | (_, Ok(None), _) | (.., Ok(None)) => return None,
        (Err(CollectError::Missing(_)), ..)
        | (_, Err(CollectError::Missing(_)), _)
        | (.., Err(CollectError::Missing(_))) => return None,
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return Some(Err(e)),
    };
    // sockstat is optional: its gauges are absent without it.
    let sockstat = sockstat.ok().flatten();
    Some(
        parse(&snmp, &netstat, &dev, sockstat.as_deref())
            .map_err(|e| CollectError::parse(&path, e)),
    )
}

impl Collect for NetnsCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let own = own_namespace(&cfg.roots.procfs).ok_or_else(|| {
            CollectError::Unsupported(format!(
                "cannot read {}/self/ns/net",
                cfg.roots.procfs.display()
            ))
        })?;
        let mut walked = self.namespaces(cfg, own, false);
        let names = self.kubelet.as_ref().map(|k| k.directory().0);
        let mut readings = Vec::with_capacity(walked.discovery.found.len());
        for pass in 0..2 {
            readings.clear();
            let mut gone = false;
            for ns in &walked.discovery.found {
                match read_namespace(cfg, ns) {
                    Some(Ok(r)) => readings.push((identity(ns, names.as_deref()), r)),
                    // Every namespace's files are the same kernel's: one
                    // that does not parse is the collector's failure.
                    Some(Err(e)) => return Err(e),
                    None => gone = true,
                }
            }
            if !gone || pass == 1 {
                break;
            }
            // A process gone: its namespace may live on in another.
            walked = self.namespaces(cfg, own, true);
        }
        Ok(emit(&readings, walked.discovery.omitted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_reading_has_the_counters_and_interfaces() {
        let r = parse(
            include_str!("../../tests/fixtures/proc/net/snmp"),
            include_str!("../../tests/fixtures/proc/net/netstat"),
            include_str!("../../tests/fixtures/proc/net/dev"),
            Some(include_str!("../../tests/fixtures/proc/net/sockstat")),
        )
        .unwrap();
        assert_eq!(r.counters.len(), COUNTERS.len());
        assert!(!r.devices.is_empty());
        assert!(r.devices.iter().all(|(d, _)| d != "lo"));
        let ns = Netns {
            inode: 4026532281,
            pid: 42,
            comm: "sleep".into(),
            pod: crate::kube::parse(
                "/kubepods/burstable/pod0b2e4c3a-1111-2222-3333-444455556666/abcdef0123456789",
            ),
        };
        let id = identity(&ns, None);
        assert!(id.contains(&label("pod_uid", "0b2e4c3a-1111-2222-3333-444455556666")));
        assert!(id.contains(&label("qos_class", "burstable")));
        assert!(id.contains(&label("process", "")));
        let text = crate::metrics::encode(emit(&[(id, r)], 0), crate::metrics::Format::Text);
        assert!(
            text.contains("sojourn_netns_tcp_listen_overflows_total{netns=\"4026532281\",pod_uid=\"0b2e4c3a-1111-2222-3333-444455556666\",qos_class=\"burstable\",process=\"\"}"),
            "{text}"
        );
        let mut dir = crate::kubelet::PodDirectory::default();
        dir.pods.insert(
            "0b2e4c3a-1111-2222-3333-444455556666".into(),
            crate::kubelet::PodNames {
                namespace: "shop".into(),
                pod: "web-7d9".into(),
            },
        );
        let named = identity(&ns, Some(&dir));
        assert!(named.ends_with(&[label("namespace", "shop"), label("pod", "web-7d9")]));
        let plain = identity(&Netns { pod: None, ..ns }, Some(&dir));
        assert!(plain.contains(&label("process", "sleep")));
        assert!(plain.contains(&label("pod_uid", "")));
        assert!(
            plain.contains(&label("pod", "")),
            "a namespace of no pod has no name"
        );
    }
}
