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
/// 10), so every answer — right or wrong, known user or not — is
/// remembered by a keyed hash of the user and password pair (the password
/// itself is not kept), as exporter-toolkit does for right ones: a scraper
/// pays bcrypt once, and a repeated guess costs the same whether its user
/// exists or not.
pub struct BasicAuth {
    /// Users in file order, with their hashes.
    users: Vec<(String, String)>,
    verified: Mutex<HashMap<u64, bool>>,
    hasher: std::collections::hash_map::RandomState,
    /// bcrypt runs one at a time, however many connections ask: a flood of
    /// wrong passwords takes one core, never the threads scrapes run on.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Requests waiting to hash; past [`MAX_WAITING_TO_HASH`] the answer
    /// is 429 at once.
    waiting: std::sync::atomic::AtomicUsize,
}

/// Cached answers at most; past it the cache starts over (a client trying
/// many passwords must not grow memory).
const AUTH_CACHE: usize = 1024;
/// bcrypt verifications run at once.
pub const HASHING_AT_ONCE: usize = 1;
/// Requests that may wait for a turn to hash before the rest are refused
/// with 429: at cost 10 (50 ms) the last of them waits 1.6 s.
pub const MAX_WAITING_TO_HASH: usize = 32;
/// bcrypt's valid costs.
const COSTS: std::ops::RangeInclusive<u32> = 4..=31;
/// Costs above this are accepted with a warning: each verification takes
/// over 200 ms of a core (191 ms at 12 on this project's machines), and
/// doubles with every step.
pub const COST_WARN_ABOVE: u32 = 12;

/// What an `Authorization` header gets without hashing.
pub enum Check {
    /// Answered from the cache (or malformed: no).
    Answered(bool),
    /// Needs a bcrypt verification: [`BasicAuth::verify`].
    Hash(Pending),
}

/// A verification to run: `password` against `hash`, which is the user's,
/// or, for a user who does not exist, another user's (chosen by the name),
/// so that it costs what a real user's costs.
pub struct Pending {
    key: u64,
    password: String,
    hash: String,
    known: bool,
}

/// Why a request was not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized,
    /// Too many requests waiting to hash.
    Busy,
}

impl BasicAuth {
    pub fn new(users: Vec<(String, String)>) -> Self {
        BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            hasher: Default::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_AT_ONCE)),
            waiting: Default::default(),
        }
    }

    /// Says, in the log, which users have a cost above [`COST_WARN_ABOVE`]
    /// (called once logging is set up).
    pub fn warn_of_costly_hashes(&self) {
        for (user, hash) in &self.users {
            let Ok(cost) = hash.parse::<bcrypt::HashParts>().map(|p| p.get_cost()) else {
                continue;
            };
            if cost > COST_WARN_ABOVE {
                tracing::warn!(
                    user = %user,
                    cost,
                    "bcrypt cost above {COST_WARN_ABOVE}: each new login takes {} times as long as at {COST_WARN_ABOVE} (about 0.2 s of a core)",
                    1u64 << (cost - COST_WARN_ABOVE).min(63)
                );
            }
        }
    }

    /// The answer when it needs no bcrypt; cheap enough for the serving
    /// thread.
    pub fn check(&self, authorization: Option<&[u8]>) -> Check {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Check::Answered(false);
        };
        let key = self.hasher.hash_one((&user, &password));
        if let Some(ok) = self.verified.lock().ok().and_then(|c| c.get(&key).copied()) {
            return Check::Answered(ok);
        }
        let (hash, known) = match self.users.iter().find(|(u, _)| *u == user) {
            Some((_, hash)) => (hash.clone(), true),
            None => {
                // Another user's hash, the same one for this name each time.
                let i = self.hasher.hash_one(&user) as usize % self.users.len().max(1);
                match self.users.get(i) {
                    Some((_, hash)) => (hash.clone(), false),
                    None => return Check::Answered(false),
                }
            }
        };
        Check::Hash(Pending {
            key,
            password,
            hash,
            known,
        })
    }

    /// Runs the bcrypt verification (slow: off the serving thread) and
    /// remembers the answer.
    pub fn verify(&self, p: Pending) -> bool {
        let matches = bcrypt::verify(&p.password, &p.hash).unwrap_or(false);
        let ok = matches && p.known;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= AUTH_CACHE {
                cache.clear();
            }
            cache.insert(p.key, ok);
        }
        ok
    }

    /// Whether an `Authorization` header value names a user with the right
    /// password, hashing on this thread if it must.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        match self.check(authorization) {
            Check::Answered(ok) => ok,
            Check::Hash(p) => self.verify(p),
        }
    }

    /// [`BasicAuth::allows`] for the server: a cached answer at once,
    /// else a turn at the hashing permit (refused as busy when too many
    /// wait) and the hash on the blocking pool.
    pub async fn admit(self: &Arc<Self>, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        use std::sync::atomic::Ordering;
        let pending = match self.check(authorization) {
            Check::Answered(true) => return Ok(()),
            Check::Answered(false) => return Err(Refusal::Unauthorized),
            Check::Hash(p) => p,
        };
        /// One place in the waiting count, given back however the wait
        /// ends (a client that leaves drops it mid-wait).
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let place = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING_TO_HASH {
            return Err(Refusal::Busy);
        }
        let permit = self.hashing.clone().acquire_owned().await;
        drop(place);
        let Ok(permit) = permit else {
            return Err(Refusal::Busy);
        };
        let auth = self.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _turn = permit;
            auth.verify(pending)
        })
        .await
        .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(Refusal::Unauthorized)
        }
    }
}

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
    let spec: FileSpec =
        serde_yaml_ng::from_str(&text).map_err(|e| at(crate::config::yaml_error(&e)))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let tls = spec
        .tls_server_config
        .map(|t| tls_config(t, base))
        .transpose()
        .map_err(at)?;
    let mut users = Vec::new();
    for (user, hash) in spec.basic_auth_users {
        let parts = hash
            .parse::<bcrypt::HashParts>()
            .map_err(|e| at(format!("basic_auth_users: {user}: not a bcrypt hash ({e})")))?;
        let cost = parts.get_cost();
        if !COSTS.contains(&cost) {
            return Err(at(format!(
                "basic_auth_users: {user}: bcrypt cost {cost} is outside bcrypt's {}..={}",
                COSTS.start(),
                COSTS.end()
            )));
        }
        users.push((user, hash));
    }
    let _ = spec.http_server_config;
    Ok(WebConfig {
        tls: tls.map(Arc::new),
        auth: (!users.is_empty()).then(|| Arc::new(BasicAuth::new(users))),
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
        let auth = BasicAuth::new(vec![("u".to_string(), hash)]);
        let header = |s: &str| format!("Basic {}", encode(s));
        assert!(auth.allows(Some(header("u:pw").as_bytes())));
        assert!(auth.allows(Some(header("u:pw").as_bytes())), "cached");
        assert!(!auth.allows(Some(header("u:wrong").as_bytes())));
        // An unknown user with a known user's password: still no.
        assert!(!auth.allows(Some(header("nobody:pw").as_bytes())));
        assert!(!auth.allows(Some(header("nobody:pw").as_bytes())), "cached");
        assert!(!auth.allows(None));
        // Every answer remembered, right or wrong, known user or not.
        assert_eq!(auth.verified.lock().unwrap().len(), 3);
    }

    fn encode(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
