use super::*;
use crate::inet_diag::TcpInfo;

use crate::inet_diag::{AF_INET, TCP_LISTEN};

fn conn(port: u16, rq: u32, wq: u32, rtt_us: u32) -> Socket {
    Socket {
        family: AF_INET,
        state: TCP_ESTABLISHED,
        local: "127.0.0.1".parse().unwrap(),
        local_port: port,
        remote: "127.0.0.1".parse().unwrap(),
        remote_port: 40000,
        rqueue: rq,
        wqueue: wq,
        inode: 1,
        interface: 0,
        cookie: 0,
        tcp_info: Some(TcpInfo {
            rtt_us,
            rttvar_us: 0,
            unacked: 1,
            total_retrans: 2,
        }),
    }
}

fn listeners(ports: &[(&str, u16)]) -> Listeners {
    let mut l = Listeners::default();
    for (ip, port) in ports {
        let mut s = conn(*port, 0, 0, 0);
        s.state = TCP_LISTEN;
        s.local = ip.parse().unwrap();
        l.add(&s);
    }
    l
}

#[test]
fn groups_by_listening_port_and_keeps_the_busiest() {
    let mut other_address = conn(8080, 777, 777, 1);
    other_address.local = "127.9.9.9".parse().unwrap(); // outbound, same port number
    let sockets = [
        conn(80, 100, 0, 50),
        conn(80, 300, 10, 150),
        conn(443, 0, 0, 2000),
        conn(8080, 5000, 0, 30),
        conn(9090, 0, 0, 30),
        conn(51234, 999, 999, 1), // outbound: local port is not listening
        other_address,
    ];
    let l = listeners(&[
        ("0.0.0.0", 80),
        ("::", 443),
        ("127.0.0.1", 8080),
        ("0.0.0.0", 9090),
    ]);
    assert_eq!(l.ports(), [80, 443, 8080, 9090]);
    let ports = aggregate(&sockets, &l, 2);
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[0].0, Some(80));
    assert_eq!(ports[1].0, Some(8080));
    assert_eq!(
        ports[1].1.connections, 1,
        "the outbound socket on 127.9.9.9 is not the service's"
    );
    let p80 = &ports[0].1;
    assert_eq!(
        (
            p80.connections,
            p80.recv_queue_bytes,
            p80.recv_queue_max_bytes
        ),
        (2, 400, 300)
    );
    assert_eq!(
        (
            p80.send_queue_bytes,
            p80.unacked_segments,
            p80.retransmitted_segments
        ),
        (10, 2, 4)
    );
    assert_eq!(p80.rtt.count, 2);
    let other = &ports[2];
    assert_eq!(other.0, None);
    assert_eq!(other.1.connections, 2, "443 and 9090 summed");
    assert_eq!(other.1.rtt.count, 2);
}

#[test]
fn two_shares_merge_into_one_count_and_split_at_the_median() {
    let l = listeners(&[("0.0.0.0", 80)]);
    let (mut a, mut b) = (Aggregator::new(&l), Aggregator::new(&l));
    for (i, remote) in [33_000u16, 34_000, 50_000, 60_000, 61_000]
        .iter()
        .enumerate()
    {
        let mut s = conn(80, 1, 0, 1000);
        s.remote_port = *remote;
        if i % 2 == 0 { a.add(&s) } else { b.add(&s) }
    }
    a.merge(b);
    assert_eq!(a.connections(), 5);
    // Two of five are below 49 152, the third falls in the bin of 50 000.
    assert_eq!(a.remote_port_median(), 50_176);
    let stats = a.finish(8);
    assert_eq!(
        (stats[0].1.connections, stats[0].1.recv_queue_bytes),
        (5, 5)
    );
}

#[test]
fn parallel_dumps_count_what_one_dump_counts() {
    let conns = crate::inet_diag::loopback_connections(8);
    let (port, remote) = (conns.port, &conns.remote_ports);
    let mut cfg = crate::cli::parse(["sojourn"]).unwrap().collect;
    // A whole CPU's budget: every collect dumps.
    cfg.tcp_ports.cpu_budget = 1.0;
    let c = TcpPortsCollector::new(&cfg);
    let connections = || {
        let text = crate::metrics::encode(c.collect(&cfg).unwrap(), crate::metrics::Format::Text);
        let series = format!("sojourn_tcp_port_connections{{port=\"{port}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
    };
    assert_eq!(connections(), Some(8.0));
    assert_eq!(
        c.state.lock().unwrap().as_ref().unwrap().split,
        None,
        "8 connections: one dump"
    );
    c.state.lock().unwrap().as_mut().unwrap().split = Some(remote[4]);
    assert_eq!(connections(), Some(8.0), "two halves, none lost or doubled");
    if cpus() > 1 {
        assert!(c.state.lock().unwrap().as_ref().unwrap().helper.is_some());
    }
}

#[test]
fn namespaces_ports_past_the_cap_are_one_sum() {
    let id = |n: &str| {
        vec![
            label("netns", n.to_string()),
            label("pod_uid", format!("uid{n}")),
        ]
    };
    let stats = |queued: u32, conns: usize| {
        let sockets: Vec<Socket> = (0..conns).map(|_| conn(80, queued, 0, 100)).collect();
        aggregate(&sockets, &listeners(&[("0.0.0.0", 80)]), 1)
            .remove(0)
            .1
    };
    let all = vec![
        (id("1"), Some(80), stats(0, 1)),
        (id("2"), Some(80), stats(5000, 1)),
        (id("3"), Some(8080), stats(0, 3)),
    ];
    let ranked = rank_namespace_ports(all, 2);
    assert_eq!(ranked.len(), 3);
    // Most queued bytes first, then most connections; the rest summed.
    assert_eq!(ranked[0].0, id("2"));
    assert_eq!(ranked[1].0, id("3"));
    assert_eq!(ranked[2].0, [label("netns", "other"), label("pod_uid", "")]);
    assert_eq!((ranked[2].1, ranked[2].2.connections), (None, 1));
    let text = crate::metrics::encode(emit(&[], 0, &ranked), crate::metrics::Format::Text);
    assert!(
        text.contains("sojourn_tcp_port_connections{port=\"8080\",netns=\"3\",pod_uid=\"uid3\"} 3"),
        "{text}"
    );
    assert!(
        text.contains(
            "sojourn_tcp_port_connections{port=\"other\",netns=\"other\",pod_uid=\"\"} 1"
        )
    );
    assert_eq!(rank_namespace_ports(Vec::new(), 2).len(), 0);
    // A namespace's ports are all kept before the ranking: no bound.
    let all = aggregate(
        &[conn(80, 0, 0, 1)],
        &listeners(&[("0.0.0.0", 80)]),
        usize::MAX,
    );
    assert_eq!(all.len(), 1);
}

#[test]
fn emits_other_and_rtt_histogram() {
    let ports = aggregate(&[conn(80, 1, 2, 250)], &listeners(&[("0.0.0.0", 80)]), 0);
    let text = crate::metrics::encode(emit(&ports, 1, &[]), crate::metrics::Format::Text);
    assert!(
        text.contains("sojourn_tcp_port_connections{port=\"other\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sojourn_tcp_port_rtt_seconds_bucket{port=\"other\",le=\"0.00025\"} 1"),
        "{text}"
    );
    assert!(text.contains("sojourn_tcp_port_listening_ports 1"));
}
