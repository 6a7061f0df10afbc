//! A queue's identity as its `queue` label writes it: the contract between
//! the sources that name queues and `sojourn check`, which reads the names
//! back to tell which resource stands. One type builds and parses them, so
//! neither side can drift from the other.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueName {
    /// The host's CPU run queue: `cpu`.
    Cpu,
    /// One CPU's run queue (schedstat): `cpu<N>`.
    CpuOne(u32),
    /// The share of time some task stalled on a resource (PSI):
    /// `cpu:psi`, `memory:psi`, `io:psi`.
    Psi(String),
    /// A disk's request delay: `disk:<device>`.
    Disk(String),
    /// A disk's requests in flight: `disk_inflight:<device>`.
    DiskInflight(String),
    /// A cgroup's CFS quota, as a queue of runnable time: `cgroup_cpu:<path>`.
    CgroupCpu(String),
    /// A listener's accept queue: `tcp_accept:<addr>:<port>` (IPv6 in
    /// brackets).
    TcpAccept(String),
    /// A proxied service's request queue: `proxy:<service>`.
    Proxy(String),
    /// A name of none of these kinds (a future source, a test's).
    Other(String),
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueName::Cpu => f.write_str("cpu"),
            QueueName::CpuOne(n) => write!(f, "cpu{n}"),
            QueueName::Psi(r) => write!(f, "{r}:psi"),
            QueueName::Disk(d) => write!(f, "disk:{d}"),
            QueueName::DiskInflight(d) => write!(f, "disk_inflight:{d}"),
            QueueName::CgroupCpu(c) => write!(f, "cgroup_cpu:{c}"),
            QueueName::TcpAccept(a) => write!(f, "tcp_accept:{a}"),
            QueueName::Proxy(s) => write!(f, "proxy:{s}"),
            QueueName::Other(o) => f.write_str(o),
        }
    }
}

impl FromStr for QueueName {
    type Err = std::convert::Infallible;

    /// Every string is some queue's name: what is of no known kind is
    /// [`QueueName::Other`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "cpu" {
            return Ok(QueueName::Cpu);
        }
        if let Some(n) = s.strip_prefix("cpu")
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = n.parse()
        {
            return Ok(QueueName::CpuOne(n));
        }
        if let Some(r) = s.strip_suffix(":psi")
            && !r.contains(':')
        {
            return Ok(QueueName::Psi(r.to_string()));
        }
        let Some((kind, rest)) = s.split_once(':') else {
            return Ok(QueueName::Other(s.to_string()));
        };
        let rest = rest.to_string();
        Ok(match kind {
            "disk" => QueueName::Disk(rest),
            "disk_inflight" => QueueName::DiskInflight(rest),
            "cgroup_cpu" => QueueName::CgroupCpu(rest),
            "tcp_accept" => QueueName::TcpAccept(rest),
            "proxy" => QueueName::Proxy(rest),
            _ => QueueName::Other(s.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_it_was_written() {
        for q in [
            QueueName::Cpu,
            QueueName::CpuOne(17),
            QueueName::Psi("memory".into()),
            QueueName::Disk("nvme0n1".into()),
            QueueName::DiskInflight("loop0".into()),
            QueueName::CgroupCpu("/kubepods/burstable/pod1/c1".into()),
            QueueName::TcpAccept("[::]:8080".into()),
            QueueName::TcpAccept("127.0.0.1:80".into()),
            QueueName::Proxy("shop".into()),
            QueueName::Other("fifo".into()),
        ] {
            let text = q.to_string();
            assert_eq!(text.parse::<QueueName>().unwrap(), q, "{text}");
        }
        assert_eq!(
            "cpux".parse::<QueueName>().unwrap(),
            QueueName::Other("cpux".into())
        );
        assert_eq!(
            "cpu:psi".parse::<QueueName>().unwrap(),
            QueueName::Psi("cpu".into())
        );
    }

    proptest::proptest! {
        #[test]
        fn any_name_reads_back_to_itself(s in "\\PC*") {
            let q: QueueName = s.parse().unwrap();
            proptest::prop_assert_eq!(q.to_string(), s);
        }
    }
}
