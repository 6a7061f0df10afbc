//! Active probes: HTTP(S) requests and TCP connections to the targets of
//! `--config.file`, each on its own interval with jitter, timed by phase.
//!
//! Unlike blackbox_exporter, whose phase durations are gauges holding the
//! last probe only, every probe's phases are recorded into histograms, so
//! that a rate over any window shows how resolve, connect, TLS, processing
//! and transfer times are distributed; and probes run on their own
//! schedule, never during a scrape (a slow target cannot slow a scrape).
//!
//! Label sets: `probe` is one of the configured names; `phase` one of five;
//! `reason` one of eight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::atomic_histogram::AtomicHistogram;
use crate::metrics::{Desc, Family, label};

/// A `host:port` target; the host is a name or an IP literal.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// Parses `host:port` or `[v6]:port`.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("address {s:?} is not host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("address {s:?}: port {port:?} is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("address {s:?} is not host:port (no host)"));
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

pub use crate::tls_client::TlsSettings;

#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub address: HostPort,
    pub url: Uri,
    pub method: Method,
    /// Empty: any 2xx.
    pub expect_status: Vec<u16>,
    pub body_regex: Option<regex::Regex>,
    pub headers: HeaderMap,
    /// Some for https.
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone)]
pub enum Target {
    Http(Box<HttpTarget>),
    Tcp {
        address: HostPort,
        tls: Option<TlsSettings>,
    },
}

/// One configured probe.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Resolve,
    Connect,
    Tls,
    /// From the request sent to the response headers: the server's time.
    Processing,
    /// The response body.
    Transfer,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tls,
        Phase::Processing,
        Phase::Transfer,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Processing => "processing",
            Phase::Transfer => "transfer",
        }
    }
}

/// Why a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The name did not resolve.
    Resolve,
    /// Refused, unreachable or reset while connecting.
    Connect,
    /// Handshake failed: certificate not trusted, wrong name, expired.
    Tls,
    /// The probe's timeout passed (in whatever phase).
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Http,
    /// A status not in `expect_status`.
    Status,
    /// The body did not match `body_regex`.
    Body,
    /// The body was longer than what is read to match it.
    BodyTooLarge,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Resolve,
        Reason::Connect,
        Reason::Tls,
        Reason::Timeout,
        Reason::Http,
        Reason::Status,
        Reason::Body,
        Reason::BodyTooLarge,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Resolve => "resolve",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Timeout => "timeout",
            Reason::Http => "http",
            Reason::Status => "status",
            Reason::Body => "body",
            Reason::BodyTooLarge => "body_too_large",
        }
    }
}

/// Bytes of a body read to match `body_regex`; more fails the probe.
const BODY_MATCH_LIMIT: usize = 1 << 20;

/// What one attempt saw, kept even when it fails part way.
#[derive(Debug, Default)]
struct Attempt {
    phases: Vec<(Phase, f64)>,
    status: Option<u16>,
    cert_expiry: Option<i64>,
}

impl Attempt {
    async fn timed<T>(&mut self, phase: Phase, f: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = f.await;
        self.phases.push((phase, start.elapsed().as_secs_f64()));
        out
    }
}

#[derive(Debug, Default)]
struct Last {
    success: Option<bool>,
    status: Option<u16>,
    cert_expiry: Option<i64>,
}

/// One probe's results, shared between its task and the scraper.
#[derive(Debug)]
pub struct ProbeState {
    pub spec: Spec,
    duration: AtomicHistogram,
    phases: [AtomicHistogram; Phase::ALL.len()],
    attempts: AtomicU64,
    failures: [AtomicU64; Reason::ALL.len()],
    last: Mutex<Last>,
}

impl ProbeState {
    pub fn new(spec: Spec) -> Self {
        ProbeState {
            spec,
            duration: AtomicHistogram::default(),
            phases: Default::default(),
            attempts: AtomicU64::new(0),
            failures: Default::default(),
            last: Mutex::new(Last::default()),
        }
    }

    /// Runs the probe once, records its outcome, and returns it.
    pub async fn run_once(&self) -> Result<(), Reason> {
        let start = Instant::now();
        let mut attempt = Attempt::default();
        let outcome = match tokio::time::timeout(
            self.spec.timeout,
            attempt_target(&self.spec.target, &mut attempt),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Reason::Timeout),
        };
        self.duration.observe(start.elapsed().as_secs_f64());
        for (phase, seconds) in &attempt.phases {
            self.phases[*phase as usize].observe(*seconds);
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if let Err(reason) = outcome {
            self.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(probe = %self.spec.name, reason = reason.as_str(), "probe failed");
        }
        if let Ok(mut last) = self.last.lock() {
            last.success = Some(outcome.is_ok());
            last.status = attempt.status;
            if attempt.cert_expiry.is_some() {
                last.cert_expiry = attempt.cert_expiry;
            }
        }
        outcome
    }
}

async fn attempt_target(target: &Target, a: &mut Attempt) -> Result<(), Reason> {
    let (address, tls) = match target {
        Target::Http(h) => (&h.address, &h.tls),
        Target::Tcp { address, tls } => (address, tls),
    };
    let resolved = a
        .timed(
            Phase::Resolve,
            tokio::net::lookup_host((address.host.as_str(), address.port)),
        )
        .await
        .map_err(|_| Reason::Resolve)?
        .next()
        .ok_or(Reason::Resolve)?;
    let stream = a
        .timed(Phase::Connect, TcpStream::connect(resolved))
        .await
        .map_err(|_| Reason::Connect)?;
    let _ = stream.set_nodelay(true);
    match (target, tls) {
        (Target::Tcp { .. }, None) => Ok(()),
        (Target::Tcp { .. }, Some(tls)) => handshake(stream, tls, &address.host, a).await.map(drop),
        (Target::Http(h), None) => http_exchange(stream, h, a).await,
        (Target::Http(h), Some(tls)) => {
            let stream = handshake(stream, tls, &address.host, a).await?;
            http_exchange(stream, h, a).await
        }
    }
}

async fn handshake(
    stream: TcpStream,
    tls: &TlsSettings,
    host: &str,
    a: &mut Attempt,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Reason> {
    let name = tls.name_for(host).map_err(|_| Reason::Tls)?;
    let connector = tls.connector();
    let stream = a
        .timed(Phase::Tls, connector.connect(name, stream))
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "probe TLS handshake failed");
            Reason::Tls
        })?;
    a.cert_expiry = stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min();
    Ok(stream)
}

async fn http_exchange<S>(stream: S, h: &HttpTarget, a: &mut Attempt) -> Result<(), Reason>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Reason::Http)?;
    // The connection's task ends with the exchange, or its timeout.
    let _conn = crate::rt::AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut request = Request::builder()
        .method(h.method.clone())
        .uri(
            h.url
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|_| Reason::Http)?;
    let headers = request.headers_mut();
    if let Some(authority) = h.url.authority()
        && let Ok(v) = header::HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, v);
    }
    headers.insert(
        header::USER_AGENT,
        header::HeaderValue::from_static(concat!("sojourn-probe/", env!("CARGO_PKG_VERSION"))),
    );
    for (k, v) in &h.headers {
        headers.insert(k.clone(), v.clone());
    }
    let response = a
        .timed(Phase::Processing, sender.send_request(request))
        .await
        .map_err(|_| Reason::Http)?;
    let status = response.status().as_u16();
    a.status = Some(status);
    let keep = h.body_regex.is_some();
    let body = a
        .timed(Phase::Transfer, async {
            let mut body = response.into_body();
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Reason::Http)?;
                if keep && let Some(data) = frame.data_ref() {
                    if kept.len() + data.len() > BODY_MATCH_LIMIT {
                        return Err(Reason::BodyTooLarge);
                    }
                    kept.extend_from_slice(data);
                }
            }
            Ok(kept)
        })
        .await?;
    let status_ok = if h.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        h.expect_status.contains(&status)
    };
    if !status_ok {
        return Err(Reason::Status);
    }
    if let Some(re) = &h.body_regex
        && !re.is_match(&String::from_utf8_lossy(&body))
    {
        return Err(Reason::Body);
    }
    Ok(())
}

/// A small generator for jitter: probes need spread, not cryptography.
struct SplitMix(u64);

impl SplitMix {
    fn seeded(name: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        std::time::SystemTime::now().hash(&mut h);
        SplitMix(h.finish())
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs a probe forever: first at a random point of its first interval (so
/// that probes configured together do not fire together), then every
/// interval ± 10 %.
async fn run_forever(state: Arc<ProbeState>) {
    let mut rng = SplitMix::seeded(&state.spec.name);
    let interval = state.spec.interval;
    let mut next = tokio::time::Instant::now() + interval.mul_f64(rng.next_f64());
    loop {
        tokio::time::sleep_until(next).await;
        let _ = state.run_once().await;
        next += interval.mul_f64(0.9 + 0.2 * rng.next_f64());
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// The configured probes, running on the current tokio runtime.
pub struct Prober {
    probes: Vec<Arc<ProbeState>>,
}

impl Prober {
    /// Spawns one task per probe.
    pub fn start(specs: Vec<Spec>) -> Prober {
        let probes: Vec<Arc<ProbeState>> = specs
            .into_iter()
            .map(|s| Arc::new(ProbeState::new(s)))
            .collect();
        for p in &probes {
            tokio::spawn(run_forever(p.clone()));
        }
        Prober { probes }
    }

    pub fn families(&self) -> Vec<Family> {
        let mut duration = Family::new(DURATION);
        let mut phases = Family::new(PHASE_DURATION);
        let mut attempts = Family::new(ATTEMPTS);
        let mut failures = Family::new(FAILURES);
        let mut success = Family::new(SUCCESS);
        let mut status = Family::new(STATUS);
        let mut expiry = Family::new(CERT_EXPIRY);
        for p in &self.probes {
            let name = || label("probe", p.spec.name.clone());
            duration.push(vec![name()], p.duration.snapshot());
            let tls = match &p.spec.target {
                Target::Http(h) => h.tls.is_some(),
                Target::Tcp { tls, .. } => tls.is_some(),
            };
            let http = matches!(p.spec.target, Target::Http(_));
            for phase in Phase::ALL {
                // Only the phases this kind of probe goes through.
                let applies = match phase {
                    Phase::Tls => tls,
                    Phase::Processing | Phase::Transfer => http,
                    Phase::Resolve | Phase::Connect => true,
                };
                if applies {
                    phases.push(
                        vec![name(), label("phase", phase.as_str())],
                        p.phases[phase as usize].snapshot(),
                    );
                }
            }
            attempts.push(vec![name()], p.attempts.load(Ordering::Relaxed));
            for reason in Reason::ALL {
                failures.push(
                    vec![name(), label("reason", reason.as_str())],
                    p.failures[reason as usize].load(Ordering::Relaxed),
                );
            }
            if let Ok(last) = p.last.lock() {
                if let Some(ok) = last.success {
                    success.push(vec![name()], u64::from(ok));
                }
                if http && last.success.is_some() {
                    status.push(vec![name()], u64::from(last.status.unwrap_or(0)));
                }
                if let Some(t) = last.cert_expiry {
                    expiry.push(vec![name()], t as f64);
                }
            }
        }
        vec![
            duration, phases, attempts, failures, success, status, expiry,
        ]
    }
}

/// The probes' metrics for the scraper.
pub struct ProbeCollector(pub Arc<Prober>);

impl crate::collectors::Collect for ProbeCollector {
    fn collect(
        &self,
        _: &crate::collectors::Config,
    ) -> Result<Vec<Family>, crate::collectors::CollectError> {
        Ok(self.0.families())
    }
}

const DURATION: Desc = Desc::histogram(
    "probe_duration",
    "Latency of the probed target: each probe's whole time, successes and failures, timeouts at the timeout (--config.file probes).",
)
.seconds();
const PHASE_DURATION: Desc = Desc::histogram(
    "probe_phase_duration",
    "Latency by phase of each probe: resolve, connect, tls, processing (request sent to response headers), transfer (body); phases a failed probe did not finish are not recorded.",
)
.seconds();
const ATTEMPTS: Desc = Desc::counter("probe_attempts", "Traffic: probes run.");
const FAILURES: Desc = Desc::counter(
    "probe_failures",
    "Errors: failed probes by reason (resolve, connect, tls, timeout, http, status, body, body_too_large).",
);
const SUCCESS: Desc = Desc::gauge(
    "probe_success",
    "Errors: 1 if the last probe succeeded, 0 if it failed; absent before the first.",
);
const STATUS: Desc = Desc::gauge(
    "probe_http_status_code",
    "The last HTTP probe's response status; 0 when it got none.",
);
const CERT_EXPIRY: Desc = Desc::gauge(
    "probe_tls_cert_expiry_timestamp",
    "Unix time at which the earliest certificate the target presented expires (as of the last successful handshake).",
)
.seconds();

#[cfg(test)]
mod tests;
