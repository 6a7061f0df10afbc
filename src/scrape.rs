//! Runs the enabled collectors for one scrape and adds the exporter's own
//! metrics. The orchestrator, not the collectors, times each one, catches
//! its failure (panics included) and reports success 0/1, so that no
//! collector can fail a scrape.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::collectors::{self, Collect, CollectError, Config};
use crate::metrics::{Desc, Family, label};
use crate::queue::QueueConfig;
use crate::queue::collector::QueueCollector;

const SUCCESS: Desc = Desc::gauge(
    "scrape_collector_success",
    "1 when the collector read its sources in this scrape, 0 when it failed or the kernel lacks them.",
);
const DURATION: Desc = Desc::gauge(
    "scrape_collector_duration",
    "Seconds the collector took in this scrape.",
)
.seconds();
const UNSUPPORTED: Desc = Desc::gauge(
    "scrape_collector_unsupported",
    "1 when the collector has no data because this kernel or machine lacks its source (e.g. /proc/schedstat without CONFIG_SCHEDSTATS); alerts on success == 0 should exclude these.",
);
const BUILD_INFO: Desc = Desc::gauge(
    "build_info",
    "Always 1; labels give the sojourn version that is running.",
);

/// A repeated identical error is logged again at most this often.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(3600);

struct LoggedError {
    message: String,
    at: Instant,
}

/// One row of the collector table.
pub struct Entry {
    pub name: &'static str,
    pub default_enabled: bool,
    pub help: &'static str,
    /// Builds the collector once, at start-up (the queue collector starts its sampler here).
    pub build: fn(&Config, &QueueConfig) -> Box<dyn Collect>,
}

/// Every collector sojourn has. The order is the order of the output.
pub const ALL: &[Entry] = &[
    Entry {
        name: "cpu",
        default_enabled: true,
        help: "CPU time by mode, runnable and blocked tasks, context switches, forks, thermal throttling (/proc/stat, sysfs)",
        build: |_, _| Box::new(collectors::cpu::CpuCollector),
    },
    Entry {
        name: "schedstat",
        default_enabled: true,
        help: "Per-CPU run-queue waiting time and timeslices (/proc/schedstat)",
        build: |_, _| Box::new(collectors::schedstat::SchedstatCollector),
    },
    Entry {
        name: "ebpf",
        // On where permitted: without CAP_BPF/CAP_PERFMON or BTF it says
        // why once and reports itself unsupported, and every queue keeps
        // its sampled source. Loaded by a child process, so the BTF parse
        // never enters the exporter's memory (docs/benchmarks.md).
        default_enabled: true,
        help: "Run-queue wait of every task (host-wide, per CPU and per cgroup), each disk request's time queued and served, and each connection's wait for accept(), timed in the kernel by eBPF (needs CAP_BPF, CAP_PERFMON and kernel BTF, else unsupported)",
        build: |cfg, _| Box::new(collectors::ebpf::EbpfCollector::new(cfg)),
    },
    Entry {
        name: "pressure",
        default_enabled: true,
        help: "Pressure stall information for cpu, memory, io, irq (/proc/pressure)",
        build: |_, _| Box::new(collectors::pressure::PressureCollector),
    },
    Entry {
        name: "loadavg",
        default_enabled: true,
        help: "Load averages and runnable/total tasks (/proc/loadavg)",
        build: |_, _| Box::new(collectors::loadavg::LoadavgCollector),
    },
    Entry {
        name: "memory",
        default_enabled: true,
        help: "Memory use (/proc/meminfo) and reclaim, swap and OOM counters (/proc/vmstat)",
        build: |_, _| Box::<collectors::memory::MemoryCollector>::default(),
    },
    Entry {
        name: "queue",
        default_enabled: true,
        help: "CoDel-style standing-queue metrics for the CPU run queue, PSI stalls and block devices, sampled between scrapes",
        build: |cfg, queue| Box::new(QueueCollector::new(cfg, queue)),
    },
    Entry {
        name: "disk",
        default_enabled: true,
        help: "Block device I/O, busy time and queue (/proc/diskstats, sysfs ioerr_cnt)",
        build: |_, _| Box::new(collectors::disk::DiskCollector),
    },
    Entry {
        name: "filesystem",
        default_enabled: true,
        help: "Filesystem size, free space, inodes and read-only state (mountinfo, statvfs)",
        build: |_, _| Box::new(collectors::filesystem::FilesystemCollector::default()),
    },
    Entry {
        name: "network",
        default_enabled: true,
        help: "Interface traffic, errors, drops and link speed (/proc/net/dev, sysfs), softnet backlog (/proc/net/softnet_stat)",
        build: |_, _| Box::new(collectors::network::NetworkCollector),
    },
    Entry {
        name: "netstat",
        default_enabled: true,
        help: "TCP/UDP errors, retransmits, listen overflows (/proc/net/snmp, /proc/net/netstat), socket counts (/proc/net/sockstat)",
        build: |_, _| Box::<collectors::netstat::NetstatCollector>::default(),
    },
    Entry {
        name: "tcp_ports",
        default_enabled: true,
        help: "Per listening port: established connections, receive/send queue bytes, RTT histogram, retransmits (NETLINK_SOCK_DIAG)",
        build: |cfg, _| Box::new(collectors::tcp_ports::TcpPortsCollector::new(cfg)),
    },
    Entry {
        name: "cgroup",
        default_enabled: true,
        help: "Per container cgroup (v1 and v2): CPU, throttling, memory, OOM events, PSI, I/O, pids; Kubernetes pod and container identity",
        build: |c, _| Box::new(collectors::cgroup::CgroupCollector::new(&c.cgroup)),
    },
    Entry {
        name: "process",
        default_enabled: false,
        help: "Processes selected by --collector.process.include, grouped: CPU, RSS/PSS/VSZ, threads, fds vs limit, context switches, run-queue wait, faults, I/O, Go binaries",
        build: |_, _| Box::<collectors::process::ProcessCollector>::default(),
    },
    Entry {
        name: "textfile",
        default_enabled: false,
        help: "Metrics other programs write to *.prom files of --collector.textfile.directory (on when it is set)",
        build: |_, _| Box::<collectors::textfile::TextfileCollector>::default(),
    },
    Entry {
        name: "udp",
        default_enabled: true,
        help: "Bytes queued in UDP socket buffers (sock_diag; /proc/net/udp, /proc/net/udp6 in a tree of files)",
        build: |cfg, _| Box::new(collectors::udp::UdpCollector::new(&cfg.roots)),
    },
    Entry {
        name: "netns",
        default_enabled: true,
        help: "TCP, UDP and interface counters of every other network namespace, each pod's with its uid (/proc/PID/net/{snmp,netstat,dev}, found at each --collector.process.rescan-interval)",
        build: |cfg, _| Box::new(collectors::netns::NetnsCollector::new(cfg)),
    },
    Entry {
        name: "filefd",
        default_enabled: true,
        help: "Allocated vs maximum file handles (/proc/sys/fs/file-nr)",
        build: |_, _| Box::new(collectors::filefd::FilefdCollector),
    },
    Entry {
        name: "conntrack",
        default_enabled: true,
        help: "Connection-tracking entries vs limit (/proc/sys/net/netfilter)",
        build: |_, _| Box::new(collectors::conntrack::ConntrackCollector),
    },
    Entry {
        name: "edac",
        default_enabled: true,
        help: "Memory controller correctable/uncorrectable errors (/sys/devices/system/edac)",
        build: |_, _| Box::new(collectors::edac::EdacCollector),
    },
];

/// Builds the collectors of [`ALL`] named in `enabled`, in table order.
pub fn build(
    cfg: &Config,
    queue: &QueueConfig,
    enabled: &[&str],
) -> Vec<(&'static str, Box<dyn Collect>)> {
    // The sampler times the CPU run queue with eBPF only when the ebpf
    // collector is on: off, no program is loaded at all.
    let queue = QueueConfig {
        ebpf: enabled.contains(&"ebpf"),
        ..queue.clone()
    };
    ALL.iter()
        .filter(|e| enabled.contains(&e.name))
        .map(|e| (e.name, (e.build)(cfg, &queue)))
        .collect()
}

/// Which collectors one scrape runs (node_exporter's `collect[]` and
/// `exclude[]`), so that one Prometheus job can scrape the cheap ones
/// often and another the dear ones seldom.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    Only(Vec<&'static str>),
    Except(Vec<&'static str>),
}

impl Selection {
    fn has(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(names) => names.contains(&name),
            Selection::Except(names) => !names.contains(&name),
        }
    }
}

pub struct Scraper {
    collectors: Vec<(&'static str, Box<dyn Collect>)>,
    cfg: Config,
    /// Last error per collector: bounded by the number of collectors.
    last_errors: Mutex<HashMap<&'static str, LoggedError>>,
    /// How many families the last scrape made: the next one's list starts
    /// that large rather than growing (and moving) its way there.
    last_families: std::sync::atomic::AtomicUsize,
}

impl Scraper {
    /// `enabled` holds collector names from [`ALL`]; unknown names are ignored
    /// (the command line validates them first).
    pub fn new(cfg: Config, queue: QueueConfig, enabled: &[&str]) -> Self {
        let collectors = build(&cfg, &queue, enabled);
        Self::with_collectors(cfg, collectors)
    }

    /// A scraper over given collectors: the host's and the proxy's or
    /// probes' (or a test's).
    pub fn with_collectors(cfg: Config, collectors: Vec<(&'static str, Box<dyn Collect>)>) -> Self {
        Scraper {
            collectors,
            cfg,
            last_errors: Mutex::new(HashMap::new()),
            last_families: std::sync::atomic::AtomicUsize::new(128),
        }
    }

    pub fn collector_names(&self) -> Vec<&'static str> {
        self.collectors.iter().map(|(n, _)| *n).collect()
    }

    /// Runs every collector once, sequentially (cheapest in CPU; each reads
    /// a few small files), and returns all families, self-metrics last.
    pub fn scrape(&self) -> Vec<Family> {
        self.scrape_selected(&Selection::All)
    }

    /// The collectors a scrape's `collect[]` / `exclude[]` parameters name,
    /// checked against the enabled ones.
    pub fn select(&self, collect: &[String], exclude: &[String]) -> Result<Selection, String> {
        let known = |names: &[String]| -> Result<Vec<&'static str>, String> {
            names
                .iter()
                .map(|n| {
                    self.collectors
                        .iter()
                        .map(|(e, _)| *e)
                        .find(|e| *e == n.as_str())
                        .ok_or_else(|| {
                            if ALL.iter().any(|e| e.name == n.as_str()) {
                                format!("collector {n:?} is not enabled")
                            } else {
                                format!("unknown collector {n:?}")
                            }
                        })
                })
                .collect()
        };
        match (collect.is_empty(), exclude.is_empty()) {
            (true, true) => Ok(Selection::All),
            (false, true) => Ok(Selection::Only(known(collect)?)),
            (true, false) => Ok(Selection::Except(known(exclude)?)),
            (false, false) => Err("collect[] and exclude[] cannot be used together".into()),
        }
    }

    /// [`Scraper::scrape`] of the selected collectors only; the exporter's
    /// own metrics speak of those.
    pub fn scrape_selected(&self, selection: &Selection) -> Vec<Family> {
        let mut out = Vec::with_capacity(
            self.last_families
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let mut success = Family::new(SUCCESS);
        let mut duration = Family::new(DURATION);
        let mut unsupported = Family::new(UNSUPPORTED);
        for (name, collector) in self.collectors.iter().filter(|(n, _)| selection.has(n)) {
            let start = Instant::now();
            let result = catch_unwind(AssertUnwindSafe(|| collector.collect(&self.cfg)))
                .unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(CollectError::Panicked(msg))
                });
            let elapsed = start.elapsed().as_secs_f64();
            let id = || [label("collector", *name)];
            duration.push(id(), elapsed);
            let is_unsupported = matches!(result, Err(CollectError::Unsupported(_)));
            unsupported.push(id(), u64::from(is_unsupported));
            for (part, refused) in collector.parts() {
                unsupported.push([label("collector", part)], u64::from(refused));
            }
            match result {
                Ok(families) => {
                    success.push(id(), 1u64);
                    out.extend(families);
                    self.note_recovery(name);
                }
                Err(e) => {
                    success.push(id(), 0u64);
                    self.log_error(name, &e);
                }
            }
        }
        self.last_families
            .store(out.len(), std::sync::atomic::Ordering::Relaxed);
        let mut out = merge_same_names(out);
        out.push(success);
        out.push(duration);
        out.push(unsupported);
        out.push(Family::new(BUILD_INFO).with([label("version", env!("CARGO_PKG_VERSION"))], 1u64));
        out.extend(crate::collectors::own_process::families());
        out
    }

    /// Logs an error the first time it is seen for a collector, and again only
    /// when it changes or after [`REPEAT_LOG_INTERVAL`]: a broken source read
    /// every 15 s must not flood the log.
    fn log_error(&self, name: &'static str, e: &CollectError) {
        let message = e.to_string();
        let Ok(mut last) = self.last_errors.lock() else {
            return;
        };
        let now = Instant::now();
        let repeat = matches!(last.get(name), Some(l) if l.message == message);
        if repeat {
            let l = &last[name];
            if matches!(e, CollectError::Unsupported(_))
                || now.duration_since(l.at) < REPEAT_LOG_INTERVAL
            {
                return;
            }
        }
        match e {
            CollectError::Unsupported(_) => {
                tracing::info!(collector = name, reason = %message, "collector has no data on this machine")
            }
            _ => tracing::error!(collector = name, error = %message, "collector failed"),
        }
        last.insert(name, LoggedError { message, at: now });
    }

    fn note_recovery(&self, name: &'static str) {
        let Ok(mut last) = self.last_errors.lock() else {
            return;
        };
        if last.remove(name).is_some() {
            tracing::info!(collector = name, "collector recovered");
        }
    }
}

/// Families of one name from several collectors (the queue metrics of the
/// host sampler and of the proxy) become one family: an exposition may
/// name a metric only once.
fn merge_same_names(mut families: Vec<Family>) -> Vec<Family> {
    // What the exposed name is made of: `queue_standing` is a gauge and,
    // in seconds, a counter. Hundreds of names at every scrape: a fast
    // hash, not a DoS-resistant one (the names are the collectors', never
    // a client's).
    type Key<'a> = (
        &'a str,
        crate::metrics::Kind,
        Option<crate::metrics::BaseUnit>,
        bool,
    );
    // (a later family, the first of its name), in the later's order.
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    {
        let mut index: foldhash::HashMap<Key<'_>, usize> =
            foldhash::HashMapExt::with_capacity(families.len());
        for (at, f) in families.iter().enumerate() {
            let d = &f.desc;
            match index.entry((&d.name, d.kind, d.unit, d.namespaced)) {
                std::collections::hash_map::Entry::Occupied(e) => repeats.push((at, *e.get())),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(at);
                }
            }
        }
    }
    // Most scrapes repeat no name: the families stay where they are (a
    // scrape's few hundred families are ~50 kB to move).
    if repeats.is_empty() {
        return families;
    }
    for &(at, first) in &repeats {
        let samples = std::mem::take(&mut families[at].samples);
        families[first].samples.extend(samples);
    }
    let mut at = 0;
    let mut next_repeat = repeats.iter().map(|(r, _)| *r).peekable();
    families.retain(|_| {
        let repeated = next_repeat.next_if_eq(&at).is_some();
        at += 1;
        !repeated
    });
    families
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails with a message chosen by the call number, or panics.
    struct Scripted {
        calls: AtomicUsize,
        script: fn(usize) -> Result<Vec<Family>, CollectError>,
    }

    impl Collect for Scripted {
        fn collect(&self, _: &Config) -> Result<Vec<Family>, CollectError> {
            (self.script)(self.calls.fetch_add(1, Ordering::SeqCst))
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn config() -> Config {
        crate::cli::parse(["sojourn"]).unwrap().collect
    }

    fn run_with_log(scraper: &Scraper, scrapes: usize) -> (Vec<Vec<Family>>, String) {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let results = tracing::subscriber::with_default(subscriber, || {
            (0..scrapes).map(|_| scraper.scrape()).collect()
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        (results, text)
    }

    fn success(families: &[Family], name: &str) -> Value {
        families
            .iter()
            .find(|f| f.desc.name == "scrape_collector_success")
            .unwrap()
            .samples
            .iter()
            .find(|s| s.labels[0].1 == name)
            .unwrap()
            .value
            .clone()
    }

    #[test]
    fn a_repeated_error_is_logged_once_and_a_new_one_again() {
        let scraper = Scraper::with_collectors(
            config(),
            vec![(
                "flaky",
                Box::new(Scripted {
                    calls: AtomicUsize::new(0),
                    script: |n| match n {
                        0..=9 => Err(CollectError::Parse("bad line 3".into())),
                        10..=14 => Err(CollectError::Parse("bad line 7".into())),
                        15 => Ok(vec![]),
                        _ => Err(CollectError::Parse("bad line 7".into())),
                    },
                }),
            )],
        );
        let (results, log) = run_with_log(&scraper, 17);
        assert_eq!(log.matches("bad line 3").count(), 1, "{log}");
        assert_eq!(
            log.matches("bad line 7").count(),
            2,
            "logged, then again after recovering:\n{log}"
        );
        assert_eq!(log.matches("collector recovered").count(), 1, "{log}");
        assert_eq!(success(&results[0], "flaky"), Value::Int(0));
        assert_eq!(success(&results[15], "flaky"), Value::Int(1));
    }

    #[test]
    fn unsupported_is_logged_once_at_info_and_flagged() {
        let scraper = Scraper::with_collectors(
            config(),
            vec![(
                "absent",
                Box::new(Scripted {
                    calls: AtomicUsize::new(0),
                    script: |_| Err(CollectError::Unsupported("no such file".into())),
                }),
            )],
        );
        let (results, log) = run_with_log(&scraper, 5);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("INFO"), "{log}");
        let unsupported = results[4]
            .iter()
            .find(|f| f.desc.name == "scrape_collector_unsupported")
            .unwrap();
        assert_eq!(unsupported.samples[0].value, Value::Int(1));
    }

    #[test]
    fn a_panicking_collector_fails_alone() {
        let scraper = Scraper::with_collectors(
            config(),
            vec![
                (
                    "boom",
                    Box::new(Scripted {
                        calls: AtomicUsize::new(0),
                        script: |_| panic!("index out of bounds"),
                    }),
                ),
                (
                    "fine",
                    Box::new(Scripted {
                        calls: AtomicUsize::new(0),
                        script: |_| Ok(vec![]),
                    }),
                ),
            ],
        );
        let (results, log) = run_with_log(&scraper, 2);
        assert_eq!(success(&results[1], "boom"), Value::Int(0));
        assert_eq!(success(&results[1], "fine"), Value::Int(1));
        assert_eq!(
            log.matches("collector panicked: index out of bounds")
                .count(),
            1,
            "{log}"
        );
    }

    #[test]
    fn families_of_one_exposed_name_merge_and_others_do_not() {
        use crate::metrics::Desc;
        let gauge = Desc::gauge("queue_standing", "g");
        let counter = Desc::counter("queue_standing", "c").seconds();
        let mut a = Family::new(gauge.clone());
        a.push([label("queue", "cpu")], 1u64);
        let mut b = Family::new(gauge);
        b.push([label("queue", "proxy:shop")], 0u64);
        let c = Family::single(counter.clone(), 2.0);
        let d = Family::single(counter, 3.0);
        let mut e = Family::new(Desc::gauge("queue_standing", "g"));
        e.push([label("queue", "disk:sda")], 1u64);
        let other = Family::single(Desc::gauge("up", "u"), 1u64);
        let merged = merge_same_names(vec![a, c, b, other, d, e]);
        let names: Vec<String> = merged.iter().map(|f| f.desc.exposed_name()).collect();
        assert_eq!(
            names,
            [
                "sojourn_queue_standing",
                "sojourn_queue_standing_seconds_total",
                "sojourn_up"
            ],
            "the gauge and the seconds counter stay apart, first-seen order kept"
        );
        let queues: Vec<&str> = merged[0]
            .samples
            .iter()
            .map(|s| s.labels[0].1.as_ref())
            .collect();
        assert_eq!(queues, ["cpu", "proxy:shop", "disk:sda"]);
        assert_eq!(merged[1].samples.len(), 2);
        assert_eq!(merged[2].samples.len(), 1);
    }
}
