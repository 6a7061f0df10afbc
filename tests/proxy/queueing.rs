//! The request queue under overload (CoDel shedding, adaptive LIFO),
//! several services from a file, and the sliding-window quantiles.

use super::*;

/// `clients` threads each sending `each` requests to `path` one after the
/// other: (status, latency, Retry-After) of every request.
pub(crate) fn overload(
    addr: SocketAddr,
    clients: usize,
    each: usize,
    path: &str,
) -> Vec<(u16, Duration, Option<String>)> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                (0..each)
                    .map(|_| {
                        let t = Instant::now();
                        let r = request_full(addr, "GET", &path, &[], b"");
                        let retry_after = r.header("retry-after").map(str::to_string);
                        (r.status, t.elapsed(), retry_after)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

pub(crate) fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn overload_makes_the_request_queue_stand_and_codel_sheds_it() {
    let up = upstream();
    let url = format!("http://{up}");
    // 16 callers, 2 slots, 50 ms per request: callers wait up to ~400 ms.
    let queued = start_proxy(&url, &["--max-concurrency", "2"]);
    let results = overload(queued.addr, 16, 4, "/slow/50");
    assert!(
        results.iter().all(|r| r.0 == 200),
        "without shedding every request is served"
    );
    let queued_p99 = p99(results.iter().map(|r| r.1).collect());
    let text = metrics(&queued);
    let standing = value(
        &text,
        r#"sojourn_queue_standing_seconds_total{queue="proxy:shop"}"#,
    )
    .unwrap();
    assert!(
        standing > 0.3,
        "the proxy queue stood {standing} s:\n{text}"
    );
    assert!(
        value(
            &text,
            r#"sojourn_queue_delay_seconds_count{queue="proxy:shop"}"#
        )
        .unwrap()
            >= 64.0
    );
    assert!(
        text.contains(r#"sojourn_queue_info{queue="proxy:shop",measure="delay",source="proxy"} 1"#),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_requests_shed_total{service="shop"}"#
        ),
        Some(0.0)
    );
    // Idle again: the queue empties and stops standing.
    std::thread::sleep(Duration::from_millis(300));
    let _ = request(queued.addr, "GET", "/slow/1", &[], b"");
    std::thread::sleep(Duration::from_millis(250));
    let _ = request(queued.addr, "GET", "/slow/1", &[], b"");
    let text = metrics(&queued);
    assert_eq!(
        value(&text, r#"sojourn_queue_standing{queue="proxy:shop"}"#),
        Some(0.0),
        "{text}"
    );

    let shedding = start_proxy(&url, &["--max-concurrency", "2", "--shed", "codel"]);
    let results = overload(shedding.addr, 16, 4, "/slow/50");
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let served: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    assert_eq!(shed.len() + served.len(), results.len());
    assert!(!shed.is_empty(), "CoDel shed nothing under 8x overload");
    assert!(shed.iter().all(|r| r.2.as_deref() == Some("1")));
    // A shed request is told at once, not after queueing.
    assert!(p99(shed.iter().map(|r| r.1).collect()) < Duration::from_millis(300));
    let served_p99 = p99(served);
    // Admitted requests no longer wait behind the whole backlog (about half
    // the unshed p99 here; a quarter of margin for a noisy machine).
    assert!(
        served_p99.as_secs_f64() < 0.75 * queued_p99.as_secs_f64(),
        "admitted p99 {served_p99:?} is not well below the unshed p99 {queued_p99:?}"
    );
    let text = metrics(&shedding);
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_requests_shed_total{service="shop"}"#
        ),
        Some(shed.len() as f64)
    );
    eprintln!(
        "p99 without shedding {queued_p99:?}; with codel {served_p99:?} for the admitted, {} of {} shed",
        shed.len(),
        results.len()
    );
}

#[test]
fn shedding_without_a_limit_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
            "--shed",
            "codel",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-concurrency"));
}

#[test]
fn adaptive_lifo_serves_the_newest_first_while_the_queue_stands() {
    let up = upstream();
    let url = format!("http://{up}");
    let median = |v: Vec<Duration>| {
        let mut v = v;
        v.sort();
        v[v.len() / 2]
    };
    let fifo = start_proxy(&url, &["--max-concurrency", "2"]);
    let lifo = start_proxy(
        &url,
        &["--max-concurrency", "2", "--queue-order", "adaptive-lifo"],
    );
    let f = overload(fifo.addr, 16, 4, "/slow/50");
    let l = overload(lifo.addr, 16, 4, "/slow/50");
    assert!(
        f.iter().chain(&l).all(|r| r.0 == 200),
        "reordering sheds nothing"
    );
    let (f50, l50) = (
        median(f.iter().map(|r| r.1).collect()),
        median(l.iter().map(|r| r.1).collect()),
    );
    let (f99, l99) = (
        p99(f.iter().map(|r| r.1).collect()),
        p99(l.iter().map(|r| r.1).collect()),
    );
    eprintln!("fifo p50 {f50:?} p99 {f99:?}; adaptive lifo p50 {l50:?} p99 {l99:?}");
    // Newest first: most callers are served sooner, a few much later.
    assert!(l50 < f50, "lifo p50 {l50:?} not below fifo p50 {f50:?}");
    assert!(l99 > f99, "lifo p99 {l99:?} not above fifo p99 {f99:?}");
}

#[test]
fn several_services_from_a_config_file_are_proxied_and_counted_apart() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sojourn.yml");
    std::fs::write(
        &config,
        format!(
            "services:
  - {{name: cart, listen: '127.0.0.1:0', upstream: 'http://{up}', routes: ['/status/{{code}}']}}
  - {{name: search, listen: '127.0.0.1:0', upstream: 'http://{up}', max_concurrency: 2}}
"
        ),
    )
    .unwrap();
    // The command line's service and the file's run side by side.
    let p = start_services(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{up}"),
            "--service",
            "shop",
            "--config.file",
            config.to_str().unwrap(),
        ],
        &["shop", "cart", "search"],
    );
    let (cart, search) = (p.others[0], p.others[1]);
    for _ in 0..3 {
        assert_eq!(request(cart, "GET", "/status/201", &[], b"").0, 201);
    }
    for _ in 0..2 {
        assert_eq!(request(search, "GET", "/status/404", &[], b"").0, 404);
    }
    assert_eq!(request(p.addr, "GET", "/status/200", &[], b"").0, 200);
    let text = metrics(&p);
    let count = |service, status, route| gets_counted(&text, service, status, route);
    assert_eq!(count("cart", 201, "/status/{code}"), Some(3.0), "{text}");
    assert_eq!(count("search", 404, ""), Some(2.0), "{text}");
    assert_eq!(count("shop", 200, ""), Some(1.0), "{text}");
    assert_eq!(
        value(&text, r#"sojourn_proxy_queued_requests{service="search"}"#),
        Some(0.0),
        "only search has a request queue"
    );
    assert_eq!(
        value(&text, r#"sojourn_proxy_queued_requests{service="cart"}"#),
        None
    );
    // Each family once, whatever the number of services.
    let types = text
        .lines()
        .filter(|l| l.starts_with("# TYPE http_server_request_duration_seconds "))
        .count();
    assert_eq!(types, 1, "{text}");
}

#[test]
fn window_quantiles_are_the_requests_latencies_and_age_out() {
    let p = proxy_to_test_upstream(&["--proxy.quantile-window", "3s", "--route", "/slow/{ms}"]);
    // 19 requests of ~40 ms and one of ~400 ms: p50 ≈ 40 ms, p99.9 ≈ 400 ms.
    for _ in 0..19 {
        assert_eq!(request(p.addr, "GET", "/slow/40", &[], b"").0, 200);
    }
    assert_eq!(request(p.addr, "GET", "/slow/400", &[], b"").0, 200);
    let text = metrics(&p);
    let q = |quantile: &str| {
        value(
            &text,
            &format!(
                r#"sojourn_proxy_request_duration_window_seconds{{service="shop",http_route="/slow/{{ms}}",q="{quantile}"}}"#
            ),
        )
        .unwrap_or_else(|| panic!("no {quantile} quantile\n{text}"))
    };
    assert!((0.040..0.060).contains(&q("0.5")), "p50 {}", q("0.5"));
    // The proxy's output is lint-clean, as the exporter's is.
    if let Some(findings) = common::promtool_findings(&text) {
        assert!(
            findings.trim().is_empty(),
            "promtool check metrics:\n{findings}"
        );
    }
    assert!((0.400..0.450).contains(&q("0.999")), "p99.9 {}", q("0.999"));
    assert_eq!(
        value(
            &text,
            r#"sojourn_proxy_requests_in_window{service="shop",http_route="/slow/{ms}"}"#
        ),
        Some(20.0)
    );
    // Three seconds later, and at most half a second of rotation after
    // that, the window is empty and the quantiles are gone.
    std::thread::sleep(Duration::from_millis(4500));
    let text = metrics(&p);
    assert!(
        !text.contains("sojourn_proxy_request_duration_window_seconds{"),
        "{text}"
    );
}
