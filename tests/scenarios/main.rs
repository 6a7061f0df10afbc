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

mod faults;

use faults::*;

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
