//! Keeps the metrics reference (docs/metrics.md) and the emitted metrics in sync: every
//! family a fixture scrape emits has a row with its type and label names, and
//! every row matches something emitted. A `*` in a documented name stands for
//! the fields of a file exported one metric per field (meminfo, vmstat).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use sojourn::metrics::{self, Format};

struct Row {
    name: String,
    kind: String,
    labels: BTreeSet<String>,
    /// What the row's description says the metric needs (``With `…` ``):
    /// a flag or mode the default scrape does not set; None for the rest.
    condition: Option<String>,
}

impl Row {
    fn needs(&self, prefix: &str) -> bool {
        self.condition
            .as_deref()
            .is_some_and(|c| c.starts_with(prefix))
    }
}

fn documented() -> Vec<Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let start = readme
        .find("<!-- metrics-reference:start -->")
        .expect("start marker");
    let end = readme
        .find("<!-- metrics-reference:end -->")
        .expect("end marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let labels = cells[2]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "—")
                .map(String::from)
                .collect();
            Row {
                name: cells[0]
                    .trim_start_matches("| ")
                    .trim_matches('`')
                    .to_string(),
                kind: cells[1].to_string(),
                labels,
                condition: cells
                    .last()
                    .and_then(|d| d.strip_prefix("With `"))
                    .and_then(|d| d.split('`').next())
                    .map(String::from),
            }
        })
        .collect()
}

/// name -> (type, label names) from a full fixture scrape.
fn emitted() -> BTreeMap<String, (String, BTreeSet<String>)> {
    // The queue collector included: give its sampler a few intervals first,
    // with a listener of our own so that a TCP accept queue exists (a
    // connection waits in it, so it is a queue from the first sample).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    // And the process collector, selecting the fixture's postgres process.
    let scraper = common::tree_scraper_with(
        &common::fixtures(),
        &["--collector.process.include", "^(postgres)"],
    );
    std::thread::sleep(std::time::Duration::from_millis(350));
    families(&metrics::encode(scraper.scrape(), Format::Text))
}

/// name -> (type, label names) of a scrape's text.
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_string(), (kind.to_string(), BTreeSet::new()));
        } else if !line.starts_with('#') {
            let name_end = line.find(['{', ' ']).unwrap();
            let sample_name = &line[..name_end];
            // Histogram samples carry a suffix after the family name.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample_name.strip_suffix(suffix))
                .find(|base| out.get(*base).is_some_and(|(k, _)| k == "histogram"))
                .unwrap_or(sample_name)
                .to_string();
            let entry = out.get_mut(&family).expect("sample after its TYPE");
            if let Some(labels) = line[name_end..].strip_prefix('{') {
                let labels = &labels[..labels.rfind('}').unwrap()];
                for pair in labels.split("\",") {
                    let key = pair.split('=').next().unwrap();
                    if key != "le" {
                        entry.1.insert(key.to_string());
                    }
                }
            }
        }
    }
    out
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        Some((prefix, suffix)) => name.starts_with(prefix) && name.ends_with(suffix),
        None => pattern == name,
    }
}

#[test]
fn readme_reference_matches_emitted_metrics() {
    let rows = documented();
    let emitted = emitted();
    assert!(rows.len() > 50, "reference table not found or too short");
    let mut problems = Vec::new();
    for (name, (kind, labels)) in &emitted {
        // An exact row wins over a wildcard one.
        let row = rows
            .iter()
            .find(|r| r.name == *name)
            .or_else(|| rows.iter().find(|r| matches(&r.name, name)));
        match row {
            None => problems.push(format!(
                "{name} is emitted but not in the reference (docs/metrics.md)"
            )),
            Some(r) => {
                if &r.kind != kind {
                    problems.push(format!(
                        "{name}: docs/metrics.md says {}, emitted {kind}",
                        r.kind
                    ));
                }
                if &r.labels != labels {
                    problems.push(format!(
                        "{name}: docs/metrics.md labels {:?}, emitted {labels:?}",
                        r.labels
                    ));
                }
            }
        }
    }
    for r in rows.iter().filter(|r| {
        r.condition.is_some()
            && !r.needs("--collector.cgroup.kubelet-url")
            && !r.needs("sojourn proxy")
            && !r.needs("--config.file")
            && !r.needs("--collector.textfile.directory")
            && !r.needs("--collector.ebpf")
    }) {
        problems.push(format!(
            "{}: no test scrapes with `{}`",
            r.name,
            r.condition.as_deref().unwrap_or_default()
        ));
    }
    for r in rows.iter().filter(|r| r.condition.is_none()) {
        if !emitted.keys().any(|n| matches(&r.name, n)) {
            problems.push(format!(
                "{} is in the reference (docs/metrics.md) but not emitted",
                r.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "metrics reference out of sync:\n{}",
        problems.join("\n")
    );
}

/// docs/migrating.md moves queries to sojourn's names: each must be one
/// the reference documents (a renamed metric would leave users a dead query).
#[test]
fn migration_table_names_documented_metrics() {
    let rows = documented();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/migrating.md")).unwrap();
    let mut named = BTreeSet::new();
    for (i, _) in doc.match_indices("sojourn_") {
        let name: String = doc[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        named.insert(name);
    }
    assert!(named.len() > 20, "{named:?}");
    let unknown: Vec<&String> = named
        .iter()
        .filter(|n| !rows.iter().any(|r| matches(&r.name, n)))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in the reference (docs/metrics.md): {unknown:?}"
    );
}

#[test]
fn every_help_names_its_source() {
    let scraper = common::tree_scraper_with(&common::fixtures(), &[]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    for fam in scraper.scrape() {
        let name = fam.desc.exposed_name();
        if name.starts_with("sojourn_scrape_") || name == "sojourn_build_info" {
            continue;
        }
        let help = &fam.desc.help;
        assert!(
            help.ends_with(").") && help.contains('('),
            "{name}: HELP should end with its source in parentheses: {help}"
        );
    }
}

#[test]
fn kubelet_rows_and_labels_match_a_scrape_with_a_kubelet_url() {
    let rows = documented();
    // Nothing listens on port 1: the fetch fails at once, and names stay empty.
    let scraper = common::tree_scraper_with(
        &common::fixtures(),
        &[
            "--collector.disable-defaults",
            "--collector.cgroup",
            "--collector.cgroup.kubelet-url",
            "http://127.0.0.1:1/pods",
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let emitted = loop {
        let f = families(&metrics::encode(scraper.scrape(), Format::Text));
        if f.contains_key("sojourn_cgroup_kubelet_up") || std::time::Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut problems = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.needs("--collector.cgroup.kubelet-url"))
    {
        match emitted.get(&r.name) {
            Some((kind, labels)) if *kind == r.kind && *labels == r.labels => {}
            other => problems.push(format!("{}: emitted {other:?}", r.name)),
        }
    }
    let names: BTreeSet<String> = ["namespace", "pod", "container"].map(String::from).into();
    for r in rows.iter().filter(|r| {
        r.name.starts_with("sojourn_cgroup_")
            && r.labels.contains("pod_uid")
            && !r.needs("--collector.ebpf")
    }) {
        let want: BTreeSet<String> = r.labels.union(&names).cloned().collect();
        match emitted.get(&r.name) {
            Some((_, labels)) if *labels == want => {}
            other => problems.push(format!("{}: want {want:?}, emitted {other:?}", r.name)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A pod's series carry the namespace's identity beside their own labels:
/// each family's labels over a scrape with a fake pod (and the kubelet's
/// names) are its row's and the identity the label table documents.
#[test]
fn pods_series_carry_the_documented_identity_labels() {
    let Some(pod) = common::pod_or_skip("reference", true) else {
        return;
    };
    let _unread = common::Killed(
        std::process::Command::new("ip")
            .args(["netns", "exec", &pod.netns, "python3", "-c", common::UNREAD])
            .spawn()
            .expect("python3"),
    );
    let scraper = common::named_pod_scraper(&pod);
    let named = "pod=\"web-7d9\"";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = metrics::encode(scraper.scrape(), Format::Text);
        let has = |prefix: &str| {
            text.lines()
                .any(|l| l.starts_with(prefix) && l.contains(named))
        };
        if (has("sojourn_queue_limit{")
            && has("sojourn_queue_min_length{")
            && has("sojourn_queue_load_ratio{")
            && has("sojourn_tcp_port_rtt_seconds_bucket{")
            && has("sojourn_netns_sockstat_tcp_inuse{"))
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let emitted = families(&text);
    let set = |l: &[&str]| -> BTreeSet<String> { l.iter().map(|s| s.to_string()).collect() };
    let identity = set(&[
        "netns",
        "pod_uid",
        "qos_class",
        "process",
        "namespace",
        "pod",
    ]);
    let mut problems = Vec::new();
    for r in documented() {
        let extra = if r.name.starts_with("sojourn_netns_") && r.labels.contains("netns") {
            set(&["namespace", "pod"])
        } else if (r.name.starts_with("sojourn_queue_")
            && r.labels.contains("queue")
            // Pods' queues are listeners': lengths, not delays or stalls.
            && !r.name.contains("_delay")
            && !r.name.contains("_stall"))
            || (r.name.starts_with("sojourn_tcp_port_") && r.labels.contains("port"))
        {
            identity.clone()
        } else {
            continue;
        };
        let want: BTreeSet<String> = r.labels.union(&extra).cloned().collect();
        match emitted.get(&r.name) {
            Some((_, labels)) if *labels == want => {}
            other => problems.push(format!("{}: want {want:?}, emitted {other:?}", r.name)),
        }
    }
    assert!(problems.is_empty(), "{}\n{text}", problems.join("\n"));
    // And the label table names them for those metrics.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    for row in [
        "| `namespace`, `pod` (netns, queue) |",
        "| `port`, `netns`, `pod_uid`, `qos_class`, `process` (tcp_port) |",
        "| `netns`, `pod_uid`, `qos_class`, `process` (netns) |",
    ] {
        assert!(
            readme.contains(row),
            "docs/metrics.md's label table lacks {row}"
        );
    }
}

#[test]
fn textfile_rows_match_a_scrape_with_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.prom"), "backup_ok 1\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let scraper = common::tree_scraper_with(
        &common::fixtures(),
        &[
            "--collector.disable-defaults",
            "--collector.textfile.directory",
            d,
        ],
    );
    let emitted = families(&metrics::encode(scraper.scrape(), Format::Text));
    let mut problems = Vec::new();
    for r in documented()
        .iter()
        .filter(|r| r.needs("--collector.textfile.directory"))
    {
        match emitted.get(&r.name) {
            Some((kind, labels)) if *kind == r.kind && *labels == r.labels => {}
            other => problems.push(format!("{}: emitted {other:?}", r.name)),
        }
    }
    assert!(emitted.contains_key("backup_ok"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Where this machine permits eBPF (root, BTF); CI requires it.
#[test]
fn ebpf_rows_match_a_scrape_with_the_collector() {
    // The live host's cgroups: the program counts waits under the kernel's.
    let scraper = common::scraper_for(["--collector.disable-defaults", "--collector.ebpf"]);
    // A cgroup of the cpu controller's hierarchy (v1) or the unified one
    // (v2) holding a busy process, whose waits it counts.
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (base, procs) = match v2 {
        true => ("/sys/fs/cgroup", "cgroup.procs"),
        false => ("/sys/fs/cgroup/cpu", "tasks"),
    };
    let cgroup = std::path::Path::new(base).join(format!("sojourn-docs-{}", std::process::id()));
    let mut busy = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let moved = std::fs::create_dir(&cgroup)
        .and_then(|()| std::fs::write(cgroup.join(procs), busy.id().to_string()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A disk request for the block program to time: a file on the build
    // directory's disk, written through.
    let file = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::io::Write::write_all(&mut file.as_file(), &[1; 4096]).unwrap();
    file.as_file().sync_all().unwrap();
    // A connection accepted, for the accept-queue program to time.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _accepted = listener.accept().unwrap();
    let emitted = families(&metrics::encode(scraper.scrape(), Format::Text));
    let _ = busy.kill();
    let _ = busy.wait();
    let _ = std::fs::remove_dir(&cgroup);
    if (!emitted.contains_key("sojourn_runqueue_wait_seconds") || moved.is_err())
        && std::env::var_os("SOJOURN_REQUIRE_EBPF").is_none()
    {
        eprintln!("skipped: eBPF not permitted here");
        return;
    }
    let mut problems = Vec::new();
    let rows: Vec<_> = documented()
        .into_iter()
        .filter(|r| r.needs("--collector.ebpf"))
        .collect();
    assert_eq!(rows.len(), 9, "the ebpf collector's rows");
    for r in &rows {
        match emitted.get(&r.name) {
            Some((kind, labels)) if *kind == r.kind && *labels == r.labels => {}
            other => problems.push(format!("{}: emitted {other:?}", r.name)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn proxy_rows_match_the_proxys_families() {
    use sojourn::proxy::stats::{ErrorType, RequestKey, RouteKey, ServiceStats};
    let stats = ServiceStats::new("shop");
    let route: std::sync::Arc<str> = std::sync::Arc::from("/users/{id}");
    stats.record_duration(
        &RequestKey {
            method: "GET",
            status: 200,
            route: route.clone(),
        },
        0.002,
    );
    stats.record_first_byte(
        &RouteKey {
            method: "GET",
            route,
        },
        0.001,
    );
    stats.error(ErrorType::Connect);
    stats.record_window(None, 0.002);
    let admission = std::sync::Arc::new(sojourn::proxy::admission::Admission::new(
        sojourn::proxy::admission::AdmissionConfig {
            max_concurrency: 1,
            shed: sojourn::proxy::admission::Shed::Codel,
            order: sojourn::proxy::admission::Order::Fifo,
        },
        "shop",
        sojourn::queue::QueueConfig::default(),
    ));
    let collector = sojourn::proxy::ProxyCollector {
        services: vec![sojourn::proxy::ServiceHandle {
            stats: std::sync::Arc::new(stats),
            admission: Some(admission),
            latency_target: std::time::Duration::from_millis(500),
        }],
    };
    let cfg = sojourn::cli::parse(["sojourn"]).unwrap().collect;
    use sojourn::collectors::Collect;
    let emitted = families(&metrics::encode(
        collector.collect(&cfg).unwrap(),
        Format::Text,
    ));
    let rows = documented();
    let mut problems = Vec::new();
    for r in rows.iter().filter(|r| r.needs("sojourn proxy")) {
        match emitted.get(&r.name) {
            Some((kind, labels)) if *kind == r.kind && *labels == r.labels => {}
            other => problems.push(format!("{}: emitted {other:?}", r.name)),
        }
    }
    for name in emitted
        .keys()
        .filter(|n| n.starts_with("sojourn_proxy_") || n.starts_with("http_"))
    {
        if !rows
            .iter()
            .any(|r| r.needs("sojourn proxy") && &r.name == name)
        {
            problems.push(format!(
                "{name} is emitted by the proxy but has no proxy row in the reference (docs/metrics.md)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn probe_rows_match_a_scrape_with_probes() {
    let https = common::test_server(true);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(
        &config,
        format!(
            "probes:\n  - {{name: web, interval: 200ms, timeout: 150ms, http: {{url: 'https://{}/status/200', tls: {{insecure_skip_verify: true}}}}}}\n",
            https.addr
        ),
    )
    .unwrap();
    let exporter = common::start(&[
        "--collector.disable-defaults",
        "--config.file",
        config.to_str().unwrap(),
    ]);
    let text = common::scrape_until(exporter.addr, std::time::Duration::from_secs(10), |t| {
        t.contains("sojourn_probe_tls_cert_expiry_timestamp_seconds{")
    });
    let emitted = families(&text);
    let rows = documented();
    let mut problems = Vec::new();
    for r in rows.iter().filter(|r| r.needs("--config.file")) {
        match emitted.get(&r.name) {
            Some((kind, labels)) if *kind == r.kind && *labels == r.labels => {}
            other => problems.push(format!("{}: emitted {other:?}", r.name)),
        }
    }
    for name in emitted.keys().filter(|n| n.starts_with("sojourn_probe_")) {
        if !rows
            .iter()
            .any(|r| r.needs("--config.file") && &r.name == name)
        {
            problems.push(format!(
                "{name} has no `--config.file` row in the reference (docs/metrics.md)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `sojourn check` judges from metric names written in its rules: a
/// renamed metric would blind the diagnosis without failing anything
/// else. Every such name must be one the reference documents (and so,
/// by the tests above, one that is emitted); label names are let through.
#[test]
fn every_metric_check_reads_is_documented() {
    let rows = documented();
    let labels: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.labels.iter().map(String::as_str))
        .collect();
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/check"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                files.push(path);
            }
        }
    }
    let mut read = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        // The rules, not their unit tests' made-up series.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for literal in code.split('"').skip(1).step_by(2) {
            let is_name = (literal.starts_with("sojourn_") || literal.starts_with("http_server_"))
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if is_name && !labels.contains(literal) {
                read.insert(literal.to_string());
            }
        }
    }
    assert!(read.len() > 50, "too few names found: {read:?}");
    let unknown: Vec<&String> = read
        .iter()
        .filter(|name| {
            // A histogram is documented by its family name.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            !rows
                .iter()
                .any(|r| matches(&r.name, name) || matches(&r.name, family))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "check reads metrics the reference (docs/metrics.md) does not have: {unknown:?}"
    );
}

/// The anchor GitHub gives a Markdown heading: lower case, punctuation
/// but `-` and `_` dropped, spaces turned to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every relative link of the README, ARCHITECTURE.md and docs/ names a
/// file that exists and, with a `#fragment`, a heading in it: the README
/// points into docs/ for every detail, so a moved section must not leave
/// a dead link.
#[test]
fn documents_link_to_what_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let link = regex::Regex::new(r"\]\(([^)#\s]*)(#[^)\s]+)?\)").unwrap();
    let mut dead = Vec::new();
    let mut seen = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for c in link.captures_iter(&text) {
            let target = &c[1];
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            seen += 1;
            let path = if target.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(target)
            };
            let Ok(linked) = std::fs::read_to_string(&path) else {
                if !path.exists() {
                    dead.push(format!("{}: {target}", file.display()));
                }
                continue;
            };
            if let Some(fragment) = c.get(2)
                && !linked
                    .lines()
                    .filter_map(|l| {
                        l.trim_start_matches('#')
                            .strip_prefix(' ')
                            .filter(|_| l.starts_with('#'))
                    })
                    .any(|h| anchor(h) == fragment.as_str()[1..])
            {
                dead.push(format!("{}: {target}{}", file.display(), fragment.as_str()));
            }
        }
    }
    assert!(
        seen > 20,
        "only {seen} relative links found: is the pattern right?"
    );
    assert!(dead.is_empty(), "dead links: {dead:#?}");
}
