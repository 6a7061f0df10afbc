//! Bytes waiting in UDP socket buffers, summed per address family, from the
//! `tx_queue:rx_queue` column of `/proc/net/udp` and `/proc/net/udp6`
//! (what node_exporter's udp_queues collector exports):
//! ```text
//!    sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...
//!   456: 0100007F:1F90 00000000:0000 07 00000010:00000A00 00:00000000 ...
//! ```
//! Either way the kernel walks its whole UDP hash table, empty slots
//! included — a cost that follows the table's size (set from RAM at boot:
//! 16 384 slots on a 24 GB host), not the sockets found — which is why
//! this is a collector of its own that `--no-collector.udp` turns off. On
//! the live kernel sock_diag is asked instead of the files, as it walks
//! the table half as often (about 22 µs a scrape against 38 µs on this
//! project's machines, no UDP socket open), and only as often as
//! `--collector.udp.cpu-budget` allows, as the TCP socket dumps are:
//! scrapes in between serve the last dump, its age exported.

use std::time::{Duration, Instant};

use super::{Collect, CollectError, ParseError};
use crate::inet_diag::{AF_INET, AF_INET6, Dumper};
use crate::metrics::{Desc, Family, label};

/// The udp collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    /// Share of one CPU the dumps may take.
    #[arg(
        id = "collector.udp.cpu-budget",
        long = "collector.udp.cpu-budget",
        value_name = "SHARE",
        default_value_t = super::DEFAULT_DUMP_CPU_BUDGET,
        value_parser = crate::flag::ratio,
        help = "Share of one CPU the UDP socket dumps may use, whatever the scrape rate: a dump that took c seconds of CPU is followed by the next no sooner than c / SHARE seconds later; scrapes in between serve the last one (sojourn_udp_queue_dump_age_seconds)"
    )]
    pub cpu_budget: f64,
}

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

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

const DUMP_AGE: Desc = Desc::gauge(
    "udp_queue_dump_age",
    "Age of the sock_diag dump udp_queue comes from: a dump runs no sooner than its CPU cost divided by --collector.udp.cpu-budget after the last; 0 where /proc/net/udp is read at every scrape instead (collector cost).",
)
.seconds();

pub fn emit_udp_queues(queues: &[(&'static str, UdpQueues)]) -> Family {
    let mut f = Family::new(UDP_QUEUE);
    for (ip, q) in queues {
        f.push([label("ip", *ip), label("queue", "tx")], q.tx_bytes);
        f.push([label("ip", *ip), label("queue", "rx")], q.rx_bytes);
    }
    f
}

/// On the live kernel (`--path.procfs` a procfs mount) the sockets are
/// asked of sock_diag: two walks of the UDP hash a dump instead of
/// /proc's four (see [`crate::inet_diag::request_udp`]), and a walk that
/// resumes rather than restarts at each batch when sockets are many. A
/// tree of files, or a kernel without udp_diag, is read as files, at
/// every scrape.
pub struct UdpCollector {
    state: std::sync::Mutex<DumpState>,
}

struct DumpState {
    /// None once sock_diag refused a dump (or on a tree of files).
    dumper: Option<Dumper>,
    /// The latest dump, served until the budget allows the next.
    last: Option<Dump>,
}

struct Dump {
    udp: Vec<(&'static str, UdpQueues)>,
    started: Instant,
    /// CPU time the dump took, which sets how soon the next may run.
    cpu: Duration,
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
            state: std::sync::Mutex::new(DumpState { dumper, last: None }),
        }
    }

    /// The queues and the age of the dump they come from, dumped anew when
    /// `budget` allows; None when sock_diag cannot answer for IPv4 (no
    /// udp_diag), after which it is not asked again.
    fn dumped(&self, budget: f64) -> Option<(Vec<(&'static str, UdpQueues)>, Duration)> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = &mut *state;
        let d = state.dumper.as_mut()?;
        let due = state
            .last
            .as_ref()
            .is_none_or(|l| super::budget_allows(l.started, l.cpu, budget, Instant::now()));
        if due {
            state.last = None;
            let (started, cpu) = (Instant::now(), super::thread_cpu_time());
            let Some(udp) = dump(d) else {
                state.dumper = None;
                return None;
            };
            let cpu = super::thread_cpu_time().saturating_sub(cpu);
            state.last = Some(Dump { udp, started, cpu });
        }
        let last = state.last.as_ref()?;
        Some((last.udp.clone(), last.started.elapsed()))
    }
}

/// Both families' queues from sock_diag; None when it cannot answer for
/// IPv4 (no udp_diag).
fn dump(d: &mut Dumper) -> Option<Vec<(&'static str, UdpQueues)>> {
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
                return None;
            }
        }
    }
    Some(udp)
}

impl Collect for UdpCollector {
    fn collect(&self, cfg: &super::Config) -> Result<Vec<Family>, CollectError> {
        if let Some((udp, age)) = self.dumped(cfg.udp.cpu_budget) {
            return Ok(vec![
                emit_udp_queues(&udp),
                Family::single(DUMP_AGE, age.as_secs_f64()),
            ]);
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
        // Files are read at every scrape: what they say is never older.
        Ok(vec![emit_udp_queues(&udp), Family::single(DUMP_AGE, 0.0)])
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
        let (udp, _) = c.dumped(1.0).expect("sock_diag answers for UDP");
        let v4 = udp.iter().find(|(ip, _)| *ip == "v4").unwrap().1;
        assert!(v4.rx_bytes >= 500, "{v4:?}");
        let fixture = crate::roots::Roots {
            procfs: std::env::temp_dir(),
            ..Default::default()
        };
        assert!(
            UdpCollector::new(&fixture).dumped(1.0).is_none(),
            "a tree of files is read as files"
        );
    }

    /// A dump is followed by the next only when its CPU cost divided by the
    /// budget has passed: scrapes in between serve the last one, older.
    #[test]
    fn dumps_wait_for_the_budget() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx_bytes =
            |udp: &[(&str, UdpQueues)]| udp.iter().find(|(ip, _)| *ip == "v4").unwrap().1.rx_bytes;
        let c = UdpCollector::new(&crate::roots::Roots::default());
        let (first, _) = c.dumped(1e-9).expect("sock_diag answers for UDP");
        tx.send_to(&[1u8; 700], rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (served, age) = c.dumped(1e-9).unwrap();
        assert_eq!(
            rx_bytes(&served),
            rx_bytes(&first),
            "a budget of ~0 serves the last dump"
        );
        assert!(age >= Duration::from_millis(20), "{age:?}");
        let (fresh, age) = c.dumped(1.0).unwrap();
        assert!(
            rx_bytes(&fresh) >= 700,
            "the datagram waits in a fresh dump"
        );
        assert!(age < Duration::from_millis(20), "{age:?}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_udp_queues(&s);
        }
    }
}
