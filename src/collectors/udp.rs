//! Bytes waiting in UDP socket buffers, summed per address family, from the
//! `tx_queue:rx_queue` column of `/proc/net/udp` and `/proc/net/udp6`
//! (what node_exporter's udp_queues collector exports):
//! ```text
//!    sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...
//!   456: 0100007F:1F90 00000000:0000 07 00000010:00000A00 00:00000000 ...
//! ```
//! Either way the kernel walks its whole UDP hash table, empty slots
//! included, which is why this is a collector of its own that
//! `--no-collector.udp` turns off; on the live kernel sock_diag is asked
//! instead of the files, as it walks the table half as often (about 22 µs
//! a scrape against 38 µs on this project's machines, no UDP socket open).

use super::{Collect, CollectError, Config, ParseError};
use crate::inet_diag::{AF_INET, AF_INET6, Dumper};
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
    "Saturation: bytes waiting in UDP socket send (queue=tx) and receive (queue=rx) buffers, all sockets summed (sock_diag on a live kernel; /proc/net/udp, /proc/net/udp6 in a tree of files).",
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

/// On the live kernel (`--path.procfs` a procfs mount) the sockets are
/// asked of sock_diag: two walks of the UDP hash a scrape instead of
/// /proc's four (see [`crate::inet_diag::request_udp`]), and a walk that
/// resumes rather than restarts at each batch when sockets are many. A
/// tree of files, or a kernel without udp_diag, is read as files.
pub struct UdpCollector {
    /// None once sock_diag refused a dump (or on a tree of files).
    dumper: std::sync::Mutex<Option<Dumper>>,
}

impl UdpCollector {
    pub fn new(roots: &crate::roots::Roots) -> UdpCollector {
        let dumper = crate::roots::is_procfs(&roots.procfs)
            .then(|| {
                Dumper::new()
                    .map_err(|e| tracing::info!(error = %e, "no sock_diag socket; reading /proc/net/udp"))
                    .ok()
            })
            .flatten();
        UdpCollector {
            dumper: std::sync::Mutex::new(dumper),
        }
    }

    /// Both families' queues from sock_diag; None when it cannot answer
    /// for IPv4 (no udp_diag), after which it is not asked again.
    fn dump(&self) -> Option<Vec<(&'static str, UdpQueues)>> {
        let mut dumper = self
            .dumper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = dumper.as_mut()?;
        let mut udp = Vec::with_capacity(2);
        for (family, ip) in [(AF_INET, "v4"), (AF_INET6, "v6")] {
            let mut q = UdpQueues::default();
            let dumped = d.dump_udp(family, |s| {
                q.tx_bytes = q.tx_bytes.saturating_add(u64::from(s.wqueue));
                q.rx_bytes = q.rx_bytes.saturating_add(u64::from(s.rqueue));
            });
            match dumped {
                Ok(()) => udp.push((ip, q)),
                // IPv6 absent, as when /proc/net/udp6 is.
                Err(_) if family == AF_INET6 => {}
                Err(e) => {
                    tracing::info!(error = %e, "sock_diag does not dump UDP sockets; reading /proc/net/udp");
                    *dumper = None;
                    return None;
                }
            }
        }
        Some(udp)
    }
}

impl Collect for UdpCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        if let Some(udp) = self.dump() {
            return Ok(vec![emit_udp_queues(&udp)]);
        }
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

    /// On the live kernel the collector asks sock_diag, and sees bytes
    /// waiting in a socket this test fills.
    #[test]
    fn the_live_kernel_is_asked_over_sock_diag() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1u8; 500], rx.local_addr().unwrap()).unwrap();
        let c = UdpCollector::new(&crate::roots::Roots::default());
        let udp = c.dump().expect("sock_diag answers for UDP");
        let v4 = udp.iter().find(|(ip, _)| *ip == "v4").unwrap().1;
        assert!(v4.rx_bytes >= 500, "{v4:?}");
        let fixture = crate::roots::Roots {
            procfs: std::env::temp_dir(),
            ..Default::default()
        };
        assert!(
            UdpCollector::new(&fixture).dump().is_none(),
            "a tree of files is read as files"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_udp_queues(&s);
        }
    }
}
