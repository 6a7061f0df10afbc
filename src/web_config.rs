//! `--web.config.file`: TLS and basic auth for every HTTP endpoint of the
//! exporter, in the Prometheus exporter-toolkit's format, so that one file
//! serves node_exporter and sojourn alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # PEM; relative paths from the file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
//!   client_ca_file: ca.crt
//!   min_version: TLS12             # TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$…           # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Files are read once, at start-up; any problem stops it with a message
//! naming the file and the key.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    tls_server_config: Option<TlsSpec>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    /// Accepted for compatibility with exporter-toolkit files; sojourn
    /// serves HTTP/1.1 only on its metrics port and adds no headers.
    #[serde(default)]
    http_server_config: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    /// Go's crypto/tls knobs: rustls chooses its own safe suites and curves.
    #[serde(default)]
    cipher_suites: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    curve_preferences: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
}

/// What the exporter's HTTP server enforces.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.auth.is_some())
            .finish()
    }
}

/// Users and their bcrypt hashes. bcrypt is slow by design (~50 ms at cost
/// 10), so a verified user and password are remembered, as exporter-toolkit
/// does, by a keyed hash of the pair; the password itself is not kept.
pub struct BasicAuth {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<u64, bool>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Cached answers at most; past it the cache starts over (a client trying
/// many passwords must not grow memory).
const AUTH_CACHE: usize = 1024;

impl BasicAuth {
    /// Whether an `Authorization` header value names a user with the right
    /// password.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            // Same cost as a wrong password: a timing difference must not
            // tell which users exist.
            let _ = bcrypt::verify(&password, DUMMY_HASH);
            return false;
        };
        let key = self.hasher.hash_one((&user, &password));
        if let Some(ok) = self.verified.lock().ok().and_then(|c| c.get(&key).copied()) {
            return ok;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= AUTH_CACHE {
                cache.clear();
            }
            cache.insert(key, ok);
        }
        ok
    }
}

/// bcrypt("sojourn", cost 10): verified against when the user is unknown.
const DUMMY_HASH: &str = "$2b$10$wXlnPpV5BB6uSCB4j1o1pOS5l7yMNh8fIhd0cO4YFm5XmUeO2q9IW";

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Reads and checks `path`; the error names the file and the problem.
pub fn load(path: &Path) -> Result<WebConfig, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let spec: FileSpec = serde_yaml_ng::from_str(&text).map_err(|e| at(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = spec
        .tls_server_config
        .map(|t| tls_config(t, base))
        .transpose()
        .map_err(at)?;
    let mut users = HashMap::new();
    for (user, hash) in spec.basic_auth_users {
        hash.parse::<bcrypt::HashParts>()
            .map_err(|e| at(format!("basic_auth_users: {user}: not a bcrypt hash ({e})")))?;
        users.insert(user, hash);
    }
    let _ = spec.http_server_config;
    Ok(WebConfig {
        tls: tls.map(Arc::new),
        auth: (!users.is_empty()).then(|| {
            Arc::new(BasicAuth {
                users,
                verified: Mutex::new(HashMap::new()),
                hasher: Default::default(),
            })
        }),
    })
}

fn tls_config(t: TlsSpec, base: &Path) -> Result<rustls::ServerConfig, String> {
    let read = |key: &str, f: &Path| {
        let f = base.join(f);
        std::fs::read(&f).map_err(|e| format!("tls_server_config.{key} {}: {e}", f.display()))
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("cert_file", &t.cert_file)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls_server_config.cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("tls_server_config.cert_file holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", &t.key_file)?)
        .map_err(|e| format!("tls_server_config.key_file: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match (
        t.min_version.as_deref(),
        t.max_version.as_deref(),
    ) {
        (None | Some("TLS12"), None | Some("TLS13")) => {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
        (Some("TLS13"), None | Some("TLS13")) => &[&rustls::version::TLS13],
        (None | Some("TLS12"), Some("TLS12")) => &[&rustls::version::TLS12],
        (min, max) => {
            return Err(format!(
                "tls_server_config: min_version {min:?} / max_version {max:?}: sojourn speaks TLS12 and TLS13"
            ));
        }
    };
    let _ = (
        t.cipher_suites,
        t.curve_preferences,
        t.prefer_server_cipher_suites,
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let client_roots = || -> Result<Arc<rustls::RootCertStore>, String> {
        let file = t
            .client_ca_file
            .as_ref()
            .ok_or("tls_server_config: client_auth_type verifies client certificates and needs client_ca_file")?;
        let mut store = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&read("client_ca_file", file)?) {
            let cert = cert.map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            store
                .add(cert)
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
        }
        Ok(Arc::new(store))
    };
    let verifier = |optional: bool| -> Result<_, String> {
        let b = rustls::server::WebPkiClientVerifier::builder_with_provider(
            client_roots()?,
            provider.clone(),
        );
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))
    };
    let builder = match t.client_auth_type.as_deref() {
        None | Some("NoClientCert") => builder.with_no_client_auth(),
        Some("RequireAndVerifyClientCert") => builder.with_client_cert_verifier(verifier(false)?),
        Some("VerifyClientCertIfGiven") => builder.with_client_cert_verifier(verifier(true)?),
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?}: use NoClientCert, RequireAndVerifyClientCert or VerifyClientCertIfGiven (sojourn never accepts a client certificate it does not verify)"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: certificate and key do not match: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        // "alice:s3cr:t" — a password may hold a colon.
        assert_eq!(
            parse_basic(b"Basic YWxpY2U6czNjcjp0"),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(parse_basic(b"basic YTpi"), Some(("a".into(), "b".into())));
        assert_eq!(parse_basic(b"Bearer YTpi"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic YWJj"), None, "no colon");
    }

    #[test]
    fn users_are_checked_against_bcrypt_and_remembered() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = BasicAuth {
            users: [("u".to_string(), hash)].into(),
            verified: Mutex::new(HashMap::new()),
            hasher: Default::default(),
        };
        let header = |s: &str| format!("Basic {}", encode(s));
        assert!(auth.allows(Some(header("u:pw").as_bytes())));
        assert!(auth.allows(Some(header("u:pw").as_bytes())), "cached");
        assert!(!auth.allows(Some(header("u:wrong").as_bytes())));
        assert!(!auth.allows(Some(header("nobody:pw").as_bytes())));
        assert!(!auth.allows(None));
        assert_eq!(auth.verified.lock().unwrap().len(), 2);
    }

    fn encode(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_dummy_hash_is_a_bcrypt_hash() {
        assert!(bcrypt::verify("sojourn", DUMMY_HASH).is_ok());
    }
}
