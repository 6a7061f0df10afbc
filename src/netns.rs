//! The network namespaces the host's processes live in: every pod's, every
//! container's, every `ip netns` one with a process in it. Each is known by
//! its inode (`/proc/PID/ns/net` reads `net:[4026532281]`) and reached
//! through one of its processes: `/proc/PID/net/*` are that namespace's
//! files, whoever reads them. Which process, and the cgroup it is in, say
//! whose namespace it is (a pod's, by the kubelet's cgroup layout).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::inet_diag::Dumper;

/// One network namespace other than sojourn's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    pub inode: u64,
    /// A process in it (the lowest pid found), through which it is read.
    pub pid: u32,
    /// That process's command name.
    pub comm: String,
    /// The pod whose kubelet cgroup that process is in, if any.
    pub pod: Option<crate::kube::KubeIdentity>,
}

/// The inode of a namespace link's target: `net:[4026531992]` → 4026531992.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The cgroup path that says most of whose a process is, from
/// `/proc/PID/cgroup` (`id:controllers:path` lines; v2 has one, `0::path`):
/// the first that names a pod, else the memory or v2 one, else the first.
pub fn pick_cgroup(text: &str) -> Option<&str> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            Some((controllers, path))
        })
        .collect();
    paths
        .iter()
        .find(|(_, p)| crate::kube::parse(p).is_some())
        .or_else(|| {
            paths
                .iter()
                .find(|(c, _)| c.is_empty() || c.split(',').any(|c| c == "memory"))
        })
        .or(paths.first())
        .map(|(_, p)| *p)
}

/// The network namespace of `/proc/<process>` (a pid or `self`).
fn namespace_link(procfs: &Path, process: &str) -> std::io::Result<Option<u64>> {
    let link = std::fs::read_link(procfs.join(process).join("ns/net"))?;
    Ok(link.to_str().and_then(parse_ns_link))
}

/// The namespace a process is in, read now.
pub fn namespace_of(procfs: &Path, pid: u32) -> Option<u64> {
    namespace_link(procfs, &pid.to_string()).ok().flatten()
}

/// sojourn's own network namespace (the one the host collectors read).
pub fn own_namespace(procfs: &Path) -> Option<u64> {
    namespace_link(procfs, "self").ok().flatten()
}

/// Runs `make` in the network namespace `ns` and returns what it made:
/// a socket made there stays that namespace's wherever it is used, so the
/// sampler reads a pod's sockets without ever leaving its own namespace.
///
/// `make` runs on a thread of its own that enters the namespace and then
/// ends: no thread that goes on working is ever in another namespace, and
/// no way back has to succeed. Needs CAP_SYS_ADMIN (setns) and leave to
/// read the process's `ns/net` (CAP_SYS_PTRACE for another user's); the
/// error says which was refused. A namespace whose process is gone, or
/// whose pid now holds another namespace, is `NotFound`.
pub fn enter<T: Send + 'static>(
    procfs: &Path,
    ns: &Netns,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::MetadataExt;
    let path = procfs.join(ns.pid.to_string()).join("ns/net");
    let file = std::fs::File::open(&path)
        .map_err(|e| Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    if file.metadata()?.ino() != ns.inode {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{} is another namespace now", path.display()),
        ));
    }
    std::thread::Builder::new()
        .name("netns-enter".into())
        .spawn(move || {
            use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(
                |e| Error::new(Error::from(e).kind(), format!("setns(CLONE_NEWNET): {e}")),
            )?;
            make()
        })?
        .join()
        .unwrap_or_else(|_| Err(Error::other("the namespace thread panicked")))
}

/// The namespaces one reader has entered, each with what the reader keeps
/// of it: a sock_diag socket made inside, wrapped in the reader's state.
/// The socket holds its namespace alive, so an entry lives only while a
/// process does. Each reader (the sampler, tcp_ports) has its own: one
/// socket is never shared between threads.
pub struct Entered<T> {
    procfs: PathBuf,
    limit: usize,
    entries: BTreeMap<u64, (Netns, T)>,
    /// The kernel refused setns; not tried again: capabilities do not grow.
    refused: bool,
    /// The last walk this reader took.
    last: Option<Arc<Walk>>,
}

impl<T> Entered<T> {
    /// At most `limit` namespaces, found under `procfs`.
    pub fn new(procfs: &Path, limit: usize) -> Self {
        Entered {
            procfs: procfs.to_path_buf(),
            limit,
            entries: BTreeMap::new(),
            refused: false,
            last: None,
        }
    }

    pub fn refused(&self) -> bool {
        self.refused
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Walks /proc (or takes a walk less than `max_age` old): namespaces
    /// with no process left are let go and returned (their reader forgets
    /// what it held of them), those still there get their identity anew,
    /// and new ones are entered, `make` turning the socket made inside
    /// into the reader's state. A process that exits before it is entered
    /// is left to the next walk.
    pub fn rescan(&mut self, max_age: Duration, make: impl FnMut(&Netns, Dumper) -> T) -> Vec<T> {
        let Some(own) = own_namespace(&self.procfs) else {
            return Vec::new();
        };
        let walked = rewalk(&self.procfs, own, self.limit, self.last.as_deref(), max_age);
        let gone = self.admit(walked.discovery.found.iter().cloned(), make);
        self.last = Some(walked);
        gone
    }

    /// [`Entered::rescan`] for namespaces a walk of the caller's found:
    /// those not in `found` are let go and returned, the others entered or
    /// given their identity anew.
    pub fn admit(
        &mut self,
        found: impl IntoIterator<Item = Netns>,
        mut make: impl FnMut(&Netns, Dumper) -> T,
    ) -> Vec<T> {
        let found: Vec<Netns> = found.into_iter().collect();
        let live: BTreeSet<u64> = found.iter().map(|n| n.inode).collect();
        let gone: Vec<u64> = self
            .entries
            .keys()
            .filter(|i| !live.contains(i))
            .copied()
            .collect();
        let gone = gone
            .iter()
            .filter_map(|i| self.entries.remove(i))
            .map(|(_, t)| t)
            .collect();
        for ns in found {
            if let Some((known, _)) = self.entries.get_mut(&ns.inode) {
                *known = ns;
                continue;
            }
            if self.refused {
                continue;
            }
            match enter(&self.procfs, &ns, Dumper::new) {
                Ok(dumper) => {
                    let state = make(&ns, dumper);
                    self.entries.insert(ns.inode, (ns, state));
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    warn_refused(&e);
                    self.refused = true;
                }
                Err(e) => tracing::debug!(netns = ns.inode, error = %e, "namespace not entered"),
            }
        }
        gone
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Netns, &mut T)> {
        self.entries.values_mut().map(|(ns, t)| (&*ns, t))
    }

    /// Keeps the namespaces `keep` says to (false: its read failed, it is
    /// gone or going; the next walk enters it again if it lives).
    pub fn retain(&mut self, mut keep: impl FnMut(&Netns, &mut T) -> bool) {
        self.entries.retain(|_, (ns, t)| keep(ns, t));
    }
}

/// Says once per process, whichever reader met it first, that the kernel
/// refused entering other namespaces: one cause, one log line.
pub fn warn_refused(e: &std::io::Error) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            error = %e,
            "cannot enter other network namespaces (needs CAP_SYS_ADMIN, and CAP_SYS_PTRACE for other users' processes): pods' listeners and ports are not read, the host's are"
        );
    }
}

/// A walk of /proc for network namespaces, shared by every reader of
/// them (the netns collector, the queue sampler, tcp_ports and the accept
/// program's listeners), each of which made its own at each rescan
/// interval: four walks of every /proc/PID/ns/net link an interval, one
/// of them on the sampler's 10 ms thread.
#[derive(Debug)]
pub struct Walk {
    /// When it started: what it found was there then or later.
    pub started: Instant,
    pub discovery: Discovery,
}

/// The last walks, by (procfs, own namespace, limit): one entry on a host,
/// a few in tests that read fixture trees.
type Walks = Vec<(PathBuf, u64, usize, Arc<Walk>)>;
static WALKS: Mutex<Walks> = Mutex::new(Vec::new());
const MAX_WALKS: usize = 8;

/// The last walk of `procfs` for namespaces other than `own` (keeping
/// `limit`) if it started less than `max_age` ago, else a new one. The
/// walk runs with the cache held, so readers that ask together share it
/// rather than walk side by side.
pub fn walk(procfs: &Path, own: u64, limit: usize, max_age: Duration) -> Arc<Walk> {
    let mut walks = WALKS.lock().unwrap_or_else(PoisonError::into_inner);
    let known = walks
        .iter()
        .position(|(p, o, l, _)| p == procfs && *o == own && *l == limit);
    if let Some(i) = known {
        if walks[i].3.started.elapsed() < max_age {
            return walks[i].3.clone();
        }
        walks.remove(i);
    }
    let started = Instant::now();
    let walk = Arc::new(Walk {
        started,
        discovery: discover(procfs, own, limit),
    });
    if walks.len() >= MAX_WALKS {
        walks.remove(0);
    }
    walks.push((procfs.to_path_buf(), own, limit, walk.clone()));
    walk
}

/// The walk for a reader whose own last walk was `last` (None: it has
/// not walked yet): the shared one if it started less than `max_age` ago,
/// else a new one. A reader's first walk is always a new one: a walk made
/// before it started may lack what it was started for.
pub fn rewalk(
    procfs: &Path,
    own: u64,
    limit: usize,
    last: Option<&Walk>,
    max_age: Duration,
) -> Arc<Walk> {
    let max_age = if last.is_some() {
        max_age
    } else {
        Duration::ZERO
    };
    walk(procfs, own, limit, max_age)
}

/// What one walk of /proc found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The namespaces kept, by inode.
    pub found: Vec<Netns>,
    /// Namespaces past the limit, not kept.
    pub omitted: usize,
    /// Processes whose namespace could not be read (permission).
    pub unreadable: usize,
}

/// Walks /proc for the network namespaces other than `own`: the first
/// `limit` by inode, each with its lowest pid. A process that exits
/// during the walk is skipped.
pub fn discover(procfs: &Path, own: u64, limit: usize) -> Discovery {
    let mut by_inode: BTreeMap<u64, u32> = BTreeMap::new();
    let mut unreadable = 0;
    let Ok(entries) = std::fs::read_dir(procfs) else {
        return Discovery::default();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let inode = match namespace_link(procfs, &pid.to_string()) {
            Ok(Some(inode)) => inode,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                unreadable += 1;
                continue;
            }
            // Exited during the walk, or not a namespace link.
            _ => continue,
        };
        if inode == own {
            continue;
        }
        by_inode
            .entry(inode)
            .and_modify(|p| *p = (*p).min(pid))
            .or_insert(pid);
    }
    let omitted = by_inode.len().saturating_sub(limit);
    let found = by_inode
        .into_iter()
        .take(limit)
        .filter_map(|(inode, pid)| {
            let dir = procfs.join(pid.to_string());
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
            Some(Netns {
                inode,
                pid,
                comm: comm.trim_end().to_string(),
                pod: pick_cgroup(&cgroup).and_then(crate::kube::parse),
            })
        })
        .collect();
    Discovery {
        found,
        omitted,
        unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_parse() {
        assert_eq!(parse_ns_link("net:[4026531992]"), Some(4026531992));
        assert_eq!(parse_ns_link("mnt:[4026531992]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
        assert_eq!(parse_ns_link("net:[4026531992"), None);
    }

    #[test]
    fn the_cgroup_that_names_a_pod_is_picked() {
        let v1 =
            "12:pids:/kubepods/burstable/pod0b2e4c3a-1111-2222-3333-444455556666/abcdef0123456789
11:memory:/kubepods/burstable/pod0b2e4c3a-1111-2222-3333-444455556666/abcdef0123456789
1:name=systemd:/system.slice/containerd.service
0::/
";
        assert_eq!(
            pick_cgroup(v1),
            Some("/kubepods/burstable/pod0b2e4c3a-1111-2222-3333-444455556666/abcdef0123456789")
        );
        assert_eq!(
            pick_cgroup("0::/system.slice/nginx.service\n"),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(
            pick_cgroup("4:cpu,cpuacct:/a\n3:memory:/b\n"),
            Some("/b"),
            "the memory hierarchy's, with no pod"
        );
        assert_eq!(pick_cgroup(""), None);
    }

    #[test]
    fn discovery_finds_this_process_namespace_only_when_not_own() {
        let proc = Path::new("/proc");
        let Some(own) = own_namespace(proc) else {
            return;
        };
        let pid = std::process::id();
        assert_eq!(namespace_of(proc, pid), Some(own));
        // Told its own namespace is another's, this process is found in it.
        let d = discover(proc, own.wrapping_add(1), 10_000);
        assert!(d.found.iter().any(|n| n.inode == own && n.pid <= pid));
        let d = discover(proc, own, 10_000);
        assert!(d.found.iter().all(|n| n.inode != own));
        let d = discover(proc, own.wrapping_add(1), 0);
        assert!(d.found.is_empty() && d.omitted >= 1);
    }

    #[test]
    fn readers_share_a_walk_younger_than_they_ask() {
        let proc = Path::new("/proc");
        let Some(own) = own_namespace(proc) else {
            return;
        };
        // A limit no other test uses: this test's own cache entry.
        let limit = 9_999;
        let first = walk(proc, own, limit, Duration::ZERO);
        let shared = walk(proc, own, limit, Duration::from_secs(3600));
        assert!(Arc::ptr_eq(&first, &shared), "taken from the cache");
        let fresh = walk(proc, own, limit, Duration::ZERO);
        assert!(!Arc::ptr_eq(&first, &fresh), "too old: walked again");
        assert!(fresh.started >= first.started);
        let other = walk(proc, own, limit - 1, Duration::from_secs(3600));
        assert!(!Arc::ptr_eq(&fresh, &other), "another limit, another walk");
        // A reader that has not walked yet takes none made before it.
        let hour = Duration::from_secs(3600);
        let own_first = rewalk(proc, own, limit, None, hour);
        assert!(!Arc::ptr_eq(&own_first, &fresh), "a first walk is new");
        let later = rewalk(proc, own, limit, Some(&own_first), hour);
        assert!(Arc::ptr_eq(&own_first, &later), "then shared");
    }

    #[test]
    fn a_socket_made_in_a_namespace_sees_that_namespace() {
        let proc = Path::new("/proc");
        let Some(own) = own_namespace(proc) else {
            return;
        };
        let me = Netns {
            inode: own,
            pid: std::process::id(),
            comm: String::new(),
            pod: None,
        };
        // Entering one's own namespace is allowed only with CAP_SYS_ADMIN
        // (bit 21 of CapEff): with it the closure must run, without it the
        // refusal must say so.
        let cap_sys_admin = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 21) != 0);
        let inside = enter(proc, &me, || {
            namespace_link(Path::new("/proc"), "thread-self")
        });
        match (cap_sys_admin, inside) {
            (true, Ok(inside)) => assert_eq!(inside, Some(own)),
            (false, Err(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}")
            }
            (cap, other) => panic!("CAP_SYS_ADMIN {cap}, yet {other:?}"),
        }
        // The caller's thread never moved.
        assert_eq!(namespace_link(proc, "thread-self").unwrap(), Some(own));
        let wrong = Netns {
            inode: own.wrapping_add(1),
            ..me
        };
        let e = enter(proc, &wrong, || Ok(())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = parse_ns_link(&s);
            let _ = pick_cgroup(&s);
        }
    }
}
