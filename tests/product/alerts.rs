//! The alert rules are product: `promtool check rules` and `promtool test
//! rules` pass (SOJOURN_REQUIRE_PROMTOOL=1, set by .ci/run, makes a missing
//! promtool a failure); every alert has summary, description, severity and
//! a runbook section, a firing and a not-firing unit test; and every metric
//! the rules and runbooks name is one sojourn documents in its
//! metrics reference, docs/metrics.md (so a renamed metric cannot silently empty an alert).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn rule_files() -> Vec<String> {
    vec!["alerts/sojourn-rules.yml".to_string()]
}

fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("alerts/tests"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs promtool with `args`; None when it is not installed and not required.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            common::skip_unless_required(
                "SOJOURN_REQUIRE_PROMTOOL",
                &format!("promtool cannot run ({e}): rule checks"),
            );
            None
        }
    }
}

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let rules = rule_files();
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    assert_promtool_passes(&args);
    let tests: Vec<String> = test_files()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(!tests.is_empty(), "no alerts/tests/*.yaml");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    assert_promtool_passes(&args);
}

fn assert_promtool_passes(args: &[&str]) {
    if let Some(out) = promtool(args) {
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args[..2].join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `(alert name, its block of lines)` for each `- alert:` in a rules file.
fn alerts(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            out.push((name.trim().to_string(), String::new()));
        } else if trimmed.starts_with("- record: ") || trimmed.starts_with("- name: ") {
            out.push((String::new(), String::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push_str(line);
            last.1.push('\n');
        }
    }
    out.retain(|(name, _)| !name.is_empty());
    out
}

#[test]
fn every_alert_is_annotated_documented_and_tested_both_ways() {
    let runbooks = read("docs/runbooks.md");
    let tests: String = test_files()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for file in rule_files() {
        for (name, block) in alerts(&read(&file)) {
            if !names.insert(name.clone()) {
                problems.push(format!("{name}: defined twice"));
            }
            for key in ["summary:", "description:", "severity:", "runbook_url:"] {
                if !block.contains(key) {
                    problems.push(format!("{name}: no {key}"));
                }
            }
            // Absolute, as Alertmanager and Grafana link it; the anchor is
            // the name lower-cased, as GitHub makes it of `## Name`.
            let anchor = format!(
                "runbook_url: https://github.com/sojourn/sojourn/blob/main/docs/runbooks.md#{}",
                name.to_lowercase()
            );
            if !block.contains(&anchor) {
                problems.push(format!("{name}: runbook_url is not {anchor}"));
            }
            if !runbooks.contains(&format!("\n## {name}\n")) {
                problems.push(format!(
                    "{name}: no `## {name}` section in docs/runbooks.md"
                ));
            }
            // Each test case: `alertname: X` then its exp_alerts.
            let cases: Vec<&str> = tests
                .split("alertname: ")
                .skip(1)
                .filter(|c| c.starts_with(&format!("{name}\n")))
                .collect();
            let quiet = |c: &&str| {
                c.lines()
                    .nth(1)
                    .is_some_and(|l| l.trim() == "exp_alerts: []")
            };
            if !cases.iter().any(quiet) {
                problems.push(format!("{name}: no not-firing test (exp_alerts: [])"));
            }
            if !cases.iter().any(|c| !quiet(c)) {
                problems.push(format!("{name}: no firing test"));
            }
        }
    }
    assert!(names.len() >= 15, "only {} alerts found", names.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Metric names documented in the reference, docs/metrics.md (`*` as a
/// wildcard).
fn documented_metrics() -> Vec<String> {
    let readme = read("docs/metrics.md");
    let start = readme.find("<!-- metrics-reference:start -->").unwrap();
    let end = readme.find("<!-- metrics-reference:end -->").unwrap();
    readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(String::from)
        .collect()
}

fn known(documented: &[String], name: &str) -> bool {
    // Histogram series carry a suffix after the family name.
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    documented.iter().any(|d| match d.split_once('*') {
        Some((prefix, suffix)) => [name, base]
            .iter()
            .any(|n| n.starts_with(prefix) && n.ends_with(suffix)),
        None => d == name || d == base,
    })
}

#[test]
fn rules_runbooks_and_dashboards_name_only_documented_metrics() {
    let documented = documented_metrics();
    assert!(documented.len() > 50);
    let re = regex::Regex::new(r"\bsojourn_[a-z0-9_]+").unwrap();
    let mut unknown = BTreeSet::new();
    let dashboards: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards"))
            .unwrap()
            .map(|e| format!("dashboards/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
    assert!(dashboards.len() >= 5, "{dashboards:?}");
    for file in rule_files()
        .iter()
        .chain(&dashboards)
        .map(String::as_str)
        .chain(["docs/runbooks.md"])
    {
        let text = read(file);
        for m in re.find_iter(&text) {
            // Recording rules (`instance:sojourn_…:ratio`) and wildcards in
            // prose (`sojourn_tcp_port_*`) are not metric names.
            let before = text[..m.start()].chars().next_back();
            let after = text[m.end()..].chars().next();
            if before == Some(':') || after == Some('*') {
                continue;
            }
            let name = m.as_str();
            if !known(&documented, name) {
                unknown.insert(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not in the metrics reference (docs/metrics.md):\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}
