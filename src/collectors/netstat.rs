//! TCP and UDP saturation and errors from `/proc/net/snmp`,
//! `/proc/net/netstat` and `/proc/net/snmp6`; socket counts and memory from
//! `/proc/net/sockstat{,6}`.
//!
//! ```text
//! TcpExt: SyncookiesSent ... ListenOverflows ListenDrops ...
//! TcpExt: 0 ... 3 3 ...
//! ```
//! snmp and netstat are pairs of lines, names then values, per protocol
//! (Documentation/networking/snmp_counter.rst); snmp6 is `Name value` per
//! line. One parser serves snmp and netstat: procfs-core reads neither
//! TcpExt nor every protocol. Only the counters an operator needs for the
//! USE method are exported; the list below is the whole set.

use std::sync::LazyLock;

use super::{Collect, CollectError, Config, ParseError};
use crate::metrics::{Desc, Family, Kind, snake_case};

/// `(protocol, name, value)` borrowed from the file's text: a scrape reads
/// ~300 counters and keeps ~36, so nothing is copied or hashed. Values are
/// signed: Tcp MaxConn is -1.
pub type Counters<'a> = Vec<(&'a str, &'a str, i64)>;

/// The value of one counter, if the kernel printed it.
pub fn lookup(counters: &Counters<'_>, proto: &str, name: &str) -> Option<i64> {
    counters
        .iter()
        .find(|(p, n, _)| *p == proto && *n == name)
        .map(|(_, _, v)| *v)
}

/// Parses the header/value line pairs of /proc/net/snmp and /proc/net/netstat.
pub fn parse_snmp_pairs<'a>(text: &'a str, into: &mut Counters<'a>) -> Result<(), ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::new("empty file"));
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    while let Some(header) = lines.next() {
        let values = lines
            .next()
            .ok_or_else(|| ParseError(format!("header {:.40}... has no value line", header)))?;
        let (proto, names) = header
            .split_once(':')
            .ok_or_else(|| ParseError(format!("line {header:.40} has no protocol")))?;
        let (vproto, vals) = values
            .split_once(':')
            .ok_or_else(|| ParseError(format!("line {values:.40} has no protocol")))?;
        if proto != vproto {
            return Err(ParseError(format!(
                "names for {proto} followed by values for {vproto}"
            )));
        }
        // Walked in step, without a list of each: a line pair holds up to
        // ~120 counters.
        let (mut n_iter, mut v_iter) = (
            names.split_ascii_whitespace(),
            vals.split_ascii_whitespace(),
        );
        loop {
            match (n_iter.next(), v_iter.next()) {
                (Some(n), Some(v)) => {
                    let v = v
                        .parse::<i64>()
                        .map_err(|_| ParseError(format!("{proto} {n}: {v:?} is not an integer")))?;
                    into.push((proto, n, v));
                }
                (None, None) => break,
                _ => {
                    return Err(ParseError(format!(
                        "{proto}: {} names but {} values",
                        names.split_ascii_whitespace().count(),
                        vals.split_ascii_whitespace().count()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Parses /proc/net/snmp6 (`Udp6InErrors  0`) into protocol `Udp6` etc.
pub fn parse_snmp6<'a>(text: &'a str, into: &mut Counters<'a>) -> Result<(), ParseError> {
    for line in super::short_lines(text) {
        let mut f = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(split) = key.find(|c: char| c.is_ascii_digit()).map(|i| i + 1) else {
            continue;
        };
        let (proto, name) = key.split_at(split);
        let v = value
            .parse::<i64>()
            .map_err(|_| ParseError(format!("{key}: {value:?} is not an integer")))?;
        into.push((proto, name, v));
    }
    Ok(())
}

/// Protocol lines of sockstat (`TCP: inuse 4 orphan 0 tw 4 alloc 17
/// mem 1`) into borrowed counters, as `("TCP", "tw", 4)`.
pub fn sockstat_pairs<'a>(text: &'a str, into: &mut Counters<'a>) -> Result<(), ParseError> {
    let before = into.len();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (proto, rest) = line
            .split_once(':')
            .ok_or_else(|| ParseError(format!("line {line:?} has no protocol")))?;
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        if !f.len().is_multiple_of(2) {
            return Err(ParseError(format!("{proto}: unpaired field in {rest:?}")));
        }
        for kv in f.chunks(2) {
            let v = super::parse_u64(kv[0], kv[1])?;
            into.push((proto, kv[0], i64::try_from(v).unwrap_or(i64::MAX)));
        }
    }
    if into.len() == before {
        return Err(ParseError::new("empty file"));
    }
    Ok(())
}

/// The metric name of each of [`EXPORTED`], in its order, made once.
static EXPORTED_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    EXPORTED
        .iter()
        .map(|(proto, name, _, _)| {
            let made = format!(
                "netstat_{}_{}",
                proto.to_ascii_lowercase(),
                snake_case(name)
            );
            &*Box::leak(made.into_boxed_str())
        })
        .collect()
});

/// `(protocol, name)` -> position in [`EXPORTED`]. Looked up for each of
/// the ~300 counters the kernel prints at every scrape: a fast hash.
static EXPORTED_INDEX: LazyLock<foldhash::HashMap<(&str, &str), usize>> = LazyLock::new(|| {
    EXPORTED
        .iter()
        .enumerate()
        .map(|(i, (p, n, _, _))| ((*p, *n), i))
        .collect()
});

/// The exported counters: (protocol, kernel name, kind, USE help).
pub const EXPORTED: &[(&str, &str, Kind, &str)] = &[
    (
        "Tcp",
        "ActiveOpens",
        Kind::Counter,
        "TCP connections opened by this host (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "PassiveOpens",
        Kind::Counter,
        "TCP connections accepted by this host (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "AttemptFails",
        Kind::Counter,
        "Errors: TCP connection attempts that failed (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "EstabResets",
        Kind::Counter,
        "Errors: established TCP connections reset (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "CurrEstab",
        Kind::Gauge,
        "Utilization: TCP connections established or closing now (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "InSegs",
        Kind::Counter,
        "TCP segments received (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "OutSegs",
        Kind::Counter,
        "TCP segments sent; the retransmit ratio's denominator (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "RetransSegs",
        Kind::Counter,
        "Errors: TCP segments retransmitted (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "InErrs",
        Kind::Counter,
        "Errors: TCP segments received in error (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "OutRsts",
        Kind::Counter,
        "Errors: TCP resets sent (/proc/net/snmp).",
    ),
    (
        "Tcp",
        "InCsumErrors",
        Kind::Counter,
        "Errors: TCP segments with a bad checksum (/proc/net/snmp).",
    ),
    (
        "TcpExt",
        "ListenOverflows",
        Kind::Counter,
        "Saturation: connections dropped because a listen socket's accept queue was full (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "ListenDrops",
        Kind::Counter,
        "Saturation: connection requests dropped by listen sockets, overflows included (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPTimeouts",
        Kind::Counter,
        "Errors: TCP retransmission timeouts (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPSynRetrans",
        Kind::Counter,
        "Errors: SYN and SYN-ACK retransmissions (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPRcvQDrop",
        Kind::Counter,
        "Saturation: segments dropped because the receive queue was full under memory pressure (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPBacklogDrop",
        Kind::Counter,
        "Saturation: segments dropped because the socket backlog was full (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPOFODrop",
        Kind::Counter,
        "Saturation: out-of-order segments dropped for lack of receive memory (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPAbortOnTimeout",
        Kind::Counter,
        "Errors: connections aborted after too many retransmissions (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPAbortOnMemory",
        Kind::Counter,
        "Errors: connections aborted for lack of memory (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "TCPMemoryPressures",
        Kind::Counter,
        "Saturation: times TCP entered memory pressure (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "SyncookiesSent",
        Kind::Counter,
        "Saturation: SYN cookies sent because a SYN queue overflowed (/proc/net/netstat).",
    ),
    (
        "TcpExt",
        "SyncookiesFailed",
        Kind::Counter,
        "Errors: invalid SYN cookies received (/proc/net/netstat).",
    ),
    (
        "Udp",
        "InDatagrams",
        Kind::Counter,
        "UDP datagrams delivered (/proc/net/snmp).",
    ),
    (
        "Udp",
        "OutDatagrams",
        Kind::Counter,
        "UDP datagrams sent (/proc/net/snmp).",
    ),
    (
        "Udp",
        "NoPorts",
        Kind::Counter,
        "Errors: UDP datagrams to a port nobody listens on (/proc/net/snmp).",
    ),
    (
        "Udp",
        "InErrors",
        Kind::Counter,
        "Errors: UDP datagrams that could not be delivered, buffer errors included (/proc/net/snmp).",
    ),
    (
        "Udp",
        "RcvbufErrors",
        Kind::Counter,
        "Saturation: UDP datagrams dropped because the receive buffer was full (/proc/net/snmp).",
    ),
    (
        "Udp",
        "SndbufErrors",
        Kind::Counter,
        "Saturation: UDP datagrams dropped because the send buffer was full (/proc/net/snmp).",
    ),
    (
        "Udp",
        "InCsumErrors",
        Kind::Counter,
        "Errors: UDP datagrams with a bad checksum (/proc/net/snmp).",
    ),
    (
        "Udp6",
        "InDatagrams",
        Kind::Counter,
        "UDP over IPv6 datagrams delivered (/proc/net/snmp6).",
    ),
    (
        "Udp6",
        "OutDatagrams",
        Kind::Counter,
        "UDP over IPv6 datagrams sent (/proc/net/snmp6).",
    ),
    (
        "Udp6",
        "NoPorts",
        Kind::Counter,
        "Errors: UDP over IPv6 datagrams to a port nobody listens on (/proc/net/snmp6).",
    ),
    (
        "Udp6",
        "InErrors",
        Kind::Counter,
        "Errors: UDP over IPv6 datagrams that could not be delivered (/proc/net/snmp6).",
    ),
    (
        "Udp6",
        "RcvbufErrors",
        Kind::Counter,
        "Saturation: UDP over IPv6 datagrams dropped, receive buffer full (/proc/net/snmp6).",
    ),
    (
        "Udp6",
        "SndbufErrors",
        Kind::Counter,
        "Saturation: UDP over IPv6 datagrams dropped, send buffer full (/proc/net/snmp6).",
    ),
    (
        "Udp6",
        "InCsumErrors",
        Kind::Counter,
        "Errors: UDP over IPv6 datagrams with a bad checksum (/proc/net/snmp6).",
    ),
];

/// sockstat fields exported, with help; `mem` is in pages and becomes bytes.
const SOCKSTAT_HELP: &[(&str, &str, &str)] = &[
    (
        "sockets",
        "used",
        "Sockets of all kinds in use (/proc/net/sockstat).",
    ),
    (
        "TCP",
        "inuse",
        "Utilization: TCP sockets in use, listening ones included (/proc/net/sockstat).",
    ),
    (
        "TCP",
        "orphan",
        "TCP sockets no longer attached to a process, still closing (/proc/net/sockstat).",
    ),
    (
        "TCP",
        "tw",
        "TCP sockets in TIME_WAIT (/proc/net/sockstat).",
    ),
    (
        "TCP",
        "alloc",
        "TCP sockets allocated (/proc/net/sockstat).",
    ),
    (
        "TCP",
        "mem",
        "Utilization: memory used by TCP socket buffers, against net.ipv4.tcp_mem (/proc/net/sockstat, pages).",
    ),
    ("UDP", "inuse", "UDP sockets in use (/proc/net/sockstat)."),
    (
        "UDP",
        "mem",
        "Utilization: memory used by UDP socket buffers, against net.ipv4.udp_mem (/proc/net/sockstat, pages).",
    ),
    ("RAW", "inuse", "Raw sockets in use (/proc/net/sockstat)."),
    (
        "FRAG",
        "inuse",
        "IP fragment reassembly queues in use (/proc/net/sockstat).",
    ),
    (
        "FRAG",
        "memory",
        "Memory used by IP fragment reassembly (/proc/net/sockstat).",
    ),
    (
        "TCP6",
        "inuse",
        "TCP over IPv6 sockets in use (/proc/net/sockstat6).",
    ),
    (
        "UDP6",
        "inuse",
        "UDP over IPv6 sockets in use (/proc/net/sockstat6).",
    ),
];

/// The metric name of each of [`SOCKSTAT_HELP`], in its order, made once.
static SOCKSTAT_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    SOCKSTAT_HELP
        .iter()
        .map(|(proto, field, _)| {
            let field = if *field == "memory" { "mem" } else { field };
            let made = format!("sockstat_{}_{field}", proto.to_ascii_lowercase());
            &*Box::leak(made.into_boxed_str())
        })
        .collect()
});

/// Where each of [`EXPORTED`] was in the last scrape's counters. The
/// kernel prints its counters in an order fixed at build time, so the
/// next scrape checks ~40 places instead of hashing ~300 names; a list of
/// another length, or a name not at its place, and all are looked up
/// again.
#[derive(Debug, Default)]
pub struct Places {
    at: Vec<Option<usize>>,
    /// How many counters that list held.
    of: usize,
}

impl Places {
    /// The value of each of [`EXPORTED`], None where the kernel has none.
    fn values(&mut self, counters: &Counters<'_>) -> Vec<Option<i64>> {
        let still = self.of == counters.len()
            && self.at.len() == EXPORTED.len()
            && self.at.iter().zip(EXPORTED).all(|(at, (p, n, _, _))| {
                at.is_none_or(|at| {
                    counters
                        .get(at)
                        .is_some_and(|(cp, cn, _)| cp == p && cn == n)
                })
            });
        if !still {
            self.at = vec![None; EXPORTED.len()];
            self.of = counters.len();
            for (at, (proto, name, _)) in counters.iter().enumerate() {
                if let Some(&i) = EXPORTED_INDEX.get(&(*proto, *name)) {
                    self.at[i] = Some(at);
                }
            }
        }
        self.at
            .iter()
            .map(|at| at.map(|at| counters[at].2))
            .collect()
    }
}

pub fn emit(
    counters: &Counters<'_>,
    sockstat: &Counters<'_>,
    page_size: u64,
    places: &mut Places,
) -> Vec<Family> {
    let values = places.values(counters);
    let mut out = Vec::with_capacity(EXPORTED.len() + SOCKSTAT_HELP.len());
    for (i, (_, _, kind, help)) in EXPORTED.iter().enumerate() {
        let Some(v) = values[i] else { continue };
        let desc = Desc {
            name: EXPORTED_NAMES[i].into(),
            help: (*help).into(),
            kind: *kind,
            unit: None,
            namespaced: true,
        };
        out.push(Family::single(desc, v.max(0) as u64));
    }
    for (i, (proto, field, help)) in SOCKSTAT_HELP.iter().enumerate() {
        let Some(v) = lookup(sockstat, proto, field) else {
            continue;
        };
        let v = v.max(0) as u64;
        let mut desc = Desc::gauge(SOCKSTAT_NAMES[i], help);
        let v = if *field == "mem" {
            desc = desc.bytes();
            v.saturating_mul(page_size)
        } else if *field == "memory" {
            desc = desc.bytes();
            v
        } else {
            v
        };
        out.push(Family::single(desc, v));
    }
    out
}

#[derive(Default)]
pub struct NetstatCollector {
    places: std::sync::Mutex<Places>,
}

impl Collect for NetstatCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let read_required = |file: &str| {
            let path = cfg.roots.proc(file);
            crate::roots::read_kept(&path).map(|t| (path, t))
        };
        let snmp = read_required("net/snmp")?;
        let netstat = read_required("net/netstat")?;
        // IPv6 may be disabled: its files are optional.
        let snmp6 = match read_required("net/snmp6") {
            Ok(f) => Some(f),
            Err(CollectError::Missing(_)) => None,
            Err(e) => return Err(e),
        };
        let mut counters = Counters::with_capacity(512);
        for (path, text) in [&snmp, &netstat] {
            parse_snmp_pairs(text, &mut counters).map_err(|e| CollectError::parse(path, e))?;
        }
        if let Some((path, text)) = &snmp6 {
            parse_snmp6(text, &mut counters).map_err(|e| CollectError::parse(path, e))?;
        }
        let mut texts = Vec::with_capacity(2);
        for (file, required) in [("net/sockstat", true), ("net/sockstat6", false)] {
            let path = cfg.roots.proc(file);
            match crate::roots::read_kept(&path) {
                Ok(t) => texts.push((path, t)),
                Err(CollectError::Missing(_)) if !required => {}
                Err(e) => return Err(e),
            }
        }
        let mut sockstat = Counters::with_capacity(32);
        for (path, text) in &texts {
            sockstat_pairs(text, &mut sockstat).map_err(|e| CollectError::parse(path, e))?;
        }
        let mut places = self
            .places
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(emit(
            &counters,
            &sockstat,
            rustix::param::page_size() as u64,
            &mut places,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    #[test]
    fn parses_real_snmp_and_netstat() {
        let mut c = Counters::new();
        parse_snmp_pairs(include_str!("../../tests/fixtures/proc/net/snmp"), &mut c).unwrap();
        parse_snmp_pairs(
            include_str!("../../tests/fixtures/proc/net/netstat"),
            &mut c,
        )
        .unwrap();
        assert_eq!(lookup(&c, "Tcp", "MaxConn"), Some(-1));
        assert!(lookup(&c, "TcpExt", "ListenOverflows").is_some());
        assert!(lookup(&c, "Udp", "RcvbufErrors").is_some());
        let f = emit(&c, &Counters::new(), 4096, &mut Places::default());
        let names: Vec<String> = f.iter().map(|f| f.desc.exposed_name()).collect();
        assert!(names.contains(&"sojourn_netstat_tcpext_listen_overflows_total".into()));
        assert!(names.contains(&"sojourn_netstat_tcp_curr_estab".into()));
    }

    #[test]
    fn places_kept_from_the_last_scrape_follow_a_changed_list() {
        let value = |f: &[Family], name: &str| {
            f.iter()
                .find(|f| f.desc.exposed_name() == name)
                .map(|f| f.samples[0].value.clone())
        };
        let estab = "sojourn_netstat_tcp_curr_estab";
        let resets = "sojourn_netstat_tcp_estab_resets_total";
        let mut places = Places::default();
        let first: Counters = vec![("Tcp", "CurrEstab", 3), ("Tcp", "EstabResets", 1)];
        let f = emit(&first, &Counters::new(), 4096, &mut places);
        assert_eq!(value(&f, estab), Some(Value::Int(3)));
        // Same places, new values.
        let again: Counters = vec![("Tcp", "CurrEstab", 4), ("Tcp", "EstabResets", 2)];
        let f = emit(&again, &Counters::new(), 4096, &mut places);
        assert_eq!(value(&f, estab), Some(Value::Int(4)));
        assert_eq!(value(&f, resets), Some(Value::Int(2)));
        // Swapped, same length: found at their new places.
        let swapped: Counters = vec![("Tcp", "EstabResets", 5), ("Tcp", "CurrEstab", 6)];
        let f = emit(&swapped, &Counters::new(), 4096, &mut places);
        assert_eq!(value(&f, estab), Some(Value::Int(6)));
        assert_eq!(value(&f, resets), Some(Value::Int(5)));
        // A counter that was absent appears in a longer list.
        let more: Counters = vec![
            ("Tcp", "EstabResets", 5),
            ("Tcp", "CurrEstab", 6),
            ("Tcp", "InSegs", 9),
        ];
        let f = emit(&more, &Counters::new(), 4096, &mut places);
        assert_eq!(
            value(&f, "sojourn_netstat_tcp_in_segs_total"),
            Some(Value::Int(9))
        );
        // And goes again.
        let f = emit(&swapped, &Counters::new(), 4096, &mut places);
        assert_eq!(value(&f, "sojourn_netstat_tcp_in_segs_total"), None);
    }

    #[test]
    fn snmp6_names_split_after_the_digit() {
        let mut c = Counters::new();
        parse_snmp6(
            "Udp6InErrors                    \t7\nIcmp6OutMsgs 3\n",
            &mut c,
        )
        .unwrap();
        assert_eq!(lookup(&c, "Udp6", "InErrors"), Some(7));
        assert_eq!(lookup(&c, "Icmp6", "OutMsgs"), Some(3));
    }

    #[test]
    fn sockstat_mem_in_bytes() {
        let mut s = Counters::new();
        sockstat_pairs(
            include_str!("../../tests/fixtures/proc/net/sockstat"),
            &mut s,
        )
        .unwrap();
        let f = emit(&Counters::new(), &s, 4096, &mut Places::default());
        let mem = f
            .iter()
            .find(|f| f.desc.exposed_name() == "sojourn_sockstat_tcp_mem_bytes")
            .unwrap();
        assert_eq!(mem.samples[0].value, Value::Int(4096));
        let frag = f
            .iter()
            .find(|f| f.desc.exposed_name() == "sojourn_sockstat_frag_mem_bytes")
            .unwrap();
        assert_eq!(frag.samples[0].value, Value::Int(0));
    }

    #[test]
    fn rejects_mismatched_pairs() {
        let mut c = Counters::new();
        assert!(parse_snmp_pairs("Tcp: A B\nTcp: 1\n", &mut c).is_err());
        assert!(parse_snmp_pairs("Tcp: A B\nUdp: 1 2\n", &mut c).is_err());
        assert!(parse_snmp_pairs("Tcp: A B\n", &mut c).is_err());
        assert!(parse_snmp_pairs("Tcp: A\nTcp: x\n", &mut c).is_err());
        assert!(sockstat_pairs("TCP: inuse\n", &mut Counters::new()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let mut c = Counters::new();
            let _ = parse_snmp_pairs(&s, &mut c);
            let _ = parse_snmp6(&s, &mut c);
            let _ = sockstat_pairs(&s, &mut Counters::new());
        }
    }
}
