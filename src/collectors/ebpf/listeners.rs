//! The accept program's listeners between scrapes: the network namespace
//! (pod) each is in, and which are gone. The kernel keeps a listener's
//! histogram until told otherwise, so without this a pod deleted long ago
//! kept its series, frozen, and its room among the 1 024 the program
//! tracks: on a node where pods come and go, or where tests listen on
//! ephemeral ports, new listeners would in time go untimed. A listener is
//! forgotten (its histogram removed from the map, its series gone) once
//! it is known to be closed:
//! - in a namespace that is listed (sojourn's own, and each pod's that
//!   holds a timed listener and could be entered), when no socket there
//!   listens on its port: a dump of the listening sockets only, through a
//!   sock_diag socket made in that namespace, at most every rescan
//!   interval;
//! - elsewhere, when its namespace was not found by a walk of /proc that
//!   started after it was first missed and kept every namespace it saw,
//!   and it accepted nothing meanwhile (a namespace no process shows, held
//!   open by a socket alone, keeps its listeners while they accept; idle,
//!   they go and come back at their next accept).
//!
//! Without leave to enter other namespaces (CAP_SYS_ADMIN), a port closed
//! in a pod that lives on keeps its histogram: its series counts no more,
//! and the pod's end removes it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::ebpf::ListenerKey;
use crate::inet_diag::Dumper;

/// Network namespaces by inode, for the identity of listeners in pods and
/// the ports listening in each: /proc walked again every rescan interval
/// while a listener outside sojourn's own namespace is timed (so that one
/// found before is known to be gone when its pod is).
pub struct Namespaces {
    pub own: Option<u64>,
    /// The last walk taken. One that kept every namespace it saw (none
    /// past `--collector.netns.max-namespaces`) is complete; a process
    /// whose namespace it could not read (permission; the sandbox's init
    /// on some hosts) does not make it incomplete: what such a process
    /// alone holds open loses only idle listeners, back at their next
    /// accept.
    walk: Option<std::sync::Arc<crate::netns::Walk>>,
    /// The found namespaces holding timed listeners, each entered once at
    /// the walk that first found it: a sock_diag socket made inside lists
    /// its listening ports from then on. A socket holds its namespace
    /// alive, so it is let go at the first walk that does not find it.
    entered: crate::netns::Entered<Dumper>,
    /// sojourn's own namespace's.
    own_dumper: Option<Dumper>,
    /// When the listening ports were last listed.
    listed: Option<Instant>,
}

impl Namespaces {
    pub fn new(cfg: &super::Config) -> Namespaces {
        Namespaces {
            own: None,
            walk: None,
            entered: crate::netns::Entered::new(&cfg.roots.procfs, cfg.netns.max_namespaces),
            own_dumper: None,
            listed: None,
        }
    }

    /// Walks /proc when due and a listener of `inodes` is outside
    /// sojourn's own namespace; enters the namespaces found that hold one.
    pub fn refresh(&mut self, cfg: &super::Config, inodes: impl Iterator<Item = u32>) {
        let own = *self
            .own
            .get_or_insert_with(|| crate::netns::own_namespace(&cfg.roots.procfs).unwrap_or(0));
        let interval = cfg.process.rescan_interval;
        if self
            .walk
            .as_ref()
            .is_some_and(|w| w.started.elapsed() < interval)
        {
            return;
        }
        let outside: HashSet<u64> = inodes.map(u64::from).filter(|&i| i != own).collect();
        if outside.is_empty() {
            return;
        }
        let walk = crate::netns::rewalk(
            &cfg.roots.procfs,
            own,
            cfg.netns.max_namespaces,
            self.walk.as_deref(),
            interval,
        );
        let holding = walk
            .discovery
            .found
            .iter()
            .filter(|n| outside.contains(&n.inode));
        self.entered.admit(holding.cloned(), |_, dumper| dumper);
        self.walk = Some(walk);
    }

    /// The namespaces the last walk found.
    pub fn found(&self) -> &[crate::netns::Netns] {
        self.walk.as_ref().map_or(&[], |w| &w.discovery.found)
    }

    pub fn is_found(&self, inode: u64) -> bool {
        self.found().iter().any(|n| n.inode == inode)
    }

    /// When the last walk that saw every namespace started.
    pub fn complete_walk(&self) -> Option<Instant> {
        self.walk
            .as_ref()
            .filter(|w| w.discovery.omitted == 0)
            .map(|w| w.started)
    }

    /// The ports listening (both families) in each namespace of the timed
    /// listeners' (`timed`, read only when due) that can be listed
    /// (sojourn's own and the entered ones), at most every `interval`;
    /// empty when not due. A namespace whose dump fails
    /// is not listed (nothing in it is taken as closed); an entered one is
    /// let go, to be entered again by the next walk if it lives.
    pub fn listening(
        &mut self,
        timed: impl Iterator<Item = u32>,
        interval: Duration,
        now: Instant,
    ) -> HashMap<u32, HashSet<u16>> {
        let mut listed = HashMap::new();
        if self
            .listed
            .is_some_and(|t| now.duration_since(t) < interval)
        {
            return listed;
        }
        self.listed = Some(now);
        let timed: HashSet<u32> = timed.collect();
        let own = self.own.and_then(|i| u32::try_from(i).ok());
        if let Some(own) = own.filter(|o| timed.contains(o)) {
            let dumper = match &mut self.own_dumper {
                Some(d) => Some(d),
                slot => Dumper::new().ok().map(|d| slot.insert(d)),
            };
            if let Some(ports) = dumper.and_then(listening_ports) {
                listed.insert(own, ports);
            }
        }
        self.entered.retain(|ns, dumper| {
            let Ok(inode) = u32::try_from(ns.inode) else {
                return false;
            };
            if !timed.contains(&inode) {
                return true;
            }
            listening_ports(dumper).is_some_and(|ports| listed.insert(inode, ports).is_none())
        });
        listed
    }
}

/// The local ports of the listening sockets `dumper`'s namespace holds.
fn listening_ports(dumper: &mut Dumper) -> Option<HashSet<u16>> {
    let mut ports = HashSet::new();
    dumper
        .dump_all(1 << crate::inet_diag::TCP_LISTEN, false, |s| {
            ports.insert(s.local_port);
        })
        .ok()?;
    Some(ports)
}

/// What is known, at one scrape, of the places the listeners were in.
pub struct Census<'a> {
    /// sojourn's own network namespace.
    pub own: u32,
    /// Ports listening in each namespace listed at this scrape.
    pub listening: &'a HashMap<u32, HashSet<u16>>,
    /// Whether a namespace was found by the last walk of /proc.
    pub found: &'a dyn Fn(u32) -> bool,
    /// When the last walk that saw every namespace started.
    pub complete_walk: Option<Instant>,
}

/// The listeners not found where they were, between scrapes.
#[derive(Default)]
pub struct Lifetimes {
    /// Namespaces of timed listeners not found by a walk: since when, and
    /// how many connections their listeners had accepted then.
    missing: HashMap<u32, (Instant, u64)>,
}

impl Lifetimes {
    /// The listeners of `listeners` (each with the connections it accepted)
    /// known to be gone at `now`.
    pub fn gone(
        &mut self,
        listeners: &[(ListenerKey, u64)],
        census: &Census<'_>,
        now: Instant,
    ) -> Vec<ListenerKey> {
        let mut accepted: HashMap<u32, u64> = HashMap::new();
        for (key, n) in listeners {
            if key.netns != census.own && !(census.found)(key.netns) {
                *accepted.entry(key.netns).or_default() += n;
            }
        }
        // Found again, or no longer timed: not missing.
        self.missing.retain(|ns, _| accepted.contains_key(ns));
        let mut gone_namespaces = HashSet::new();
        for (ns, n) in accepted {
            match self.missing.get(&ns) {
                Some(&(since, then)) if then == n => {
                    if census.complete_walk.is_some_and(|walk| walk > since) {
                        gone_namespaces.insert(ns);
                        self.missing.remove(&ns);
                    }
                }
                // Newly missing, or it accepted since: missed from now.
                _ => {
                    self.missing.insert(ns, (now, n));
                }
            }
        }
        listeners
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| match census.listening.get(&key.netns) {
                Some(ports) => u16::try_from(key.port).is_ok_and(|p| !ports.contains(&p)),
                None => gone_namespaces.contains(&key.netns),
            })
            .collect()
    }
}

/// Removes the listeners known to be closed from the kernel's map and
/// from `listeners` (the module's comment says how they are known).
pub fn forget_gone(
    accept: &crate::ebpf::Accept,
    listeners: &mut Vec<(crate::ebpf::ListenerKey, crate::ebpf::TimedHistogram)>,
    ns: &mut Namespaces,
    lifetimes: &mut Lifetimes,
    cfg: &super::Config,
) {
    let own = ns.own.and_then(|i| u32::try_from(i).ok()).unwrap_or(0);
    let now = std::time::Instant::now();
    let timed = listeners.iter().map(|(k, _)| k.netns);
    let listening = ns.listening(timed, cfg.process.rescan_interval, now);
    let accepted: Vec<_> = listeners
        .iter()
        .map(|(k, h)| (*k, h.slots.iter().sum::<u64>()))
        .collect();
    let found = |inode: u32| ns.is_found(u64::from(inode));
    let census = Census {
        own,
        listening: &listening,
        found: &found,
        complete_walk: ns.complete_walk(),
    };
    let gone = lifetimes.gone(&accepted, &census, now);
    if gone.is_empty() {
        return;
    }
    if let Err(e) = accept.forget(&gone) {
        tracing::warn!(error = %e, "closed listeners' accept-queue histograms kept");
    }
    listeners.retain(|(k, _)| !gone.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u32 = 4026531840;
    const POD: u32 = 4026532500;

    fn key(netns: u32, port: u32) -> ListenerKey {
        ListenerKey { netns, port }
    }

    fn not_found(_: u32) -> bool {
        false
    }

    fn nothing_listed() -> &'static HashMap<u32, HashSet<u16>> {
        static EMPTY: std::sync::OnceLock<HashMap<u32, HashSet<u16>>> = std::sync::OnceLock::new();
        EMPTY.get_or_init(HashMap::new)
    }

    /// No namespace found by the walk that started at `complete_walk`.
    fn walked(complete_walk: Option<Instant>) -> Census<'static> {
        Census {
            own: OWN,
            listening: nothing_listed(),
            found: &not_found,
            complete_walk,
        }
    }

    #[test]
    fn a_closed_port_is_gone_once_its_namespace_is_listed() {
        let mut l = Lifetimes::default();
        let pod = |ns| ns == POD;
        let census = |listening| Census {
            own: OWN,
            listening,
            found: &pod,
            complete_walk: None,
        };
        let timed = [
            (key(OWN, 8080), 3),
            (key(OWN, 9090), 5),
            (key(POD, 80), 2),
            (key(POD, 81), 1),
        ];
        let now = Instant::now();
        assert!(
            l.gone(&timed, &census(nothing_listed()), now).is_empty(),
            "not listed"
        );
        let own_only: HashMap<u32, HashSet<u16>> = [(OWN, [8080].into())].into();
        assert_eq!(l.gone(&timed, &census(&own_only), now), [key(OWN, 9090)]);
        let both: HashMap<u32, HashSet<u16>> =
            [(OWN, [8080, 9090].into()), (POD, [80, 443].into())].into();
        assert_eq!(
            l.gone(&timed, &census(&both), now),
            [key(POD, 81)],
            "a port closed in a pod that lives on"
        );
    }

    #[test]
    fn a_namespace_missed_by_a_later_complete_walk_is_gone() {
        let mut l = Lifetimes::default();
        let t0 = Instant::now();
        let census = walked;
        let timed = [(key(POD, 80), 7), (key(OWN, 22), 1)];
        // First missed after a walk: that walk does not count.
        assert!(l.gone(&timed, &census(Some(t0)), t0).is_empty());
        let t1 = t0 + Duration::from_secs(30);
        assert!(
            l.gone(&timed, &census(Some(t0)), t1).is_empty(),
            "no walk since"
        );
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(l.gone(&timed, &census(Some(t1)), t2), [key(POD, 80)]);
    }

    #[test]
    fn a_missed_namespace_whose_listeners_accept_stays() {
        let mut l = Lifetimes::default();
        let t0 = Instant::now();
        let census = walked;
        assert!(l.gone(&[(key(POD, 80), 7)], &census(None), t0).is_empty());
        let t1 = t0 + Duration::from_secs(30);
        // A complete walk since, but the listener accepted meanwhile.
        assert!(
            l.gone(&[(key(POD, 80), 8)], &census(Some(t1)), t1)
                .is_empty()
        );
        let t2 = t1 + Duration::from_secs(30);
        assert!(
            l.gone(&[(key(POD, 80), 8)], &census(Some(t1)), t2)
                .is_empty(),
            "missed again from t1: the t1 walk does not count"
        );
        let t3 = t2 + Duration::from_secs(30);
        assert_eq!(
            l.gone(&[(key(POD, 80), 8)], &census(Some(t3)), t3),
            [key(POD, 80)]
        );
    }

    #[test]
    fn an_incomplete_walk_or_a_found_namespace_keeps_listeners() {
        let mut l = Lifetimes::default();
        let t0 = Instant::now();
        let timed = [(key(POD, 80), 7)];
        let incomplete = walked(None);
        assert!(l.gone(&timed, &incomplete, t0).is_empty());
        let later = t0 + Duration::from_secs(60);
        assert!(l.gone(&timed, &incomplete, later).is_empty());
        let pod = |ns| ns == POD;
        let found = Census {
            own: OWN,
            listening: nothing_listed(),
            found: &pod,
            complete_walk: Some(later),
        };
        assert!(l.gone(&timed, &found, later).is_empty());
        assert!(l.missing.is_empty(), "found: not missing any more");
    }
}
