//! Helpers shared by the integration tests: start the built binary, speak
//! just enough HTTP/1.1 to scrape it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};

/// A test that cannot run here (a tool missing, not root) is skipped with
/// a line saying why, unless `require_var` is set, as .ci/run sets it:
/// then it fails.
pub fn skip_unless_required(require_var: &str, why: &str) {
    assert!(
        std::env::var_os(require_var).is_none(),
        "{require_var} is set but {why}"
    );
    eprintln!("skipped: {why}");
}
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod host;
mod servers;

// Each test binary uses some helpers of these, not all.
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use servers::*;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies a directory tree (the fixture tree, into a temp dir a test may break).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if kind.is_symlink() {
            // Namespace links (`net:[4026531840]`) point nowhere on disk.
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), dest).unwrap();
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A running sojourn; killed on drop.
pub struct Exporter {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything it has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a free loopback port and waits for its "listening" line.
pub fn start(extra: &[&str]) -> Exporter {
    start_with(Command::new(env!("CARGO_BIN_EXE_sojourn")), extra)
}

/// [`start`] with `command` running the binary (e.g. `ip netns exec NS
/// sojourn`).
pub fn start_with(mut command: Command, extra: &[&str]) -> Exporter {
    command
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(extra);
    spawn_listening(&mut command, 1).0
}

/// Runs `command` (sojourn, or what execs it) until it has logged `count`
/// "listening" lines: the running exporter (at the first address) and
/// every address, in order.
pub fn spawn_listening(command: &mut Command, count: usize) -> (Exporter, Vec<SocketAddr>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sojourn");
    let mut reader = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut line = String::new();
    while addrs.len() < count {
        line.clear();
        let n = reader.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "sojourn exited before listening");
        log.lock().unwrap().push_str(&line);
        if line.contains("listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
                .expect("address in the listening line")
                .parse()
                .expect("socket address");
            addrs.push(addr);
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    let kept = log.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            kept.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    let addr = addrs[0];
    (Exporter { child, addr, log }, addrs)
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(addr, "GET", path, headers)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    request_with_body(addr, method, path, headers, b"")
}

/// One request on a new connection (`Connection: close`), with a body when
/// `body` is not empty; `Host` is the address unless `headers` name one.
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[end + 2..end + 2 + size]);
        b = &b[end + 2 + size + 2..];
    }
}

/// The flags that point sojourn at a fixture-shaped tree under `root`.
pub fn tree_args(root: &Path) -> Vec<String> {
    vec![
        "--path.procfs".into(),
        root.join("proc").display().to_string(),
        "--path.sysfs".into(),
        root.join("sys").display().to_string(),
        "--path.rootfs".into(),
        root.join("rootfs").display().to_string(),
    ]
}

/// Collectors whose output does not come from the fixture tree: the queue
/// sampler's values depend on timing, tcp_ports dumps the live kernel's
/// sockets over netlink, and ebpf times the live kernel's run queues
/// (tests/queues.rs, tests/tcp_ports.rs and src/ebpf.rs cover them).
pub const LIVE_ONLY: [&str; 3] = [
    "--no-collector.queue",
    "--no-collector.tcp_ports",
    "--no-collector.ebpf",
];

/// The flags every run against the checked-in fixture tree uses.
pub fn fixture_args() -> Vec<String> {
    let mut args = tree_args(&fixtures());
    args.extend(LIVE_ONLY.iter().map(|s| s.to_string()));
    // proc/4242 is a postgres process.
    args.extend(["--collector.process.include".into(), "^(postgres)".into()]);
    args
}

/// An in-process scraper over `root` with every default collector but the
/// live-only ones.
pub fn tree_scraper(root: &Path) -> sojourn::scrape::Scraper {
    tree_scraper_with(root, &LIVE_ONLY)
}

/// An in-process scraper over `root` with extra flags.
pub fn tree_scraper_with(root: &Path, extra: &[&str]) -> sojourn::scrape::Scraper {
    scraper_for(
        tree_args(root)
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string())),
    )
}

/// An in-process scraper with the collectors and settings that
/// `sojourn FLAGS…` would run.
pub fn scraper_for<S: AsRef<str>>(flags: impl IntoIterator<Item = S>) -> sojourn::scrape::Scraper {
    let args = std::iter::once("sojourn".to_string())
        .chain(flags.into_iter().map(|s| s.as_ref().to_string()));
    let s = sojourn::cli::parse(args).expect("flags");
    sojourn::scrape::Scraper::new(s.collect, s.queue, &s.collectors)
}

/// A temporary copy of the fixture tree that a test may break.
pub fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fixtures");
    copy_tree(&fixtures(), &root);
    (dir, root)
}

/// Compares `got` with the golden file at `path` (relative to the crate),
/// showing the lines that differ; `UPDATE_GOLDEN=1` rewrites the file.
pub fn golden(path: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).expect("golden file; UPDATE_GOLDEN=1 writes it");
    if got == want {
        return;
    }
    let diff: Vec<String> = want
        .lines()
        .filter(|l| !got.lines().any(|g| g == *l))
        .map(|l| format!("- {l}"))
        .chain(
            got.lines()
                .filter(|l| !want.lines().any(|w| w == *l))
                .map(|l| format!("+ {l}")),
        )
        .take(40)
        .collect();
    panic!(
        "output differs from {} (UPDATE_GOLDEN=1 regenerates it); lines only on one side:\n{}",
        path.display(),
        if diff.is_empty() {
            "(none: the same lines in another order or number)".to_string()
        } else {
            diff.join("\n")
        }
    );
}

/// Polls `addr`'s /metrics until `done` holds for its text, or panics after
/// `within` with the last text.
pub fn scrape_until(addr: SocketAddr, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = get(addr, "/metrics", &[]).text();
        if done(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {within:?}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample whose line starts with `series` (name and
/// labels as exposed), if any.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A server on 127.0.0.1:9000 that accepts and never reads, and a client
/// of it that writes until its send buffer is full.
pub const UNREAD: &str = r#"
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 9000)); l.listen(8)
c = socket.create_connection(("127.0.0.1", 9000)); c.setblocking(False)
s, _ = l.accept()
try:
    while True: c.send(b"x" * 65536)
except BlockingIOError:
    pass
time.sleep(120)
"#;

/// Runs `promtool check metrics` on a scrape: `Some(findings)` (empty when
/// clean), or `None` when promtool is not installed and not required.
pub fn promtool_findings(text: &str) -> Option<String> {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            skip_unless_required(
                "SOJOURN_REQUIRE_PROMTOOL",
                &format!("promtool cannot run ({e}): lint"),
            );
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 0 on lint warnings too; sojourn has none to excuse.
    if !out.status.success() && findings.trim().is_empty() {
        return Some(format!("promtool exited with {}", out.status));
    }
    Some(findings)
}
