//! `--web.config.file` on the real binary: TLS with a certificate signed by
//! a test CA, basic auth with bcrypt hashes, client certificates verified
//! when asked for, and bad files refused at start-up.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{Pki, pki};
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// One HTTPS GET; Err when the handshake or the exchange fails.
fn https_get(
    addr: SocketAddr,
    pki: &Pki,
    client_cert: bool,
    authorization: Option<&str>,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = if client_cert {
        builder
            .with_client_auth_cert(
                vec![pki.client_cert.clone()],
                PrivateKeyDer::Pkcs8(pki.client_key.clone().into()),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1").unwrap())
            .unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match tls.read_to_end(&mut out) {
        Ok(_) => {}
        // A server that closes without close_notify after a full answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))?;
    Ok((status, text))
}

// "prometheus:s3cret" and "prometheus:wrong" in base64.
const GOOD: &str = "Basic cHJvbWV0aGV1czpzM2NyZXQ=";
const WRONG: &str = "Basic cHJvbWV0aGV1czp3cm9uZw==";

fn start(dir: &Path, config: &str) -> common::Exporter {
    let path = dir.join("web.yml");
    std::fs::write(&path, config).unwrap();
    common::start(&[
        "--collector.disable-defaults",
        "--collector.loadavg",
        "--web.config.file",
        path.to_str().unwrap(),
    ])
}

#[test]
fn tls_and_basic_auth_guard_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let exporter = start(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let (status, text) = https_get(exporter.addr, &pki, false, None).unwrap();
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{text}"
    );
    assert_eq!(
        https_get(exporter.addr, &pki, false, Some(WRONG))
            .unwrap()
            .0,
        401
    );
    let (status, text) = https_get(exporter.addr, &pki, false, Some(GOOD)).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("sojourn_load1 "), "{text}");
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = std::net::TcpStream::connect(exporter.addr).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("sojourn_load1"));
}

#[test]
fn client_certificates_are_verified_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let exporter = start(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    assert!(
        https_get(exporter.addr, &pki, false, None).is_err(),
        "no client certificate: the handshake fails"
    );
    let (status, text) = https_get(exporter.addr, &pki, true, None).unwrap();
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_bad_web_config_stops_start_up_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    for (config, expect) in [
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "missing.crt",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAnyClientCert\n",
            "RequireAnyClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
            "client_ca_file",
        ),
        (
            "basic_auth_users:\n  alice: plaintext\n",
            "not a bcrypt hash",
        ),
        (
            "basic_auth_user:\n  alice: x\n",
            "unknown field `basic_auth_user`",
        ),
        (
            "tls_server_config:\n  cert_file: ca.crt\n  key_file: server.key\n",
            "do not match",
        ),
    ] {
        let path = dir.path().join("web.yml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sojourn"))
            .args(["--web.config.file", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {err}");
        assert!(
            err.contains("web.yml") && err.contains(expect),
            "{config}: {err}"
        );
    }
}

/// A plain-HTTP exporter with basic auth: `prometheus` with `password` at
/// `cost`.
fn start_with_user(dir: &Path, password: &str, cost: u32) -> common::Exporter {
    let hash = bcrypt::hash(password, cost).unwrap();
    start(dir, &format!("basic_auth_users:\n  prometheus: '{hash}'\n"))
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The status and the time of one scrape with `authorization`.
fn timed_scrape(addr: SocketAddr, authorization: &str) -> (u16, std::time::Duration) {
    let t = std::time::Instant::now();
    let r = common::get(addr, "/metrics", &[("Authorization", authorization)]);
    (r.status, t.elapsed())
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn timing_does_not_tell_which_users_exist() {
    let dir = tempfile::tempdir().unwrap();
    let e = start_with_user(dir.path(), "s3cret", 8);
    let rounds = 7;
    let first = |user: &str| {
        median(
            (0..rounds)
                .map(|i| {
                    let (status, took) = timed_scrape(e.addr, &basic(user, &format!("guess{i}")));
                    assert_eq!(status, 401);
                    took
                })
                .collect(),
        )
    };
    let repeated = |user: &str| {
        median(
            (0..rounds)
                .map(|_| {
                    let (status, took) = timed_scrape(e.addr, &basic(user, "same guess"));
                    assert_eq!(status, 401);
                    took
                })
                .collect(),
        )
    };
    let (known, unknown) = (first("prometheus"), first("nobody"));
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    eprintln!("first guesses: known user {known:?}, unknown user {unknown:?}");
    assert!(
        (0.5..2.0).contains(&ratio),
        "a first wrong guess costs the same for a known and an unknown user: {known:?} vs {unknown:?}"
    );
    let (known_again, unknown_again) = (repeated("prometheus"), repeated("nobody"));
    eprintln!("repeated guesses: known user {known_again:?}, unknown user {unknown_again:?}");
    // Both remembered: far below a bcrypt either way.
    assert!(known_again < known / 2 && unknown_again < unknown / 2);
}

#[test]
fn a_flood_of_wrong_passwords_does_not_starve_scrapes() {
    let dir = tempfile::tempdir().unwrap();
    let e = start_with_user(dir.path(), "s3cret", 10);
    let good = basic("prometheus", "s3cret");
    assert_eq!(
        timed_scrape(e.addr, &good).0,
        200,
        "remembered from here on"
    );
    let quiet = median((0..15).map(|_| timed_scrape(e.addr, &good).1).collect());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused_busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flooders: Vec<_> = (0..200)
        .map(|n| {
            let (stop, busy, addr) = (stop.clone(), refused_busy.clone(), e.addr);
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let (status, _) = timed_scrape(addr, &basic("prometheus", &format!("{n}-{i}")));
                    assert!(status == 401 || status == 429, "{status}");
                    if status == 429 {
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // As a client told to retry after 1 s would, sooner.
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let flooded = median(
        (0..15)
            .map(|_| {
                let (status, took) = timed_scrape(e.addr, &good);
                assert_eq!(status, 200);
                took
            })
            .collect(),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let ratio = flooded.as_secs_f64() / quiet.as_secs_f64();
    eprintln!(
        "scrape median {quiet:?} quiet, {flooded:?} under 200 connections of wrong passwords ({ratio:.1}x); {} refused 429",
        refused_busy.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(refused_busy.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(
        ratio < 20.0,
        "an authenticated scrape keeps its latency under the flood: {quiet:?} -> {flooded:?}"
    );
}

#[test]
fn bcrypt_costs_are_checked_and_a_login_at_any_cost_stops_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let at_four = bcrypt::hash("pw", 4).unwrap();
    for cost in ["03", "32", "99"] {
        let hash = at_four.replacen("$04$", &format!("${cost}$"), 1);
        let path = dir.path().join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sojourn"))
            .args(["--web.config.file", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "cost {cost}: {err}");
        assert!(err.contains("alice") && err.contains("cost"), "{err}");
    }
    // Cost 31 is valid and takes hours a login: it starts with a warning,
    // and SIGTERM still stops it while a login is hashing.
    let hash = at_four.replacen("$04$", "$31$", 1);
    let path = dir.path().join("web.yml");
    std::fs::write(&path, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sojourn"))
        .args(["--web.config.file", path.to_str().unwrap()])
        .args(["--web.listen-address", "127.0.0.1:0"])
        .args(["--collector.disable-defaults", "--collector.loadavg"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = common::Killed(child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut warned = false;
    let addr: SocketAddr = loop {
        let line = lines.next().expect("sojourn exited").unwrap();
        warned |= line.contains("bcrypt cost above");
        if let Some(at) = line.split("address=").nth(1) {
            break at.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert!(warned, "a warning names the cost");
    std::thread::spawn(move || for _ in lines {});
    let login = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
            basic("alice", "pw")
        );
        let _ = s.write_all(req.as_bytes());
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            panic!("still running 20 s after SIGTERM with a login hashing");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    eprintln!("exited {status:?} {:?} after SIGTERM", t.elapsed());
    login.join().unwrap();
}
