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
