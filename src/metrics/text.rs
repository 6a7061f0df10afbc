//! The two text expositions, written straight from a scrape's families.
//!
//! prometheus-client writes the same bytes (its protobuf encoder is still
//! the one used), but through a registry of boxed collectors, a descriptor
//! and a metric encoder per family and a formatter call per piece of text:
//! a fifth of a scrape's CPU on a 2-CPU host, for 50 kB. Here each family's
//! name is assembled once and each line is pushed whole. The tests hold
//! both formats byte for byte to prometheus-client's on generated families
//! (odd names, escapes, non-finite values, histograms), so the formats
//! stay whatever that crate's maintainers make them.

use super::{BaseUnit, Family, Histogram, Kind, Label, NAMESPACE, Value};

/// Which text exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Prometheus text 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

/// Appends the exposition of `families` to `out`: those outside the
/// `sojourn_` namespace first, as prometheus-client's registry orders them.
pub fn encode(families: &[Family], format: Text, out: &mut String) {
    let mut name = String::with_capacity(96);
    for namespaced in [false, true] {
        for family in families
            .iter()
            .filter(|f| f.desc.namespaced == namespaced && !f.samples.is_empty())
        {
            family_name(family, &mut name);
            match format {
                Text::Prometheus => prometheus_family(family, &name, out),
                Text::OpenMetrics => openmetrics_family(family, &name, out),
            }
        }
    }
    if format == Text::OpenMetrics {
        out.push_str("# EOF\n");
    }
}

fn unit_str(unit: BaseUnit) -> &'static str {
    match unit {
        BaseUnit::Seconds => "seconds",
        BaseUnit::Bytes => "bytes",
        BaseUnit::Ratio => "ratio",
    }
}

/// `sojourn_` + name + `_unit`: the name without a type's suffix.
fn family_name(family: &Family, name: &mut String) {
    name.clear();
    if family.desc.namespaced {
        name.push_str(NAMESPACE);
        name.push('_');
    }
    name.push_str(&family.desc.name);
    if let Some(unit) = family.desc.unit {
        name.push('_');
        name.push_str(unit_str(unit));
    }
}

fn type_str(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

fn prometheus_family(family: &Family, base: &str, out: &mut String) {
    let counter = family.desc.kind == Kind::Counter;
    let total = if counter { "_total" } else { "" };
    out.push_str("# HELP ");
    out.push_str(base);
    out.push_str(total);
    out.push(' ');
    push_escaped(out, &family.desc.help, false);
    out.push_str("\n# TYPE ");
    out.push_str(base);
    out.push_str(total);
    out.push(' ');
    out.push_str(type_str(family.desc.kind));
    out.push('\n');
    samples(
        family,
        base,
        total,
        out,
        push_prometheus_float,
        prometheus_histogram,
    );
}

fn prometheus_histogram(out: &mut String, base: &str, labels: &[Label], h: &Histogram) {
    let mut cumulative = 0u64;
    let mut inf_seen = false;
    let mut le = String::with_capacity(24);
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        inf_seen |= *bound == f64::INFINITY;
        le.clear();
        push_go_float(&mut le, *bound);
        int_line(out, base, "_bucket", labels, Some(&le), cumulative);
    }
    if !inf_seen {
        int_line(out, base, "_bucket", labels, Some("+Inf"), h.count);
    }
    line_start(out, base, "_sum", labels, None);
    out.push(' ');
    push_prometheus_float(out, h.sum);
    out.push('\n');
    int_line(out, base, "_count", labels, None, h.count);
}

fn openmetrics_family(family: &Family, base: &str, out: &mut String) {
    // OpenMetrics names the family without `_total`; its HELP is written
    // as given (prometheus-client escapes it only in the 0.0.4 format).
    out.push_str("# HELP ");
    out.push_str(base);
    out.push(' ');
    out.push_str(&family.desc.help);
    out.push_str("\n# TYPE ");
    out.push_str(base);
    out.push(' ');
    out.push_str(type_str(family.desc.kind));
    out.push('\n');
    if let Some(unit) = family.desc.unit {
        out.push_str("# UNIT ");
        out.push_str(base);
        out.push(' ');
        out.push_str(unit_str(unit));
        out.push('\n');
    }
    let total = if family.desc.kind == Kind::Counter {
        "_total"
    } else {
        ""
    };
    samples(family, base, total, out, push_dtoa, openmetrics_histogram);
}

fn openmetrics_histogram(out: &mut String, base: &str, labels: &[Label], h: &Histogram) {
    line_start(out, base, "_sum", labels, None);
    out.push(' ');
    push_dtoa(out, h.sum);
    out.push('\n');
    int_line(out, base, "_count", labels, None, h.count);
    let mut cumulative = 0u64;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        // `le` comes first in this format.
        out.push_str(base);
        out.push_str("_bucket{le=\"");
        if *bound == f64::INFINITY {
            out.push_str("+Inf");
        } else {
            push_dtoa(out, *bound);
        }
        out.push('"');
        for (key, value) in labels {
            out.push(',');
            push_label(out, key, value);
        }
        out.push_str("} ");
        out.push_str(itoa::Buffer::new().format(cumulative));
        out.push('\n');
    }
}

/// Each counter or gauge sample as one line, each histogram by
/// `histogram`; `float` writes a float value as the format does.
fn samples(
    family: &Family,
    base: &str,
    total: &str,
    out: &mut String,
    float: fn(&mut String, f64),
    histogram: fn(&mut String, &str, &[Label], &Histogram),
) {
    for sample in &family.samples {
        match (family.desc.kind, &sample.value) {
            (Kind::Counter | Kind::Gauge, Value::Int(v)) => {
                int_line(out, base, total, &sample.labels, None, *v);
            }
            (Kind::Counter | Kind::Gauge, Value::Float(v)) => {
                line_start(out, base, total, &sample.labels, None);
                out.push(' ');
                float(out, *v);
                out.push('\n');
            }
            (Kind::Histogram, Value::Histogram(h)) => histogram(out, base, &sample.labels, h),
            (kind, value) => mismatch(family, kind, value),
        }
    }
}

/// A whole line with an integer value.
fn int_line(
    out: &mut String,
    base: &str,
    suffix: &str,
    labels: &[Label],
    le: Option<&str>,
    v: u64,
) {
    line_start(out, base, suffix, labels, le);
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(v));
    out.push('\n');
}

/// `name{labels}` of one line, with `le` (already formatted) after the
/// sample's labels.
fn line_start(out: &mut String, base: &str, suffix: &str, labels: &[Label], le: Option<&str>) {
    out.push_str(base);
    out.push_str(suffix);
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_label(out, key, value);
    }
    if let Some(le) = le {
        if !labels.is_empty() {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
    }
    out.push('}');
}

fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    push_escaped(out, value, true);
    out.push('"');
}

/// `\` and newline escaped, and `"` too in a label value.
fn push_escaped(out: &mut String, text: &str, quote: bool) {
    let special = |b: u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    if !text.bytes().any(special) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A float as OpenMetrics writes it (dtoa's `NaN`, `inf`, `-inf`).
fn push_dtoa(out: &mut String, v: f64) {
    out.push_str(dtoa::Buffer::new().format(v));
}

/// A float as the 0.0.4 format writes it (`NaN`, `+Inf`, `-Inf`).
fn push_prometheus_float(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(dtoa::Buffer::new().format_finite(v));
    } else {
        out.push_str(nonfinite(v));
    }
}

fn nonfinite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v.is_sign_positive() {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// A bucket bound as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes
/// it, which is what Prometheus' own client libraries put in `le`:
/// integers below a million as integers, other values from 1e-4 up to a
/// million in plain decimals, the rest with a signed two-digit exponent.
fn push_go_float(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    if v.fract() == 0.0 && v.abs() < 1e6 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else if (1e-4..1e6).contains(&v.abs()) {
        let _ = write!(out, "{v}");
    } else if !v.is_finite() {
        out.push_str(nonfinite(v));
    } else {
        let mut sci = String::with_capacity(32);
        let _ = write!(sci, "{v:e}");
        match sci.split_once('e') {
            Some((mantissa, exponent)) => {
                let exponent: i32 = exponent.parse().unwrap_or(0);
                let _ = write!(out, "{mantissa}e{exponent:+03}");
            }
            None => out.push_str(&sci),
        }
    }
}

/// A value of the wrong shape for its family is a bug in a collector;
/// skipping it keeps the exposition valid.
#[cold]
fn mismatch(family: &Family, kind: Kind, value: &Value) {
    tracing::error!(metric = %family.desc.name, ?kind, ?value, "sample does not fit its metric type");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Desc, Format, Labels, Sample};
    use proptest::prelude::*;
    use std::borrow::Cow;

    /// What prometheus-client writes for the same families.
    fn oracle(families: Vec<Family>, text: Text) -> String {
        let registry = crate::metrics::registry(families);
        let mut out = String::new();
        match text {
            Text::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
            Text::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        }
        .unwrap();
        out
    }

    fn ours(families: &[Family], text: Text) -> String {
        let mut out = String::new();
        encode(families, text, &mut out);
        out
    }

    const KEYS: [&str; 4] = ["a", "device", "queue", "le_x"];

    fn labels() -> impl Strategy<Value = Labels> {
        proptest::collection::vec((0..KEYS.len(), "[a-z\"\\\\\n é]{0,6}"), 0..3).prop_map(|v| {
            v.into_iter()
                .map(|(k, value)| (KEYS[k], Cow::Owned(value)))
                .collect()
        })
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            proptest::num::f64::ANY,
            // What bucket bounds and seconds look like.
            (-30i32..30, 1u32..2000).prop_map(|(e, m)| f64::from(m) * 2f64.powi(e)),
            (0u32..3_000_000).prop_map(f64::from),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
        ]
    }

    fn histogram() -> impl Strategy<Value = Histogram> {
        (
            proptest::collection::vec(float(), 0..6),
            any::<bool>(),
            float(),
            0u64..1_000_000,
        )
            .prop_map(|(bounds, with_inf, sum, count)| {
                let mut h = Histogram::new(bounds.into_iter().filter(|b| b.is_finite()).collect());
                if !with_inf {
                    // A histogram without a +Inf bound, as a bug might make one.
                    h.bounds.pop();
                    h.counts.pop();
                }
                for (i, c) in h.counts.iter_mut().enumerate() {
                    *c = (i as u64 * 7919 + count) % 1000;
                }
                h.sum = sum;
                h.count = count;
                h
            })
    }

    fn family() -> impl Strategy<Value = Family> {
        (
            "[a-z][a-z_0-9]{0,10}",
            "[a-zA-Z .\\\\\n\"é]{0,16}",
            0..3usize,
            0..4usize,
            any::<bool>(),
            0..4usize,
        )
            .prop_flat_map(|(name, help, kind, unit, namespaced, n)| {
                let kind = [Kind::Counter, Kind::Gauge, Kind::Histogram][kind];
                let value = match kind {
                    Kind::Histogram => histogram().prop_map(Value::from).boxed(),
                    _ => prop_oneof![
                        any::<u64>().prop_map(Value::Int),
                        float().prop_map(Value::Float)
                    ]
                    .boxed(),
                };
                let samples = proptest::collection::vec(
                    (labels(), value).prop_map(|(labels, value)| Sample { labels, value }),
                    n..=n,
                );
                samples.prop_map(move |samples| Family {
                    desc: Desc {
                        name: Cow::Owned(name.clone()),
                        help: Cow::Owned(help.clone()),
                        kind,
                        unit: [
                            None,
                            Some(BaseUnit::Seconds),
                            Some(BaseUnit::Bytes),
                            Some(BaseUnit::Ratio),
                        ][unit],
                        namespaced,
                    },
                    samples: samples.into_iter().collect(),
                })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn both_formats_are_prometheus_clients_byte_for_byte(
            families in proptest::collection::vec(family(), 0..6)
        ) {
            for text in [Text::Prometheus, Text::OpenMetrics] {
                prop_assert_eq!(ours(&families, text), oracle(families.clone(), text), "{:?}", text);
            }
        }
    }

    #[test]
    fn a_real_scrape_is_prometheus_clients_byte_for_byte() {
        let s = crate::cli::parse([
            "sojourn",
            "--no-collector.queue",
            "--no-collector.tcp_ports",
        ])
        .unwrap();
        let scraper = crate::scrape::Scraper::new(s.collect, s.queue, &s.collectors);
        let families = scraper.scrape();
        for (format, text) in [
            (Format::Text, Text::Prometheus),
            (Format::OpenMetrics, Text::OpenMetrics),
        ] {
            assert_eq!(
                crate::metrics::encode(families.clone(), format),
                oracle(families.clone(), text)
            );
        }
    }

    #[test]
    fn bounds_are_written_as_go_writes_them() {
        let go = |v: f64| {
            let mut s = String::new();
            push_go_float(&mut s, v);
            s
        };
        assert_eq!(go(0.0), "0");
        assert_eq!(go(5.0), "5");
        assert_eq!(go(0.005), "0.005");
        assert_eq!(go(1e6), "1e+06");
        assert_eq!(go(2.5e-5), "2.5e-05");
        assert_eq!(go(f64::INFINITY), "+Inf");
    }
}
