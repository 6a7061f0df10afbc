//! Socket dumps over NETLINK_SOCK_DIAG (`inet_diag`), the interface `ss`
//! uses: the kernel walks only the sockets asked for (listening ones: a
//! short list) and hands back binary records, where /proc/net/tcp walks
//! every hash slot and formats text (1.5 ms here with three sockets, and
//! never finishing with a million).
//!
//! Message layouts are from include/uapi/linux/inet_diag.h and
//! netlink.h. [`parse_datagram`] is pure and tested on captured bytes;
//! [`Dumper`] does the socket I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use crate::error::ParseError;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// `SOCK_DIAG_BY_FAMILY`, the request type of inet_diag_req_v2.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid (48),
/// expires, rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;
/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;

/// TCP states as the kernel numbers them (include/net/tcp_states.h).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_LISTEN: u8 = 10;

/// The parts of `struct tcp_info` sojourn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Smoothed round-trip time, µs (`tcpi_rtt`).
    pub rtt_us: u32,
    /// Round-trip time variation, µs (`tcpi_rttvar`).
    pub rttvar_us: u32,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Retransmitted segments over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
}

/// One socket record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socket {
    pub family: u8,
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// Listening: connections waiting in the accept queue. Otherwise: bytes
    /// received and not yet read by the application.
    pub rqueue: u32,
    /// Listening: the accept-queue limit (backlog). Otherwise: bytes in the
    /// send queue, not yet acknowledged.
    pub wqueue: u32,
    pub inode: u32,
    /// The interface the socket is bound to (0: any).
    pub interface: u32,
    /// The kernel's identity of the socket (`idiag_cookie`), unique while it lives.
    pub cookie: u64,
    pub tcp_info: Option<TcpInfo>,
}

/// `TCPDIAG_GETSOCK`: the original inet_diag request. Unlike
/// `SOCK_DIAG_BY_FAMILY` it dumps IPv4 and IPv6 sockets together (the kernel
/// sets the family to AF_UNSPEC), so the established-socket hash table,
/// whose every bucket a dump visits, is walked once instead of twice.
const TCPDIAG_GETSOCK: u16 = 18;

/// A dump request for TCP sockets of both families in `states` (a bit per
/// state), with `tcp_info` attached when `with_info` (`struct inet_diag_req`).
pub fn request_both_families(states: u32, with_info: bool, seq: u32) -> [u8; NLMSG_HDR_LEN + 60] {
    const LEN: usize = NLMSG_HDR_LEN + 60;
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // inet_diag_req: family (ignored), src_len, dst_len, ext, sockid (48), states, dbs.
    b[19] = if with_info {
        1 << (INET_DIAG_INFO - 1)
    } else {
        0
    };
    b[68..72].copy_from_slice(&states.to_ne_bytes());
    b
}

/// `INET_DIAG_REQ_BYTECODE`: a filter program the kernel runs on each socket
/// before building its record.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `INET_DIAG_BC_S_EQ`: source (local) port equals the operand.
const INET_DIAG_BC_S_EQ: u8 = 11;
/// Longest local-port filter sent; with more ports the dump is unfiltered.
pub const MAX_FILTER_PORTS: usize = 256;

/// `INET_DIAG_BC_JMP`: jump by the `no` offset.
const INET_DIAG_BC_JMP: u8 = 1;

/// A filter program accepting sockets whose local port is one of `ports`,
/// laid out as `ss` compiles `sport = a or sport = b ...`: each test is
/// `S_EQ` (yes: fall through, no: skip the next 12 bytes) plus its operand;
/// between tests a `JMP` to the end accepts what matched. Running off the
/// end exactly accepts, past it rejects; the kernel's audit follows the
/// fall-through chain, so every op must be on it (net/ipv4/inet_diag.c).
pub fn local_port_filter(ports: &[u16]) -> Vec<u8> {
    let len = ports.len() * 8 + ports.len().saturating_sub(1) * 4;
    let mut b = Vec::with_capacity(len);
    for (i, port) in ports.iter().enumerate() {
        b.extend_from_slice(&[INET_DIAG_BC_S_EQ, 8]);
        b.extend_from_slice(&12u16.to_ne_bytes());
        // The operand: an op whose `no` field holds the port.
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&port.to_ne_bytes());
        if i + 1 < ports.len() {
            let to_end = len - b.len();
            b.extend_from_slice(&[INET_DIAG_BC_JMP, 4]);
            b.extend_from_slice(&(to_end as u16).to_ne_bytes());
        }
    }
    b
}

/// `INET_DIAG_BC_D_GE` / `_D_LE`: remote port ≥ / ≤ the operand.
const INET_DIAG_BC_D_GE: u8 = 4;
const INET_DIAG_BC_D_LE: u8 = 5;

/// A share of the remote-port space, so that several dumps can each fill
/// the records of part of the sockets in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemotePorts {
    All,
    Below(u16),
    AtLeast(u16),
}

/// `filter` preceded by a remote-port test that rejects the sockets outside
/// `range` (its `no` jumps past the end of the whole program).
pub fn and_remote_ports(range: RemotePorts, filter: Vec<u8>) -> Vec<u8> {
    let (code, port) = match range {
        RemotePorts::All => return filter,
        // Below(0) keeps remote port 0 only, which no connection has.
        RemotePorts::Below(p) => (INET_DIAG_BC_D_LE, p.saturating_sub(1)),
        RemotePorts::AtLeast(p) => (INET_DIAG_BC_D_GE, p),
    };
    let mut b = Vec::with_capacity(8 + filter.len());
    b.extend_from_slice(&[code, 8]);
    b.extend_from_slice(&((8 + filter.len() + 4) as u16).to_ne_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&port.to_ne_bytes());
    b.extend_from_slice(&filter);
    b
}

/// [`request_both_families`] that returns only sockets whose local port is
/// in `ports` and whose remote port is in `remote`: the kernel skips the
/// others before filling their records.
pub fn request_both_families_for_ports(
    states: u32,
    with_info: bool,
    seq: u32,
    ports: &[u16],
    remote: RemotePorts,
) -> Vec<u8> {
    let bc = and_remote_ports(remote, local_port_filter(ports));
    with_bytecode(&request_both_families(states, with_info, seq), &bc)
}

/// `request` with the filter program `bc` attached.
fn with_bytecode(request: &[u8], bc: &[u8]) -> Vec<u8> {
    let mut b = request.to_vec();
    if bc.is_empty() {
        return b;
    }
    b.extend_from_slice(&((4 + bc.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    b.extend_from_slice(bc);
    let total = b.len() as u32;
    b[0..4].copy_from_slice(&total.to_ne_bytes());
    b
}

/// A dump request for TCP sockets of `family` in `states` (a bit per state),
/// with `tcp_info` attached when `with_info`.
pub fn request(family: u8, states: u32, with_info: bool, seq: u32) -> [u8; NLMSG_HDR_LEN + 56] {
    request_for(IPPROTO_TCP, family, states, with_info, seq)
}

/// A dump request for every UDP socket of `family`, bound or connected.
/// The kernel keeps both families in one hash table and visits its every
/// slot once per dump, resuming where the last batch stopped; reading
/// /proc/net/udp{,6} visits it from the first slot again at each read(2),
/// the last one included (which finds the end): four walks a scrape,
/// where these two requests make two.
pub fn request_udp(family: u8, seq: u32) -> [u8; NLMSG_HDR_LEN + 56] {
    request_for(IPPROTO_UDP, family, u32::MAX, false, seq)
}

fn request_for(
    protocol: u8,
    family: u8,
    states: u32,
    with_info: bool,
    seq: u32,
) -> [u8; NLMSG_HDR_LEN + 56] {
    const LEN: usize = NLMSG_HDR_LEN + 56;
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states, then a zero sockid.
    b[16] = family;
    b[17] = protocol;
    b[18] = if with_info {
        1 << (INET_DIAG_INFO - 1)
    } else {
        0
    };
    b[20..24].copy_from_slice(&states.to_ne_bytes());
    b
}

/// A request for one socket, found by its local address, port, interface
/// and cookie (`inet_diag_req_v2` without NLM_F_DUMP). The kernel looks it
/// up in its hash tables directly, where a dump of listeners visits every
/// slot of the listening hash (16 384 here; more on hosts with more memory).
pub fn request_exact(socket: &Socket, seq: u32) -> [u8; NLMSG_HDR_LEN + 56] {
    const LEN: usize = NLMSG_HDR_LEN + 56;
    let mut b = [0u8; LEN];
    b[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b[16] = socket.family;
    b[17] = IPPROTO_TCP;
    b[20..24].copy_from_slice(&(1u32 << socket.state).to_ne_bytes());
    // sockid at 24: sport, dport (big-endian), src[16], dst[16], if, cookie[2].
    b[24..26].copy_from_slice(&socket.local_port.to_be_bytes());
    match socket.local {
        IpAddr::V4(a) => b[28..32].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b[28..44].copy_from_slice(&a.octets()),
    }
    if socket.state != TCP_LISTEN {
        b[26..28].copy_from_slice(&socket.remote_port.to_be_bytes());
        match socket.remote {
            IpAddr::V4(a) => b[44..48].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b[44..60].copy_from_slice(&a.octets()),
        }
    }
    b[60..64].copy_from_slice(&socket.interface.to_ne_bytes());
    b[64..68].copy_from_slice(&(socket.cookie as u32).to_ne_bytes());
    b[68..72].copy_from_slice(&((socket.cookie >> 32) as u32).to_ne_bytes());
    b
}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr(family: u8, b: &[u8]) -> IpAddr {
    if family == AF_INET6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Parses `struct inet_diag_msg` and its attributes (`payload` starts after
/// the netlink header).
pub fn parse_inet_diag_msg(payload: &[u8]) -> Result<Socket, ParseError> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(ParseError(format!(
            "inet_diag_msg of {} bytes, 72 expected",
            payload.len()
        )));
    }
    let family = payload[0];
    if family != AF_INET && family != AF_INET6 {
        return Err(ParseError(format!("address family {family} is not inet")));
    }
    // sockid: sport and dport are big-endian; then src[16], dst[16], if, cookie.
    let id = &payload[4..52];
    let mut socket = Socket {
        family,
        state: payload[1],
        local_port: u16::from_be_bytes([id[0], id[1]]),
        remote_port: u16::from_be_bytes([id[2], id[3]]),
        local: addr(family, &id[4..20]),
        remote: addr(family, &id[20..36]),
        rqueue: u32_ne(payload, 56),
        wqueue: u32_ne(payload, 60),
        inode: u32_ne(payload, 68),
        interface: u32_ne(id, 36),
        cookie: u64::from(u32_ne(id, 40)) | (u64::from(u32_ne(id, 44)) << 32),
        tcp_info: None,
    };
    // Attributes: rtattr { u16 len, u16 type } + data, each 4-byte aligned.
    let mut at = INET_DIAG_MSG_LEN;
    while at + 4 <= payload.len() {
        let len = u16_ne(payload, at) as usize;
        let kind = u16_ne(payload, at + 2);
        if len < 4 || at + len > payload.len() {
            return Err(ParseError(format!(
                "attribute of length {len} overruns the message"
            )));
        }
        if kind == INET_DIAG_INFO {
            let info = &payload[at + 4..at + len];
            // Older kernels send a shorter tcp_info; these fields are in every version since 2.6.
            if info.len() >= 104 {
                socket.tcp_info = Some(TcpInfo {
                    unacked: u32_ne(info, 24),
                    rtt_us: u32_ne(info, 68),
                    rttvar_us: u32_ne(info, 72),
                    total_retrans: u32_ne(info, 100),
                });
            }
        }
        at += (len + 3) & !3;
    }
    Ok(socket)
}

/// The netlink messages of one datagram: `(type, payload)` each, or an
/// error for a length that overruns the datagram.
fn messages(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ParseError>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + NLMSG_HDR_LEN > buf.len() {
            return None;
        }
        let len = u32_ne(buf, at) as usize;
        let kind = u16_ne(buf, at + 4);
        if len < NLMSG_HDR_LEN || at + len > buf.len() {
            at = buf.len();
            return Some(Err(ParseError(format!(
                "netlink message of length {len} overruns the datagram"
            ))));
        }
        let payload = &buf[at + NLMSG_HDR_LEN..at + len];
        at += (len + 3) & !3;
        Some(Ok((kind, payload)))
    })
}

/// Parses one datagram of a dump reply, calling `each` per socket. Returns
/// true once the dump's NLMSG_DONE was seen.
pub fn parse_datagram(buf: &[u8], mut each: impl FnMut(Socket)) -> Result<bool, ParseError> {
    for message in messages(buf) {
        let (kind, payload) = message?;
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = if payload.len() >= 4 {
                    -(u32_ne(payload, 0) as i32)
                } else {
                    0
                };
                return Err(ParseError(format!(
                    "kernel answered the dump with error {}",
                    std::io::Error::from_raw_os_error(errno)
                )));
            }
            SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => each(parse_inet_diag_msg(payload)?),
            _ => {}
        }
    }
    Ok(false)
}

/// Parses one datagram of answers to exact requests, calling `each` per
/// socket found. Returns how many requests it answered and how many of
/// those were errors (ENOENT: the socket is gone, or is another of a
/// SO_REUSEPORT group than the lookup selects).
pub fn parse_exact_datagram(
    buf: &[u8],
    mut each: impl FnMut(Socket),
) -> Result<(usize, usize), ParseError> {
    let (mut answers, mut errors) = (0, 0);
    for message in messages(buf) {
        match message? {
            (NLMSG_ERROR, _) => {
                answers += 1;
                errors += 1;
            }
            (SOCK_DIAG_BY_FAMILY, payload) => {
                answers += 1;
                each(parse_inet_diag_msg(payload)?);
            }
            _ => {}
        }
    }
    Ok((answers, errors))
}

/// A NETLINK_SOCK_DIAG socket and a receive buffer, kept for repeated dumps.
pub struct Dumper {
    fd: OwnedFd,
    buf: Vec<u8>,
    request: Vec<u8>,
    seq: u32,
}

impl Dumper {
    pub fn new() -> std::io::Result<Self> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, netlink, socket_with};
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        Ok(Dumper {
            fd,
            // Large enough for a kernel dump batch (it fills up to ~32 KiB).
            buf: vec![0; 64 * 1024],
            request: Vec::new(),
            seq: 0,
        })
    }

    /// Dumps TCP sockets of both families in `states`, calling `each` per socket.
    pub fn dump_all(
        &mut self,
        states: u32,
        with_info: bool,
        each: impl FnMut(Socket),
    ) -> Result<(), crate::error::CollectError> {
        self.seq = self.seq.wrapping_add(1);
        let req = request_both_families(states, with_info, self.seq);
        self.exchange(&req, each)
    }

    /// [`Dumper::dump_all`] limited to sockets whose local port is in
    /// `ports` (every port when there are more than [`MAX_FILTER_PORTS`])
    /// and whose remote port is in `remote`.
    pub fn dump_all_for_ports(
        &mut self,
        states: u32,
        with_info: bool,
        ports: &[u16],
        remote: RemotePorts,
        each: impl FnMut(Socket),
    ) -> Result<(), crate::error::CollectError> {
        if ports.is_empty() {
            return Ok(());
        }
        self.seq = self.seq.wrapping_add(1);
        let req = if ports.len() > MAX_FILTER_PORTS {
            with_bytecode(
                &request_both_families(states, with_info, self.seq),
                &and_remote_ports(remote, Vec::new()),
            )
        } else {
            request_both_families_for_ports(states, with_info, self.seq, ports, remote)
        };
        self.exchange(&req, each)
    }

    /// Looks up each of `sockets` again (one request each, sent together),
    /// calling `each` with its current record. Returns false when any is
    /// not found: the caller dumps instead.
    pub fn lookup(
        &mut self,
        sockets: &[Socket],
        mut each: impl FnMut(Socket),
    ) -> Result<bool, crate::error::CollectError> {
        use crate::error::CollectError;
        use rustix::io::Errno;
        use rustix::net::netlink::SocketAddrNetlink;
        use rustix::net::{RecvFlags, SendFlags, recv, sendto};
        if sockets.is_empty() {
            return Ok(true);
        }
        self.request.clear();
        for s in sockets {
            self.seq = self.seq.wrapping_add(1);
            self.request.extend_from_slice(&request_exact(s, self.seq));
        }
        sendto(
            &self.fd,
            &self.request,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| CollectError::Io(format!("inet_diag request: {e}")))?;
        // The kernel answers within sendto, so every reply is already queued:
        // reading without blocking cannot hang the sampler on a lost one.
        let (mut answers, mut errors) = (0, 0);
        while answers < sockets.len() {
            let n = match recv(&self.fd, &mut self.buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => n,
                Err(Errno::AGAIN) => break,
                Err(e) => return Err(CollectError::Io(format!("inet_diag reply: {e}"))),
            };
            let (a, e) = match parse_exact_datagram(&self.buf[..n], &mut each) {
                Ok(counts) => counts,
                Err(e) => {
                    // Left queued, the other answers would be read as the next dump's.
                    while recv(&self.fd, &mut self.buf[..], RecvFlags::DONTWAIT).is_ok() {}
                    return Err(CollectError::Parse(format!("inet_diag: {e}")));
                }
            };
            answers += a;
            errors += e;
        }
        Ok(answers == sockets.len() && errors == 0)
    }

    /// Dumps TCP sockets of `family` in `states`, calling `each` per socket.
    pub fn dump(
        &mut self,
        family: u8,
        states: u32,
        with_info: bool,
        each: impl FnMut(Socket),
    ) -> Result<(), crate::error::CollectError> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(family, states, with_info, self.seq);
        self.exchange(&req, each)
    }

    /// Dumps the UDP sockets of `family`, calling `each` per socket (its
    /// `rqueue` and `wqueue`: bytes received and not read, bytes sent and
    /// not yet out).
    pub fn dump_udp(
        &mut self,
        family: u8,
        each: impl FnMut(Socket),
    ) -> Result<(), crate::error::CollectError> {
        self.seq = self.seq.wrapping_add(1);
        let req = request_udp(family, self.seq);
        self.exchange(&req, each)
    }

    fn exchange(
        &mut self,
        req: &[u8],
        mut each: impl FnMut(Socket),
    ) -> Result<(), crate::error::CollectError> {
        use crate::error::CollectError;
        use rustix::net::netlink::SocketAddrNetlink;
        use rustix::net::{RecvFlags, SendFlags, recv, sendto};
        sendto(
            &self.fd,
            req,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| CollectError::Io(format!("inet_diag request: {e}")))?;
        loop {
            let (n, _) = recv(&self.fd, &mut self.buf[..], RecvFlags::empty())
                .map_err(|e| CollectError::Io(format!("inet_diag reply: {e}")))?;
            if n == 0 {
                return Err(CollectError::Io("inet_diag reply ended early".into()));
            }
            let done = parse_datagram(&self.buf[..n], &mut each)
                .map_err(|e| CollectError::Parse(format!("inet_diag: {e}")))?;
            if done {
                return Ok(());
            }
        }
    }
}

/// `n` established loopback connections to one listener, for tests: the
/// listening port and the clients' ports
/// (the remote ports the server side sees), sorted.
#[cfg(test)]
pub(crate) struct LoopbackConnections {
    pub port: u16,
    pub remote_ports: Vec<u16>,
    /// Held open for the test's length.
    _sockets: (
        std::net::TcpListener,
        Vec<std::net::TcpStream>,
        Vec<std::net::TcpStream>,
    ),
}

#[cfg(test)]
pub(crate) fn loopback_connections(n: usize) -> LoopbackConnections {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let clients: Vec<_> = (0..n)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let servers: Vec<_> = (0..n).map(|_| l.accept().unwrap().0).collect();
    let mut remote_ports: Vec<u16> = clients
        .iter()
        .map(|c| c.local_addr().unwrap().port())
        .collect();
    remote_ports.sort_unstable();
    LoopbackConnections {
        port,
        remote_ports,
        _sockets: (l, clients, servers),
    }
}

#[cfg(test)]
mod tests;
