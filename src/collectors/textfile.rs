//! Metrics written by other programs into `*.prom` files of
//! `--collector.textfile.directory`, merged into the scrape (node_exporter's
//! textfile collector): a cron job's last success, a backup's size. Read at
//! every scrape; each file is all or nothing, so a file being written is
//! never half served (write to a temporary name in the same directory and
//! rename it into place, which is atomic).
//!
//! The Prometheus text format, version 0.0.4, with counters, gauges,
//! untyped samples (served as gauges) and histograms (their `_bucket`,
//! `_sum` and `_count` series, checked: every bucket's `le`, counts that
//! never fall, a `+Inf` bucket equal to `_count`); a summary family, a
//! client-side timestamp, a name sojourn exports itself, or any syntax
//! error makes the file's metrics absent and `sojourn_textfile_scrape_error`
//! 1. Each file read gives `sojourn_textfile_mtime_seconds{file}`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Collect, CollectError, Config as CollectConfig, ParseError};
use crate::metrics::{Desc, Family, Kind, Label, Value, label};

/// Most `*.prom` files read: each is a `file` label value.
pub const MAX_FILES: usize = 256;
/// Most distinct label names across all files, for the life of the
/// process (each is kept once, as the metrics model holds static names).
const MAX_LABEL_NAMES: usize = 4096;

crate::descs! {
    MTIME = gauge("textfile_mtime", "Modification time of a text file whose metrics were served, seconds since the Unix epoch (--collector.textfile.directory).") .seconds();
    ERROR = gauge("textfile_scrape_error", "1 when the directory or one of its *.prom files could not be read or parsed; that file's metrics are absent (--collector.textfile.directory).");
}

/// The textfile collector's flag.
#[derive(Debug, Clone, Default, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    #[arg(
        id = "collector.textfile.directory",
        long = "collector.textfile.directory",
        value_name = "DIR",
        value_parser = crate::flag::dir,
        help = "Directory whose *.prom files (Prometheus text format) are served with every scrape; write them under a temporary name and rename into place (enables the textfile collector)"
    )]
    pub directory: Option<PathBuf>,
}

/// A sample's label pairs, as written.
pub type Pairs = Vec<(String, String)>;

/// One family of a file: its name as exposed, kind, help and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFamily {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    /// A counter's or gauge's samples.
    pub samples: Vec<(Pairs, f64)>,
    /// A histogram's series, one per label set (`le` aside), checked.
    pub histograms: Vec<(Pairs, crate::metrics::Histogram)>,
}

/// One histogram series as a file gives it, while it is read: cumulative
/// buckets by `le`.
#[derive(Debug, Clone, PartialEq, Default)]
struct ParsedHistogram {
    family: String,
    labels: Pairs,
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// Which series of a histogram a sample is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Bucket,
    Sum,
    Count,
}

/// The histogram family a sample belongs to, and which of its series it
/// is, when its name is `<histogram>_bucket`, `_sum` or `_count`.
fn histogram_part<'n>(name: &'n str, types: &BTreeMap<String, Kind>) -> Option<(&'n str, Part)> {
    [
        ("_bucket", Part::Bucket),
        ("_sum", Part::Sum),
        ("_count", Part::Count),
    ]
    .into_iter()
    .find_map(|(suffix, part)| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base) == Some(&Kind::Histogram)).then_some((base, part))
    })
}

/// Checks a histogram series and turns it into the model's: per-bucket
/// counts, `+Inf` last.
fn histogram_value(
    family: &str,
    h: &ParsedHistogram,
) -> Result<crate::metrics::Histogram, ParseError> {
    let bad = |what: String| ParseError(format!("histogram {family}: {what}"));
    let mut buckets = h.buckets.clone();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|(le, _)| *le != f64::INFINITY) {
        return Err(bad("no le=\"+Inf\" bucket".into()));
    }
    let count = h.count.ok_or_else(|| bad("no _count".into()))?;
    let sum = h.sum.ok_or_else(|| bad("no _sum".into()))?;
    let whole = |v: f64| v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64;
    let mut counts = Vec::with_capacity(buckets.len());
    let mut below = 0.0;
    for (le, c) in &buckets {
        if !whole(*c) || *c < below {
            return Err(bad(format!(
                "bucket le={le} holds {c}: counts are whole and never fall"
            )));
        }
        counts.push((c - below) as u64);
        below = *c;
    }
    if !whole(count) || count != below {
        return Err(bad(format!(
            "_count {count} is not the +Inf bucket's {below}"
        )));
    }
    Ok(crate::metrics::Histogram {
        bounds: buckets.iter().map(|(le, _)| *le).collect(),
        counts,
        sum,
        count: count as u64,
        native: None,
    })
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok().filter(|v: &f64| v.is_finite()),
    }
}

/// `{a="x",b="y\"z"}` (without the braces) into pairs; the rest of the
/// line after the closing brace is returned.
fn parse_labels(s: &str) -> Result<(Pairs, &str), ParseError> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| ParseError::new("label without '='"))?;
        let name = name.trim();
        if !is_name(name, false) || name.starts_with("__") {
            return Err(ParseError(format!("bad label name {name:?}")));
        }
        let mut chars = after
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| ParseError::new("label value not quoted"))?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err(ParseError::new("bad escape in a label value")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(ParseError::new("unterminated label value")),
            }
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(ParseError(format!("label {name:?} given twice")));
        }
        labels.push((name.to_string(), value));
        let after_quote = &after.trim_start()[1 + end + 1..];
        rest = after_quote.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses one file of the text format into its families, in order.
pub fn parse(text: &str) -> Result<Vec<ParsedFamily>, ParseError> {
    let mut families: Vec<ParsedFamily> = Vec::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut types: BTreeMap<String, Kind> = BTreeMap::new();
    let mut histograms: Vec<ParsedHistogram> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: ParseError| ParseError(format!("line {}: {}", n + 1, e.0));
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), help) => {
                    helps.insert(name.to_string(), help.unwrap_or("").to_string());
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = match kind.trim() {
                        "counter" => Kind::Counter,
                        "gauge" | "untyped" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        "summary" => {
                            return Err(at(ParseError(format!(
                                "summary families are not read from text files (family {name}): write a histogram"
                            ))));
                        }
                        other => return Err(at(ParseError(format!("unknown type {other:?}")))),
                    };
                    if types.insert(name.to_string(), kind).is_some()
                        || families.iter().any(|f| f.name == name)
                    {
                        return Err(at(ParseError(format!(
                            "TYPE of {name} after its samples or twice"
                        ))));
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at(ParseError(format!("bad metric name {name:?}"))));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inner) => parse_labels(inner).map_err(at)?,
            None => (Vec::new(), &line[name_end..]),
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| at(ParseError(format!("bad value in {line:?}"))))?;
        if fields.next().is_some() {
            return Err(at(ParseError::new(
                "client-side timestamps are not accepted in text files",
            )));
        }
        if let Some((base, part)) = histogram_part(name, &types) {
            let mut labels = labels;
            let le = match part {
                Part::Bucket => {
                    let at_le = labels
                        .iter()
                        .position(|(k, _)| k == "le")
                        .ok_or_else(|| at(ParseError(format!("{name} without an le label"))))?;
                    let (_, v) = labels.remove(at_le);
                    Some(parse_value(&v).filter(|b| !b.is_nan()).ok_or_else(|| {
                        at(ParseError(format!("{name}: le={v:?} is not a number")))
                    })?)
                }
                _ => None,
            };
            if families
                .iter()
                .any(|f| f.name == base && f.kind != Kind::Histogram)
            {
                return Err(at(ParseError(format!("{base} given as two kinds"))));
            }
            let family = match families.iter_mut().find(|f| f.name == base) {
                Some(f) => f,
                None => {
                    families.push(ParsedFamily {
                        name: base.to_string(),
                        kind: Kind::Histogram,
                        help: helps.get(base).cloned(),
                        samples: Vec::new(),
                        histograms: Vec::new(),
                    });
                    families.last_mut().expect("pushed")
                }
            };
            let series = match histograms
                .iter()
                .position(|h| h.family == family.name && same_labels(&h.labels, &labels))
            {
                Some(i) => &mut histograms[i],
                None => {
                    histograms.push(ParsedHistogram {
                        family: family.name.clone(),
                        labels,
                        ..Default::default()
                    });
                    histograms.last_mut().expect("pushed")
                }
            };
            let twice = match (part, le) {
                (Part::Bucket, Some(le)) => {
                    let seen = series.buckets.iter().any(|(b, _)| *b == le);
                    series.buckets.push((le, value));
                    seen
                }
                (Part::Sum, _) => series.sum.replace(value).is_some(),
                _ => series.count.replace(value).is_some(),
            };
            if twice {
                return Err(at(ParseError(format!("{name}: a series given twice"))));
            }
            continue;
        }
        let kind = match types.get(name).copied() {
            Some(Kind::Histogram) => {
                return Err(at(ParseError(format!(
                    "{name} is a histogram: its series are {name}_bucket, _sum and _count"
                ))));
            }
            kind => kind.unwrap_or(Kind::Gauge),
        };
        if kind == Kind::Counter && !name.ends_with("_total") {
            return Err(at(ParseError(format!("counter {name} must end in _total"))));
        }
        match families.iter_mut().find(|f| f.name == name) {
            Some(f) => {
                if f.samples.iter().any(|(l, _)| same_labels(l, &labels)) {
                    return Err(at(ParseError(format!("{name}: a series given twice"))));
                }
                f.samples.push((labels, value));
            }
            None => families.push(ParsedFamily {
                name: name.to_string(),
                kind,
                help: helps.get(name).cloned(),
                samples: vec![(labels, value)],
                histograms: Vec::new(),
            }),
        }
    }
    // A HELP read after the samples still belongs to them.
    for f in &mut families {
        if f.help.is_none() {
            f.help = helps.get(&f.name).cloned();
        }
    }
    // Each histogram checked whole, or the file is refused.
    for h in histograms {
        let value = histogram_value(&h.family, &h)?;
        if let Some(f) = families.iter_mut().find(|f| f.name == h.family) {
            f.histograms.push((h.labels, value));
        }
    }
    Ok(families)
}

fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

/// A label name kept for the life of the process (the model's names are
/// static); None past [`MAX_LABEL_NAMES`].
fn intern(name: &str) -> Option<&'static str> {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(n) = names.get(name) {
        return Some(n);
    }
    if names.len() >= MAX_LABEL_NAMES {
        return None;
    }
    let kept: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(kept);
    Some(kept)
}

/// Names sojourn serves itself, which a file may not take.
fn reserved(name: &str) -> bool {
    name.starts_with("sojourn_") || name.starts_with("process_")
}

/// A file's families as the metrics model holds them.
fn to_families(parsed: Vec<ParsedFamily>, file: &str) -> Result<Vec<Family>, ParseError> {
    parsed
        .into_iter()
        .map(|p| {
            if reserved(&p.name) {
                return Err(ParseError(format!(
                    "{} is a name sojourn serves itself",
                    p.name
                )));
            }
            // The encoder appends `_total` to counters.
            let name = match p.kind {
                // One suffix: `a_total_total` is the counter `a_total`.
                Kind::Counter => p.name.strip_suffix("_total").unwrap_or(&p.name).to_string(),
                _ => p.name.clone(),
            };
            let help = p
                .help
                .unwrap_or_else(|| format!("Read from {file} (--collector.textfile.directory)."));
            let mut f = Family::new(Desc {
                name: Cow::Owned(name),
                help: Cow::Owned(help),
                kind: p.kind,
                unit: None,
                namespaced: false,
            });
            let model = |labels: Pairs| -> Result<Vec<Label>, ParseError> {
                labels
                    .into_iter()
                    .map(|(k, v)| Some((intern(&k)?, Cow::Owned(v))))
                    .collect::<Option<Vec<Label>>>()
                    .ok_or_else(|| ParseError::new("too many distinct label names"))
            };
            for (labels, value) in p.samples {
                f.push(model(labels)?, Value::Float(value));
            }
            for (labels, value) in p.histograms {
                f.push(model(labels)?, value);
            }
            Ok(f)
        })
        .collect()
}

/// Reads one file: its families and mtime.
fn read_file(path: &Path, name: &str) -> Result<(Vec<Family>, f64), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let families = parse(&text)
        .and_then(|p| to_families(p, name))
        .map_err(|e| e.0)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    Ok((families, mtime))
}

#[derive(Default)]
pub struct TextfileCollector {
    /// The last error per file, logged once until it changes.
    logged: Mutex<BTreeMap<String, String>>,
}

impl Collect for TextfileCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let Some(dir) = &cfg.textfile.directory else {
            return Ok(Vec::new());
        };
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        let mut names: Vec<(String, PathBuf)> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    (name.ends_with(".prom") && e.path().is_file()).then(|| (name, e.path()))
                })
                .collect(),
            Err(e) => {
                errors.insert(String::new(), format!("{}: {e}", dir.display()));
                Vec::new()
            }
        };
        names.sort();
        if names.len() > MAX_FILES {
            errors.insert(
                String::new(),
                format!("more than {MAX_FILES} *.prom files; the rest are left out"),
            );
            names.truncate(MAX_FILES);
        }
        let mut out: Vec<Family> = Vec::new();
        let mut mtime = Family::new(MTIME);
        for (name, path) in &names {
            match read_file(path, name) {
                Ok((families, modified)) => {
                    // A family several files give is one family, if they agree on its kind.
                    let clash = families.iter().find(|f| {
                        out.iter()
                            .any(|o| o.desc.name == f.desc.name && o.desc.kind != f.desc.kind)
                    });
                    if let Some(f) = clash {
                        errors.insert(
                            name.clone(),
                            format!("{} has another type in an earlier file", f.desc.name),
                        );
                        continue;
                    }
                    out.extend(families);
                    mtime.push([label("file", name.clone())], modified);
                }
                Err(e) => {
                    errors.insert(name.clone(), e);
                }
            }
        }
        if let Ok(mut logged) = self.logged.lock() {
            for (file, e) in &errors {
                if logged.get(file) != Some(e) {
                    tracing::warn!(file = %file, error = %e, "textfile: not served");
                }
            }
            *logged = errors.clone();
        }
        out.push(mtime);
        out.push(Family::single(ERROR, u64::from(!errors.is_empty())));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_the_text_format_is_read() {
        let text = "# HELP backup_last_success_timestamp_seconds Last good backup.\n\
# TYPE backup_last_success_timestamp_seconds gauge\n\
backup_last_success_timestamp_seconds{job=\"db\",target=\"a \\\"b\\\" \\\\ c\\n\"} 1.7e9\n\
# TYPE backup_runs_total counter\n\
backup_runs_total 42\n\
backup_runs_total{kind=\"full\",} 7\n\
temperature -3.5\n\
up_ratio NaN\n";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].help.as_deref(), Some("Last good backup."));
        assert_eq!(
            f[0].samples[0].0,
            [
                ("job".into(), "db".into()),
                ("target".into(), "a \"b\" \\ c\n".into())
            ]
        );
        assert_eq!(f[1].kind, Kind::Counter);
        assert_eq!(f[1].samples.len(), 2);
        assert_eq!(f[2].kind, Kind::Gauge, "untyped is served as a gauge");
        let families = to_families(f, "x.prom").unwrap();
        let out = crate::metrics::encode(families, crate::metrics::Format::Text);
        assert!(out.contains("backup_runs_total{kind=\"full\"} 7"), "{out}");
        assert!(
            out.contains("# TYPE backup_runs counter")
                || out.contains("# TYPE backup_runs_total counter"),
            "{out}"
        );
        assert!(out.contains("temperature -3.5"), "{out}");
    }

    #[test]
    fn a_histogram_is_read_checked_and_served_as_one() {
        let text = "# HELP job_duration_seconds How long the nightly job ran.\n\
# TYPE job_duration_seconds histogram\n\
job_duration_seconds_bucket{job=\"backup\",le=\"+Inf\"} 5\n\
job_duration_seconds_bucket{job=\"backup\",le=\"60\"} 2\n\
job_duration_seconds_bucket{job=\"backup\",le=\"600\"} 4\n\
job_duration_seconds_sum{job=\"backup\"} 1234.5\n\
job_duration_seconds_count{job=\"backup\"} 5\n\
job_duration_seconds_bucket{job=\"vacuum\",le=\"+Inf\"} 0\n\
job_duration_seconds_sum{job=\"vacuum\"} 0\n\
job_duration_seconds_count{job=\"vacuum\"} 0\n";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, Kind::Histogram);
        assert_eq!(f[0].histograms.len(), 2);
        let families = to_families(f, "jobs.prom").unwrap();
        let out = crate::metrics::encode(families, crate::metrics::Format::Text);
        for line in [
            "# TYPE job_duration_seconds histogram",
            "job_duration_seconds_bucket{job=\"backup\",le=\"60\"} 2",
            "job_duration_seconds_bucket{job=\"backup\",le=\"600\"} 4",
            "job_duration_seconds_bucket{job=\"backup\",le=\"+Inf\"} 5",
            "job_duration_seconds_sum{job=\"backup\"} 1234.5",
            "job_duration_seconds_count{job=\"backup\"} 5",
            "job_duration_seconds_count{job=\"vacuum\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
    }

    #[test]
    fn what_a_file_may_not_hold_is_refused_with_its_line() {
        for (text, says) in [
            ("# TYPE s summary\ns{quantile=\"0.5\"} 1\n", "summary"),
            ("# TYPE h histogram\nh_bucket 1\n", "without an le"),
            ("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", "not a number"),
            ("# TYPE h histogram\nh 1\n", "is a histogram"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1\"} 2\n",
                "twice",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
                "+Inf",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
                "never fall",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
                "_count 3",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2.5\nh_sum 1\nh_count 2.5\n",
                "whole",
            ),
            ("a 1 1700000000000\n", "timestamps"),
            ("# TYPE c counter\nc 1\n", "must end in _total"),
            ("a{b=\"1\" 2\n", "without '='"),
            ("a{b=\"\\x\"} 2\n", "bad escape"),
            ("a{b=1} 2\n", "not quoted"),
            ("a{b=\"1\",b=\"2\"} 2\n", "twice"),
            ("a 1\na 2\n", "twice"),
            ("9a 1\n", "bad metric name"),
            ("a x\n", "bad value"),
            ("a{__x=\"1\"} 1\n", "bad label name"),
        ] {
            let e = parse(text).map(|_| ()).unwrap_err();
            // A line's error names it; a histogram's, checked whole, names it.
            assert!(
                e.0.contains(says)
                    && (e.0.starts_with("line ") || e.0.starts_with("histogram h: ")),
                "{text:?}: {}",
                e.0
            );
        }
        let twice = to_families(
            parse("# TYPE a_total_total counter\na_total_total 1\n").unwrap(),
            "x.prom",
        )
        .unwrap();
        let text = crate::metrics::encode(twice, crate::metrics::Format::Text);
        assert!(text.contains("\na_total_total 1"), "{text}");
        let e = to_families(parse("sojourn_cpu 1\n").unwrap(), "x.prom").unwrap_err();
        assert!(e.0.contains("serves itself"), "{}", e.0);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC*", lines in proptest::collection::vec("[a-z_{}=\", #0-9.\\\\-]*", 0..8)) {
            let _ = parse(&text);
            let _ = parse(&lines.join("\n"));
        }
    }
}
