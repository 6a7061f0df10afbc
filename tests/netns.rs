//! Pods' network namespaces, made for real: each fake pod is a network
//! namespace of the test's own with a process in it, placed in a cgroup of
//! the kubelet's layout (`kubepods/burstable/pod<uid>/<container>`). The
//! netns collector must report each pod's TCP counters under its uid, and
//! forget a pod once it is gone.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::pod_or_skip;

use sojourn::metrics::{self, Format};

/// The tests here make namespaces and count this process's sockets: one
/// at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn scraper() -> sojourn::scrape::Scraper {
    common::scraper_for([
        "--collector.disable-defaults",
        "--collector.netns",
        "--collector.process.rescan-interval",
        "0s",
    ])
}

fn scrape(s: &sojourn::scrape::Scraper) -> String {
    String::from_utf8(metrics::encode_bytes(s.scrape(), Format::Text)).unwrap()
}

fn overflows(text: &str, uid: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with("sojourn_netns_tcp_listen_overflows_total{")
                && l.contains(&format!("pod_uid=\"{uid}\""))
                && l.contains("qos_class=\"burstable\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn each_pods_tcp_counters_are_its_own_and_go_with_it() {
    let _serial = serial();
    let (Some(busy), Some(idle)) = (pod_or_skip("busy", true), pod_or_skip("idle", false)) else {
        return;
    };
    let s = scraper();
    let t = Instant::now();
    let text = loop {
        let text = scrape(&s);
        if overflows(&text, &busy.uid).is_some_and(|v| v > 0.0) {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the busy pod's listener overflows under its uid:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(overflows(&text, &idle.uid), Some(0.0), "{text}");
    assert!(
        !text.contains(&format!("netns=\"{}\"", own_inode())),
        "sojourn's own namespace is the host collectors'"
    );

    // `sojourn check` over a window names the busy pod, not the idle one.
    let snaps = sojourn::check::sample(&s, Duration::from_secs(2), |_| {});
    let report = sojourn::check::evaluate(&snaps).unwrap();
    assert!(
        report
            .findings
            .contains(&format!("tcp_accept of pod {}", busy.uid)),
        "{:?}",
        report.findings
    );
    assert!(
        !report.findings.iter().any(|f| f.contains(&idle.uid)),
        "{:?}",
        report.findings
    );

    let uid = busy.uid.clone();
    drop(busy);
    let text = scrape(&s);
    assert!(!text.contains(&uid), "a pod gone leaves no series:\n{text}");
    assert_eq!(overflows(&text, &idle.uid), Some(0.0));
}

fn own_inode() -> u64 {
    let link = std::fs::read_link("/proc/self/ns/net").unwrap();
    sojourn::netns::parse_ns_link(link.to_str().unwrap()).unwrap()
}

/// The inodes of the sockets this process holds.
fn sockets_held() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_str()?;
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The inodes of the netlink sockets in the namespace of process `pid`.
fn netlink_sockets_in(pid: u32) -> HashSet<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
        .collect()
}

fn series<'a>(text: &'a str, name: &str, uid: &str) -> Option<&'a str> {
    text.lines().find(|l| {
        l.starts_with(&format!("{name}{{"))
            && l.contains("queue=\"tcp_accept:127.0.0.1:8080\"")
            && l.contains(&format!("pod_uid=\"{uid}\""))
    })
}

#[test]
fn a_pods_listener_is_an_accept_queue_of_its_own_and_goes_with_it() {
    let _serial = serial();
    let Some(busy) = pod_or_skip("queue", true) else {
        return;
    };
    // The kubelet lists the pod by its uid: its names join the labels.
    let s = common::named_pod_scraper(&busy);
    let t = Instant::now();
    let text = loop {
        let text = scrape(&s);
        // Backlog 1, never accepted: the queue holds its limit and stands.
        if series(&text, "sojourn_queue_standing", &busy.uid)
            .is_some_and(|l| l.ends_with(" 1") && l.contains("namespace=\"shop\",pod=\"web-7d9\""))
        {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the pod's listener stands under its uid:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        text.lines().any(
            |l| l.starts_with("sojourn_netns_tcp_listen_overflows_total{")
                && l.contains("namespace=\"shop\",pod=\"web-7d9\"")
        ),
        "the pod's counters are named too:\n{text}"
    );
    let limit = series(&text, "sojourn_queue_limit", &busy.uid).expect("backlog");
    assert!(limit.ends_with(" 1.0") || limit.ends_with(" 1"), "{limit}");
    assert!(limit.contains("qos_class=\"burstable\""), "{limit}");
    assert!(
        text.contains("sojourn_scrape_collector_unsupported{collector=\"queue_netns\"} 0"),
        "{text}"
    );
    // The host's namespace has no such listener: the name is the pod's.
    assert!(
        !text
            .lines()
            .any(|l| l.contains("queue=\"tcp_accept:127.0.0.1:8080\"") && !l.contains("netns=")),
        "{text}"
    );
    // The per-port view of the pod: a server in it that accepts and never
    // reads, its client writing, so bytes stand in a receive queue.
    let reader = common::Killed(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &busy.netns,
                "python3",
                "-c",
                common::UNREAD,
            ])
            .spawn()
            .expect("python3"),
    );
    let t = Instant::now();
    let text = loop {
        let text = scrape(&s);
        let port = text.lines().find(|l| {
            l.starts_with("sojourn_tcp_port_receive_queue_bytes{port=\"9000\"")
                && l.contains(&format!("pod_uid=\"{}\"", busy.uid))
                && l.contains("pod=\"web-7d9\"")
        });
        if port.is_some_and(|l| !l.ends_with(" 0")) {
            break text;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the pod's port:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        text.contains("sojourn_scrape_collector_unsupported{collector=\"tcp_ports_netns\"} 0"),
        "{text}"
    );
    // Two sockets of sojourn's in the pod's namespace (the sampler's and
    // tcp_ports'), no more.
    let inside: HashSet<u64> = sockets_held()
        .intersection(&netlink_sockets_in(busy.child.id()))
        .copied()
        .collect();
    assert_eq!(inside.len(), 2, "{inside:?}");

    // `sojourn check` names the pod and its listener.
    let snaps = sojourn::check::sample(&s, Duration::from_secs(2), |_| {});
    let report = sojourn::check::evaluate(&snaps).unwrap();
    let resource = "tcp_accept of pod shop/web-7d9".to_string();
    assert!(report.findings.contains(&resource), "{:?}", report.findings);
    let json = sojourn::check::render::json(&report);
    assert!(
        json.contains("accept queue 127.0.0.1:8080 standing"),
        "{json}"
    );

    // Gone with its pod: no series, and its socket closed (the namespace
    // is let go).
    let uid = busy.uid.clone();
    drop(reader);
    drop(busy);
    let t = Instant::now();
    loop {
        let text = scrape(&s);
        if !text.contains(&uid) && sockets_held().is_disjoint(&inside) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the pod's queue and socket go within a rescan:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_leave_to_enter_namespaces_the_host_view_stays_and_says_so() {
    let _serial = serial();
    let Some(busy) = pod_or_skip("refused", true) else {
        return;
    };
    // Root without CAP_SYS_ADMIN, as a container granted only what it asks:
    // setns(CLONE_NEWNET) is refused.
    let mut command = std::process::Command::new("setpriv");
    command
        .args(["--bounding-set=-sys_admin", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_sojourn"));
    let exporter = common::start_with(command, &["--collector.process.rescan-interval", "100ms"]);
    let text = common::scrape_until(exporter.addr, Duration::from_secs(10), |t| {
        t.contains("sojourn_scrape_collector_unsupported{collector=\"queue_netns\"} 1")
            && t.contains("sojourn_queue_standing{queue=\"cpu\"}")
    });
    assert!(
        text.contains("sojourn_scrape_collector_success{collector=\"queue\"} 1"),
        "{text}"
    );
    // tcp_ports (on by default) says the same of its part.
    let text = common::scrape_until(exporter.addr, Duration::from_secs(5), |t| {
        t.contains("sojourn_scrape_collector_unsupported{collector=\"tcp_ports_netns\"} 1")
    });
    assert!(
        text.contains("sojourn_scrape_collector_success{collector=\"tcp_ports\"} 1"),
        "{text}"
    );
    // The pod's counters are read through /proc, which needs no setns.
    let t = Instant::now();
    let text = loop {
        let text = common::scrape_until(exporter.addr, Duration::from_secs(5), |_| true);
        if overflows(&text, &busy.uid).is_some_and(|v| v > 0.0) {
            break text;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !text.contains("queue=\"tcp_accept:127.0.0.1:8080\",netns="),
        "no queue of the pod without its socket:\n{text}"
    );
}

#[test]
fn short_lived_namespaces_leave_no_socket_and_no_series() {
    let _serial = serial();
    if !std::process::Command::new("ip")
        .args(["netns", "list"])
        .status()
        .is_ok_and(|s| s.success())
        || sojourn::netns::own_namespace(std::path::Path::new("/proc")).is_none()
    {
        common::skip_unless_required("SOJOURN_REQUIRE_NAMESPACES", "ip netns needs root");
        return;
    }
    let s = common::scraper_for([
        "--collector.disable-defaults",
        "--collector.netns",
        "--collector.queue",
        "--collector.tcp_ports",
        "--collector.process.rescan-interval",
        "50ms",
    ]);
    // Namespaces the host had before (its own workloads), left alone.
    let namespaces_in = |text: &str| -> HashSet<String> {
        text.split("netns=\"")
            .skip(1)
            .filter_map(|r| r.split('"').next().map(String::from))
            .collect()
    };
    let before = namespaces_in(&scrape(&s));
    let baseline = sockets_held();
    let pid = std::process::id();
    let mut entered = 0;
    // Four waves of ten namespaces, each living about half a second with
    // one process in it, scraped while they live.
    for wave in 0..4 {
        let names: Vec<String> = (0..10)
            .map(|i| format!("sojourn-short-{pid}-{wave}-{i}"))
            .collect();
        let mut sleepers = Vec::new();
        for n in &names {
            let made = std::process::Command::new("ip")
                .args(["netns", "add", n])
                .status();
            assert!(made.is_ok_and(|s| s.success()), "ip netns add {n}");
            sleepers.push(common::Killed(
                std::process::Command::new("ip")
                    .args(["netns", "exec", n, "sleep", "30"])
                    .spawn()
                    .expect("sleep"),
            ));
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(500) {
            let text = scrape(&s);
            entered = entered.max(
                text.lines()
                    .find_map(|l| l.strip_prefix("sojourn_tcp_port_namespaces "))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(sleepers);
        for n in &names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    }
    assert!(
        entered >= 10,
        "the namespaces were entered ({entered} at most)"
    );
    // Gone: every socket made in them closed, no series of theirs left.
    let t = Instant::now();
    loop {
        let text = scrape(&s);
        let held = sockets_held();
        if held.len() == baseline.len() && namespaces_in(&text).is_subset(&before) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{} sockets held, {} at the start; series:\n{}",
            held.len(),
            baseline.len(),
            text.lines()
                .filter(|l| l.contains("netns="))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With eBPF, each connection's wait in a pod's listener's accept queue is
/// timed in the kernel and named with the pod: five connections to a
/// server in the pod's namespace that accepts one every 30 ms.
#[test]
fn a_pods_accept_queue_waits_are_timed_under_its_name() {
    let _serial = serial();
    if let Err(e) = sojourn::ebpf::Accept::load() {
        common::skip_unless_required("SOJOURN_REQUIRE_EBPF", &e);
        return;
    }
    let Some(pod) = pod_or_skip("accept", false) else {
        return;
    };
    let s = common::scraper_for(["--collector.disable-defaults", "--collector.ebpf"]);
    // Listening until the scrape is done: a listener closed by then is
    // let go at its first scrape.
    let server = "import socket, sys, time
l = socket.socket(); l.bind(('127.0.0.1', 9100)); l.listen(16)
clients = [socket.create_connection(('127.0.0.1', 9100)) for _ in range(5)]
time.sleep(0.02)
for _ in range(5):
    c, _ = l.accept(); time.sleep(0.03)
print('ready', flush=True)
sys.stdin.readline()
";
    let server = Served::start(pod.python(server));
    let text = scrape(&s);
    drop(server);
    let count = text
        .lines()
        .find(|l| {
            l.starts_with("sojourn_tcp_accept_wait_seconds_count{port=\"9100\"")
                && l.contains(&format!("pod_uid=\"{}\"", pod.uid))
        })
        .unwrap_or_else(|| panic!("the pod's listener is timed under its uid:\n{text}"));
    assert!(count.ends_with(" 5"), "{count}");
}

/// Until `done` holds of a scrape, scraping every 50 ms; the last scrape.
fn scrape_until(
    s: &sojourn::scrape::Scraper,
    within: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = scrape(s);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A listener closed in a pod that lives on loses its accept histogram,
/// as one in sojourn's own namespace does: the pod's listening ports are
/// listed through a socket made in its namespace.
#[test]
fn a_port_closed_in_a_living_pod_loses_its_accept_histogram() {
    let _serial = serial();
    let Some((pod, s)) = pod_and_accept_scraper("acceptclose") else {
        return;
    };
    // Two listeners in the pod, each accepting once; then one closes (its
    // accepted connection stays open on the same port) and the pod lives on.
    let server = "import socket, sys
held = []
for port in (9210, 9211):
    l = socket.socket(); l.bind(('127.0.0.1', port)); l.listen(4)
    c = socket.create_connection(('127.0.0.1', port)); held.append((l, c, l.accept()))
print('ready', flush=True)
sys.stdin.readline()
held[0][0].close()
print('closed', flush=True)
sys.stdin.readline()
";
    let mut server = Served::start(pod.python(server));
    let series = |port: u16| format!("sojourn_tcp_accept_wait_seconds_count{{port=\"{port}\"");
    let pods = |text: &str, port: u16| {
        text.lines().any(|l| {
            l.starts_with(&series(port)) && l.contains(&format!("pod_uid=\"{}\"", pod.uid))
        })
    };
    scrape_until(
        &s,
        Duration::from_secs(10),
        "both pod listeners named",
        |t| pods(t, 9210) && pods(t, 9211),
    );
    server.next("closed");
    let text = scrape_until(
        &s,
        Duration::from_secs(10),
        "the closed port's series gone while its pod lives",
        |t| !pods(t, 9210),
    );
    assert!(pods(&text, 9211), "the open port's stays:\n{text}");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        let text = scrape(&s);
        assert!(!text.contains(&series(9210)), "not back:\n{text}");
        assert!(pods(&text, 9211), "{text}");
    }
    drop(server);
}

/// A fake pod and a scraper of the accept program alone, at a 100 ms
/// rescan interval; None (skipped) where either cannot be had.
fn pod_and_accept_scraper(tag: &str) -> Option<(common::Pod, sojourn::scrape::Scraper)> {
    if let Err(e) = sojourn::ebpf::Accept::load() {
        common::skip_unless_required("SOJOURN_REQUIRE_EBPF", &e);
        return None;
    }
    let pod = pod_or_skip(tag, false)?;
    let s = common::scraper_for([
        "--collector.disable-defaults",
        "--collector.ebpf",
        "--collector.process.rescan-interval",
        "100ms",
    ]);
    Some((pod, s))
}

/// A program that says "ready" once it has served, then goes on at each
/// line it is sent (saying what it did) and ends with its input (dropped).
struct Served {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Served {
    fn start(mut command: std::process::Command) -> Served {
        use std::process::Stdio;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut served = Served {
            child,
            stdin,
            stdout,
        };
        served.said("ready");
        served
    }

    fn said(&mut self, expected: &str) {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), expected);
    }

    /// Lets it go on, and waits until it says `expected`.
    fn next(&mut self, expected: &str) {
        use std::io::Write;
        writeln!(self.stdin.as_mut().unwrap()).unwrap();
        self.said(expected);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        if !std::thread::panicking() {
            assert!(status.success(), "{status}");
        }
    }
}

/// The accept program's histogram of a listener whose pod was deleted, or
/// which closed in sojourn's own namespace, disappears: from the scrape
/// (it does not freeze at its last count) and from the kernel's map (it
/// does not come back, and its room goes to new listeners). One still
/// listening stays.
#[test]
fn closed_listeners_and_deleted_pods_lose_their_accept_histograms() {
    let _serial = serial();
    let Some((pod, s)) = pod_and_accept_scraper("acceptgone") else {
        return;
    };
    let server = "import socket, sys
l = socket.socket(); l.bind(('127.0.0.1', 9200)); l.listen(4)
c = socket.create_connection(('127.0.0.1', 9200)); l.accept()
print('ready', flush=True)
sys.stdin.readline()
";
    let server = Served::start(pod.python(server));
    // Two listeners of this process: one closes, one stays.
    let accept_one = |l: &std::net::TcpListener| {
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        l.accept().unwrap();
    };
    let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let staying = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    accept_one(&closing);
    accept_one(&staying);
    let own = |l: &std::net::TcpListener| {
        format!(
            "sojourn_tcp_accept_wait_seconds_count{{port=\"{}\",netns=\"\"",
            l.local_addr().unwrap().port()
        )
    };
    let (closing_series, staying_series) = (own(&closing), own(&staying));
    let text = scrape(&s);
    for series in [&closing_series, &staying_series] {
        assert!(text.contains(series.as_str()), "{series}:\n{text}");
    }
    // Named by its pod while the pod lives; by its namespace alone after.
    let pods = text
        .lines()
        .find(|l| {
            l.starts_with("sojourn_tcp_accept_wait_seconds_count{port=\"9200\"")
                && l.contains(&format!("pod_uid=\"{}\"", pod.uid))
        })
        .unwrap_or_else(|| panic!("the pod's listener:\n{text}"));
    let netns = pods
        .split("netns=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let pods_series = format!("{{port=\"9200\",netns=\"{netns}\"");
    let pods_series = |text: &str| text.contains(pods_series.as_str());

    drop(closing);
    // The pod's processes end before the next scrape: its namespace is
    // missed by a walk of /proc, not listed without the port.
    drop(server);
    drop(pod);
    let text = scrape_until(
        &s,
        Duration::from_secs(10),
        "the closed listener and the deleted pod's listener gone",
        |text| !text.contains(closing_series.as_str()) && !pods_series(text),
    );
    assert!(text.contains(staying_series.as_str()), "{text}");
    // Removed from the map, not only from one scrape: not back later.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let text = scrape(&s);

        assert!(!text.contains(closing_series.as_str()), "{text}");
        assert!(!pods_series(&text), "{text}");
        assert!(text.contains(staying_series.as_str()), "{text}");
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(staying);
}
