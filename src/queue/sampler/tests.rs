use super::*;
use crate::inet_diag::AF_INET;

fn listener(port: u16, cookie: u64) -> Socket {
    Socket {
        family: AF_INET,
        state: TCP_LISTEN,
        local: std::net::Ipv4Addr::LOCALHOST.into(),
        local_port: port,
        remote: std::net::Ipv4Addr::UNSPECIFIED.into(),
        remote_port: 0,
        rqueue: 0,
        wqueue: 128,
        inode: 1,
        interface: 0,
        cookie,
        tcp_info: None,
    }
}

#[test]
fn looks_up_distinct_listeners_and_dumps_reuseport_groups() {
    let distinct = [listener(80, 1), listener(443, 2)];
    assert_eq!(lookup_plan(&distinct).map(|v| v.len()), Some(2));
    assert_eq!(lookup_plan(&[]).map(|v| v.len()), Some(0));
    let group = [listener(80, 1), listener(80, 2)];
    assert!(lookup_plan(&group).is_none(), "a reuseport group is dumped");
    let many: Vec<_> = (0..=MAX_LOOKUPS as u16).map(|p| listener(p, 1)).collect();
    assert!(lookup_plan(&many).is_none());
}
