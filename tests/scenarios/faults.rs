//! The faults: each function injects one on this machine and returns the
//! guard that undoes it (dropped even when an assertion fails).

use super::*;

/// Busy shells in a cgroup of their own (the cpu hierarchy, and cpuacct's
/// where it is apart), so that `check` can say who uses the CPU; the
/// shells are killed and the cgroup removed on drop.
pub(crate) struct BusyCgroup {
    shells: Children,
    dirs: Vec<std::path::PathBuf>,
}

impl BusyCgroup {
    pub(crate) fn new(name: &str, shells: Children) -> Result<Self, String> {
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
pub(crate) struct Stop(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

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
pub(crate) fn accept_overflow() -> Result<(Stop, u16), String> {
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
pub(crate) fn socket_backlog() -> Result<(Stop, u16), String> {
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
pub(crate) struct Loop {
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
pub(crate) fn loop_device(
    dir: &str,
    name: &str,
    megabytes: u64,
    direct_io: bool,
) -> Result<Loop, String> {
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

/// Writers doing direct I/O to a loop device, many in flight at once,
/// over a disk capped at 32 MB/s for them: a volume at its provisioned
/// throughput, the way a cloud disk is. The device's file is on the real
/// disk, written through with direct I/O by the loop driver on the
/// writers' behalf (charged to their blkio cgroup, which caps it), so the
/// loop device's requests wait (~30 in flight, ~0.5 s each) while the
/// CPUs idle. Uncapped, how slow the device was depended on the host's
/// disk: at 2.6 GB/s the copying kept both CPUs busy and CPU stood too.
pub(crate) fn disk_queue() -> Result<((Writers, Loop), String), String> {
    let lo = loop_device(
        env!("CARGO_TARGET_TMPDIR"),
        "sojourn-scenario-disk",
        256,
        true,
    )?;
    let disk = whole_disk(&lo.backing)?;
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (dir, _) = common::cgroup_dir(if v2 { "io" } else { "blkio" }, "sojourn-scenario-disk");
    let cap = if v2 {
        ("io.max", format!("{disk} wbps={}", 32 << 20))
    } else {
        (
            "blkio.throttle.write_bps_device",
            format!("{disk} {}", 32 << 20),
        )
    };
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut writers = Writers {
        cgroup: dir.clone(),
        shells: Children(Vec::new()),
    };
    std::fs::write(dir.join(cap.0), &cap.1)
        .map_err(|e| format!("{} {}: {e}", dir.join(cap.0).display(), cap.1))?;
    let procs = dir.join("cgroup.procs");
    for i in 0..16 {
        // Each shell moves itself into the cgroup before its first write.
        let shell = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo $$ > {} && while :; do dd if=/dev/zero of={} bs=1M count=4 seek={} oflag=direct conv=notrunc status=none; done",
                    procs.display(),
                    lo.device,
                    i * 16
                ),
            ])
            .spawn()
            .map_err(|e| format!("sh: {e}"))?;
        writers.shells.0.push(shell);
    }
    let name = lo.device.trim_start_matches("/dev/").to_string();
    Ok(((writers, lo), name))
}

/// The writers and their blkio cgroup: every process in it is killed
/// (the shells and the dd each is waiting for) before it is removed.
pub(crate) struct Writers {
    cgroup: std::path::PathBuf,
    shells: Children,
}

impl Drop for Writers {
    fn drop(&mut self) {
        for _ in 0..100 {
            let pids =
                std::fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
            if pids.trim().is_empty() {
                break;
            }
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for c in &mut self.shells.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        common::remove_cgroup(&self.cgroup);
    }
}

/// The whole disk (`major:minor`) under the file system `file` is on: the
/// cap is set on disks, not partitions.
fn whole_disk(file: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let sys = sys.canonicalize().map_err(|e| {
        format!(
            "{} is on no block device ({}: {e})",
            file.display(),
            sys.display()
        )
    })?;
    let disk = if sys.join("partition").exists() {
        sys.parent().map(|p| p.join("dev")).unwrap_or_default()
    } else {
        sys.join("dev")
    };
    std::fs::read_to_string(&disk)
        .map(|d| d.trim().to_string())
        .map_err(|e| format!("{}: {e}", disk.display()))
}

/// A cgroup removed on drop (its tasks killed first).
pub(crate) struct Cgroup {
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
pub(crate) fn memory_pressure(name: &str) -> Result<((Cgroup, Loop), String), String> {
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
pub(crate) struct Namespaces {
    pub(crate) names: [&'static str; 2],
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
pub(crate) fn namespaces() -> Result<Namespaces, String> {
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
pub(crate) fn packet_loss(mut guard: Namespaces) -> Result<(Namespaces, String), String> {
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
pub(crate) struct PodCgroup(std::path::PathBuf);

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
pub(crate) fn pod_packet_loss(ns: Namespaces) -> Result<((Namespaces, PodCgroup), String), String> {
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
pub(crate) fn slow_upstream(delay: Duration) -> SocketAddr {
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

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Callers sending requests through the proxy until stopped.
pub(crate) fn callers(proxy: SocketAddr, n: usize) -> Stop {
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
