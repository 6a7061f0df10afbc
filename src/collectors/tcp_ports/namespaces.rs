//! Pods' ports: rounds over the other network namespaces, each dumped
//! through a sock_diag socket made in it, on a thread and a CPU budget of
//! their own so that no scrape waits for a round.

use super::*;

/// Other namespaces' sockets, each through a socket made in it, kept
/// while a process lives there. Owned by the round worker's thread.
pub(super) struct Namespaces {
    pub(super) scanned: Option<Instant>,
    pub(super) entered: crate::netns::Entered<Dumper>,
    pub(super) kubelet: Option<std::sync::Arc<crate::kubelet::Kubelet>>,
}

/// Rounds over other namespaces run on a thread of their own, asked for by
/// scrapes when the budget allows: a round over hundreds of pods takes a
/// quarter of a second, which no scrape waits for; scrapes serve the last.
pub(super) struct RoundWorker {
    pub(super) shared: std::sync::Arc<RoundShared>,
    pub(super) handle: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
pub(super) struct RoundShared {
    pub(super) state: std::sync::Mutex<RoundState>,
    pub(super) wake: std::sync::Condvar,
}

#[derive(Default)]
pub(super) struct RoundState {
    pub(super) last: Option<std::sync::Arc<NamespaceDump>>,
    pub(super) dumps: u64,
    pub(super) entered: usize,
    pub(super) refused: bool,
    /// A round was asked for and has not started.
    pub(super) requested: bool,
    pub(super) running: bool,
    pub(super) stop: bool,
}

impl RoundWorker {
    /// Starts the thread; its first round runs at once.
    pub(super) fn start(cfg: &Config) -> std::io::Result<Self> {
        let shared = std::sync::Arc::new(RoundShared::default());
        if let Ok(mut s) = shared.state.lock() {
            s.requested = true;
        }
        let mut namespaces = Namespaces {
            scanned: None,
            entered: crate::netns::Entered::new(&cfg.roots.procfs, cfg.netns.max_namespaces),
            kubelet: crate::collectors::netns::kubelet(cfg),
        };
        let (cfg, thread_shared) = (cfg.clone(), shared.clone());
        let handle = std::thread::Builder::new()
            .name("tcp-ports-netns".into())
            .spawn(move || namespaces.serve(&cfg, &thread_shared))?;
        Ok(RoundWorker {
            shared,
            handle: Some(handle),
        })
    }
}

impl Drop for RoundWorker {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub(super) struct NamespaceDump {
    pub(super) started: Instant,
    pub(super) ports: Vec<NamespacePort>,
    pub(super) cpu: Duration,
}

/// One namespace's listeners and their established connections, all ports.
pub(super) fn dump_namespace(
    dumper: &mut Dumper,
) -> Result<Vec<(Option<u16>, PortStats)>, CollectError> {
    let mut listeners = Listeners::default();
    dumper.dump_all(1 << TCP_LISTEN, false, |s| listeners.add(&s))?;
    let ports = listeners.ports();
    let mut agg = Aggregator::new(&listeners);
    dumper.dump_all_for_ports(1 << TCP_ESTABLISHED, true, &ports, RemotePorts::All, |s| {
        agg.add(&s)
    })?;
    Ok(agg.finish(usize::MAX))
}

/// The `max` (namespace, port) pairs with the most queued bytes, then
/// connections, and the rest summed with the `netns` label "other" (the
/// other identity labels empty).
pub fn rank_namespace_ports(mut all: Vec<NamespacePort>, max: usize) -> Vec<NamespacePort> {
    all.sort_by(|(_, pa, a), (_, pb, b)| {
        b.queued()
            .cmp(&a.queued())
            .then(b.connections.cmp(&a.connections))
            .then(pa.cmp(pb))
    });
    let rest = all.split_off(max.min(all.len()));
    if let Some((id, ..)) = rest.first() {
        let id: Vec<Label> = id
            .iter()
            .map(|l| {
                let v = if l.0 == "netns" { "other" } else { "" };
                label(l.0, v)
            })
            .collect();
        let mut sum = PortStats::default();
        rest.iter().for_each(|(_, _, s)| sum.merge(s));
        all.push((id, None, sum));
    }
    all
}

impl Namespaces {
    /// The worker's loop: a round each time one is asked for.
    pub(super) fn serve(&mut self, cfg: &Config, shared: &RoundShared) {
        loop {
            {
                let Ok(mut s) = shared.state.lock() else {
                    return;
                };
                while !s.requested && !s.stop {
                    s = match shared.wake.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
                if s.stop {
                    return;
                }
                s.requested = false;
                s.running = true;
            }
            let now = Instant::now();
            if self
                .scanned
                .is_none_or(|t| now.duration_since(t) >= cfg.process.rescan_interval)
            {
                // Namespaces gone: their sockets close as they drop.
                drop(
                    self.entered
                        .rescan(cfg.process.rescan_interval, |_, dumper| dumper),
                );
                self.scanned = Some(now);
            }
            let dump = self.dump(cfg.tcp_ports.max_namespace_ports);
            let Ok(mut s) = shared.state.lock() else {
                return;
            };
            s.last = Some(std::sync::Arc::new(dump));
            s.dumps += 1;
            s.entered = self.entered.len();
            s.refused = self.entered.refused();
            s.running = false;
        }
    }

    /// A round over every entered namespace.
    pub(super) fn dump(&mut self, max: usize) -> NamespaceDump {
        let started = Instant::now();
        let cpu_before = crate::collectors::thread_cpu_time();
        let names = self.kubelet.as_ref().map(|k| k.directory().0);
        let mut all = Vec::new();
        // A namespace whose dump fails is gone (or going): let go of it;
        // the next walk enters it again if it lives.
        self.entered
            .retain(|ns, dumper| match dump_namespace(dumper) {
                Ok(ports) => {
                    let id = crate::collectors::netns::identity(ns, names.as_deref());
                    all.extend(ports.into_iter().map(|(p, s)| (id.clone(), p, s)));
                    true
                }
                Err(_) => false,
            });
        NamespaceDump {
            started,
            ports: rank_namespace_ports(all, max),
            cpu: crate::collectors::thread_cpu_time().saturating_sub(cpu_before),
        }
    }
}

pub(super) const NAMESPACE_DUMPS: Desc = Desc::counter(
    "tcp_port_namespace_dumps",
    "Rounds of inet_diag dumps over the other network namespaces (pods') for their tcp_port series; scrapes between rounds serve the last (collector cost).",
);
pub(super) const NAMESPACE_DUMP_AGE: Desc = Desc::gauge(
    "tcp_port_namespace_dump_age",
    "Age of the round over other network namespaces the namespaced tcp_port series come from: a round runs no sooner than its CPU cost divided by --collector.tcp_ports.cpu-budget after the last (collector cost).",
)
.seconds();
pub(super) const NAMESPACE_DUMP_CPU: Desc = Desc::gauge(
    "tcp_port_namespace_dump_cpu",
    "CPU time the last round over other network namespaces took: each namespace's dump walks the kernel's whole socket hash (collector cost).",
)
.seconds();
pub(super) const NAMESPACES_ENTERED: Desc = Desc::gauge(
    "tcp_port_namespaces",
    "Other network namespaces whose sockets tcp_ports reads, each through a socket made in it (collector cost: one file descriptor each).",
);

/// The part of tcp_ports that reads other network namespaces' sockets.
pub const NAMESPACES_PART: &str = "tcp_ports_netns";
