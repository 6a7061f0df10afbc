//! The cgroup collector on a v1 fixture tree (the kubelet's cgroupfs driver,
//! diffed with tests/golden/cgroup-v1.txt; UPDATE_GOLDEN=1 regenerates it)
//! and on a real cgroup this test creates: a busy process under a 20 % CPU
//! quota is throttled.

mod common;

use common::sample as value;

use std::time::Duration;

use sojourn::metrics::{self, Format};

fn scrape(args: &[&str]) -> String {
    let scraper = common::scraper_for(
        ["--collector.disable-defaults", "--collector.cgroup"]
            .iter()
            .chain(args),
    );
    metrics::encode(scraper.scrape(), Format::Text)
}

/// The cgroup families of a scrape, for golden files (durations vary).
fn cgroup_families(text: &str) -> String {
    text.lines()
        .filter(|l| {
            l.starts_with("sojourn_cgroup_")
                || l.starts_with("# HELP sojourn_cgroup_")
                || l.starts_with("# TYPE sojourn_cgroup_")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn v1_cgroupfs_kubelet_tree() {
    let root = common::fixtures().join("cgroup-v1");
    let fixture_proc = common::fixtures().join("proc");
    let text = scrape(&[
        "--collector.cgroup.root",
        root.to_str().unwrap(),
        "--path.procfs",
        fixture_proc.to_str().unwrap(),
    ]);
    common::golden("tests/golden/cgroup-v1.txt", &cgroup_families(&text));
    let id = "cgroup=\"/kubepods/burstable/pod0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e/4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01\",pod_uid=\"0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e\",container_id=\"4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01\",qos_class=\"burstable\"";
    for (metric, want) in [
        ("sojourn_cgroup_cpu_usage_seconds_total", 8.123456789),
        ("sojourn_cgroup_cpu_throttled_periods_total", 300.0),
        ("sojourn_cgroup_cpu_throttled_seconds_total", 45.0),
        ("sojourn_cgroup_cpu_quota_seconds", 0.02),
        ("sojourn_cgroup_memory_usage_bytes", 268435456.0),
        ("sojourn_cgroup_memory_working_set_bytes", 200000000.0),
        ("sojourn_cgroup_memory_limit_bytes", 536870912.0),
        ("sojourn_cgroup_pids", 12.0),
    ] {
        assert_eq!(
            value(&text, &format!("{metric}{{{id}}}")),
            Some(want),
            "{metric}:\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_memory_events_total{{{id},event=\"max\"}}")
        ),
        Some(7.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_memory_events_total{{{id},event=\"oom_kill\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_io_bytes_total{{{id},device=\"sda\",direction=\"write\"}}")
        ),
        Some(2097152.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "sojourn_cgroup_pressure_stalled_seconds_total{{{id},resource=\"cpu\",kind=\"some\"}}"
            )
        ),
        Some(30.0),
        "PSI from the hybrid host's unified hierarchy"
    );
    assert!(
        !text.contains("sojourn_cgroup_pids_limit{"),
        "pids.max is max: no limit series"
    );
    assert!(text.contains("sojourn_scrape_collector_success{collector=\"cgroup\"} 1"));
}

#[test]
fn a_cgroup_in_the_memory_hierarchy_only_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cgroup-v1");
    common::copy_tree(&common::fixtures().join("cgroup-v1"), &root);
    let only = root.join("memory/batch-job");
    std::fs::create_dir(&only).unwrap();
    for (file, text) in [
        ("cgroup.procs", "4242\n"),
        ("memory.usage_in_bytes", "33554432\n"),
        ("memory.limit_in_bytes", "33554432\n"),
        ("memory.failcnt", "870\n"),
    ] {
        std::fs::write(only.join(file), text).unwrap();
    }
    let text = scrape(&["--collector.cgroup.root", root.to_str().unwrap()]);
    let id = "cgroup=\"/batch-job\",pod_uid=\"\",container_id=\"\",qos_class=\"\"";
    assert_eq!(
        value(&text, &format!("sojourn_cgroup_memory_usage_bytes{{{id}}}")),
        Some(33554432.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("sojourn_cgroup_memory_events_total{{{id},event=\"max\"}}")
        ),
        Some(870.0)
    );
    assert!(!text.contains(&format!("sojourn_cgroup_cpu_usage_seconds_total{{{id}}}")));
    assert_eq!(
        value(
            &text,
            "sojourn_scrape_collector_success{collector=\"cgroup\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn include_exclude_and_cap() {
    let sys = common::fixtures().join("sys");
    let all = scrape(&["--path.sysfs", sys.to_str().unwrap()]);
    assert_eq!(
        all.matches("sojourn_cgroup_pids{").count(),
        2,
        "two containers have pids files:\n{all}"
    );
    let kube = scrape(&[
        "--path.sysfs",
        sys.to_str().unwrap(),
        "--collector.cgroup.include",
        "^/kubepods",
    ]);
    assert!(!kube.contains("sshd.service"));
    assert_eq!(
        kube.matches("sojourn_cgroup_cpu_usage_seconds_total{")
            .count(),
        2,
        "{kube}"
    );
    let no_docker = scrape(&[
        "--path.sysfs",
        sys.to_str().unwrap(),
        "--collector.cgroup.exclude",
        "docker-",
    ]);
    assert!(!no_docker.contains("docker-"));
    assert!(no_docker.contains("cri-containerd-") && no_docker.contains("sshd.service"));
    let capped = scrape(&[
        "--path.sysfs",
        sys.to_str().unwrap(),
        "--collector.cgroup.max-cgroups",
        "1",
    ]);
    assert_eq!(value(&capped, "sojourn_cgroup_omitted"), Some(2.0));
    assert_eq!(
        capped
            .matches("sojourn_cgroup_cpu_usage_seconds_total{")
            .count(),
        1
    );
}

#[test]
fn a_busy_process_under_a_small_quota_is_throttled() {
    let name = format!("sojourn-test-{}", std::process::id());
    let cg = common::throttled_cgroup(&name);
    let include = format!("^/{name}$");
    // The queue engine samples the cgroup's throttling once per CFS period.
    let s = sojourn::cli::parse(["sojourn", "--collector.cgroup.include", &include]).unwrap();
    let sampler = sojourn::queue::sampler::Sampler::start(&s.collect, &s.queue).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape(&["--collector.cgroup.include", &include]);
    let id = format!("cgroup=\"/{name}\",pod_uid=\"\",container_id=\"\",qos_class=\"\"");
    let throttled = value(
        &text,
        &format!("sojourn_cgroup_cpu_throttled_seconds_total{{{id}}}"),
    )
    .expect(&text);
    let periods = value(
        &text,
        &format!("sojourn_cgroup_cpu_throttled_periods_total{{{id}}}"),
    )
    .unwrap();
    assert!(
        throttled > 0.5,
        "throttled {throttled} s in 1.5 s at 20 % quota"
    );
    assert!(periods >= 5.0, "{periods} throttled periods");
    assert_eq!(
        value(&text, &format!("sojourn_cgroup_cpu_quota_seconds{{{id}}}")),
        Some(0.02)
    );

    let queue = format!("cgroup_cpu:/{name}");
    let queues = sampler.shared.queues.lock().unwrap();
    let snap = queues
        .snapshot(&queue)
        .expect("a throttling queue for the cgroup");
    // Most intervals stood; not necessarily the last one, as a reading
    // can fall where the task was not runnable (a loaded test machine:
    // 8 standing to 3 clear was seen under CI's load).
    assert!(
        snap.intervals_standing >= 2 * snap.intervals_ok.max(1),
        "80 ms throttled per 100 ms period stands: {snap:?}"
    );
    assert!(snap.standing_seconds > 0.5, "{snap:?}");
    let h = &snap.histogram;
    let in_period: u64 = h
        .bounds
        .iter()
        .zip(&h.counts)
        .filter(|(b, _)| **b > 0.05 && **b <= 0.1)
        .map(|(_, c)| c)
        .sum();
    assert!(
        3 * in_period >= 2 * h.count,
        "most readings throttled 50-100 ms per period: {snap:?}"
    );
    drop(queues);

    // The container goes: its queue goes with it, standing as it was.
    drop(cg);
    let removed = std::time::Instant::now();
    while sampler
        .shared
        .queues
        .lock()
        .unwrap()
        .snapshot(&queue)
        .is_some()
    {
        assert!(
            removed.elapsed() < Duration::from_secs(2),
            "the removed cgroup's queue is still reported"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const POD_LIST: &str = r#"{"kind":"PodList","apiVersion":"v1","items":[
  {"metadata":{"name":"checkout-7d9f","namespace":"shop","uid":"0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e"},
   "status":{"containerStatuses":[{"name":"app","containerID":"containerd://4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01"}]}}]}"#;

fn v2_fixture_scrape(url: &str, until: impl Fn(&str) -> bool) -> String {
    v2_fixture_scrape_with(url, &[], until)
}

fn v2_fixture_scrape_with(url: &str, extra: &[&str], until: impl Fn(&str) -> bool) -> String {
    let root = common::fixtures().join("sys/fs/cgroup");
    let root = root.to_str().unwrap();
    let mut args = vec![
        "--collector.disable-defaults",
        "--collector.cgroup",
        "--collector.cgroup.root",
        root,
        "--collector.cgroup.kubelet-url",
        url,
    ];
    args.extend_from_slice(extra);
    let scraper = common::scraper_for(args);
    // The pod list is fetched in the background, right after start.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics::encode(scraper.scrape(), Format::Text);
        if until(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kubelet_names_label_the_containers_it_lists() {
    let (port, seen) = common::fake_kubelet("200 OK", POD_LIST);
    let text = v2_fixture_scrape(&format!("http://127.0.0.1:{port}/pods"), |t| {
        t.contains("\nsojourn_cgroup_kubelet_up 1\n")
    });
    assert!(text.contains("\nsojourn_cgroup_kubelet_up 1\n"), "{text}");
    assert_eq!(value(&text, "sojourn_cgroup_kubelet_pods"), Some(1.0));
    assert_eq!(seen.lock().unwrap()[0], "GET /pods HTTP/1.1");
    let named = text
        .lines()
        .find(|l| {
            l.starts_with("sojourn_cgroup_cpu_usage_seconds_total{")
                && l.contains("cri-containerd-4f1c")
        })
        .unwrap();
    assert!(
        named.contains(r#"pod_uid="0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e""#)
            && named.contains(r#"namespace="shop",pod="checkout-7d9f",container="app""#),
        "{named}"
    );
    // A pod the kubelet does not list keeps its ids, with empty names.
    let unnamed = text
        .lines()
        .find(|l| {
            l.starts_with("sojourn_cgroup_cpu_usage_seconds_total{") && l.contains("docker-b2c3")
        })
        .unwrap();
    assert!(
        unnamed.contains(r#"pod_uid="7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d""#)
            && unnamed.contains(r#"namespace="",pod="",container="""#),
        "{unnamed}"
    );
}

#[test]
fn an_unreachable_or_failing_kubelet_leaves_uid_labels_and_the_scrape_whole() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let (failing_port, seen) = common::fake_kubelet("500 Internal Server Error", "{}");
    for (port, requests) in [(closed_port, None), (failing_port, Some(seen))] {
        let text = v2_fixture_scrape(&format!("http://127.0.0.1:{port}/pods"), |t| {
            t.contains("\nsojourn_cgroup_kubelet_up 0\n")
        });
        assert!(text.contains("\nsojourn_cgroup_kubelet_up 0\n"), "{text}");
        assert!(text.contains(r#"sojourn_scrape_collector_success{collector="cgroup"} 1"#));
        assert!(text.contains(r#"pod_uid="0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e""#));
        assert!(!text.contains(r#"pod="checkout"#));
        if let Some(r) = requests {
            assert!(!r.lock().unwrap().is_empty(), "the kubelet was asked");
        }
    }
    let err = sojourn::cli::parse([
        "sojourn",
        "--collector.cgroup.kubelet-url",
        "ftp://node:10250/pods",
    ])
    .err()
    .unwrap();
    assert!(err.to_string().contains("10250"), "{err}");
}

/// The kubelet's authenticated port as a stand-in: TLS with a certificate
/// for 127.0.0.1 from `dir`'s CA, the pod list only for `Bearer TOKEN`,
/// 401 otherwise. Returns its port.
fn fake_secure_kubelet(dir: &std::path::Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    common::pki(dir);
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    common::serve_on_thread(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let authorized = req
                        .headers()
                        .get(hyper::header::AUTHORIZATION)
                        .is_some_and(|v| v == "Bearer TOKEN");
                    let (status, body) = if authorized && req.uri().path() == "/pods" {
                        (200, POD_LIST)
                    } else {
                        (401, "Unauthorized")
                    };
                    let mut r = hyper::Response::new(http_body_util::Full::new(
                        hyper::body::Bytes::from(body),
                    ));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(r)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        }
    })
    .port()
}

#[test]
fn the_authenticated_kubelet_port_is_read_with_a_token_over_checked_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = fake_secure_kubelet(dir.path());
    let url = format!("https://127.0.0.1:{port}/pods");
    let ca = dir.path().join("ca.crt");
    let token = dir.path().join("token");
    let wrong = dir.path().join("wrong");
    std::fs::write(&token, "TOKEN\n").unwrap();
    std::fs::write(&wrong, "NOT-THE-TOKEN\n").unwrap();
    let (ca, token, wrong) = (
        ca.to_str().unwrap(),
        token.to_str().unwrap(),
        wrong.to_str().unwrap(),
    );
    let up = |t: &str| t.contains("\nsojourn_cgroup_kubelet_up 1\n");
    let down = |t: &str| t.contains("\nsojourn_cgroup_kubelet_up 0\n");
    let named = |t: &str| t.contains(r#"namespace="shop",pod="checkout-7d9f",container="app""#);
    // The CA and the token: names.
    let text = v2_fixture_scrape_with(
        &url,
        &[
            "--collector.cgroup.kubelet-ca-file",
            ca,
            "--collector.cgroup.kubelet-token-file",
            token,
        ],
        up,
    );
    assert!(up(&text) && named(&text), "{text}");
    // An unchecked certificate, the token still sent: names. The host
    // bracketed, as the DaemonSet writes a node's address of either family.
    let text = v2_fixture_scrape_with(
        &format!("https://[127.0.0.1]:{port}/pods"),
        &[
            "--collector.cgroup.kubelet-insecure-skip-verify",
            "--collector.cgroup.kubelet-token-file",
            token,
        ],
        up,
    );
    assert!(up(&text) && named(&text), "{text}");
    // A token the kubelet refuses, or a certificate nobody vouches for
    // (the system's CAs do not know the test's): down, ids only.
    for extra in [
        &[
            "--collector.cgroup.kubelet-ca-file",
            ca,
            "--collector.cgroup.kubelet-token-file",
            wrong,
        ][..],
        &["--collector.cgroup.kubelet-token-file", token][..],
    ] {
        let text = v2_fixture_scrape_with(&url, extra, down);
        assert!(down(&text) && !named(&text), "{extra:?}: {text}");
        assert!(text.contains(r#"pod_uid="0d3fc3ab-1c36-4a7a-9b3e-6d3c2b1a0f9e""#));
    }
    // TLS settings without https, or both ways of checking: usage errors.
    for args in [
        vec![
            "sojourn",
            "--collector.cgroup.kubelet-url",
            "http://127.0.0.1:10255/pods",
            "--collector.cgroup.kubelet-ca-file",
            ca,
        ],
        vec![
            "sojourn",
            "--collector.cgroup.kubelet-url",
            &url,
            "--collector.cgroup.kubelet-ca-file",
            ca,
            "--collector.cgroup.kubelet-insecure-skip-verify",
        ],
        vec!["sojourn", "--collector.cgroup.kubelet-token-file", token],
        vec![
            "sojourn",
            "--collector.cgroup.kubelet-url",
            &url,
            "--collector.cgroup.kubelet-ca-file",
            "/nonexistent/ca.crt",
        ],
    ] {
        assert!(sojourn::cli::parse(&args).is_err(), "{args:?} accepted");
    }
}

#[test]
fn device_names_are_remembered_not_read_at_every_scrape() {
    let (_dir, root) = common::fixture_copy();
    let scraper = common::tree_scraper_with(
        &root,
        &["--collector.disable-defaults", "--collector.cgroup"],
    );
    let named = |text: &str| text.contains(r#"device="sda",direction="read"} 1048576"#);
    let first = metrics::encode(scraper.scrape(), Format::Text);
    assert!(named(&first), "{first}");
    // The device is known: /proc/diskstats is not needed again.
    std::fs::remove_file(root.join("proc/diskstats")).unwrap();
    let second = metrics::encode(scraper.scrape(), Format::Text);
    assert!(named(&second), "{second}");
}
