//! The collector table: one module per resource, each listed once below with
//! its name and whether it runs by default.
//!
//! Each module splits *parse* (pure functions over `&str`, unit-tested on real
//! samples) from *emit* (mapping parsed values onto [`Family`] descriptors).

use crate::metrics::Family;
use crate::roots::Roots;

pub mod cgroup;
pub mod conntrack;
pub mod cpu;
pub mod disk;
pub mod edac;
pub mod filefd;
pub mod filesystem;
pub mod loadavg;
pub mod memory;
pub mod netns;
pub mod netstat;
pub mod network;
pub mod own_process;
pub mod pressure;
pub mod process;
pub mod queue;
pub mod schedstat;
pub mod tcp_ports;
pub mod textfile;
pub mod udp;

// The errors live with the kernel sources that raise them (roots,
// inet_diag, kubelet, the queue sampler), below the collectors.
pub use crate::error::{CollectError, ParseError};

/// Settings a collector may need beyond the roots, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub roots: Roots,
    pub disk: disk::Config,
    pub network: network::Config,
    pub filesystem: filesystem::Config,
    pub queue: crate::queue::QueueConfig,
    pub tcp_ports: tcp_ports::TcpPortsConfig,
    pub cgroup: cgroup::Config,
    pub process: process::Config,
    pub netns: netns::Config,
    pub textfile: textfile::Config,
}

/// A source of metric families for one resource.
/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID): what a
/// source costs, measured where it runs.
pub fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.unsigned_abs() as u32)
}

/// Whether work that started at `started` and took `cpu` of CPU time may
/// be followed by more at `now` within `budget` (a share of one CPU): the
/// socket dumps' and the namespaces' rounds' rule, whoever asks how often.
pub fn budget_allows(
    started: std::time::Instant,
    cpu: std::time::Duration,
    budget: f64,
    now: std::time::Instant,
) -> bool {
    let wait = std::time::Duration::try_from_secs_f64(cpu.as_secs_f64() / budget)
        .unwrap_or(std::time::Duration::MAX);
    now.saturating_duration_since(started) >= wait
}

pub trait Collect: Send + Sync {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError>;

    /// Parts of the collector that this machine may not permit, apart from
    /// the whole: `(part, unsupported)`, reported as
    /// `sojourn_scrape_collector_unsupported{collector="<part>"}` (e.g. the
    /// queue collector's reading of other namespaces' sockets).
    fn parts(&self) -> Vec<(&'static str, bool)> {
        Vec::new()
    }
}

/// One row of the collector table.
pub struct Entry {
    pub name: &'static str,
    pub default_enabled: bool,
    pub help: &'static str,
    /// Builds the collector once, at start-up (the queue collector starts its sampler here).
    pub build: fn(&Config) -> Box<dyn Collect>,
}

/// Every collector sojourn has. The order is the order of the output.
pub const ALL: &[Entry] = &[
    Entry {
        name: "cpu",
        default_enabled: true,
        help: "CPU time by mode, runnable and blocked tasks, context switches, forks, thermal throttling (/proc/stat, sysfs)",
        build: |_| Box::new(cpu::CpuCollector),
    },
    Entry {
        name: "schedstat",
        default_enabled: true,
        help: "Per-CPU run-queue waiting time and timeslices (/proc/schedstat)",
        build: |_| Box::new(schedstat::SchedstatCollector),
    },
    Entry {
        name: "pressure",
        default_enabled: true,
        help: "Pressure stall information for cpu, memory, io, irq (/proc/pressure)",
        build: |_| Box::new(pressure::PressureCollector),
    },
    Entry {
        name: "loadavg",
        default_enabled: true,
        help: "Load averages and runnable/total tasks (/proc/loadavg)",
        build: |_| Box::new(loadavg::LoadavgCollector),
    },
    Entry {
        name: "memory",
        default_enabled: true,
        help: "Memory use (/proc/meminfo) and reclaim, swap and OOM counters (/proc/vmstat)",
        build: |_| Box::new(memory::MemoryCollector),
    },
    Entry {
        name: "queue",
        default_enabled: true,
        help: "CoDel-style standing-queue metrics for the CPU run queue, PSI stalls and block devices, sampled between scrapes",
        build: |cfg| Box::new(queue::QueueCollector::new(cfg)),
    },
    Entry {
        name: "disk",
        default_enabled: true,
        help: "Block device I/O, busy time and queue (/proc/diskstats, sysfs ioerr_cnt)",
        build: |_| Box::new(disk::DiskCollector),
    },
    Entry {
        name: "filesystem",
        default_enabled: true,
        help: "Filesystem size, free space, inodes and read-only state (mountinfo, statvfs)",
        build: |_| Box::new(filesystem::FilesystemCollector::default()),
    },
    Entry {
        name: "network",
        default_enabled: true,
        help: "Interface traffic, errors, drops and link speed (/proc/net/dev, sysfs), softnet backlog (/proc/net/softnet_stat)",
        build: |_| Box::new(network::NetworkCollector),
    },
    Entry {
        name: "netstat",
        default_enabled: true,
        help: "TCP/UDP errors, retransmits, listen overflows (/proc/net/snmp, /proc/net/netstat), socket counts (/proc/net/sockstat)",
        build: |_| Box::new(netstat::NetstatCollector),
    },
    Entry {
        name: "tcp_ports",
        default_enabled: true,
        help: "Per listening port: established connections, receive/send queue bytes, RTT histogram, retransmits (NETLINK_SOCK_DIAG)",
        build: |cfg| Box::new(tcp_ports::TcpPortsCollector::new(cfg)),
    },
    Entry {
        name: "cgroup",
        default_enabled: true,
        help: "Per container cgroup (v1 and v2): CPU, throttling, memory, OOM events, PSI, I/O, pids; Kubernetes pod and container identity",
        build: |c| Box::new(cgroup::CgroupCollector::new(&c.cgroup)),
    },
    Entry {
        name: "process",
        default_enabled: false,
        help: "Processes selected by --collector.process.include, grouped: CPU, RSS/PSS/VSZ, threads, fds vs limit, context switches, run-queue wait, faults, I/O, Go binaries",
        build: |_| Box::<process::ProcessCollector>::default(),
    },
    Entry {
        name: "textfile",
        default_enabled: false,
        help: "Metrics other programs write to *.prom files of --collector.textfile.directory (on when it is set)",
        build: |_| Box::<textfile::TextfileCollector>::default(),
    },
    Entry {
        name: "udp",
        default_enabled: true,
        help: "Bytes queued in UDP socket buffers (/proc/net/udp, /proc/net/udp6)",
        build: |_| Box::new(udp::UdpCollector),
    },
    Entry {
        name: "netns",
        default_enabled: true,
        help: "TCP, UDP and interface counters of every other network namespace, each pod's with its uid (/proc/PID/net/{snmp,netstat,dev}, found at each --collector.process.rescan-interval)",
        build: |cfg| Box::new(netns::NetnsCollector::new(cfg)),
    },
    Entry {
        name: "filefd",
        default_enabled: true,
        help: "Allocated vs maximum file handles (/proc/sys/fs/file-nr)",
        build: |_| Box::new(filefd::FilefdCollector),
    },
    Entry {
        name: "conntrack",
        default_enabled: true,
        help: "Connection-tracking entries vs limit (/proc/sys/net/netfilter)",
        build: |_| Box::new(conntrack::ConntrackCollector),
    },
    Entry {
        name: "edac",
        default_enabled: true,
        help: "Memory controller correctable/uncorrectable errors (/sys/devices/system/edac)",
        build: |_| Box::new(edac::EdacCollector),
    },
];

/// Parses a decimal integer field, naming the field in the error.
pub(crate) fn parse_u64(field: &str, text: &str) -> Result<u64, ParseError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| ParseError(format!("{field}: {text:?} is not a non-negative integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_waits_its_cost_divided_by_the_budget() {
        let t0 = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        // 2 ms of CPU at 0.5 %: the next dump no sooner than 400 ms later.
        assert!(!budget_allows(t0, ms(2), 0.005, t0 + ms(399)));
        assert!(budget_allows(t0, ms(2), 0.005, t0 + ms(400)));
        // A whole CPU: as soon as it has run for its own CPU time.
        assert!(budget_allows(t0, ms(2), 1.0, t0 + ms(2)));
        // A clock that went nowhere, a cost beyond Duration: never early, no panic.
        assert!(!budget_allows(t0 + ms(5), ms(1), 0.5, t0));
        assert!(!budget_allows(
            t0,
            std::time::Duration::MAX,
            1e-9,
            t0 + ms(1)
        ));
    }
}
