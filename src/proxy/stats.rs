//! The proxy's golden signals, recorded on the request path with atomics
//! and rendered into families at scrape time.
//!
//! Label sets are bounded: `http_request_method` is one of the standard
//! methods or `_OTHER`; `http_response_status_code` one of the codes IANA
//! registers (and 499, client closed request), any other code folded into
//! its class (`5xx`, which `=~"5.."` still matches); `http_route` one of the configured route templates or empty (never
//! the raw path); `service` one per proxied service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::metrics::{Desc, Family, Label, label};

use super::window::{QUANTILES, WindowedQuantiles};

// The lock-free histogram is the metrics model's: the probes record
// into it too.
pub use crate::atomic_histogram::{AtomicHistogram, DURATION_BUCKETS};
pub(crate) use crate::atomic_histogram::{SHARDS, shard_index};

/// `http.request.method` as OpenTelemetry bounds it.
pub fn method_label(method: &hyper::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// Status codes in the IANA HTTP Status Code Registry (RFC 9110 and the
/// RFCs it lists), and 499, nginx's "client closed request", which the
/// proxy records for a client that left before its response.
const REGISTERED_STATUS: &[u16] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 306, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414,
    415, 416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 499, 500, 501, 502, 503,
    504, 505, 506, 507, 508, 510, 511,
];

/// The status a series is kept under: the code itself when registered,
/// else its class (1 to 9, rendered `1xx` to `9xx`). An upstream answering
/// every code from 100 to 999 then makes at most 73 values per method and
/// route, not 900.
pub fn status_key(code: u16) -> u16 {
    if REGISTERED_STATUS.binary_search(&code).is_ok() {
        code
    } else {
        (code / 100).clamp(1, 9)
    }
}

/// The `http_response_status_code` value of a [`status_key`].
pub fn status_label(key: u16) -> String {
    if key < 100 {
        format!("{key}xx")
    } else {
        key.to_string()
    }
}

/// Why a request failed on the proxy's side (`error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// The upstream refused or did not accept the connection in time.
    Connect,
    /// The upstream accepted but did not answer within the timeout, or
    /// went silent for it in the middle of a response body.
    Timeout,
    /// The upstream closed or broke the connection mid-exchange, or
    /// answered with what is not an HTTP/1.x response.
    Reset,
}

impl ErrorType {
    pub const ALL: [ErrorType; 3] = [ErrorType::Connect, ErrorType::Timeout, ErrorType::Reset];
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Connect => "connect",
            ErrorType::Timeout => "timeout",
            ErrorType::Reset => "reset",
        }
    }
}

/// Key of one request-duration series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub method: &'static str,
    /// A [`status_key`]: the code, or its class below 100.
    pub status: u16,
    pub route: Arc<str>,
}

/// Key of one time-to-first-byte series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub method: &'static str,
    pub route: Arc<str>,
}

/// A value alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// Each thread's own index of the series it recorded into: a lookup on
/// the request path takes an uncontended lock and clones no `Arc` (a
/// shared `RwLock` and `Arc` cost 375 ns per record with two threads).
#[derive(Debug)]
struct SeriesCache<K>(Box<[Padded<Mutex<SeriesMap<K>>>]>);

type SeriesMap<K> = HashMap<K, Arc<AtomicHistogram>>;

impl<K> Default for SeriesCache<K> {
    fn default() -> Self {
        SeriesCache((0..SHARDS).map(|_| Padded::default()).collect())
    }
}

impl<K: Clone + Eq + std::hash::Hash> SeriesCache<K> {
    fn observe(&self, all: &RwLock<SeriesMap<K>>, key: &K, seconds: f64) {
        let Ok(mut mine) = self.0[shard_index()].0.lock() else {
            series(all, key).observe(seconds);
            return;
        };
        if let Some(h) = mine.get(key) {
            h.observe(seconds);
            return;
        }
        let h = series(all, key);
        h.observe(seconds);
        mine.insert(key.clone(), h);
    }
}

/// Everything recorded for one proxied service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub service: String,
    durations: RwLock<SeriesMap<RequestKey>>,
    first_byte: RwLock<SeriesMap<RouteKey>>,
    duration_cache: SeriesCache<RequestKey>,
    first_byte_cache: SeriesCache<RouteKey>,
    pub request_bytes: AtomicU64,
    pub response_bytes: AtomicU64,
    errors: [AtomicU64; 3],
    pub cancelled: AtomicU64,
    pub active_requests: AtomicU64,
    pub open_connections: AtomicU64,
    /// Of those, the ones waiting for a request holding no HTTP state.
    pub idle_connections: AtomicU64,
    pub connections_total: AtomicU64,
    /// Upgraded connections (websocket) being relayed.
    pub open_tunnels: AtomicU64,
    /// Sliding-window quantiles per route template, unmatched paths last.
    windows: Vec<(Arc<str>, WindowedQuantiles)>,
}

fn series<K: Clone + Eq + std::hash::Hash>(
    map: &RwLock<SeriesMap<K>>,
    key: &K,
) -> Arc<AtomicHistogram> {
    if let Some(h) = map.read().ok().and_then(|m| m.get(key).cloned()) {
        return h;
    }
    match map.write() {
        Ok(mut m) => m.entry(key.clone()).or_default().clone(),
        // A panic while holding the lock: record into a detached histogram.
        Err(_) => Arc::default(),
    }
}

impl ServiceStats {
    /// A service without route templates.
    pub fn new(service: impl Into<String>) -> Self {
        Self::with_routes(service, Vec::new())
    }

    /// A service whose paths are matched against `templates`, in order.
    pub fn with_routes(service: impl Into<String>, templates: Vec<Arc<str>>) -> Self {
        ServiceStats {
            service: service.into(),
            windows: templates
                .into_iter()
                .chain([Arc::from("")])
                .map(|t| (t, WindowedQuantiles::default()))
                .collect(),
            ..Default::default()
        }
    }

    /// Records a finished request into its route's window; `route_index`
    /// is the matching template's (None: unmatched).
    pub fn record_window(&self, route_index: Option<usize>, seconds: f64) {
        let i = route_index.unwrap_or(self.windows.len().saturating_sub(1));
        if let Some((_, w)) = self.windows.get(i) {
            w.record(seconds);
        }
    }

    /// Ends the windows' current sub-window (called every window / 6).
    pub fn rotate_windows(&self) {
        for (_, w) in &self.windows {
            w.rotate();
        }
    }

    /// Records a finished request's duration.
    pub fn record_duration(&self, key: &RequestKey, seconds: f64) {
        self.duration_cache.observe(&self.durations, key, seconds);
    }

    /// Records the time to a request's response headers.
    pub fn record_first_byte(&self, key: &RouteKey, seconds: f64) {
        self.first_byte_cache
            .observe(&self.first_byte, key, seconds);
    }

    pub fn error(&self, e: ErrorType) {
        self.errors[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn families(&self) -> Vec<Family> {
        let service = || label("service", self.service.clone());
        let mut duration = Family::new(REQUEST_DURATION);
        if let Ok(m) = self.durations.read() {
            let mut keys: Vec<_> = m.iter().collect();
            keys.sort_by(|a, b| {
                (a.0.method, a.0.status, &a.0.route).cmp(&(b.0.method, b.0.status, &b.0.route))
            });
            for (k, h) in keys {
                let labels: Vec<Label> = vec![
                    service(),
                    label("http_request_method", k.method),
                    label("http_response_status_code", status_label(k.status)),
                    label("http_route", k.route.to_string()),
                ];
                duration.push(labels, h.snapshot());
            }
        }
        let mut ttfb = Family::new(FIRST_BYTE);
        if let Ok(m) = self.first_byte.read() {
            let mut keys: Vec<_> = m.iter().collect();
            keys.sort_by(|a, b| (a.0.method, &a.0.route).cmp(&(b.0.method, &b.0.route)));
            for (k, h) in keys {
                ttfb.push(
                    [
                        service(),
                        label("http_request_method", k.method),
                        label("http_route", k.route.to_string()),
                    ],
                    h.snapshot(),
                );
            }
        }
        let mut quantiles = Family::new(WINDOW_QUANTILE);
        let mut in_window = Family::new(WINDOW_REQUESTS);
        for (route, w) in &self.windows {
            let Some(snap) = w.snapshot() else { continue };
            let route = || label("http_route", route.to_string());
            for (q, v) in QUANTILES.iter().zip(snap.values) {
                quantiles.push(
                    // Not `quantile`: that label is a summary's, and this
                    // family is a gauge (promtool refuses the pair).
                    vec![service(), route(), label("q", q.to_string())],
                    v,
                );
            }
            in_window.push([service(), route()], snap.count);
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut errors = Family::new(ERRORS);
        for e in ErrorType::ALL {
            errors.push(
                [service(), label("error_type", e.as_str())],
                load(&self.errors[e as usize]),
            );
        }
        let one = |desc: Desc, v: u64| {
            let mut f = Family::new(desc);
            f.push([service()], v);
            f
        };
        vec![
            duration,
            ttfb,
            quantiles,
            in_window,
            one(REQUEST_BYTES, load(&self.request_bytes)),
            one(RESPONSE_BYTES, load(&self.response_bytes)),
            errors,
            one(CANCELLED, load(&self.cancelled)),
            one(ACTIVE, load(&self.active_requests)),
            one(OPEN_CONNECTIONS, load(&self.open_connections)),
            one(IDLE_CONNECTIONS, load(&self.idle_connections)),
            one(CONNECTIONS, load(&self.connections_total)),
            one(OPEN_TUNNELS, load(&self.open_tunnels)),
        ]
    }
}

const REQUEST_DURATION: Desc = Desc::histogram(
    "http_server_request_duration",
    "Latency and traffic: time from receiving a request to the end of its response body, or to the client going away (OpenTelemetry http.server.request.duration, measured by the sojourn proxy).",
)
.seconds()
.without_namespace();
const WINDOW_QUANTILE: Desc = Desc::gauge(
    "proxy_request_duration_window",
    "Latency: quantiles q (0.5, 0.9, 0.99, 0.999) of request durations over the sliding window (--proxy.quantile-window, 1 min by default, turned every sixth), within 1 % (HdrHistogram of every request, measured by the sojourn proxy).",
)
.seconds();
const WINDOW_REQUESTS: Desc = Desc::gauge(
    "proxy_requests_in_window",
    "Traffic: requests the quantiles of the sliding window are computed from (measured by the sojourn proxy).",
);
const OPEN_TUNNELS: Desc = Desc::gauge(
    "proxy_open_tunnels",
    "Saturation: upgraded connections (websocket) being relayed between a client and the upstream.",
);
const FIRST_BYTE: Desc = Desc::histogram(
    "proxy_time_to_first_byte",
    "Latency: time from receiving a request to the upstream's response headers.",
)
.seconds();
const REQUEST_BYTES: Desc = Desc::counter(
    "proxy_request_body",
    "Traffic: request body bytes forwarded upstream.",
)
.bytes();
const RESPONSE_BYTES: Desc = Desc::counter(
    "proxy_response_body",
    "Traffic: response body bytes forwarded to clients.",
)
.bytes();
const ERRORS: Desc = Desc::counter(
    "proxy_upstream_errors",
    "Errors: requests the upstream failed, by error_type: connect (refused or not accepted in time: 502), timeout (no response headers in time: 504, or a response body silent for the timeout: cut off), reset (the connection broke mid-exchange, or the answer was not HTTP/1.x: 502).",
);
const CANCELLED: Desc = Desc::counter(
    "proxy_requests_cancelled",
    "Errors: requests whose client went away before the response ended (before any response, mid-upload included: in the duration histogram with status 499).",
);
const ACTIVE: Desc = Desc::gauge(
    "proxy_active_requests",
    "Saturation: requests in flight, from arrival to the end of the response body.",
);
const OPEN_CONNECTIONS: Desc = Desc::gauge(
    "proxy_open_connections",
    "Saturation: client connections open to the proxy.",
);
const IDLE_CONNECTIONS: Desc = Desc::gauge(
    "proxy_idle_connections",
    "Saturation: client connections open and waiting for a request with no HTTP state held: new ones before their first byte, keep-alive ones idle for 1-2 s or more.",
);
const CONNECTIONS: Desc =
    Desc::counter("proxy_connections", "Traffic: client connections accepted.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_put_a_value_on_its_upper_bound() {
        let h = AtomicHistogram::default();
        h.observe(0.0005);
        h.observe(0.0006);
        h.observe(20.0);
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.counts[1], 1, "0.5 ms is in the le=0.0005 bucket");
        assert_eq!(s.counts[2], 1);
        assert_eq!(*s.counts.last().unwrap(), 1, "+Inf");
        assert!((s.sum - 20.0011).abs() < 1e-6);
    }

    #[test]
    fn shards_add_up_across_threads() {
        let h = std::sync::Arc::new(AtomicHistogram::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| h.observe(0.002)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = h.snapshot();
        assert_eq!(s.count, 4000);
        assert_eq!(s.counts[3], 4000, "2 ms is in the le=0.0025 bucket");
        assert!((s.sum - 8.0).abs() < 1e-6);
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label(&hyper::Method::GET), "GET");
        let odd = hyper::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&odd), "_OTHER");
    }

    #[test]
    fn status_codes_are_bounded() {
        assert!(REGISTERED_STATUS.is_sorted());
        let labels: std::collections::BTreeSet<String> =
            (100..=999).map(|c| status_label(status_key(c))).collect();
        assert_eq!(labels.len(), REGISTERED_STATUS.len() + 9);
        assert_eq!(status_label(status_key(404)), "404");
        assert_eq!(status_label(status_key(499)), "499");
        assert_eq!(status_label(status_key(520)), "5xx");
        assert_eq!(status_label(status_key(999)), "9xx");
    }

    #[test]
    fn families_render_every_series() {
        let s = ServiceStats::new("shop");
        let key = RequestKey {
            method: "GET",
            status: 200,
            route: Arc::from("/users/{id}"),
        };
        s.record_duration(&key, 0.003);
        s.record_duration(&key, 0.004);
        s.error(ErrorType::Timeout);
        let text = crate::metrics::encode(s.families(), crate::metrics::Format::Text);
        assert!(text.contains(r#"http_server_request_duration_seconds_count{service="shop",http_request_method="GET",http_response_status_code="200",http_route="/users/{id}"} 2"#), "{text}");
        assert!(
            text.contains(
                r#"sojourn_proxy_upstream_errors_total{service="shop",error_type="timeout"} 1"#
            ),
            "{text}"
        );
    }
}
