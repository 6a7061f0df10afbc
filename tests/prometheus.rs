//! sojourn as its users meet it: a real Prometheus (Debian's package) on
//! loopback scrapes a real sojourn every second, with native histograms
//! enabled and sojourn's rules loaded, while sojourn proxies a sample
//! service and probes it. Through Prometheus' HTTP API the test then
//! asserts that every recording rule and every dashboard panel's query
//! returns data, that the proxy's latency arrives as a native histogram,
//! and that the fast error-budget alert fires when the service answers 500s
//! and not before. A second sojourn is scraped over TLS with basic auth.
//!
//! The rules file is loaded as shipped, except that every `for:` is cut to
//! 1 s: an alert's pending time is Prometheus' business, not what is tested.
//! SOJOURN_REQUIRE_PROMTOOL=1 (set by .ci/run) makes a missing Prometheus a
//! failure; elsewhere the test is skipped with a message.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result vector.
fn query(prometheus: SocketAddr, expr: &str) -> Vec<serde_json::Value> {
    let r = common::get(
        prometheus,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
        &[],
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{expr}: not JSON ({e}): {}",
            String::from_utf8_lossy(&r.body)
        )
    });
    assert_eq!(body["status"], "success", "{expr}: {body}");
    match &body["data"]["result"] {
        serde_json::Value::Array(v) => v.clone(),
        // A scalar or string result: one value.
        other => vec![other.clone()],
    }
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Prometheus serving on `addr` with `dir`'s prometheus.yml, its data
/// in `dir` too; killed when the test lets go of it.
fn prometheus(dir: &std::path::Path, addr: SocketAddr, extra: &[&str]) -> common::Killed {
    common::Killed(
        Command::new("prometheus")
            .current_dir(dir)
            .args([
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=data",
                &format!("--web.listen-address={addr}"),
                "--log.level=warn",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn prometheus_installed() -> bool {
    match Command::new("prometheus").arg("--version").output() {
        Ok(_) => true,
        Err(e) => {
            common::skip_unless_required(
                "SOJOURN_REQUIRE_PROMTOOL",
                &format!("prometheus cannot run ({e}): live Prometheus test"),
            );
            false
        }
    }
}

/// Every `record:` name in a rules file.
fn recording_rules(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|r| r.trim().to_string())
        .collect()
}

/// A listener in the pod's namespace that accepts what a client there
/// connects every 50 ms.
const POD_SERVER: &str = "import socket, threading, time
l = socket.socket(); l.bind(('127.0.0.1', 8081)); l.listen(64)
def connect():
    while True:
        try: socket.create_connection(('127.0.0.1', 8081)).close()
        except OSError: pass
        time.sleep(0.05)
threading.Thread(target=connect, daemon=True).start()
while True:
    c, _ = l.accept(); c.close()
";

/// The series the ebpf collector serves: panels over them are empty where
/// eBPF is not permitted.
const EBPF_METRICS: &[&str] = &[
    "sojourn_runqueue_wait_",
    "sojourn_runqueue_cpu_wait_",
    "sojourn_cgroup_runqueue_wait_",
    "sojourn_disk_request_",
    "sojourn_disk_requests_untimed_",
    "sojourn_tcp_accept_wait_",
    "sojourn_tcp_accept_untimed_",
];

/// Every panel query of the dashboards, with its dashboard and panel title.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let title = dash["title"].as_str().unwrap_or_default().to_string();
        let mut panels: Vec<&serde_json::Value> = Vec::new();
        fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
            if let Some(ps) = v["panels"].as_array() {
                for p in ps {
                    out.push(p);
                    walk(p, out);
                }
            }
        }
        walk(&dash, &mut panels);
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        title.clone(),
                        p["title"].as_str().unwrap_or_default().to_string(),
                        expr.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// A dashboard query as Grafana would send it with every variable set to
/// "All" (regex `.*`) and the service to the test's.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("${service:regex}", "shop")
        .replace("$service", "shop")
        .replace("${job:regex}", ".*")
        .replace("$job", ".*")
        .replace("${instance:regex}", ".*")
        .replace("$instance", ".*")
        .replace("${queue:regex}", ".*")
        .replace("$queue", ".*")
        .replace("${probe:regex}", ".*")
        .replace("$probe", ".*")
}

#[test]
fn a_real_prometheus_gets_every_rule_panel_native_histogram_and_the_fault_alert() {
    if !prometheus_installed() {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    // The service: a backend the proxy forwards to, and that the probe checks.
    let backend = common::test_server(false);
    let tls_backend = common::test_server(true);
    // A throttled container, so that the container rules have data.
    let _container = common::throttled_cgroup(&format!("sojourn-e2e-{}", std::process::id()));
    // A pod whose listener overflows, for the pod network panels; in its
    // namespace a second listener accepts, for the accept-wait panels.
    let pod = common::pod("e2e", true).expect("a fake pod (ip netns, cgroups: root)");
    let _pod_server = common::Killed(
        pod.python(POD_SERVER)
            .stdout(Stdio::null())
            .spawn()
            .expect("ip netns exec"),
    );
    let proxy_port = free_port();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(
        &config,
        format!(
            "services:
  - {{name: shop, listen: '127.0.0.1:{proxy_port}', upstream: 'http://{b}', routes: ['/status/{{code}}'], max_concurrency: 64}}
probes:
  - {{name: shop-health, interval: 1s, timeout: 500ms, http: {{url: 'http://{b}/status/200'}}}}
  - {{name: shop-tls, interval: 1s, timeout: 500ms, http: {{url: 'https://{t}/status/200', tls: {{insecure_skip_verify: true}}}}}}
",
            b = backend.addr,
            t = tls_backend.addr
        ),
    )
    .unwrap();
    let sojourn = common::start(&[
        "--config.file",
        config.to_str().unwrap(),
        "--collector.ebpf",
    ]);
    // A second sojourn behind TLS and basic auth ("prometheus:s3cret").
    common::pki(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        format!(
            "tls_server_config: {{cert_file: server.crt, key_file: server.key}}\nbasic_auth_users: {{prometheus: '{hash}'}}\n"
        ),
    )
    .unwrap();
    let secured = common::start(&[
        "--collector.disable-defaults",
        "--collector.loadavg",
        "--web.config.file",
        dir.path().join("web.yml").to_str().unwrap(),
    ]);

    let rules = std::fs::read_to_string(format!("{root}/alerts/sojourn-rules.yml")).unwrap();
    let fast_for = regex::Regex::new(r"(?m)^(\s+)for: \S+$").unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        fast_for.replace_all(&rules, "${1}for: 1s").as_bytes(),
    )
    .unwrap();
    let prom_port = free_port();
    std::fs::File::create(dir.path().join("prometheus.yml"))
        .unwrap()
        .write_all(
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
scrape_configs:
  - job_name: sojourn
    static_configs: [{{targets: ['{}']}}]
  - job_name: sojourn-tls
    scheme: https
    tls_config: {{ca_file: ca.crt}}
    basic_auth: {{username: prometheus, password: s3cret}}
    static_configs: [{{targets: ['{}']}}]
",
                sojourn.addr, secured.addr
            )
            .as_bytes(),
        )
        .unwrap();
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let _prometheus = prometheus(
        dir.path(),
        prometheus_addr,
        &["--enable-feature=native-histograms"],
    );

    // Traffic through the proxy, 200s until the fault is injected.
    let status = Arc::new(AtomicU16::new(200));
    let stop = Arc::new(AtomicBool::new(false));
    let proxy: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let traffic = {
        let (status, stop) = (status.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let code = status.load(Ordering::Relaxed);
                let _ = std::panic::catch_unwind(|| {
                    common::get(proxy, &format!("/status/{code}"), &[])
                });
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Disk requests for the block-layer panels: small synced writes to the
    // disk the build is on (not /tmp, which may be memory).
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("prometheus-e2e-{}", std::process::id()));
            let mut file = std::fs::File::create(&path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                file.write_all(&[0u8; 4096]).unwrap();
                file.sync_data().unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_file(path);
        })
    };

    wait_for(
        "Prometheus scraping sojourn",
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect(prometheus_addr).is_ok()
                && query(prometheus_addr, r#"up{job="sojourn"} == 1"#).len() == 1
        },
    );
    // Rates need two samples, rules an evaluation after them.
    let recorded = recording_rules(&rules);
    assert!(recorded.len() >= 10, "{recorded:?}");
    let mut missing;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        missing = recorded
            .iter()
            .filter(|r| query(prometheus_addr, r).is_empty())
            .cloned()
            .collect::<Vec<_>>();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        missing.is_empty(),
        "recording rules with no result: {missing:?}"
    );

    // Native histograms: the proxy's latency is stored as one.
    let native = query(
        prometheus_addr,
        r#"http_server_request_duration_seconds{service="shop"}"#,
    );
    assert!(
        native.iter().any(|s| s.get("histogram").is_some()),
        "no native histogram sample: {native:?}"
    );
    let p99 = query(
        prometheus_addr,
        r#"histogram_quantile(0.99, sum(rate(http_server_request_duration_seconds{service="shop"}[1m])))"#,
    );
    assert_eq!(
        p99.len(),
        1,
        "a quantile from the native histogram: {p99:?}"
    );

    // The kernel-timed run-queue histogram arrives as a native histogram of
    // schema 0: every bucket spans one doubling, (2^(i-1), 2^i].
    let runqueue = query(prometheus_addr, "sojourn_runqueue_wait_seconds");
    let ebpf = !runqueue.is_empty() || std::env::var_os("SOJOURN_REQUIRE_EBPF").is_some();
    if !ebpf {
        eprintln!("kernel-timed histograms and their panels not checked: eBPF not permitted here");
    } else {
        let buckets = runqueue
            .iter()
            .find_map(|s| s.get("histogram")?.get(1)?.get("buckets")?.as_array())
            .unwrap_or_else(|| panic!("no native run-queue histogram: {runqueue:?}"));
        assert!(!buckets.is_empty());
        for b in buckets {
            // [boundary rule, lower, upper, count], bounds as strings.
            let bound = |i: usize| b[i].as_str().unwrap().parse::<f64>().unwrap();
            let (lower, upper) = (bound(1), bound(2));
            if lower == 0.0 && upper == 0.0 {
                // The zero bucket: waits whose two ends read the same
                // clock value.
                continue;
            }
            assert_eq!(upper, lower * 2.0, "one doubling per bucket: {b:?}");
            assert_eq!(upper.log2().fract(), 0.0, "bounds are powers of two: {b:?}");
        }
    }

    let panels = dashboard_queries();
    assert!(panels.len() >= 20, "{} panel queries", panels.len());
    let empty: Vec<String> = panels
        .iter()
        .filter(|(_, _, expr)| ebpf || !EBPF_METRICS.iter().any(|m| expr.contains(m)))
        .filter(|(_, _, expr)| query(prometheus_addr, &substitute(expr)).is_empty())
        .map(|(d, p, e)| format!("{d} / {p}: {e}"))
        .collect();
    assert!(
        empty.is_empty(),
        "panels with no data:\n{}",
        empty.join("\n")
    );

    let firing = || {
        query(
            prometheus_addr,
            r#"ALERTS{alertname="SojournServiceErrorBudgetBurnFast",service="shop"}"#,
        )
    };
    assert!(firing().is_empty(), "fires without a fault: {:?}", firing());
    status.store(500, Ordering::Relaxed);
    wait_for(
        "SojournServiceErrorBudgetBurnFast firing on the 500s",
        Duration::from_secs(40),
        || {
            firing()
                .iter()
                .any(|a| a["metric"]["alertstate"] == "firing")
        },
    );
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    let _ = writer.join();
}

/// The ServiceMonitor's relabelings as Prometheus relabel_configs (the
/// Operator writes them after its own, which set the target labels).
fn servicemonitor_relabel_configs() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let text =
        std::fs::read_to_string(format!("{root}/deploy/kubernetes/base/servicemonitor.yaml"))
            .unwrap();
    let sm: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut out = String::new();
    for r in sm["spec"]["endpoints"][0]["relabelings"]
        .as_sequence()
        .unwrap()
    {
        let mut fields = Vec::new();
        for (k, v) in r.as_mapping().unwrap() {
            let key = match k.as_str().unwrap() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                other => other,
            };
            fields.push(format!("{key}: {}", serde_json::to_string(v).unwrap()));
        }
        out.push_str(&format!("      - {{{}}}\n", fields.join(", ")));
    }
    out
}

#[test]
fn series_keep_their_own_labels_under_the_shipped_servicemonitor() {
    if !prometheus_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = common::test_server(false);
    let proxy_port = free_port();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(
        &config,
        format!(
            "services:\n  - {{name: shop, listen: '127.0.0.1:{proxy_port}', upstream: 'http://{}', routes: ['/status/{{code}}']}}\n",
            backend.addr
        ),
    )
    .unwrap();
    let sojourn = common::start(&[
        "--collector.disable-defaults",
        "--collector.loadavg",
        "--config.file",
        config.to_str().unwrap(),
    ]);
    let proxy: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    assert_eq!(common::get(proxy, "/status/200", &[]).status, 200);
    // The target labels the Prometheus Operator gives a ServiceMonitor's
    // target (namespace, service, pod, container, endpoint; the node's
    // name as a meta label), then the shipped relabelings.
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: serviceMonitor/monitoring/sojourn/0
    static_configs:
      - targets: ['{}']
        labels: {{namespace: monitoring, service: sojourn, pod: sojourn-x7k2p, container: sojourn, endpoint: metrics, __meta_kubernetes_pod_node_name: node-a}}
    relabel_configs:
{}",
            sojourn.addr,
            servicemonitor_relabel_configs()
        ),
    )
    .unwrap();
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let _prometheus = prometheus(dir.path(), prometheus_addr, &[]);
    let requests = r#"http_server_request_duration_seconds_count{service="shop"}"#;
    wait_for(
        "the proxy's series in Prometheus",
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect(prometheus_addr).is_ok()
                && !query(prometheus_addr, requests).is_empty()
        },
    );
    let series = query(prometheus_addr, r#"{job=~"serviceMonitor.*"}"#);
    assert!(series.len() > 10, "{series:?}");
    for s in &series {
        let labels = s["metric"].as_object().unwrap();
        assert!(
            !labels.keys().any(|k| k.starts_with("exported_")),
            "a label of sojourn's renamed by the target's: {labels:?}"
        );
        assert_eq!(labels["instance"], "node-a", "{labels:?}");
        assert_eq!(labels["node"], "node-a", "{labels:?}");
    }
    let shop = query(prometheus_addr, requests);
    assert_eq!(shop[0]["metric"]["service"], "shop", "{shop:?}");
}
