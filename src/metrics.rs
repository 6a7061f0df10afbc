//! The snapshot model every collector fills, and its encoding.
//!
//! A scrape first reads and parses every source into plain [`Family`] values
//! (no locks, no I/O left), then encodes them: the text formats by
//! [`text`], protobuf by prometheus-client. Keeping descriptors as data lets
//! the metrics reference (docs/metrics.md) be checked against what is
//! emitted.

use std::borrow::Cow;
use std::io::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, NativeHistogram, NativeHistogramBuckets, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Every metric name starts with this.
pub const NAMESPACE: &str = "sojourn";

/// Metric types sojourn emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric descriptor: the name without namespace, unit or `_total` (the
/// encoder appends those), its HELP sentence, kind and base unit.
#[derive(Debug, Clone)]
pub struct Desc {
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: Kind,
    pub unit: Option<BaseUnit>,
    /// False for names fixed by a convention outside sojourn (OpenTelemetry's
    /// `http_server_request_duration_seconds`): no `sojourn_` namespace.
    pub namespaced: bool,
}

/// Base units sojourn exports (Prometheus naming practice: base units only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseUnit {
    Seconds,
    Bytes,
    /// A 0–1 ratio (`_ratio`, Prometheus naming practice).
    Ratio,
}

impl BaseUnit {
    fn to_unit(self) -> Unit {
        match self {
            BaseUnit::Seconds => Unit::Seconds,
            BaseUnit::Bytes => Unit::Bytes,
            BaseUnit::Ratio => Unit::Other("ratio".into()),
        }
    }
}

impl Desc {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Desc {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
            kind: Kind::Counter,
            unit: None,
            namespaced: true,
        }
    }
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Desc {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
            kind: Kind::Histogram,
            unit: None,
            namespaced: true,
        }
    }
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Desc {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
            kind: Kind::Gauge,
            unit: None,
            namespaced: true,
        }
    }
    pub const fn seconds(mut self) -> Self {
        self.unit = Some(BaseUnit::Seconds);
        self
    }
    pub const fn bytes(mut self) -> Self {
        self.unit = Some(BaseUnit::Bytes);
        self
    }
    pub const fn ratio(mut self) -> Self {
        self.unit = Some(BaseUnit::Ratio);
        self
    }
    pub const fn without_namespace(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// The name as a scraper sees it (namespace, unit and `_total` included).
    pub fn exposed_name(&self) -> String {
        let mut name = if self.namespaced {
            format!("{NAMESPACE}_{}", self.name)
        } else {
            self.name.to_string()
        };
        match self.unit {
            Some(BaseUnit::Seconds) => name.push_str("_seconds"),
            Some(BaseUnit::Bytes) => name.push_str("_bytes"),
            Some(BaseUnit::Ratio) => name.push_str("_ratio"),
            None => {}
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }
}

/// A histogram with fixed upper bounds, the last being +Inf.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// Per-bucket (not cumulative) counts, one per bound.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
    /// Exponential buckets too, exposed as a native histogram to scrapers
    /// that negotiate protobuf.
    pub native: Option<Box<crate::native::NativeBuckets>>,
}

impl Histogram {
    /// `bounds` ascending; +Inf is appended.
    pub fn new(mut bounds: Vec<f64>) -> Self {
        bounds.retain(|b| b.is_finite());
        bounds.push(f64::INFINITY);
        let n = bounds.len();
        Histogram {
            bounds,
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
            native: None,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let last = self.counts.len() - 1;
        let i = self.bounds.partition_point(|b| *b < v).min(last);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// One label pair; keys are always static, values are owned only when dynamic.
pub type Label = (&'static str, Cow<'static, str>);

/// A sample value. Counters from the kernel are integers; converted units are floats.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// Only in a [`Kind::Histogram`] family.
    Histogram(Box<Histogram>),
}

impl From<Histogram> for Value {
    fn from(h: Histogram) -> Self {
        Value::Histogram(Box::new(h))
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// A sample's labels. Most samples have one to three, held inline: a
/// scrape makes several hundred samples, and an allocation for each label
/// list was a tenth of a scrape's CPU.
pub type Labels = smallvec::SmallVec<[Label; 3]>;

#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: Labels,
    pub value: Value,
}

/// What a sample's labels can be given as, each without a copy it need
/// not make: an array is held inline, a `Vec` longer than the inline room
/// keeps its own buffer (collecting it into [`Labels`] would allocate a
/// second one: a cgroup's or a pod's identity has four to seven labels).
pub trait IntoLabels {
    fn into_labels(self) -> Labels;
}

impl IntoLabels for Labels {
    fn into_labels(self) -> Labels {
        self
    }
}

impl IntoLabels for Vec<Label> {
    fn into_labels(self) -> Labels {
        Labels::from_vec(self)
    }
}

impl<const N: usize> IntoLabels for [Label; N] {
    fn into_labels(self) -> Labels {
        self.into_iter().collect()
    }
}

/// A family's samples; a family of one sample (most of a host's) holds
/// it inline.
pub type Samples = smallvec::SmallVec<[Sample; 1]>;

/// A descriptor with its samples from one scrape.
#[derive(Debug, Clone)]
pub struct Family {
    pub desc: Desc,
    pub samples: Samples,
}

impl Family {
    pub fn new(desc: Desc) -> Self {
        Family {
            desc,
            samples: Samples::new(),
        }
    }

    /// A family holding one unlabelled sample.
    pub fn single(desc: Desc, value: impl Into<Value>) -> Self {
        let mut f = Family::new(desc);
        f.push([], value);
        f
    }

    /// Adds a sample. `labels`: an array (kept inline, no allocation), a
    /// `Vec`, or [`Labels`].
    pub fn push(&mut self, labels: impl IntoLabels, value: impl Into<Value>) {
        self.samples.push(Sample {
            labels: labels.into_labels(),
            value: value.into(),
        });
    }

    pub fn with(mut self, labels: impl IntoLabels, value: impl Into<Value>) -> Self {
        self.push(labels, value);
        self
    }
}

/// Turns a kernel field name into a metric-name segment, the way Prometheus
/// naming practice (and promtool's lint) wants: `AnonHugePages` ->
/// `anon_huge_pages`, `Active(anon)` -> `active_anon`, `DirectMap2M` ->
/// `direct_map_2m`, `NFS_Unstable` -> `nfs_unstable`, `TCPOFODrop` ->
/// `tcp_ofo_drop` (a leading `TCP` is its own word).
pub fn snake_case(name: &str) -> String {
    let (prefix, rest) = match name.strip_prefix("TCP") {
        Some(r) if r.starts_with(|c: char| c.is_ascii_uppercase()) => ("tcp_", r),
        _ => ("", name),
    };
    let chars: Vec<char> = rest.chars().collect();
    let mut out = String::from(prefix);
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let boundary = match prev {
            Some(p) if p.is_ascii_alphanumeric() => {
                (c.is_ascii_uppercase()
                    && (p.is_ascii_lowercase()
                        || (p.is_ascii_uppercase()
                            && next.is_some_and(|n| n.is_ascii_lowercase()))))
                    || (c.is_ascii_digit() && p.is_ascii_alphabetic())
            }
            _ => false,
        };
        if boundary && !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Names and HELP texts derived from kernel field names (`AnonHugePages` ->
/// `memory_anon_huge_pages`), computed on first sight and then reused, so a
/// scrape does not rebuild them. Only for sets fixed by the running kernel
/// (meminfo fields, vmstat and snmp counters): the table is as small as that
/// set. Never for label values.
pub struct Memo(std::sync::LazyLock<std::sync::Mutex<foldhash::HashMap<Box<str>, &'static str>>>);

impl Memo {
    pub const fn new() -> Self {
        Memo(std::sync::LazyLock::new(Default::default))
    }

    /// The derived text for `input`, computing it with `make` the first time.
    pub fn get(&self, input: &str, make: impl FnOnce(&str) -> String) -> &'static str {
        let Ok(mut table) = self.0.lock() else {
            return Box::leak(make(input).into_boxed_str());
        };
        if let Some(found) = table.get(input) {
            return found;
        }
        let made: &'static str = Box::leak(make(input).into_boxed_str());
        table.insert(input.into(), made);
        made
    }
}

impl Default for Memo {
    fn default() -> Self {
        Self::new()
    }
}

/// Declares descriptor constants in a table, one line each:
/// `NAME = counter("metric", "HELP (source).") .seconds();` (any of the
/// builder calls, chained).
#[macro_export]
macro_rules! descs {
    ($($id:ident = $kind:ident($name:literal, $help:literal) $(.$method:ident())*;)*) => {
        $(const $id: $crate::metrics::Desc = $crate::metrics::Desc::$kind($name, $help)$(.$method())*;)*
    };
}

/// Shorthand for a label whose value is computed at scrape time.
pub fn label(key: &'static str, value: impl Into<Cow<'static, str>>) -> Label {
    (key, value.into())
}

const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";
/// The `proto` parameter naming the message Prometheus decodes.
const PROTOBUF_PROTO: &str = "io.prometheus.client.MetricFamily";

/// One element of a weighted list header (`Accept`, `Accept-Encoding`):
/// its value, its parameters, and its weight `q` (1 when not given,
/// 0 when unreadable: an element nobody can read is not an acceptance).
#[derive(Debug, PartialEq)]
pub struct Weighted<'a> {
    pub value: &'a str,
    pub params: Vec<(&'a str, &'a str)>,
    pub q: f32,
}

/// The elements of a weighted list header, in order.
pub fn weighted_list(header: &str) -> impl Iterator<Item = Weighted<'_>> {
    header.split(',').filter_map(|element| {
        let mut parts = element.split(';').map(str::trim);
        let value = parts.next().filter(|v| !v.is_empty())?;
        let mut q = 1.0;
        let mut params = Vec::new();
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if k.eq_ignore_ascii_case("q") {
                q = v
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
            } else {
                params.push((k, v));
            }
        }
        Some(Weighted { value, params, q })
    })
}

/// Exposition formats a scraper can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, the default for browsers and curl.
    Text,
    /// OpenMetrics 1.0 text, what Prometheus asks for first.
    OpenMetrics,
    /// Prometheus' delimited protobuf, asked for by a Prometheus with native
    /// histograms enabled: the only format that carries them.
    Protobuf,
}

impl Format {
    /// Chooses from an `Accept` header (RFC 9110 §12.5.1) the way
    /// Prometheus' own exporters do: protobuf and OpenMetrics only when
    /// named (a wildcard gets the text format), the highest weight wins,
    /// `q=0` means "not this", and ties go to protobuf, then OpenMetrics.
    /// With nothing acceptable, the text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        // The weight of the most specific range naming each format.
        let mut best: [(u8, f32); 3] = [(0, 0.0); 3];
        for item in weighted_list(accept) {
            let param = |name: &str| {
                item.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
            };
            let range = item.value;
            let matched = if range.eq_ignore_ascii_case(PROTOBUF_MEDIA_TYPE) {
                let family = param("proto").is_some_and(|p| p == PROTOBUF_PROTO);
                let delimited = param("encoding").is_none_or(|e| e == "delimited");
                (family && delimited).then_some((0, 3))
            } else if range.eq_ignore_ascii_case("application/openmetrics-text") {
                Some((1, 3))
            } else if range.eq_ignore_ascii_case("text/plain") {
                Some((2, 3))
            } else if range.eq_ignore_ascii_case("text/*") {
                Some((2, 2))
            } else if range == "*/*" {
                Some((2, 1))
            } else {
                None
            };
            if let Some((format, specificity)) = matched
                && specificity > best[format].0
            {
                best[format] = (specificity, item.q);
            }
        }
        [Format::Protobuf, Format::OpenMetrics, Format::Text]
            .into_iter()
            .zip(best)
            .filter(|(_, (specificity, q))| *specificity > 0 && *q > 0.0)
            // max_by keeps the last of equals: reversed, the first wins.
            .rev()
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
            .map_or(Format::Text, |(f, _)| f)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }
}

/// Adapter that lets prometheus-client encode a scrape's families: those
/// in the `sojourn_` namespace, or those outside it. Both halves share one
/// list, so splitting it moves no family.
#[derive(Debug)]
struct Snapshot {
    families: std::sync::Arc<Vec<Family>>,
    namespaced: bool,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.families.iter() {
            if family.samples.is_empty() || family.desc.namespaced != self.namespaced {
                continue;
            }
            let unit = family.desc.unit.map(BaseUnit::to_unit);
            let metric_type = match family.desc.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric_encoder = encoder.encode_descriptor(
                &family.desc.name,
                &family.desc.help,
                unit.as_ref(),
                metric_type,
            )?;
            for sample in &family.samples {
                let labels: &[Label] = &sample.labels;
                let mut sample_encoder = metric_encoder.encode_family(&labels)?;
                match (family.desc.kind, &sample.value) {
                    (Kind::Counter, Value::Int(v)) => {
                        ConstCounter::new(*v).encode(sample_encoder)?
                    }
                    (Kind::Counter, Value::Float(v)) => {
                        ConstCounter::new(*v).encode(sample_encoder)?
                    }
                    (Kind::Gauge, Value::Int(v)) => ConstGauge::new(*v).encode(sample_encoder)?,
                    (Kind::Gauge, Value::Float(v)) => ConstGauge::new(*v).encode(sample_encoder)?,
                    (Kind::Histogram, Value::Histogram(h)) => {
                        let buckets: Vec<(f64, u64)> = h
                            .bounds
                            .iter()
                            .copied()
                            .zip(h.counts.iter().copied())
                            .collect();
                        match &h.native {
                            None => sample_encoder
                                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?,
                            Some(n) => sample_encoder.encode_histogram_with_native::<NoLabelSet>(
                                h.sum,
                                h.count,
                                &buckets,
                                None,
                                NativeHistogram {
                                    schema: n.schema,
                                    zero_threshold: n.zero_threshold,
                                    zero_count: n.zero_count,
                                    negative: NativeHistogramBuckets {
                                        spans: &[],
                                        deltas: &[],
                                    },
                                    positive: NativeHistogramBuckets {
                                        spans: &n.spans,
                                        deltas: &n.deltas,
                                    },
                                    created: None,
                                },
                            )?,
                        }
                    }
                    // A value of the wrong shape for its family is a bug in a
                    // collector; skipping it keeps the exposition valid.
                    (kind, value) => {
                        tracing::error!(metric = %family.desc.name, ?kind, ?value, "sample does not fit its metric type");
                    }
                }
            }
        }
        Ok(())
    }
}

fn registry(families: Vec<Family>) -> Registry {
    let any_bare = families.iter().any(|f| !f.desc.namespaced);
    let families = std::sync::Arc::new(families);
    let mut registry = Registry::default();
    if any_bare {
        registry.register_collector(Box::new(Snapshot {
            families: families.clone(),
            namespaced: false,
        }));
    }
    registry
        .sub_registry_with_prefix(NAMESPACE)
        .register_collector(Box::new(Snapshot {
            families,
            namespaced: true,
        }));
    registry
}

/// Encodes families in a text format (protobuf asked for here gets the
/// Prometheus text format).
pub fn encode(families: Vec<Family>, format: Format) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let text = match format {
        Format::Text | Format::Protobuf => text::Text::Prometheus,
        Format::OpenMetrics => text::Text::OpenMetrics,
    };
    text::encode(&families, text, &mut out);
    out
}

/// Encodes families in any format, as the bytes of a response body.
pub fn encode_bytes(families: Vec<Family>, format: Format) -> Vec<u8> {
    match format {
        Format::Protobuf => {
            match prometheus_client::encoding::prometheus_protobuf::encode_to_vec(&registry(
                families,
            )) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = ?e, "encoding metrics failed");
                    Vec::new()
                }
            }
        }
        text => encode(families, text).into_bytes(),
    }
}

/// gzip at a fast level: a scrape is compressed once and read once.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

pub mod text;

#[cfg(test)]
mod tests;
