//! Load and workloads the tests make on this host: busy processes,
//! throttled cgroups, fake pods (a network namespace in a kubelet-layout
//! cgroup) and a stand-in kubelet.

use super::*;

/// Processes killed (and reaped) on drop, so that a failing assertion
/// leaves no load behind for the next test.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` busy shells; the loop is a builtin, so no grandchild outlives the kill.
pub fn busy_shells(n: usize) -> Children {
    Children(
        (0..n)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("start sh")
            })
            .collect(),
    )
}

/// Removes a cgroup directory whose tasks were killed: the kernel frees a
/// cgroup only once its last task has gone, so this retries for a second.
pub fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cgroup made for the test, with a busy child in it; removed on drop.
pub struct Throttled {
    pub dir: std::path::PathBuf,
    /// cgroup v1: the same cgroup in the cpuacct, memory and pids
    /// hierarchies, so that usage, memory and tasks are reported too.
    pub others: Vec<std::path::PathBuf>,
    pub child: std::process::Child,
}

impl Drop for Throttled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in std::iter::once(&self.dir).chain(&self.others) {
            remove_cgroup(dir);
        }
    }
}

/// Where a cgroup `name` with `controller` goes on this machine's
/// hierarchy: (its directory, whether cgroup v2). On v2 the controller is
/// enabled for the root's children.
pub fn cgroup_dir(controller: &str, name: &str) -> (std::path::PathBuf, bool) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let _ = std::fs::write(
            root.join("cgroup.subtree_control"),
            format!("+{controller}"),
        );
        (root.join(name), true)
    } else {
        (root.join(controller).join(name), false)
    }
}

pub fn throttled_cgroup(name: &str) -> Throttled {
    let (dir, v2) = cgroup_dir("cpu", name);
    std::fs::create_dir(&dir).expect("create a cgroup (the tests run as root)");
    if v2 {
        std::fs::write(dir.join("cpu.max"), "20000 100000").unwrap();
    } else {
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), "20000").unwrap();
    }
    // A busy loop, bounded: the guard kills it.
    let child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let mut guard = Throttled {
        dir,
        others: Vec::new(),
        child,
    };
    std::fs::write(guard.dir.join("cgroup.procs"), guard.child.id().to_string()).unwrap();
    if !v2 {
        for controller in ["cpuacct", "memory", "pids"] {
            let (other, _) = cgroup_dir(controller, name);
            // Where cpuacct shares cpu's hierarchy the directory exists.
            if other.exists() || std::fs::create_dir(&other).is_err() {
                continue;
            }
            let _ = std::fs::write(other.join("cgroup.procs"), guard.child.id().to_string());
            guard.others.push(other);
        }
    }
    guard
}

/// A child process killed and reaped when the test lets go of it, even
/// when the test fails.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Fake Kubernetes pods for the tests of per-namespace signals: a network
// namespace with a process in a kubelet-layout cgroup.

/// A fake pod: its namespace, its process, its cgroup; all removed on drop.
pub struct Pod {
    pub netns: String,
    pub uid: String,
    pub child: Child,
    pub cgroup: PathBuf,
}

impl Pod {
    /// The inode of the pod's network namespace, as sojourn labels it.
    pub fn netns_inode(&self) -> u64 {
        let link = std::fs::read_link(format!("/proc/{}/ns/net", self.child.id())).unwrap();
        sojourn::netns::parse_ns_link(&link.to_string_lossy()).unwrap()
    }

    /// A Python program run in the pod's network namespace (not its
    /// cgroup): the command, to spawn or to wait for.
    pub fn python(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, "python3", "-c", program]);
        command
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup(&self.cgroup);
        if let Some(pod) = self.cgroup.parent() {
            remove_cgroup(pod);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// A Python program run in the pod: `busy` listens with a backlog of 1,
/// never accepts, and keeps connecting to itself, so the accept queue
/// overflows; otherwise it only sleeps.
const PROGRAM: &str = r#"
import socket, sys, time
if sys.argv[1] == "busy":
    l = socket.socket(); l.bind(("127.0.0.1", 8080)); l.listen(1)
    held = []
    while True:
        for _ in range(8):
            c = socket.socket(); c.setblocking(False)
            try: c.connect(("127.0.0.1", 8080))
            except BlockingIOError: pass
            held.append(c)
        held = held[-64:]
        time.sleep(0.05)
else:
    time.sleep(120)
"#;

/// [`pod`], or None after saying why the test is skipped (it fails
/// instead where SOJOURN_REQUIRE_NAMESPACES is set).
pub fn pod_or_skip(tag: &str, busy: bool) -> Option<Pod> {
    let made = pod(tag, busy);
    if made.is_none() {
        skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "ip netns and cgroups need root",
        );
    }
    made
}

/// A scraper reading other namespaces (netns, queue and tcp_ports at a
/// 100 ms rescan), with a fake kubelet that lists `pod` as shop/web-7d9.
pub fn named_pod_scraper(pod: &Pod) -> sojourn::scrape::Scraper {
    let (port, _) = fake_kubelet(
        "200 OK",
        format!(
            r#"{{"kind":"PodList","items":[{{"metadata":{{"name":"web-7d9","namespace":"shop","uid":"{}"}}}}]}}"#,
            pod.uid
        ),
    );
    let url = format!("http://127.0.0.1:{port}/pods");
    scraper_for([
        "--collector.disable-defaults",
        "--collector.netns",
        "--collector.queue",
        "--collector.tcp_ports",
        "--collector.process.rescan-interval",
        "100ms",
        "--collector.cgroup.kubelet-url",
        &url,
    ])
}

pub fn pod(tag: &str, busy: bool) -> Option<Pod> {
    pod_of_user(tag, busy, None)
}

/// [`pod`] whose process runs as `user` (uid and gid), as a pod's
/// container usually does: not as the agent's user.
pub fn pod_of_user(tag: &str, busy: bool, user: Option<u32>) -> Option<Pod> {
    let netns = format!("sojourn-pod-{tag}-{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    for args in [
        &["link", "set", "lo", "up"][..],
        // An interface besides loopback, as a pod's eth0 (its peer stays
        // in the namespace too).
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "veth0",
        ],
        &["link", "set", "eth0", "up"],
        &["link", "set", "veth0", "up"],
    ] {
        let _ = Command::new("ip")
            .args(["netns", "exec", &netns, "ip"])
            .args(args)
            .status();
    }
    let uid = format!(
        "0b2e4c3a-1111-2222-3333-{:012x}",
        std::process::id() as u64 * 16 + busy as u64
    );
    let (base, _) = cgroup_dir("memory", "kubepods/burstable");
    let cgroup = base.join(format!("pod{uid}")).join("c0ffee00c0ffee00");
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &netns]);
    let mut python = "python3";
    if let Some(user) = user {
        command
            .arg("setpriv")
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .arg("--clear-groups");
        // The system's, which any user may run (not a shim under /root).
        if Path::new("/usr/bin/python3").exists() {
            python = "/usr/bin/python3";
        }
    }
    let child = command
        .args([python, "-c", PROGRAM])
        .arg(if busy { "busy" } else { "idle" })
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let pod = Pod {
        netns,
        uid,
        child,
        cgroup,
    };
    std::fs::create_dir_all(&pod.cgroup).ok()?;
    std::fs::write(pod.cgroup.join("cgroup.procs"), pod.child.id().to_string()).ok()?;
    Some(pod)
}

/// A stand-in for the kubelet's read-only port: answers every request with
/// `status` and `body`, and records the request lines.
pub fn fake_kubelet(
    status: &'static str,
    body: impl Into<String>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let body: String = body.into();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            log.lock().unwrap().push(line.trim_end().to_string());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}
