//! Fault-injection scenarios: each injects a real fault on this machine,
//! bounded in time and cleaned up (guards undo it even when an assertion
//! fails), and asserts that `sojourn check --json` names the right resource
//! and nothing else, and that the exporter's live table (`/api/use`) names
//! it too. Time to detect is from the fault's start to the live table
//! naming it. The scenarios run one after another in one test, so that no
//! fault disturbs another, and the results are printed as a table (and
//! written to `target/tmp/scenarios.md`).
//!
//! They need root (cgroups, loop devices, network namespaces); without it
//! the suite is skipped unless SOJOURN_REQUIRE_SCENARIOS=1 (as in .ci/run).

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long `sojourn check` samples in each scenario.
const CHECK_FOR: &str = "4s";
/// Longest wait for the live table to name a fault.
const DETECT_WITHIN: Duration = Duration::from_secs(20);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sojourn")
}

/// A command, run inside a network namespace when one is given.
fn command(netns: Option<&str>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A sojourn exporter, maybe inside a namespace.
struct Exporter {
    running: common::Exporter,
    netns: Option<String>,
}

impl Exporter {
    fn start(netns: Option<&str>, args: &[String]) -> Exporter {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = Exporter {
            running: common::start_with(command(netns, bin()), &args),
            netns: netns.map(str::to_string),
        };
        // The first request starts the live sampler; wait for its table.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !e.live()["ready"].as_bool().unwrap_or(false) {
            assert!(Instant::now() < deadline, "the live table never filled");
            std::thread::sleep(Duration::from_millis(200));
        }
        e
    }

    /// `/api/use`, fetched from inside the exporter's namespace.
    fn live(&self) -> Value {
        let body = match &self.netns {
            None => common::get(self.running.addr, "/api/use", &[]).text(),
            Some(ns) => run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "python3",
                    "-c",
                    "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                    &format!("http://{}/api/use", self.running.addr),
                ],
            )
            .unwrap_or_default(),
        };
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

/// A finding as (kind, resource).
type Finding = (String, String);

/// How the table names a finding: the resource, with its kind when the
/// resource's name does not start with it.
fn named(kind: &str, resource: &str) -> String {
    if resource.starts_with(kind) {
        resource.to_string()
    } else {
        format!("{kind} {resource}")
    }
}

fn list(found: &[Finding]) -> String {
    if found.is_empty() {
        return "no findings".into();
    }
    found
        .iter()
        .map(|(k, r)| named(k, r))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report's own `findings`, each with its resource's kind.
fn findings(report: &Value) -> Vec<Finding> {
    let rows = report["resources"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|name| {
            let kind = rows
                .iter()
                .find(|r| r["resource"] == name)
                .and_then(|r| r["kind"].as_str())
                .unwrap_or("");
            (kind.to_string(), name.to_string())
        })
        .collect()
}

/// What a scenario expects: resources that must be named (kind and the
/// resource's full name: "cpu" must not be satisfied by "cpu0"), and the
/// kinds allowed beside them.
struct Expect {
    required: Vec<(&'static str, String)>,
    allowed_kinds: Vec<&'static str>,
    /// Whether `sojourn check` on the host must name `required` (a slow
    /// upstream is the exporter's to name: the host check must be clean).
    in_check: bool,
    /// Who `sojourn check` must name first as the CPU's user.
    first_user: Option<String>,
}

impl Expect {
    /// A fault-free host: nothing may be found.
    fn nothing() -> Self {
        Expect {
            required: vec![],
            allowed_kinds: vec![],
            in_check: true,
            first_user: None,
        }
    }

    /// `resource` of `kind` must be found, and nothing of another kind.
    fn finds(kind: &'static str, resource: impl Into<String>) -> Self {
        Expect {
            required: vec![(kind, resource.into())],
            allowed_kinds: vec![kind],
            in_check: true,
            first_user: None,
        }
    }

    /// Another kind the fault may show in too (memory pressure is the
    /// host's as well as the cgroup's).
    fn or_also(mut self, kind: &'static str) -> Self {
        self.allowed_kinds.push(kind);
        self
    }

    /// `sojourn check`'s evidence for the CPU names `who` first among its users.
    fn used_most_by(mut self, who: impl Into<String>) -> Self {
        self.first_user = Some(who.into());
        self
    }

    /// Named by the exporter's service metrics, not by `sojourn check` on
    /// the host (whose table must stay clean).
    fn not_in_check(mut self) -> Self {
        self.in_check = false;
        self
    }
    fn names(&self, found: &[Finding]) -> bool {
        self.required
            .iter()
            .all(|(kind, name)| found.iter().any(|(k, r)| k == kind && r == name))
    }

    fn describe(&self) -> String {
        if self.required.is_empty() {
            return "no findings".into();
        }
        self.required
            .iter()
            .map(|(k, r)| named(k, r))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Outcome {
    scenario: &'static str,
    expected: String,
    found: String,
    live: String,
    detect: Option<Duration>,
    problems: Vec<String>,
}

/// Starts the exporter, injects the fault, waits for the live table to
/// name it, runs `sojourn check`, and judges both.
fn scenario<G>(
    name: &'static str,
    netns: Option<&str>,
    args: Vec<String>,
    inject: impl FnOnce() -> Result<(G, Expect), String>,
) -> Outcome {
    let mut outcome = Outcome {
        scenario: name,
        expected: String::new(),
        found: String::new(),
        live: String::new(),
        detect: None,
        problems: Vec::new(),
    };
    let exporter = Exporter::start(netns, &args);
    let start = Instant::now();
    let (guard, expect) = match inject() {
        Ok(x) => x,
        Err(e) => {
            outcome
                .problems
                .push(format!("could not inject the fault: {e}"));
            return outcome;
        }
    };
    outcome.expected = expect.describe();
    if expect.required.is_empty() {
        // Nothing to detect: the live table must stay clean a while.
        while start.elapsed() < Duration::from_secs(3) {
            let live = findings(&exporter.live()["report"]);
            outcome.live = list(&live);
            if !live.is_empty() {
                outcome
                    .problems
                    .push(format!("the live table named {live:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    } else {
        loop {
            let live = findings(&exporter.live()["report"]);
            if expect.names(&live) {
                outcome.detect = Some(start.elapsed());
                outcome.live = list(&live);
                if !expect.in_check
                    && let Some(other) = live
                        .iter()
                        .find(|(k, _)| !expect.allowed_kinds.contains(&k.as_str()))
                {
                    outcome
                        .problems
                        .push(format!("the live table also named {other:?}"));
                }
                break;
            }
            if start.elapsed() > DETECT_WITHIN {
                outcome.problems.push(format!(
                    "the live table did not name it within {DETECT_WITHIN:?}; last: {live:?}"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let out = command(netns, bin())
        .args(["check", "--for", CHECK_FOR, "--json"])
        .args(&args)
        .output()
        .expect("run sojourn check");
    drop(guard);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let found = findings(&report);
    outcome.found = list(&found);
    let want_check = expect.in_check && !expect.required.is_empty();
    if want_check && !expect.names(&found) {
        outcome
            .problems
            .push("sojourn check did not name it".into());
    }
    let allowed = |k: &str| want_check && expect.allowed_kinds.contains(&k);
    for (k, r) in &found {
        if !allowed(k) {
            let evidence = report["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["resource"] == r.as_str())
                .map(|x| x["evidence"].to_string())
                .unwrap_or_default();
            outcome
                .problems
                .push(format!("sojourn check also named {k} {r}: {evidence}"));
        }
    }
    if let Some(who) = expect.first_user.as_deref().filter(|_| want_check) {
        let users = report["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["resource"] == "cpu")
            .and_then(|x| x["evidence"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .find(|e| e.starts_with("who: "))
            .unwrap_or_default()
            .to_string();
        if !users.starts_with(&format!("who: {who} ")) {
            outcome
                .problems
                .push(format!("sojourn check did not name {who} first: {users:?}"));
        }
        outcome.found.push_str(&format!(" ({users})"));
    }
    let code = out.status.code();
    let want_code = if want_check { 1 } else { 0 };
    if code != Some(want_code) {
        outcome.problems.push(format!(
            "sojourn check exited {code:?}, not {want_code}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    drop(exporter);
    outcome
}

// ---- Faults. Each returns a guard whose drop undoes it. ----

use common::{Children, busy_shells};

/// Busy shells in a cgroup of their own (the cpu hierarchy, and cpuacct's
/// where it is apart), so that `check` can say who uses the CPU; the
/// shells are killed and the cgroup removed on drop.
struct BusyCgroup {
    shells: Children,
    dirs: Vec<std::path::PathBuf>,
}

impl BusyCgroup {
    fn new(name: &str, shells: Children) -> Result<Self, String> {
        let mut guard = BusyCgroup {
            shells,
            dirs: Vec::new(),
        };
        for controller in ["cpu", "cpuacct"] {
            let (dir, v2) = common::cgroup_dir(controller, name);
            if !dir.exists() {
                std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                guard.dirs.push(dir.clone());
            }
            for c in &guard.shells.0 {
                std::fs::write(dir.join("cgroup.procs"), c.id().to_string())
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            if v2 {
                break;
            }
        }
        Ok(guard)
    }
}

impl Drop for BusyCgroup {
    fn drop(&mut self) {
        for c in &mut self.shells.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            common::remove_cgroup(d);
        }
    }
}

/// Threads stopped on drop.
struct Stop(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// A listener with a backlog of 1 that never accepts, and a client that
/// keeps connecting to it.
fn accept_overflow() -> Result<(Stop, u16), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    rustix::net::listen(&listener, 1).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let client = std::thread::spawn(move || {
        let _listener = listener;
        let mut open = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                open.push(s);
            }
            if open.len() > 64 {
                open.remove(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Ok((Stop(stop, vec![client]), addr.port()))
}

/// A receiver that accepts one connection and never reads, and a sender
/// that keeps writing to it.
fn socket_backlog() -> Result<(Stop, u16), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let receiver = std::thread::spawn(move || {
        let (_conn, _) = listener.accept().unwrap();
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let flag = stop.clone();
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while !flag.load(Ordering::Relaxed) {
            // Blocks once the receiver's queue and our send buffer are full.
            let _ = s.write(&chunk);
        }
    });
    Ok((Stop(stop, vec![receiver, sender]), addr.port()))
}

/// A loop device, detached and its file removed on drop.
struct Loop {
    device: String,
    backing: std::path::PathBuf,
    mount: Option<tempfile::TempDir>,
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mount {
            let _ = run("umount", &[m.path().to_str().unwrap()]);
        }
        let _ = run("losetup", &["-d", &self.device]);
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// A loop device over a file in `dir`; with `direct_io` the loop driver
/// writes through to the disk underneath without the page cache.
fn loop_device(dir: &str, name: &str, megabytes: u64, direct_io: bool) -> Result<Loop, String> {
    let backing = std::path::Path::new(dir).join(format!("{name}.img"));
    let f = std::fs::File::create(&backing).map_err(|e| e.to_string())?;
    f.set_len(megabytes << 20).map_err(|e| e.to_string())?;
    let dio = format!("--direct-io={}", if direct_io { "on" } else { "off" });
    let device = run(
        "losetup",
        &["-f", "--show", &dio, backing.to_str().unwrap()],
    )?;
    Ok(Loop {
        device,
        backing,
        mount: None,
    })
}

/// Writers doing direct I/O to a loop device, many in flight at once. The
/// device's file is on the real disk, written through with direct I/O: a
/// loop device over memory would make the copying, not the device, the
/// bottleneck (both CPUs busy, CPU named too). Each dd writes its whole
/// 16 MiB stripe: with half of it, starting twice as many processes put
/// CPU pressure (PSI some) at 18 % against 12 %, and once past the 10 %
/// target, which named CPU too.
fn disk_queue() -> Result<((Children, Loop), String), String> {
    let lo = loop_device(
        env!("CARGO_TARGET_TMPDIR"),
        "sojourn-scenario-disk",
        256,
        true,
    )?;
    let writers = Children(
        (0..16)
            .map(|i| {
                Command::new("sh")
                    .args([
                        "-c",
                        &format!(
                            "while :; do dd if=/dev/zero of={} bs=1M count=16 seek={} oflag=direct conv=notrunc status=none; done",
                            lo.device,
                            i * 16
                        ),
                    ])
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let name = lo.device.trim_start_matches("/dev/").to_string();
    Ok(((writers, lo), name))
}

/// A cgroup removed on drop (its tasks killed first).
struct Cgroup {
    dirs: Vec<std::path::PathBuf>,
    child: Option<Child>,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.dirs {
            common::remove_cgroup(d);
        }
    }
}

/// A reader of a file bigger than the memory limit of its cgroup: its
/// page cache is reclaimed and read again, over and over. The file is on
/// ext4 over a loop device in /dev/shm, so the rereads cost no real disk.
fn memory_pressure(name: &str) -> Result<((Cgroup, Loop), String), String> {
    let mut lo = loop_device("/dev/shm", "sojourn-scenario-memory", 192, false)?;
    run("mkfs.ext4", &["-q", "-F", &lo.device])?;
    let mount = tempfile::tempdir().map_err(|e| e.to_string())?;
    run("mount", &[&lo.device, mount.path().to_str().unwrap()])?;
    let file = mount.path().join("data");
    lo.mount = Some(mount);
    // Written around the page cache: the cgroup's reads charge it.
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", file.display()),
            "bs=1M",
            "count=128",
            "oflag=direct",
            "status=none",
        ],
    )?;
    let (dir, v2) = common::cgroup_dir("memory", name);
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cg = Cgroup {
        dirs: vec![dir.clone()],
        child: None,
    };
    let limit = (32u64 << 20).to_string();
    if v2 {
        std::fs::write(dir.join("memory.max"), &limit).map_err(|e| e.to_string())?;
    } else {
        std::fs::write(dir.join("memory.limit_in_bytes"), &limit).map_err(|e| e.to_string())?;
    }
    // Paced, so the reader is not also a hot CPU. It waits for a line on
    // stdin before its first read: a page read from outside the cgroup
    // would be charged to the reader's old cgroup, and stay cached there.
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "read go; while :; do dd if={} of=/dev/null bs=1M status=none; sleep 0.3; done",
                file.display()
            ),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let go = child.stdin.take();
    cg.child = Some(child);
    for d in &cg.dirs {
        std::fs::write(
            d.join("cgroup.procs"),
            cg.child.as_ref().unwrap().id().to_string(),
        )
        .map_err(|e| format!("{}: {e}", d.display()))?;
    }
    go.unwrap().write_all(b"go\n").map_err(|e| e.to_string())?;
    Ok(((cg, lo), name.to_string()))
}

/// Two namespaces joined by a veth pair, 10 % of the packets into B lost
/// (tc netem where the kernel has it, else an nftables random drop on B's
/// ingress), and a sender in A writing to a reader in B.
struct Namespaces {
    names: [&'static str; 2],
    children: Children,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.children.0.iter_mut().for_each(|c| {
            let _ = c.kill();
            let _ = c.wait();
        });
        for ns in self.names {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// The namespaces, link and reader; no loss and no traffic yet.
fn namespaces() -> Result<Namespaces, String> {
    let names = ["sojourn-scn-a", "sojourn-scn-b"];
    for ns in names {
        let _ = run("ip", &["netns", "del", ns]);
    }
    let mut guard = Namespaces {
        names,
        children: Children(Vec::new()),
    };
    for ns in names {
        run("ip", &["netns", "add", ns])?;
    }
    let [a, b] = names;
    run(
        "ip",
        &[
            "link", "add", "sjscn0", "netns", a, "type", "veth", "peer", "name", "sjscn1", "netns",
            b,
        ],
    )?;
    for (ns, dev, ip) in [
        (a, "sjscn0", "10.213.0.1/24"),
        (b, "sjscn1", "10.213.0.2/24"),
    ] {
        run("ip", &["-n", ns, "addr", "add", ip, "dev", dev])?;
        run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    }
    let server = "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('10.213.0.2', 9000)); s.listen()\nwhile True:\n  c, _ = s.accept()\n  while c.recv(65536): pass\n";
    guard.children.0.push(
        command(Some(b), "python3")
            .args(["-c", server])
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    Ok(guard)
}

/// The fault: loss on the link into B, and a sender in A.
fn packet_loss(mut guard: Namespaces) -> Result<(Namespaces, String), String> {
    let [a, b] = guard.names;
    let how = match run(
        "ip",
        &[
            "netns", "exec", a, "tc", "qdisc", "add", "dev", "sjscn0", "root", "netem", "loss",
            "10%",
        ],
    ) {
        Ok(_) => "tc netem loss 10 %".to_string(),
        Err(netem) => {
            let rules = "table netdev sojourn_loss {\n chain ingress {\n  type filter hook ingress device sjscn1 priority 0; policy accept;\n  numgen random mod 100 < 10 drop\n }\n}\n";
            let mut nft = Command::new("ip")
                .args(["netns", "exec", b, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{netem}; and nft: {e}"))?;
            nft.stdin
                .take()
                .unwrap()
                .write_all(rules.as_bytes())
                .unwrap();
            let out = nft.wait_with_output().unwrap();
            if !out.status.success() {
                return Err(format!(
                    "{netem}; and nft: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            "nftables random drop of 10 % (this kernel has no netem)".to_string()
        }
    };
    let client = "import socket, time\nwhile True:\n  try:\n    s = socket.create_connection(('10.213.0.2', 9000))\n    while True: s.sendall(b'x' * 65536)\n  except OSError:\n    time.sleep(0.1)\n";
    guard.children.0.push(
        command(Some(a), "python3")
            .args(["-c", client])
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    Ok((guard, how))
}

/// A kubelet-layout cgroup (`kubepods/burstable/pod<uid>/<container>`)
/// holding a process, removed on drop (after the process is gone).
struct PodCgroup(std::path::PathBuf);

impl Drop for PodCgroup {
    fn drop(&mut self) {
        common::remove_cgroup(&self.0);
        if let Some(pod) = self.0.parent() {
            common::remove_cgroup(pod);
        }
    }
}

/// The loss of [`packet_loss`] with its sender in a pod: A's process is
/// moved into a kubelet-layout cgroup, so A is that pod's namespace and
/// its retransmits are the pod's, not the host's. Returns the pod's uid.
fn pod_packet_loss(ns: Namespaces) -> Result<((Namespaces, PodCgroup), String), String> {
    let (guard, _) = packet_loss(ns)?;
    let sender = guard.children.0.last().map(Child::id).ok_or("no sender")?;
    let uid = format!("5c3e11a0-aaaa-bbbb-cccc-{:012x}", std::process::id());
    let (base, _) = common::cgroup_dir("memory", "kubepods/burstable");
    let cgroup = PodCgroup(base.join(format!("pod{uid}")).join("5e11de45"));
    std::fs::create_dir_all(&cgroup.0).map_err(|e| e.to_string())?;
    std::fs::write(cgroup.0.join("cgroup.procs"), sender.to_string()).map_err(|e| e.to_string())?;
    Ok(((guard, cgroup), uid))
}

/// An HTTP/1.1 upstream that answers every request after `delay`.
fn slow_upstream(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    // Request line and headers; no bodies are sent.
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    std::thread::sleep(delay);
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Callers sending requests through the proxy until stopped.
fn callers(proxy: SocketAddr, n: usize) -> Stop {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..n)
        .map(|_| {
            let flag = stop.clone();
            std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let _ = common::get(proxy, "/checkout", &[]);
                }
            })
        })
        .collect();
    Stop(stop, threads)
}

fn disk_args() -> Vec<String> {
    // Loop devices are left out by default (they mirror a file); this one
    // is the device under test.
    vec![
        "--collector.disk.device-exclude".into(),
        r"^(z?ram\d+|fd\d+)$".into(),
    ]
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn every_fault_names_its_resource_and_nothing_else() {
    if !is_root() {
        common::skip_unless_required("SOJOURN_REQUIRE_SCENARIOS", "the scenarios need root");
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut outcomes = Vec::new();

    outcomes.push(scenario("idle baseline", None, vec![], || {
        Ok(((), Expect::nothing()))
    }));

    outcomes.push(scenario("CPU saturation", None, vec![], || {
        let name = "sojourn-scenario-busy";
        let busy = BusyCgroup::new(name, busy_shells(cpus + 2))?;
        Ok((
            busy,
            Expect::finds("cpu", "cpu").used_most_by(format!("cgroup /{name}")),
        ))
    }));

    outcomes.push(scenario("one hot CPU", None, vec![], || {
        // One busy shell pinned to CPU 0: that CPU is full while the
        // average is not, and nothing waits (the USE checklist's per-CPU
        // imbalance).
        let pinned = Command::new("taskset")
            .args(["-c", "0", "sh", "-c", "while :; do :; done"])
            .spawn()
            .map_err(|e| format!("taskset: {e}"))?;
        Ok((Children(vec![pinned]), Expect::finds("cpu", "cpu0")))
    }));

    outcomes.push(scenario("CPU throttling", None, vec![], || {
        let cg = common::throttled_cgroup("sojourn-scenario-throttle");
        Ok((
            cg,
            Expect::finds("container_cpu", "cgroup /sojourn-scenario-throttle cpu"),
        ))
    }));

    outcomes.push(scenario("accept-queue overflow", None, vec![], || {
        let (guard, port) = accept_overflow()?;
        Ok((
            guard,
            Expect::finds("tcp_accept", format!("tcp_accept 127.0.0.1:{port}")),
        ))
    }));

    outcomes.push(scenario("socket backlog", None, vec![], || {
        let (guard, port) = socket_backlog()?;
        Ok((guard, Expect::finds("tcp_port", format!("tcp_port {port}"))))
    }));

    outcomes.push(scenario("disk queue", None, disk_args(), || {
        let (guard, device) = disk_queue()?;
        Ok((guard, Expect::finds("disk", format!("disk {device}"))))
    }));

    outcomes.push(scenario("memory pressure", None, vec![], || {
        let (guard, name) = memory_pressure("sojourn-scenario-memory")?;
        Ok((
            guard,
            Expect::finds("container_memory", format!("cgroup /{name} memory")).or_also("memory"),
        ))
    }));

    // The namespaces must exist before the exporter starts inside A; the
    // loss and the traffic start with the clock.
    match namespaces() {
        Ok(ns) => {
            let a = ns.names[0];
            let mut how = String::new();
            let mut o = scenario("packet loss and retransmits", Some(a), vec![], || {
                let (guard, h) = packet_loss(ns)?;
                how = h;
                Ok((guard, Expect::finds("tcp", "tcp").or_also("network")))
            });
            o.expected.push_str(&format!(" ({how})"));
            outcomes.push(o);
        }
        Err(e) => outcomes.push(Outcome {
            scenario: "packet loss and retransmits",
            expected: "tcp".into(),
            found: String::new(),
            live: String::new(),
            detect: None,
            problems: vec![format!("could not build the namespaces: {e}")],
        }),
    }

    // Pods: the exporter in the host's namespace, the faults in pods'.
    // Namespaces made after it starts are found at its next walk of /proc.
    let rescan = vec![
        "--collector.process.rescan-interval".to_string(),
        "1s".to_string(),
    ];
    outcomes.push(scenario(
        "accept-queue overflow in a pod",
        None,
        rescan.clone(),
        || {
            let pod = common::pod("scn", true).ok_or("could not make the pod")?;
            let resource = format!("tcp_accept of pod {}", pod.uid);
            Ok((pod, Expect::finds("tcp_accept", resource)))
        },
    ));
    match namespaces() {
        Ok(ns) => outcomes.push(scenario("packet loss in a pod", None, rescan, || {
            let (guard, uid) = pod_packet_loss(ns)?;
            Ok((guard, Expect::finds("tcp", format!("tcp of pod {uid}"))))
        })),
        Err(e) => outcomes.push(Outcome {
            scenario: "packet loss in a pod",
            expected: "tcp".into(),
            found: String::new(),
            live: String::new(),
            detect: None,
            problems: vec![format!("could not build the namespaces: {e}")],
        }),
    }

    let upstream = slow_upstream(Duration::from_millis(600));
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(
        &config,
        format!(
            "services:\n  - name: slow\n    listen: 127.0.0.1:{port}\n    upstream: http://{upstream}\n    routes: [\"/checkout\"]\n    latency_target: 250ms\n"
        ),
    )
    .unwrap();
    let args = vec!["--config.file".to_string(), config.display().to_string()];
    outcomes.push(scenario(
        "slow upstream behind the proxy",
        None,
        args,
        || {
            let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            Ok((
                callers(proxy, 8),
                Expect::finds("service", "service slow").not_in_check(),
            ))
        },
    ));

    let mut table = String::from(
        "| scenario | expected | found by `sojourn check` | named by the live table | time to detect | result |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for o in &outcomes {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            o.scenario,
            o.expected,
            o.found,
            o.live,
            o.detect
                .map_or("—".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            if o.problems.is_empty() {
                "pass"
            } else {
                "FAIL"
            }
        ));
    }
    eprintln!("\n{table}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scenarios.md"),
        &table,
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| format!("{}: {}", o.scenario, o.problems.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
