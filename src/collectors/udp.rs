//! Bytes waiting in UDP socket buffers, summed per address family, from the
//! `tx_queue:rx_queue` column of `/proc/net/udp` and `/proc/net/udp6`
//! (what node_exporter's udp_queues collector exports):
//! ```text
//!    sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...
//!   456: 0100007F:1F90 00000000:0000 07 00000010:00000A00 00:00000000 ...
//! ```
//! Reading these files walks the kernel's whole UDP hash table, empty slots
//! included: about 30 µs each on this project's machines even with no UDP
//! socket, which is why this is a collector of its own that
//! `--no-collector.udp` turns off.

use super::{Collect, CollectError, Config, ParseError};
use crate::metrics::{Desc, Family, label};

/// Bytes queued in all UDP sockets of one family: the sums of the
/// `tx_queue:rx_queue` column of /proc/net/udp or /proc/net/udp6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpQueues {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// Parses /proc/net/udp{,6}:
/// `sl local_address rem_address st tx_queue:rx_queue ...`, one socket a line
/// after a header. Reading it walks every UDP socket, as node_exporter's
/// udp_queues collector does; hosts with few UDP sockets pay microseconds.
pub fn parse_udp_queues(text: &str) -> Result<UdpQueues, ParseError> {
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| ParseError::new("empty file"))?;
    if !header.trim_start().starts_with("sl") {
        return Err(ParseError::new("header does not start with `sl`"));
    }
    let mut q = UdpQueues::default();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let queues = line
            .split_ascii_whitespace()
            .nth(4)
            .ok_or_else(|| ParseError(format!("line {line:?} has no queue column")))?;
        let (tx, rx) = queues
            .split_once(':')
            .ok_or_else(|| ParseError(format!("queue column {queues:?} is not tx:rx")))?;
        let hex = |v: &str| {
            u64::from_str_radix(v, 16).map_err(|_| ParseError(format!("{v:?} is not hex")))
        };
        q.tx_bytes = q.tx_bytes.saturating_add(hex(tx)?);
        q.rx_bytes = q.rx_bytes.saturating_add(hex(rx)?);
    }
    Ok(q)
}

const UDP_QUEUE: Desc = Desc::gauge(
    "udp_queue",
    "Saturation: bytes waiting in UDP socket send (queue=tx) and receive (queue=rx) buffers, all sockets summed (/proc/net/udp, /proc/net/udp6).",
)
.bytes();

pub fn emit_udp_queues(queues: &[(&'static str, UdpQueues)]) -> Family {
    let mut f = Family::new(UDP_QUEUE);
    for (ip, q) in queues {
        f.push([label("ip", *ip), label("queue", "tx")], q.tx_bytes);
        f.push([label("ip", *ip), label("queue", "rx")], q.rx_bytes);
    }
    f
}

pub struct UdpCollector;

impl Collect for UdpCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let mut udp = Vec::with_capacity(2);
        for (file, ip) in [("net/udp", "v4"), ("net/udp6", "v6")] {
            let path = cfg.roots.proc(file);
            match crate::roots::read_kept(&path) {
                Ok(t) => udp.push((
                    ip,
                    parse_udp_queues(&t).map_err(|e| CollectError::parse(&path, e))?,
                )),
                // IPv6 disabled: udp6 is optional, udp is not.
                Err(CollectError::Missing(_)) if ip == "v6" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(vec![emit_udp_queues(&udp)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_queues_sum_over_sockets() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16372 2 0000000000000000 0
  456: 0100007F:1F90 00000000:0000 07 00000010:00000A00 00:00000000 00000000  1000        0 16373 2 0000000000000000 5
";
        let q = parse_udp_queues(text).unwrap();
        assert_eq!(
            q,
            UdpQueues {
                tx_bytes: 16,
                rx_bytes: 0xa00
            }
        );
        assert_eq!(
            parse_udp_queues(text.lines().next().unwrap()).unwrap(),
            UdpQueues::default()
        );
        assert!(parse_udp_queues("").is_err());
        assert!(parse_udp_queues("sl a b\n 1: x y 07 zz:00\n").is_err());
        assert!(parse_udp_queues("sl a b\n 1: x\n").is_err());
        assert!(parse_udp_queues("hello\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_udp_queues(&s);
        }
    }
}
