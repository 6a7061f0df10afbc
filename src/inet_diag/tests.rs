use super::*;

/// A reply datagram as the kernel builds it: one listener on
/// 127.0.0.1:8080 with 3 queued connections and backlog 128, then DONE.
fn listener_reply() -> Vec<u8> {
    let mut msg = vec![0u8; INET_DIAG_MSG_LEN];
    msg[0] = AF_INET;
    msg[1] = TCP_LISTEN;
    msg[4..6].copy_from_slice(&8080u16.to_be_bytes());
    msg[8..12].copy_from_slice(&[127, 0, 0, 1]);
    msg[56..60].copy_from_slice(&3u32.to_ne_bytes());
    msg[60..64].copy_from_slice(&128u32.to_ne_bytes());
    msg[68..72].copy_from_slice(&4242u32.to_ne_bytes());
    let mut out = Vec::new();
    out.extend_from_slice(&((NLMSG_HDR_LEN + msg.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(&msg);
    out.extend_from_slice(&(NLMSG_HDR_LEN as u32 + 4).to_ne_bytes());
    out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    out.extend_from_slice(&[0; 14]);
    out
}

#[test]
fn parses_a_listener_and_done() {
    let mut seen = Vec::new();
    let done = parse_datagram(&listener_reply(), |s| seen.push(s)).unwrap();
    assert!(done);
    assert_eq!(seen.len(), 1);
    let s = seen[0];
    assert_eq!(s.local, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(s.local_port, 8080);
    assert_eq!(
        (s.rqueue, s.wqueue, s.inode, s.state),
        (3, 128, 4242, TCP_LISTEN)
    );
}

#[test]
fn parses_tcp_info_attribute() {
    let mut msg = vec![0u8; INET_DIAG_MSG_LEN];
    msg[0] = AF_INET6;
    msg[1] = TCP_ESTABLISHED;
    msg[4..6].copy_from_slice(&443u16.to_be_bytes());
    msg[6..8].copy_from_slice(&50000u16.to_be_bytes());
    msg[23] = 1; // ::1 as the local address
    let mut info = vec![0u8; 232];
    info[24..28].copy_from_slice(&2u32.to_ne_bytes());
    info[68..72].copy_from_slice(&1500u32.to_ne_bytes());
    info[72..76].copy_from_slice(&300u32.to_ne_bytes());
    info[100..104].copy_from_slice(&7u32.to_ne_bytes());
    msg.extend_from_slice(&((4 + info.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
    msg.extend_from_slice(&info);
    let s = parse_inet_diag_msg(&msg).unwrap();
    assert_eq!(s.local, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!((s.local_port, s.remote_port), (443, 50000));
    assert_eq!(
        s.tcp_info,
        Some(TcpInfo {
            rtt_us: 1500,
            rttvar_us: 300,
            unacked: 2,
            total_retrans: 7
        })
    );
}

#[test]
fn rejects_truncated_and_error_replies() {
    let reply = listener_reply();
    assert!(
        parse_datagram(&reply[..40], |_| {}).is_err(),
        "message overruns"
    );
    let mut err = Vec::new();
    err.extend_from_slice(&20u32.to_ne_bytes());
    err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    err.extend_from_slice(&[0; 10]);
    err.extend_from_slice(&(-13i32).to_ne_bytes());
    let e = parse_datagram(&err, |_| {}).unwrap_err();
    assert!(e.0.contains("ermission"), "{e}");
    assert!(parse_inet_diag_msg(&[0; 10]).is_err());
}

#[test]
fn request_layout() {
    let r = request(AF_INET, 1 << TCP_LISTEN, false, 7);
    assert_eq!(u32_ne(&r, 0), 72);
    assert_eq!(u16_ne(&r, 4), SOCK_DIAG_BY_FAMILY);
    assert_eq!((r[16], r[17], r[18]), (AF_INET, IPPROTO_TCP, 0));
    assert_eq!(u32_ne(&r, 20), 1 << 10);
    assert_eq!(
        request(AF_INET6, 2, true, 1)[18],
        2,
        "INET_DIAG_INFO requested"
    );
}

#[test]
fn one_dump_returns_both_families() {
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let mut d = Dumper::new().unwrap();
    let mut ports = Vec::new();
    d.dump_all(1 << TCP_LISTEN, false, |s| {
        ports.push((s.family, s.local_port))
    })
    .unwrap();
    assert!(ports.contains(&(AF_INET, v4.local_addr().unwrap().port())));
    if let Some(v6) = v6 {
        assert!(ports.contains(&(AF_INET6, v6.local_addr().unwrap().port())));
    }
}

#[test]
fn a_port_filter_keeps_only_connections_on_those_ports() {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let _ca = std::net::TcpStream::connect(("127.0.0.1", pa)).unwrap();
    let _cb = std::net::TcpStream::connect(("127.0.0.1", pb)).unwrap();
    let (_sa, _) = a.accept().unwrap();
    let (_sb, _) = b.accept().unwrap();
    let mut d = Dumper::new().unwrap();
    let mut seen = Vec::new();
    // Other tests' clients on other 127.x addresses may have the same
    // local port numbers: the filter is by port, so look at our address.
    let ours = |s: &Socket| s.local == IpAddr::V4(Ipv4Addr::LOCALHOST);
    d.dump_all_for_ports(1 << TCP_ESTABLISHED, true, &[pa], RemotePorts::All, |s| {
        assert_eq!(s.local_port, pa);
        if ours(&s) {
            seen.push(s.local_port)
        }
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![pa],
        "only the server side of the connection to port {pa}"
    );
    seen.clear();
    d.dump_all_for_ports(
        1 << TCP_ESTABLISHED,
        false,
        &[9, pb, pa],
        RemotePorts::All,
        |s| {
            if ours(&s) {
                seen.push(s.local_port)
            }
        },
    )
    .unwrap();
    seen.sort();
    let mut want = vec![pa, pb];
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn remote_port_shares_split_the_connections_without_overlap() {
    let conns = super::loopback_connections(6);
    let (port, remote) = (conns.port, &conns.remote_ports);
    let split = remote[3];
    let mut d = Dumper::new().unwrap();
    let mut seen = |range| {
        let mut v = Vec::new();
        d.dump_all_for_ports(1 << TCP_ESTABLISHED, false, &[port], range, |s| {
            if s.local == IpAddr::V4(Ipv4Addr::LOCALHOST) {
                v.push(s.remote_port)
            }
        })
        .unwrap();
        v.sort_unstable();
        v
    };
    assert_eq!(seen(RemotePorts::Below(split)), remote[..3]);
    assert_eq!(seen(RemotePorts::AtLeast(split)), remote[3..]);
    assert_eq!(&seen(RemotePorts::All), remote);
    assert!(seen(RemotePorts::Below(0)).is_empty());
}

#[test]
fn filter_program_layout() {
    let bc = local_port_filter(&[80, 443]);
    assert_eq!(bc.len(), 20);
    assert_eq!(
        (bc[0], bc[1], u16_ne(&bc, 2), u16_ne(&bc, 6)),
        (INET_DIAG_BC_S_EQ, 8, 12, 80)
    );
    // A match falls through to the jump, which lands exactly at the end.
    assert_eq!((bc[8], bc[9], u16_ne(&bc, 10)), (INET_DIAG_BC_JMP, 4, 12));
    assert_eq!(
        (bc[12], bc[13], u16_ne(&bc, 14), u16_ne(&bc, 18)),
        (INET_DIAG_BC_S_EQ, 8, 12, 443)
    );
    assert_eq!(local_port_filter(&[22]).len(), 8);
}

#[test]
fn dumps_a_real_listener_on_loopback() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut d = Dumper::new().unwrap();
    let mut found = None;
    d.dump(AF_INET, 1 << TCP_LISTEN, false, |s| {
        if s.local_port == port {
            found = Some(s);
        }
    })
    .unwrap();
    let s = found.expect("our listener in the dump");
    assert_eq!(s.state, TCP_LISTEN);
    assert_eq!(s.rqueue, 0);
    assert!(s.wqueue > 0, "backlog limit");
}

#[test]
fn looks_up_real_listeners_of_both_families_by_cookie() {
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let ports: Vec<u16> = [Some(&v4), v6.as_ref()]
        .into_iter()
        .flatten()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut d = Dumper::new().unwrap();
    let mut ours = Vec::new();
    d.dump_all(1 << TCP_LISTEN, false, |s| {
        if ports.contains(&s.local_port) {
            ours.push(s)
        }
    })
    .unwrap();
    assert_eq!(ours.len(), ports.len());
    assert!(ours.iter().all(|s| s.cookie != 0));
    // Two connections wait in the IPv4 listener's accept queue.
    let _c1 = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
    let _c2 = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
    let mut again = Vec::new();
    assert!(d.lookup(&ours, |s| again.push(s)).unwrap());
    assert_eq!(again.len(), ours.len());
    let v4_of = |list: &[Socket]| *list.iter().find(|s| s.local_port == ports[0]).unwrap();
    let queued = v4_of(&again);
    assert_eq!((queued.rqueue, queued.cookie), (2, v4_of(&ours).cookie));
    // A closed listener is not found; a new one on its port is another socket.
    let addr = v4.local_addr().unwrap();
    drop(v4);
    assert!(!d.lookup(&ours, |_| {}).unwrap());
    let _reopened = std::net::TcpListener::bind(addr).expect("the port just freed");
    let mut found = 0;
    assert!(!d.lookup(&[v4_of(&ours)], |_| found += 1).unwrap());
    assert_eq!(found, 0, "the cookie tells the new listener from the old");
    // The socket still answers dumps afterwards: no stale replies left queued.
    d.dump_all(1 << TCP_LISTEN, false, |_| {}).unwrap();
}

proptest::proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = parse_exact_datagram(&bytes, |_| {});
        let _ = parse_datagram(&bytes, |_| {});
        let _ = parse_inet_diag_msg(&bytes);
    }
}

/// A UDP dump finds a bound socket with the bytes waiting in it, as
/// /proc/net/udp's rx_queue column shows them.
#[test]
fn a_udp_dump_reports_bytes_waiting() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        tx.send_to(&[7u8; 100], ("127.0.0.1", port)).unwrap();
    }
    let mut d = Dumper::new().unwrap();
    let mut found = None;
    d.dump_udp(AF_INET, |s| {
        if s.local_port == port {
            found = Some(s);
        }
    })
    .unwrap();
    let s = found.expect("the bound socket is dumped");
    assert_eq!(s.family, AF_INET);
    // Each datagram is charged with its buffer's truesize, not 100 bytes.
    assert!(s.rqueue >= 300, "{}", s.rqueue);
    let text = std::fs::read_to_string("/proc/net/udp").unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!(":{port:04X} ")))
        .unwrap();
    let rx_queue = line
        .split_whitespace()
        .nth(4)
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap();
    assert_eq!(u32::from_str_radix(rx_queue, 16).unwrap(), s.rqueue);
    assert_eq!(request_udp(AF_INET6, 9)[17], 17, "IPPROTO_UDP");
}
