//! `--config.file`: the services to proxy and the targets to probe, in YAML
//! (the format of the rest of the Prometheus ecosystem's configuration).
//!
//! Unknown keys are errors, so that a misspelt option is not silently
//! ignored; every error names the file, and where the YAML parser knows it,
//! the line and column.
//!
//! ```yaml
//! services:
//!   - name: checkout            # the `service` label
//!     listen: 127.0.0.1:8080
//!     upstream: http://127.0.0.1:8081
//!     routes: ["/cart/{id}", "/static/*"]
//!     max_concurrency: 64       # optional: the proxy's request queue
//!     shed: codel               # none | codel
//!     queue_order: fifo         # fifo | adaptive-lifo
//! probes:
//!   - name: checkout-health     # the `probe` label
//!     interval: 15s
//!     timeout: 5s
//!     http:
//!       url: https://127.0.0.1:8443/healthz
//!       expect_status: [200]
//!       body_regex: "ok"
//!       tls: { ca_file: /etc/ssl/internal-ca.pem }
//!   - name: postgres
//!     tcp: { address: 127.0.0.1:5432 }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::probe;
use crate::proxy;
use crate::proxy::defaults;

/// What a config file holds, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub services: Vec<proxy::Config>,
    pub probes: Vec<probe::Spec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    services: Vec<ServiceSpec>,
    #[serde(default)]
    probes: Vec<ProbeSpec>,
}

fn default_connect_timeout() -> Duration {
    defaults::duration(defaults::CONNECT_TIMEOUT)
}
fn default_timeout() -> Duration {
    defaults::duration(defaults::TIMEOUT)
}
fn default_header_timeout() -> Duration {
    defaults::duration(defaults::HEADER_TIMEOUT)
}
fn default_idle_timeout() -> Duration {
    defaults::duration(defaults::IDLE_TIMEOUT)
}
fn default_send_timeout() -> Duration {
    defaults::duration(defaults::SEND_TIMEOUT)
}
fn default_max_connections() -> usize {
    defaults::MAX_CONNECTIONS
        .parse()
        .expect("the default parses (tested)")
}
fn default_drain_timeout() -> Duration {
    defaults::duration(defaults::DRAIN_TIMEOUT)
}
fn default_quantile_window() -> Duration {
    defaults::duration(defaults::QUANTILE_WINDOW)
}
fn default_latency_target() -> Duration {
    defaults::duration(defaults::LATENCY_TARGET)
}
fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_method() -> String {
    "GET".into()
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::duration::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    listen: SocketAddr,
    upstream: String,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    connect_timeout: Duration,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    timeout: Duration,
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    header_timeout: Duration,
    #[serde(default = "default_idle_timeout", deserialize_with = "duration")]
    idle_timeout: Duration,
    #[serde(default = "default_send_timeout", deserialize_with = "duration")]
    send_timeout: Duration,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_drain_timeout", deserialize_with = "duration")]
    drain_timeout: Duration,
    #[serde(default = "default_quantile_window", deserialize_with = "duration")]
    quantile_window: Duration,
    #[serde(default = "default_latency_target", deserialize_with = "duration")]
    latency_target: Duration,
    #[serde(default)]
    max_concurrency: usize,
    #[serde(default)]
    shed: proxy::admission::Shed,
    #[serde(default)]
    queue_order: proxy::admission::Order,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSpec {
    name: String,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    interval: Duration,
    #[serde(default = "default_probe_timeout", deserialize_with = "duration")]
    timeout: Duration,
    http: Option<HttpSpec>,
    tcp: Option<TcpSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    /// Empty: any 2xx.
    #[serde(default)]
    expect_status: Vec<u16>,
    body_regex: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    tls: Option<TlsSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpSpec {
    address: String,
    /// Present: a TLS handshake after the connection (certificate expiry
    /// of a non-HTTP service).
    tls: Option<TlsSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// Reads and validates `path`. The error is one line naming the file.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A YAML error as it may be shown: the parser quotes what it found (a
/// key it does not know, a value of the wrong type), and a file given by
/// mistake (`--config.file /etc/shadow`) must not have its content
/// printed. A key that reads like a setting name is kept; any other found
/// key or value is named by its kind alone; the position stays.
pub fn yaml_error(e: &serde_yaml_ng::Error) -> String {
    use std::sync::LazyLock;
    static UNKNOWN_KEY: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new("unknown (field|variant) `([^`]*)`").expect("valid"));
    static FOUND_VALUE: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"(string|integer|floating point|character|boolean|byte array) (`[^`]*`|"(?:[^"\\]|\\.)*")"#,
        )
        .expect("valid")
    });
    let msg = e.to_string();
    let msg = UNKNOWN_KEY.replace_all(&msg, |c: &regex::Captures| {
        let key = &c[2];
        let setting_like = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if setting_like {
            format!("unknown {} `{key}`", &c[1])
        } else {
            format!("unknown {} (not a setting's name; not shown)", &c[1])
        }
    });
    FOUND_VALUE.replace_all(&msg, "$1").into_owned()
}

/// Parses a config's text; relative `ca_file`s are read from `base`.
pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
    let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&e))?;
    let mut services = Vec::with_capacity(spec.services.len());
    for s in spec.services {
        let at = |e: String| format!("service {:?}: {e}", s.name);
        if s.name.is_empty() {
            return Err("a service has an empty name".into());
        }
        let upstream = proxy::parse_upstream(&s.upstream).map_err(at)?;
        let routes = s
            .routes
            .iter()
            .map(|r| proxy::Route::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        if s.max_concurrency == 0
            && (s.shed != Default::default() || s.queue_order != Default::default())
        {
            return Err(at(
                "shed and queue_order need max_concurrency: without a limit there is no queue"
                    .into(),
            ));
        }
        services.push(proxy::Config {
            listen: s.listen,
            upstream,
            service: s.name,
            routes,
            connect_timeout: s.connect_timeout,
            timeout: s.timeout,
            header_timeout: s.header_timeout,
            idle_timeout: s.idle_timeout,
            send_timeout: s.send_timeout,
            max_connections: s.max_connections.max(1),
            drain_timeout: s.drain_timeout,
            quantile_window: s.quantile_window,
            latency_target: s.latency_target,
            admission: (s.max_concurrency > 0).then_some(proxy::admission::AdmissionConfig {
                max_concurrency: s.max_concurrency,
                shed: s.shed,
                order: s.queue_order,
            }),
        });
    }
    check_services(&services)?;
    let mut probe_names = HashSet::new();
    let mut probes = Vec::with_capacity(spec.probes.len());
    for p in spec.probes {
        let at = |e: String| format!("probe {:?}: {e}", p.name);
        if p.name.is_empty() {
            return Err("a probe has an empty name".into());
        }
        if !probe_names.insert(p.name.clone()) {
            return Err(at("named twice".into()));
        }
        if p.timeout > p.interval {
            return Err(at(format!(
                "timeout {:?} is longer than interval {:?}",
                p.timeout, p.interval
            )));
        }
        let target = match (p.http, p.tcp) {
            (Some(h), None) => probe::Target::Http(Box::new(http_target(h, base).map_err(at)?)),
            (None, Some(t)) => probe::Target::Tcp {
                address: probe::parse_host_port(&t.address).map_err(at)?,
                tls: t
                    .tls
                    .map(|tls| tls_settings(tls, base))
                    .transpose()
                    .map_err(at)?,
            },
            _ => return Err(at("needs exactly one of http: or tcp:".into())),
        };
        probes.push(probe::Spec {
            name: p.name,
            interval: p.interval,
            timeout: p.timeout,
            target,
        });
    }
    Ok(Config { services, probes })
}

/// Service names, which become the `service` label, and listen addresses
/// must be unique, whether a service comes from the file or the command
/// line; port 0 (any free port) may be asked for by several.
pub fn check_services(services: &[proxy::Config]) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    for s in services {
        if !names.insert(s.service.as_str()) {
            return Err(format!("service {:?}: named twice", s.service));
        }
        if s.listen.port() != 0 && !listens.insert(s.listen) {
            return Err(format!(
                "service {:?}: listen {} is used by another service",
                s.service, s.listen
            ));
        }
    }
    Ok(())
}

fn http_target(h: HttpSpec, base: &Path) -> Result<probe::HttpTarget, String> {
    let url: hyper::Uri = h.url.parse().map_err(|e| format!("url {:?}: {e}", h.url))?;
    let https = match url.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("url {:?}: only http:// and https://", h.url)),
    };
    let host = url
        .host()
        .ok_or_else(|| format!("url {:?}: no host", h.url))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    if h.tls.is_some() && !https {
        return Err(format!("url {:?}: tls settings on an http:// url", h.url));
    }
    let method = hyper::Method::from_bytes(h.method.as_bytes())
        .map_err(|_| format!("method {:?} is not an HTTP method", h.method))?;
    if let Some(bad) = h.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(format!("expect_status {bad} is not an HTTP status"));
    }
    let body_regex = h
        .body_regex
        .map(|r| regex::Regex::new(&r).map_err(|e| format!("body_regex: {e}")))
        .transpose()?;
    let mut headers = hyper::HeaderMap::new();
    for (k, v) in h.headers {
        let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("header name {k:?} is not valid"))?;
        let value = hyper::header::HeaderValue::from_str(&v)
            .map_err(|_| format!("header {k}: value {v:?} is not valid"))?;
        headers.insert(name, value);
    }
    let tls = https
        .then(|| tls_settings(h.tls.unwrap_or_default(), base))
        .transpose()?;
    Ok(probe::HttpTarget {
        address: probe::HostPort { host, port },
        url,
        method,
        expect_status: h.expect_status,
        body_regex,
        headers,
        tls,
    })
}

fn tls_settings(t: TlsSpec, base: &Path) -> Result<probe::TlsSettings, String> {
    let ca_pem = t
        .ca_file
        .map(|f| {
            let f = base.join(f);
            std::fs::read(&f).map_err(|e| format!("ca_file {}: {e}", f.display()))
        })
        .transpose()?;
    probe::TlsSettings::new(ca_pem.as_deref(), t.server_name, t.insecure_skip_verify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_keys_and_kinds_never_a_files_content() {
        let err = |text: &str| parse(text, Path::new(".")).unwrap_err();
        // A password file given by mistake.
        let e = err("root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n");
        assert!(!e.contains("root") && !e.contains("19000"), "{e}");
        let e = err("hunter2 is the password\n");
        assert!(!e.contains("hunter2") && e.contains("string"), "{e}");
        let e = err("services:\n  - name: a\n    secret_key: x\n");
        assert!(e.contains("`secret_key`") && e.contains("line 3"), "{e}");
        let e = err("probes:\n  - name: p\n    http: 12345\n");
        assert!(!e.contains("12345") && e.contains("integer"), "{e}");
    }

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new(".")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new(".")).unwrap_err()
    }

    #[test]
    fn services_and_probes_with_defaults() {
        let c = parse_ok(
            "services:
  - name: a
    listen: 127.0.0.1:8080
    upstream: http://127.0.0.1:8081
    routes: ['/users/{id}']
    max_concurrency: 4
    shed: codel
    queue_order: adaptive-lifo
  - name: b
    listen: 127.0.0.1:8090
    upstream: http://127.0.0.1:8091
probes:
  - name: web
    http: { url: 'http://127.0.0.1:8081/healthz', body_regex: ok }
  - name: db
    interval: 1m
    tcp: { address: 'localhost:5432' }
",
        );
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].routes.len(), 1);
        let adm = c.services[0].admission.as_ref().unwrap();
        assert!(
            adm.shed == proxy::admission::Shed::Codel
                && adm.order == proxy::admission::Order::AdaptiveLifo
        );
        assert!(c.services[1].admission.is_none());
        assert_eq!(c.services[1].timeout, Duration::from_secs(30));
        assert_eq!(c.probes[0].interval, Duration::from_secs(15));
        assert_eq!(c.probes[1].interval, Duration::from_secs(60));
        assert!(matches!(c.probes[1].target, probe::Target::Tcp { .. }));
        assert!(parse_ok("").services.is_empty());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        for (text, expect) in [
            ("servics: []", "unknown field `servics`"),
            (
                "services: [{name: a, listen: 127.0.0.1:1, upstream: http://x, lisen: 1}]",
                "unknown field `lisen`",
            ),
            (
                "services: [{name: a, listen: 127.0.0.1:1, upstream: https://x}]",
                "only http://",
            ),
            (
                "services: [{name: a, listen: 127.0.0.1:1, upstream: http://x, shed: codel}]",
                "need max_concurrency",
            ),
            (
                "services: [{name: a, listen: 127.0.0.1:1, upstream: http://x},
                            {name: a, listen: 127.0.0.1:2, upstream: http://x}]",
                "named twice",
            ),
            (
                "services: [{name: a, listen: 127.0.0.1:1, upstream: http://x},
                            {name: b, listen: 127.0.0.1:1, upstream: http://x}]",
                "is used by another service",
            ),
            (
                "services: [{name: a, listen: 127.0.0.1:1, upstream: http://x, timeout: 5}]",
                "no unit",
            ),
            ("probes: [{name: p}]", "exactly one of http: or tcp:"),
            (
                "probes: [{name: p, http: {url: 'ftp://x'}}]",
                "only http:// and https://",
            ),
            (
                "probes: [{name: p, http: {url: 'http://x', body_regex: '('}}]",
                "body_regex",
            ),
            (
                "probes: [{name: p, http: {url: 'http://x', expect_status: [700]}}]",
                "700",
            ),
            (
                "probes: [{name: p, tcp: {address: 'nohostport'}}]",
                "host:port",
            ),
            (
                "probes: [{name: p, interval: 1s, timeout: 2s, tcp: {address: 'x:1'}}]",
                "longer than interval",
            ),
            (
                "probes: [{name: p, http: {url: 'https://x', tls: {ca_file: /does/not/exist}}}]",
                "/does/not/exist",
            ),
            (
                "probes: [{name: p, http: {url: 'http://x', tls: {}}}]",
                "tls settings on an http:// url",
            ),
        ] {
            let e = parse_err(text);
            assert!(e.contains(expect), "{text}: {e}");
        }
        assert!(
            parse_err("services: [\n  {name: a, listen: nope, upstream: http://x}]")
                .contains("line 2")
        );
    }
}
