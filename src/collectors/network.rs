//! Network interface utilization, saturation and errors from
//! `/proc/net/dev` and `/sys/class/net`; per-CPU receive backlog from
//! `/proc/net/softnet_stat`.
//!
//! ```text
//!   eth0: 74249924    4390    0    0    0     0          0         0   349691    3306    0    0    0     0       0          0
//! ```
//! (/proc/net/dev is parsed by procfs-core.) Utilization is bytes against
//! `/sys/class/net/<if>/speed` (Mb/s; -1 or EINVAL when unknown). softnet_stat
//! has one hex line per CPU: processed, dropped (backlog full), time_squeeze
//! (budget ran out with work left); since 5.10 column 13 is the CPU number.
//!
//! Cardinality: container hosts create an interface per pod, so veth-like
//! names are excluded by default and at most `--collector.network.max-devices`
//! interfaces are reported; the number left out is itself a metric.

use procfs_core::FromRead;
use procfs_core::net::{DeviceStatus, InterfaceDeviceStatus};
use regex::Regex;

use super::{Collect, CollectError, Config as CollectConfig, ParseError};
use crate::metrics::{Desc, Family, label};
use crate::roots::read_attr;

/// Per-pod and per-VM interfaces: one per workload, unbounded on a busy node.
pub const DEFAULT_DEVICE_EXCLUDE: &str = "^(veth.*|cali.*|lxc.*|tap.*|vnet.*)$";
pub const DEFAULT_MAX_DEVICES: usize = 64;
/// `/sys/class/net/<if>/speed` is in megabits per second.
const BYTES_PER_MEGABIT: u64 = 125_000;

/// The network collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    #[arg(
        id = "collector.network.device-exclude",
        long = "collector.network.device-exclude",
        value_name = "REGEX",
        default_value = DEFAULT_DEVICE_EXCLUDE,
        value_parser = crate::flag::regex,
        help = "Interfaces to leave out (per-pod and per-VM interfaces by default)"
    )]
    pub device_exclude: Regex,
    #[arg(
        id = "collector.network.max-devices",
        long = "collector.network.max-devices",
        value_name = "N",
        default_value_t = DEFAULT_MAX_DEVICES,
        help = "Most interfaces reported; the rest are counted in sojourn_network_devices_omitted"
    )]
    pub max_devices: usize,
}

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

pub fn parse_net_dev(text: &str) -> Result<Vec<DeviceStatus>, ParseError> {
    let st =
        InterfaceDeviceStatus::from_read(text.as_bytes()).map_err(|e| ParseError(e.to_string()))?;
    // Loopback always exists: no interfaces means a truncated read.
    if st.0.is_empty() {
        return Err(ParseError::new("no interfaces listed"));
    }
    let mut devices: Vec<DeviceStatus> = st.0.into_values().collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(devices)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Softnet {
    pub cpu: u32,
    pub processed: u64,
    pub dropped: u64,
    pub time_squeeze: u64,
    /// Column 12 (5.10+): packets waiting in this CPU's backlog now.
    pub backlog_len: Option<u64>,
}

pub fn parse_softnet(text: &str) -> Result<Vec<Softnet>, ParseError> {
    let mut out = Vec::new();
    for (line_no, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let cols = line
            .split_ascii_whitespace()
            .map(|c| {
                u64::from_str_radix(c, 16)
                    .map_err(|_| ParseError(format!("line {}: {c:?} is not hex", line_no + 1)))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        if cols.len() < 3 {
            return Err(ParseError(format!(
                "line {}: {} columns, at least 3 expected",
                line_no + 1,
                cols.len()
            )));
        }
        let cpu = match cols.get(12) {
            Some(&c) => {
                u32::try_from(c).map_err(|_| ParseError(format!("CPU number {c} out of range")))?
            }
            None => line_no as u32,
        };
        out.push(Softnet {
            cpu,
            processed: cols[0],
            dropped: cols[1],
            time_squeeze: cols[2],
            backlog_len: cols.get(11).copied(),
        });
    }
    if out.is_empty() {
        return Err(ParseError::new("no CPU lines"));
    }
    Ok(out)
}

macro_rules! dev_counter {
    ($id:ident, $name:literal, $help:literal) => {
        const $id: Desc = Desc::counter($name, $help);
    };
}
dev_counter!(
    RX_PACKETS,
    "network_receive_packets",
    "Packets received (/proc/net/dev)."
);
dev_counter!(
    RX_ERRS,
    "network_receive_errs",
    "Errors: receive errors reported by the driver (/proc/net/dev errs)."
);
dev_counter!(
    RX_DROP,
    "network_receive_drop",
    "Saturation: received packets dropped, e.g. no buffer space (/proc/net/dev drop)."
);
dev_counter!(
    RX_FIFO,
    "network_receive_fifo",
    "Saturation: receive FIFO overruns (/proc/net/dev fifo)."
);
dev_counter!(
    RX_FRAME,
    "network_receive_frame",
    "Errors: receive framing errors (/proc/net/dev frame)."
);
dev_counter!(
    RX_COMPRESSED,
    "network_receive_compressed",
    "Compressed packets received (/proc/net/dev)."
);
dev_counter!(
    RX_MULTICAST,
    "network_receive_multicast",
    "Multicast packets received (/proc/net/dev)."
);
dev_counter!(
    TX_PACKETS,
    "network_transmit_packets",
    "Packets transmitted (/proc/net/dev)."
);
dev_counter!(
    TX_ERRS,
    "network_transmit_errs",
    "Errors: transmit errors reported by the driver (/proc/net/dev errs)."
);
dev_counter!(
    TX_DROP,
    "network_transmit_drop",
    "Saturation: packets dropped on transmit, e.g. queue full (/proc/net/dev drop)."
);
dev_counter!(
    TX_FIFO,
    "network_transmit_fifo",
    "Saturation: transmit FIFO errors (/proc/net/dev fifo)."
);
dev_counter!(
    TX_COLLS,
    "network_transmit_colls",
    "Errors: collisions on transmit (/proc/net/dev colls)."
);
dev_counter!(
    TX_CARRIER,
    "network_transmit_carrier",
    "Errors: carrier losses on transmit (/proc/net/dev carrier)."
);
dev_counter!(
    TX_COMPRESSED,
    "network_transmit_compressed",
    "Compressed packets transmitted (/proc/net/dev)."
);
const RX_BYTES: Desc = Desc::counter(
    "network_receive",
    "Utilization: bytes received; divide its rate by network_speed_bytes (/proc/net/dev).",
)
.bytes();
const TX_BYTES: Desc = Desc::counter(
    "network_transmit",
    "Utilization: bytes transmitted; divide its rate by network_speed_bytes (/proc/net/dev).",
)
.bytes();
const SPEED: Desc = Desc::gauge(
    "network_speed",
    "Link speed in bytes per second, the utilization denominator; absent when the driver does not know it (/sys/class/net/<if>/speed).",
)
.bytes();
const UP: Desc = Desc::gauge(
    "network_up",
    "Errors: 1 when the interface's operational state is up (/sys/class/net/<if>/operstate).",
);
const CARRIER_CHANGES: Desc = Desc::counter(
    "network_carrier_changes",
    "Errors: link up/down transitions (/sys/class/net/<if>/carrier_changes).",
);
const DEVICES_DROPPED: Desc = Desc::gauge(
    "network_devices_omitted",
    "Interfaces left out because --collector.network.max-devices was reached (/proc/net/dev).",
);
const SOFTNET_PROCESSED: Desc = Desc::counter(
    "softnet_processed",
    "Packets processed by each CPU's receive softirq (/proc/net/softnet_stat column 1).",
);
const SOFTNET_DROPPED: Desc = Desc::counter(
    "softnet_dropped",
    "Saturation: packets dropped because the CPU's input backlog was full (/proc/net/softnet_stat column 2).",
);
const SOFTNET_SQUEEZED: Desc = Desc::counter(
    "softnet_times_squeezed",
    "Saturation: times the receive softirq ran out of budget with work left (/proc/net/softnet_stat column 3).",
);
const SOFTNET_BACKLOG: Desc = Desc::gauge(
    "softnet_backlog_packets",
    "Saturation: packets waiting in the CPU's input backlog now (/proc/net/softnet_stat column 12, 5.10+).",
);

/// Link attributes read from sysfs for one interface.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub speed_mbps: Option<u64>,
    pub up: Option<bool>,
    pub carrier_changes: Option<u64>,
}

pub fn emit(devices: &[DeviceStatus], cfg: &Config, link: impl Fn(&str) -> Link) -> Vec<Family> {
    let mut fams: Vec<Family> = [
        RX_BYTES,
        RX_PACKETS,
        RX_ERRS,
        RX_DROP,
        RX_FIFO,
        RX_FRAME,
        RX_COMPRESSED,
        RX_MULTICAST,
        TX_BYTES,
        TX_PACKETS,
        TX_ERRS,
        TX_DROP,
        TX_FIFO,
        TX_COLLS,
        TX_CARRIER,
        TX_COMPRESSED,
        SPEED,
        UP,
        CARRIER_CHANGES,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    let selected: Vec<&DeviceStatus> = devices
        .iter()
        .filter(|d| !cfg.device_exclude.is_match(&d.name))
        .collect();
    let omitted = selected.len().saturating_sub(cfg.max_devices);
    for d in selected.into_iter().take(cfg.max_devices) {
        let values = [
            d.recv_bytes,
            d.recv_packets,
            d.recv_errs,
            d.recv_drop,
            d.recv_fifo,
            d.recv_frame,
            d.recv_compressed,
            d.recv_multicast,
            d.sent_bytes,
            d.sent_packets,
            d.sent_errs,
            d.sent_drop,
            d.sent_fifo,
            d.sent_colls,
            d.sent_carrier,
            d.sent_compressed,
        ];
        for (fam, v) in fams.iter_mut().zip(values) {
            fam.push([label("device", d.name.clone())], v);
        }
        let l = link(&d.name);
        if let Some(mbps) = l.speed_mbps {
            fams[16].push(
                [label("device", d.name.clone())],
                mbps.saturating_mul(BYTES_PER_MEGABIT),
            );
        }
        if let Some(up) = l.up {
            fams[17].push([label("device", d.name.clone())], u64::from(up));
        }
        if let Some(n) = l.carrier_changes {
            fams[18].push([label("device", d.name.clone())], n);
        }
    }
    fams.push(Family::single(DEVICES_DROPPED, omitted as u64));
    fams
}

pub fn emit_softnet(rows: &[Softnet]) -> Vec<Family> {
    let mut fams: Vec<Family> = [
        SOFTNET_PROCESSED,
        SOFTNET_DROPPED,
        SOFTNET_SQUEEZED,
        SOFTNET_BACKLOG,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    for r in rows {
        let cpu = || [label("cpu", r.cpu.to_string())];
        fams[0].push(cpu(), r.processed);
        fams[1].push(cpu(), r.dropped);
        fams[2].push(cpu(), r.time_squeeze);
        if let Some(b) = r.backlog_len {
            fams[3].push(cpu(), b);
        }
    }
    fams
}

pub struct NetworkCollector;

impl Collect for NetworkCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("net/dev");
        let devices = parse_net_dev(&crate::roots::read_kept(&path)?)
            .map_err(|e| CollectError::parse(&path, e))?;
        let mut fams = emit(&devices, &cfg.network, |name| {
            if name.contains('/') {
                return Link::default();
            }
            let dir = cfg.roots.sys(&format!("class/net/{name}"));
            Link {
                // Negative (-1) when unknown: parse as unsigned rejects it.
                speed_mbps: read_attr(&dir.join("speed")).and_then(|s| s.parse().ok()),
                up: read_attr(&dir.join("operstate")).map(|s| s == "up"),
                carrier_changes: read_attr(&dir.join("carrier_changes"))
                    .and_then(|s| s.parse().ok()),
            }
        });
        let path = cfg.roots.proc("net/softnet_stat");
        match crate::roots::read_kept(&path) {
            Ok(text) => {
                let rows = parse_softnet(&text).map_err(|e| CollectError::parse(&path, e))?;
                fams.extend(emit_softnet(&rows));
            }
            Err(CollectError::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(fams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0: 74249924    4390    1    2    3     4          5         6   349691    3306    7    8    9    10       11          12
vethab12: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0
";

    #[test]
    fn parses_net_dev_and_excludes_pod_interfaces() {
        let d = parse_net_dev(NET_DEV).unwrap();
        assert_eq!(d.len(), 3);
        let f = emit(&d, &Config::default(), |n| Link {
            speed_mbps: (n == "eth0").then_some(1000),
            up: Some(true),
            carrier_changes: None,
        });
        assert_eq!(f[0].samples.len(), 2, "veth excluded");
        assert_eq!(f[0].samples[0].labels[0].1, "eth0");
        assert_eq!(f[0].samples[0].value, Value::Int(74249924));
        assert_eq!(f[14].samples[0].value, Value::Int(11), "carrier column");
        assert_eq!(f[16].samples[0].value, Value::Int(125_000_000));
        assert_eq!(f[16].samples.len(), 1);
    }

    #[test]
    fn caps_devices_and_counts_the_rest() {
        let d = parse_net_dev(NET_DEV).unwrap();
        let cfg = Config {
            device_exclude: Regex::new("^$").unwrap(),
            max_devices: 1,
        };
        let f = emit(&d, &cfg, |_| Link::default());
        assert_eq!(f[0].samples.len(), 1);
        assert_eq!(f.last().unwrap().samples[0].value, Value::Int(2));
    }

    #[test]
    fn softnet_old_and_new_layouts() {
        // 11 columns, as before 5.10 (node_exporter's fixture).
        let old = parse_softnet(
            "00049279 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n\
             000dfb82 00000029 0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n",
        )
        .unwrap();
        assert_eq!(
            old[1],
            Softnet {
                cpu: 1,
                processed: 0xdfb82,
                dropped: 0x29,
                time_squeeze: 0xa,
                backlog_len: None
            }
        );
        let new = parse_softnet("0000112a 00000000 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000004 00000005 00000000 00000000\n").unwrap();
        assert_eq!(new[0].cpu, 5, "CPU number from column 13, not line order");
        assert_eq!(new[0].backlog_len, Some(4));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_softnet("zz 00 00\n").is_err());
        assert!(parse_softnet("00 00\n").is_err());
        assert!(parse_net_dev("h\nh\n eth0: 1 2 x\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_net_dev(&s);
            let _ = parse_softnet(&s);
        }
    }
}
