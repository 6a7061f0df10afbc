//! Active probes from `--config.file`, run by the real binary against real
//! servers on loopback: every failure reason a test can cause is counted as
//! such, phases are timed into histograms, a TLS certificate's expiry is
//! read, and a bad config file stops start-up with a message naming it.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{sample, scrape_until};

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("sojourn.yml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path.to_string_lossy().into_owned()
}

fn attempts(text: &str, probe: &str) -> f64 {
    sample(
        text,
        &format!(r#"sojourn_probe_attempts_total{{probe="{probe}"}}"#),
    )
    .unwrap_or(0.0)
}

fn failures(text: &str, probe: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!(r#"sojourn_probe_failures_total{{probe="{probe}",reason="{reason}"}}"#),
    )
    .unwrap()
}

#[test]
fn probes_count_each_failure_by_its_reason_and_time_each_phase() {
    let http = common::test_server(false);
    let https = common::test_server(true);
    // A port nothing listens on: bound, then closed.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), https.ca_pem.as_ref().unwrap()).unwrap();
    let h = http.addr;
    let s = https.addr;
    let config = write_config(
        &dir,
        &format!(
            "probes:
  - {{name: ok, interval: 300ms, timeout: 250ms, http: {{url: 'http://{h}/text/healthy', body_regex: 'heal+thy'}}}}
  - {{name: refused, interval: 300ms, timeout: 250ms, http: {{url: 'http://{refused}/'}}}}
  - {{name: slow, interval: 300ms, timeout: 250ms, http: {{url: 'http://{h}/slow/2000'}}}}
  - {{name: wrong_status, interval: 300ms, timeout: 250ms, http: {{url: 'http://{h}/status/500'}}}}
  - {{name: expected_404, interval: 300ms, timeout: 250ms, http: {{url: 'http://{h}/status/404', expect_status: [404]}}}}
  - {{name: wrong_body, interval: 300ms, timeout: 250ms, http: {{url: 'http://{h}/text/sick', body_regex: healthy}}}}
  - {{name: tls_ok, interval: 300ms, timeout: 250ms, http: {{url: 'https://{s}/status/200', tls: {{ca_file: ca.pem}}}}}}
  - {{name: tls_untrusted, interval: 300ms, timeout: 250ms, http: {{url: 'https://{s}/status/200'}}}}
  - {{name: tls_skip_verify, interval: 300ms, timeout: 250ms, http: {{url: 'https://{s}/status/200', tls: {{insecure_skip_verify: true}}}}}}
  - {{name: tcp_ok, interval: 300ms, timeout: 250ms, tcp: {{address: '{h}'}}}}
  - {{name: tcp_tls, interval: 300ms, timeout: 250ms, tcp: {{address: 'localhost:{port}', tls: {{ca_file: ca.pem}}}}}}
  - {{name: tcp_refused, interval: 300ms, timeout: 250ms, tcp: {{address: '{refused}'}}}}
  - {{name: unresolvable, interval: 300ms, timeout: 250ms, tcp: {{address: 'no-such-host.invalid:80'}}}}
",
            port = s.port()
        ),
    );
    let exporter = common::start(&["--collector.disable-defaults", "--config.file", &config]);
    let names = [
        "ok",
        "refused",
        "slow",
        "wrong_status",
        "expected_404",
        "wrong_body",
        "tls_ok",
        "tls_untrusted",
        "tls_skip_verify",
        "tcp_ok",
        "tcp_tls",
        "tcp_refused",
        "unresolvable",
    ];
    let text = scrape_until(exporter.addr, Duration::from_secs(20), |t| {
        names.iter().all(|n| attempts(t, n) >= 3.0)
    });
    // The probes' output is lint-clean, as the exporter's is.
    if let Some(findings) = common::promtool_findings(&text) {
        assert!(
            findings.trim().is_empty(),
            "promtool check metrics:\n{findings}"
        );
    }
    let success = |p: &str| sample(&text, &format!(r#"sojourn_probe_success{{probe="{p}"}}"#));
    for ok in [
        "ok",
        "expected_404",
        "tls_ok",
        "tls_skip_verify",
        "tcp_ok",
        "tcp_tls",
    ] {
        assert_eq!(success(ok), Some(1.0), "{ok}\n{text}");
        let fails: f64 = [
            "resolve", "connect", "tls", "timeout", "http", "status", "body",
        ]
        .iter()
        .map(|r| failures(&text, ok, r))
        .sum();
        assert_eq!(fails, 0.0, "{ok} never fails\n{text}");
    }
    for (probe, reason) in [
        ("refused", "connect"),
        ("slow", "timeout"),
        ("wrong_status", "status"),
        ("wrong_body", "body"),
        ("tls_untrusted", "tls"),
        ("tcp_refused", "connect"),
        ("unresolvable", "resolve"),
    ] {
        assert_eq!(success(probe), Some(0.0), "{probe}\n{text}");
        assert_eq!(
            failures(&text, probe, reason),
            attempts(&text, probe),
            "{probe}: every attempt fails with {reason}\n{text}"
        );
    }
    let status = |p: &str| {
        sample(
            &text,
            &format!(r#"sojourn_probe_http_status_code{{probe="{p}"}}"#),
        )
    };
    assert_eq!(status("wrong_status"), Some(500.0));
    assert_eq!(status("expected_404"), Some(404.0));
    assert_eq!(status("refused"), Some(0.0));
    // Phases: every phase an HTTPS probe passes through was timed each time;
    // the slow probe timed out in processing, so that phase was never
    // recorded, but its whole duration was, at about the timeout.
    let phase_count = |p: &str, phase: &str| {
        sample(
            &text,
            &format!(
                r#"sojourn_probe_phase_duration_seconds_count{{probe="{p}",phase="{phase}"}}"#
            ),
        )
    };
    let n = attempts(&text, "tls_ok");
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        let c = phase_count("tls_ok", phase).unwrap();
        assert!(c >= n - 1.0 && c <= n, "tls_ok {phase}: {c} of {n}\n{text}");
    }
    assert_eq!(phase_count("ok", "tls"), None, "no tls phase for http");
    assert_eq!(phase_count("tcp_ok", "processing"), None);
    assert!(phase_count("slow", "processing").unwrap() == 0.0);
    let slow_sum = sample(&text, r#"sojourn_probe_duration_seconds_sum{probe="slow"}"#).unwrap();
    let slow_n = sample(
        &text,
        r#"sojourn_probe_duration_seconds_count{probe="slow"}"#,
    )
    .unwrap();
    let mean = slow_sum / slow_n;
    assert!(
        (0.24..0.5).contains(&mean),
        "slow probes end at the timeout: {mean}"
    );
    let expiry = |p: &str| {
        sample(
            &text,
            &format!(r#"sojourn_probe_tls_cert_expiry_timestamp_seconds{{probe="{p}"}}"#),
        )
    };
    for p in ["tls_ok", "tls_skip_verify", "tcp_tls"] {
        assert_eq!(expiry(p), Some(common::TEST_CERT_NOT_AFTER as f64), "{p}");
    }
    assert_eq!(expiry("tls_untrusted"), None, "no handshake, no expiry");
    assert_eq!(
        sample(
            &text,
            r#"sojourn_scrape_collector_success{collector="probe"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn a_bad_config_file_stops_start_up_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expect) in [
        (
            "probes: [{name: p, http: {url: 'http://x', tiemout: 1s}}]",
            "unknown field `tiemout`",
        ),
        ("probes: [{name: p}]", "exactly one of http: or tcp:"),
        (
            "services: [{name: a, listen: 127.0.0.1:0, upstream: 'https://x'}]",
            "only http://",
        ),
    ] {
        let path = write_config(&dir, text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sojourn"))
            .args(["--config.file", &path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(&path) && err.contains(expect), "{text}: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args(["--config.file", "/does/not/exist.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/does/not/exist.yml"));
}
