//! Times NETLINK_SOCK_DIAG dumps on this host, for the socket benchmark:
//! `cargo run --release --example dump_cost -- 200`.
use sojourn::inet_diag::{AF_INET, AF_INET6, Dumper, RemotePorts, TCP_ESTABLISHED, TCP_LISTEN};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut d = Dumper::new().expect("netlink socket");
    for (name, family, states, info) in [
        ("listen v4", AF_INET, 1 << TCP_LISTEN, false),
        ("listen v6", AF_INET6, 1 << TCP_LISTEN, false),
        ("established v4 +info", AF_INET, 1 << TCP_ESTABLISHED, true),
        ("established v6 +info", AF_INET6, 1 << TCP_ESTABLISHED, true),
    ] {
        let mut count = 0u64;
        let start = std::time::Instant::now();
        for _ in 0..n {
            d.dump(family, states, info, |_| count += 1).expect("dump");
        }
        let per = start.elapsed().as_secs_f64() / f64::from(n);
        println!(
            "{name:22} {:8.1} us per dump, {} sockets",
            per * 1e6,
            count / u64::from(n)
        );
    }
    for (name, states, info) in [
        ("listen both", 1 << TCP_LISTEN, false),
        ("established both +info", 1 << TCP_ESTABLISHED, true),
        ("established both", 1 << TCP_ESTABLISHED, false),
    ] {
        let mut count = 0u64;
        let start = std::time::Instant::now();
        for _ in 0..n {
            d.dump_all(states, info, |_| count += 1).expect("dump");
        }
        let per = start.elapsed().as_secs_f64() / f64::from(n);
        println!(
            "{name:22} {:8.1} us per dump, {} sockets",
            per * 1e6,
            count / u64::from(n)
        );
    }
    let mut ports = Vec::new();
    d.dump_all(1 << TCP_LISTEN, false, |s| ports.push(s.local_port))
        .expect("dump");
    ports.sort_unstable();
    ports.dedup();
    for (name, info) in [
        ("est. listening ports +info", true),
        ("est. listening ports", false),
    ] {
        let mut count = 0u64;
        let start = std::time::Instant::now();
        for _ in 0..n {
            d.dump_all_for_ports(1 << TCP_ESTABLISHED, info, &ports, RemotePorts::All, |_| {
                count += 1
            })
            .expect("dump");
        }
        let per = start.elapsed().as_secs_f64() / f64::from(n);
        println!(
            "{name:22} {:8.1} us per dump, {} sockets",
            per * 1e6,
            count / u64::from(n)
        );
    }
}
