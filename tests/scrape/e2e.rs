//! End to end: the built binary against the fixture tree, scraped over HTTP,
//! diffed with a golden file (node_exporter's habit). Regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test scrape`. When promtool is installed the
//! output is linted with `promtool check metrics`; SOJOURN_REQUIRE_PROMTOOL=1
//! (set by .ci/run) turns a missing promtool into a failure.

use crate::common;

use std::io::Read;
use std::process::Command;

use crate::common::{fixture_args, get, request, start};

const GOLDEN: &str = "tests/golden/metrics.txt";

/// Lines whose values change from run to run: timings, and statvfs of the
/// real directory standing in for the root filesystem.
fn normalize(scrape: &str) -> String {
    let mut out = String::new();
    for line in scrape.lines() {
        if line.starts_with("sojourn_scrape_collector_duration_seconds{") {
            continue;
        }
        // sojourn's own process: its CPU, memory, fds and start.
        if line.starts_with("process_") {
            let (series, _) = line.rsplit_once(' ').unwrap();
            out.push_str(series);
            out.push_str(" <volatile>\n");
            continue;
        }
        let volatile_fs = [
            "sojourn_filesystem_size_bytes{",
            "sojourn_filesystem_free_bytes{",
            "sojourn_filesystem_avail_bytes{",
            "sojourn_filesystem_files{",
            "sojourn_filesystem_files_free{",
        ];
        if volatile_fs.iter().any(|p| line.starts_with(p)) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            out.push_str(series);
            out.push_str(" <volatile>\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn scrape_fixtures() -> String {
    let args = fixture_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = start(&args);
    let r = get(exporter.addr, "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

#[test]
fn fixture_scrape_matches_golden_file() {
    common::golden(GOLDEN, &normalize(&scrape_fixtures()));
}

#[test]
fn every_collector_succeeds_on_the_fixture_tree() {
    let text = scrape_fixtures();
    for line in text
        .lines()
        .filter(|l| l.starts_with("sojourn_scrape_collector_success{"))
    {
        assert!(
            line.ends_with(" 1"),
            "fixture tree should satisfy every collector: {line}"
        );
    }
}

#[test]
fn promtool_accepts_the_output() {
    if let Some(findings) = common::promtool_findings(&scrape_fixtures()) {
        assert!(
            findings.trim().is_empty(),
            "promtool on the fixture scrape:\n{findings}"
        );
    }
}

#[test]
fn openmetrics_gzip_and_pages() {
    let args = fixture_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = start(&args);

    let om = get(
        e.addr,
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert_eq!(om.status, 200);
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let om_text = om.text();
    assert!(om_text.ends_with("# EOF\n"));
    assert!(om_text.contains("# TYPE sojourn_cpu_seconds counter"));
    assert!(om_text.contains("# UNIT sojourn_cpu_seconds seconds"));

    let gz = get(e.addr, "/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert!(plain.contains("sojourn_load1 0.21"));

    // Weights are read, not substrings: q=0 refuses.
    let refused = get(
        e.addr,
        "/metrics",
        &[
            (
                "Accept",
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0, text/plain",
            ),
            ("Accept-Encoding", "gzip;q=0, *"),
        ],
    );
    assert!(
        refused
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        refused.headers
    );
    assert_eq!(refused.header("content-encoding"), None);
    assert!(refused.text().contains("sojourn_load1 0.21"));

    let landing = get(e.addr, "/", &[]);
    assert_eq!(landing.status, 200);
    assert!(landing.text().contains("href=\"metrics\""));
    assert_eq!(get(e.addr, "/-/healthy", &[]).status, 200);
    assert_eq!(get(e.addr, "/-/ready", &[]).status, 200);
    assert_eq!(get(e.addr, "/nope", &[]).status, 404);
    assert_eq!(request(e.addr, "POST", "/metrics", &[]).status, 405);
    let head = request(e.addr, "HEAD", "/metrics", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn custom_telemetry_path_and_disabled_collectors() {
    let mut args = fixture_args();
    args.extend([
        "--web.telemetry-path".into(),
        "/m".into(),
        "--collector.disable-defaults".into(),
        "--collector.loadavg".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = start(&args);
    assert_eq!(get(e.addr, "/metrics", &[]).status, 404);
    let text = get(e.addr, "/m", &[]).text();
    assert!(text.contains("sojourn_load1 0.21"));
    assert!(!text.contains("sojourn_cpu_seconds_total"));
    assert!(!text.contains("collector=\"cpu\""));
}

/// Started under a soft limit of 256 open files with a hard limit of
/// 4 096 (systemd gives services 1 024 and 524 288), sojourn raises the
/// soft limit to the hard one: a socket per pod namespace per reader
/// must not run it out of descriptors.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let mut command = std::process::Command::new("prlimit");
    command
        .args(["--nofile=256:4096", "--"])
        .arg(env!("CARGO_BIN_EXE_sojourn"))
        .args(["--collector.disable-defaults", "--collector.loadavg"]);
    let e = common::start_with(command, &[]);
    let text = get(e.addr, "/metrics", &[]).text();
    let limit = text
        .lines()
        .find_map(|l| l.strip_prefix("process_max_fds "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(limit, Some(4096.0), "{text}");
}

#[test]
fn collect_and_exclude_parameters_select_collectors_per_scrape() {
    let args = fixture_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = start(&args);
    let ran = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("sojourn_scrape_collector_success{collector=\""))
            .filter_map(|l| l.split('"').next().map(String::from))
            .collect()
    };
    let only = get(
        e.addr,
        "/metrics?collect[]=loadavg&collect%5B%5D=memory",
        &[],
    );
    assert_eq!(only.status, 200);
    let text = only.text();
    assert_eq!(ran(&text), ["loadavg", "memory"], "{text}");
    assert!(text.contains("sojourn_load1 0.21"));
    assert!(!text.contains("sojourn_cpu_seconds_total"));
    assert!(
        text.contains("process_cpu_seconds_total"),
        "the exporter's own, always"
    );
    let all = get(e.addr, "/metrics", &[]).text();
    let text = get(e.addr, "/metrics?exclude[]=cpu", &[]).text();
    assert!(!text.contains("sojourn_cpu_seconds_total"));
    assert_eq!(ran(&text).len() + 1, ran(&all).len(), "{text}");
    for (query, says) in [
        ("collect[]=nosuch", "unknown collector \"nosuch\""),
        ("collect[]=queue", "collector \"queue\" is not enabled"),
        ("collect[]=cpu&exclude[]=memory", "cannot be used together"),
        ("collect[]=%G0", "malformed query parameter"),
    ] {
        let r = get(e.addr, &format!("/metrics?{query}"), &[]);
        assert_eq!(r.status, 400, "{query}");
        assert!(r.text().contains(says), "{query}: {}", r.text());
    }
}

/// `sojourn check` on a terminal (a pty from `script`): coloured, unless
/// NO_COLOR is set.
#[test]
fn check_colours_a_terminal_unless_no_color_is_set() {
    let mut cmd = vec![
        env!("CARGO_BIN_EXE_sojourn").to_string(),
        "check".into(),
        "--for".into(),
        "200ms".into(),
    ];
    cmd.extend(fixture_args());
    // One shell line for script(1): each word single-quoted.
    let line = cmd
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let run = |no_color: Option<&str>| -> Option<String> {
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"]).env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let Some(coloured) = run(None) else {
        common::skip_unless_required("SOJOURN_REQUIRE_SCENARIOS", "script(1) cannot run");
        return;
    };
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colours:\n{coloured}"
    );
    let plain = run(Some("1")).unwrap();
    assert!(
        plain.contains("RESOURCE") || plain.contains("resource") || plain.len() > 100,
        "{plain}"
    );
    assert!(
        !plain.contains("\x1b[3") && !plain.contains("\x1b[1"),
        "NO_COLOR=1:\n{plain}"
    );
    assert!(
        run(Some("")).unwrap().contains("\x1b["),
        "an empty NO_COLOR is unset"
    );
}

#[test]
fn text_files_are_served_each_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, text: &str| {
        // As a writer should: a temporary name, then an atomic rename.
        let tmp = dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
    };
    put(
        "backup.prom",
        "# HELP backup_last_success_timestamp_seconds Last good backup.\n# TYPE backup_last_success_timestamp_seconds gauge\nbackup_last_success_timestamp_seconds{job=\"db\"} 1.7e+09\n# TYPE backup_runs_total counter\nbackup_runs_total 42\n",
    );
    // A histogram without its +Inf bucket: refused whole.
    put("broken.prom", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n");
    put(
        "jobs.prom",
        "# TYPE job_duration_seconds histogram\njob_duration_seconds_bucket{le=\"60\"} 2\njob_duration_seconds_bucket{le=\"+Inf\"} 3\njob_duration_seconds_sum 250\njob_duration_seconds_count 3\n",
    );
    std::fs::write(dir.path().join("ignored.txt"), "not_prom 1\n").unwrap();
    let mut args = fixture_args();
    args.extend([
        "--collector.disable-defaults".into(),
        "--collector.textfile.directory".into(),
        dir.path().display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = start(&args);
    let text = get(e.addr, "/metrics", &[]).text();
    assert!(
        text.contains("backup_last_success_timestamp_seconds{job=\"db\"} 1700000000"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE backup_runs_total counter")
            || text.contains("# TYPE backup_runs counter"),
        "{text}"
    );
    assert!(text.contains("backup_runs_total 42"), "{text}");
    for line in [
        "# TYPE job_duration_seconds histogram",
        "job_duration_seconds_bucket{le=\"60\"} 2",
        "job_duration_seconds_bucket{le=\"+Inf\"} 3",
        "job_duration_seconds_count 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    assert!(text.contains("sojourn_textfile_mtime_seconds{file=\"backup.prom\"}"));
    assert!(
        !text.contains("file=\"broken.prom\""),
        "a bad file is left out whole"
    );
    assert!(!text.contains("h_bucket") && !text.contains("not_prom"));
    assert!(text.contains("sojourn_textfile_scrape_error 1"), "{text}");
    if let Some(findings) = common::promtool_findings(&text) {
        assert!(findings.is_empty(), "promtool:\n{findings}");
    }
    // Fixed, the error clears; removed, its series go.
    put("broken.prom", "h_last 1\n");
    std::fs::remove_file(dir.path().join("backup.prom")).unwrap();
    let text = get(e.addr, "/metrics", &[]).text();
    assert!(text.contains("sojourn_textfile_scrape_error 0"), "{text}");
    assert!(text.contains("h_last 1"));
    assert!(!text.contains("backup_"), "{text}");
}

#[test]
fn bad_flags_stop_startup_with_a_message_naming_the_flag() {
    let bin = env!("CARGO_BIN_EXE_sojourn");
    for (args, needle) in [
        (
            vec!["--web.listen-address", "not-an-address"],
            "--web.listen-address",
        ),
        (
            vec!["--collector.network.device-exclude", "(["],
            "--collector.network.device-exclude",
        ),
        (vec!["--path.sysfs", "/nonexistent/sys"], "--path.sysfs"),
        (vec!["--collector.bogus"], "--collector.bogus"),
        (vec!["--log.level", "loud"], "--log.level"),
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A port already taken is an error at start, not a silent exit.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin)
        .args(["--web.listen-address", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));

    let v = Command::new(bin).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Per-CPU series of the default collectors: cpu (8 modes + 2 guest),
/// softnet (4); schedstat (3) where the kernel has it.
const SERIES_PER_CPU: usize = 17;

/// Series of one queue: a histogram of up to 15 buckets plus sum and count,
/// and 9 gauges and counters.
const SERIES_PER_QUEUE: usize = 26;

#[test]
fn live_host_scrape_is_lint_clean_and_bounded() {
    let e = start(&[]);
    let text = get(e.addr, "/metrics", &[]).text();
    // The host collectors' budget; queue series are bounded by
    // --queue.max-queues, other network namespaces' by
    // --collector.netns.max-namespaces (and depend on what else runs here).
    let own = |l: &&str| !l.starts_with("sojourn_queue_") && !l.starts_with("sojourn_netns_");
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter(own)
        .count();
    let netns_series = text
        .lines()
        .filter(|l| l.starts_with("sojourn_netns_"))
        .count();
    assert!(
        netns_series <= 256 * (11 + 8 * 8) + 1,
        "{netns_series} netns series"
    );
    let queue_series = text
        .lines()
        .filter(|l| l.starts_with("sojourn_queue_"))
        .count();
    assert!(
        queue_series <= 64 * SERIES_PER_QUEUE + 10,
        "{queue_series} queue series"
    );
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // The budget: under 700 series on a 2-CPU host, growing with CPUs only.
    let budget = 700 + SERIES_PER_CPU * cpus.saturating_sub(2);
    assert!(
        series < budget,
        "{series} series on a {cpus}-CPU host (budget {budget})"
    );
    if let Some(findings) = common::promtool_findings(&text) {
        assert!(
            findings.trim().is_empty(),
            "promtool on the live scrape:\n{findings}"
        );
    }
}

fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

const CHEAP: [&str; 2] = ["--collector.disable-defaults", "--collector.loadavg"];

#[test]
fn a_port_alone_is_served_on_ipv4_and_ipv6() {
    let (_sojourn, addrs) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_sojourn"))
            .args(CHEAP)
            .args(["--web.listen-address", ":0"]),
        1,
    );
    let port = addrs[0].port();
    let v4: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(v4, "/metrics", &[]).status, 200);
    if has_ipv6_loopback() {
        assert!(addrs[0].is_ipv6(), "{addrs:?}: one dual-stack socket");
        let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
        assert_eq!(get(v6, "/metrics", &[]).status, 200);
    }
}

#[test]
fn each_listen_address_is_served() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sojourn"));
    command
        .args(CHEAP)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(["--web.listen-address", "[127.0.0.1]:0"]);
    let v6 = has_ipv6_loopback();
    if v6 {
        command.args(["--web.listen-address", "[::1]:0"]);
    }
    let (_sojourn, addrs) = common::spawn_listening(&mut command, 2 + usize::from(v6));
    for addr in &addrs {
        let r = get(*addr, "/metrics", &[]);
        assert_eq!(r.status, 200, "{addr}");
        assert!(r.text().contains("sojourn_load1"), "{addr}");
    }
    // A taken address stops start-up, naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(["--web.listen-address", &addrs[0].to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--web.listen-address"), "{err}");
}

#[test]
fn systemd_socket_activation_serves_on_the_socket_it_passes() {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    // As systemd does: the socket at descriptor 3, LISTEN_PID the pid that
    // execs sojourn (the shell's, which exec keeps), LISTEN_FDS=1.
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#,
            env!("CARGO_BIN_EXE_sojourn"),
            "--web.systemd-socket",
        ])
        .args(CHEAP);
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork
    // and exec, and only moves the listener to descriptor 3 (without
    // close-on-exec).
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                let flags = rustix::io::fcntl_getfd(std::os::fd::BorrowedFd::borrow_raw(3))?;
                rustix::io::fcntl_setfd(
                    std::os::fd::BorrowedFd::borrow_raw(3),
                    flags - rustix::io::FdFlags::CLOEXEC,
                )?;
                return Ok(());
            }
            let mut three = std::os::fd::OwnedFd::from_raw_fd(3);
            rustix::io::dup2(std::os::fd::BorrowedFd::borrow_raw(fd), &mut three)?;
            std::mem::forget(three);
            Ok(())
        });
    }
    let (_sojourn, addrs) = common::spawn_listening(&mut command, 1);
    assert_eq!(addrs, [addr]);
    let r = get(addr, "/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("sojourn_load1"));
    // Not started by systemd: a clear error, no fallback to a port.
    let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .arg("--web.systemd-socket")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--web.systemd-socket") && err.contains("LISTEN_PID"),
        "{err}"
    );
}
