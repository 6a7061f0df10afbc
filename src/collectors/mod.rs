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
pub mod ebpf;
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
    pub tcp_ports: tcp_ports::TcpPortsConfig,
    pub udp: udp::Config,
    pub cgroup: cgroup::Config,
    pub ebpf: ebpf::EbpfConfig,
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

/// Share of one CPU a socket dump may use, whatever the scrape rate (the
/// default of `--collector.tcp_ports.cpu-budget` and
/// `--collector.udp.cpu-budget`): a TCP dump of an idle host (0.2 ms) may
/// then run every 40 ms, one of 100 000 sockets (30 ms) every 6 s, still
/// fresh for a 15 s scrape interval; a UDP dump (~25 µs, the kernel's
/// whole UDP hash) every 5 ms.
pub const DEFAULT_DUMP_CPU_BUDGET: f64 = 0.005;

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

/// The lines of a kernel file, split with a plain byte loop: its lines
/// are short (meminfo's, vmstat's: ~30 bytes), where `str::lines`'
/// searcher costs more per line than it saves. A last line without a
/// newline is a line; the empty text after a final newline is not.
pub(crate) fn short_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest.bytes().position(|b| b == b'\n');
        let (line, after) = match end {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, ""),
        };
        rest = after;
        Some(line)
    })
}

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
    fn short_lines_are_str_lines_without_carriage_returns() {
        for text in ["", "a", "a\n", "a\nb", "a\n\nb\n", "\n", "\n\n", "é:1\nü 2"] {
            let ours: Vec<&str> = short_lines(text).collect();
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn short_lines_agree_with_str_lines(text in "[a-z:\\n é]{0,40}") {
            let ours: Vec<&str> = short_lines(&text).collect();
            let std: Vec<&str> = text.lines().collect();
            proptest::prop_assert_eq!(ours, std);
        }
    }

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
