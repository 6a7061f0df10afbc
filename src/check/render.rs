//! The report as a table for people (colours only on a terminal) and as
//! JSON for scripts.

use std::fmt::Write;

use super::{Report, Row, Verdict};

const RED: &str = "\x1b[31;1m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

fn colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => GREEN,
        Verdict::Busy => YELLOW,
        _ => RED,
    }
}

fn cell(s: Option<&super::Signal>) -> &str {
    s.map_or("-", |s| s.text.as_str())
}

/// Rows the table shows: every finding and busy resource, and the
/// host-wide ones even when ok.
fn shown(r: &Row) -> bool {
    r.headline || r.verdict != Verdict::Ok
}

/// "1 finding", "2 findings".
pub fn findings(n: usize) -> String {
    format!("{n} finding{}", if n == 1 { "" } else { "s" })
}

pub fn table(report: &Report, colours: bool) -> String {
    let rows: Vec<&Row> = report.resources.iter().filter(|r| shown(r)).collect();
    let header = ["RESOURCE", "UTILIZATION", "SATURATION", "ERRORS", "VERDICT"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.resource.as_str(),
                cell(r.utilization.as_ref()),
                cell(r.saturation.as_ref()),
                cell(r.errors.as_ref()),
                r.verdict.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, c: &[&str; 5]| {
        for (i, (s, w)) in c.iter().zip(widths).enumerate() {
            let pad = w - s.chars().count();
            if i == 4 {
                out.push_str(s);
            } else {
                let _ = write!(out, "{s}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header);
    for (r, c) in rows.iter().zip(&cells) {
        let mut row = String::new();
        line(&mut row, c);
        if colours {
            let _ = write!(out, "{}{}{RESET}", colour(r.verdict), row.trim_end());
            out.push('\n');
        } else {
            out.push_str(&row);
        }
        if r.verdict != Verdict::Ok {
            for e in &r.evidence {
                if colours {
                    let _ = writeln!(out, "    {DIM}{e}{RESET}");
                } else {
                    let _ = writeln!(out, "    {e}");
                }
            }
        }
    }
    let _ = writeln!(out);
    if report.findings.is_empty() {
        let _ = writeln!(
            out,
            "Nothing saturated, erroring or slow over {:.1} s.",
            report.window_seconds
        );
    } else {
        let _ = writeln!(
            out,
            "{} over {:.1} s: {}",
            findings(report.findings.len()),
            report.window_seconds,
            report.findings.join(", ")
        );
    }
    if !report.collector_failures.is_empty() {
        let _ = writeln!(
            out,
            "Collectors that failed (their resources are missing): {}",
            report.collector_failures.join(", ")
        );
    }
    out
}

pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Signal;

    fn report() -> Report {
        let mut cpu = Row::new(crate::check::Kind::Cpu, "cpu");
        cpu.headline = true;
        cpu.utilization = Some(Signal::new(1.0, "100 %"));
        cpu.judge(
            Verdict::Saturated,
            0.96,
            "run queue standing 9.6 s of 10.0 s (96 %)",
        );
        let mut mem = Row::new(crate::check::Kind::Memory, "memory");
        mem.headline = true;
        mem.utilization = Some(Signal::new(0.1, "10 %"));
        let cpu1 = Row::new(crate::check::Kind::Cpu, "cpu1");
        Report::from_rows(10.0, vec![mem, cpu, cpu1], Vec::new())
    }

    #[test]
    fn the_table_lists_findings_first_with_evidence_and_hides_quiet_details() {
        let t = table(&report(), false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("RESOURCE"), "{t}");
        assert!(
            lines[1].starts_with("cpu ") && lines[1].ends_with("saturated"),
            "{t}"
        );
        assert_eq!(lines[2], "    run queue standing 9.6 s of 10.0 s (96 %)");
        assert!(
            lines[3].starts_with("memory") && lines[3].ends_with("ok"),
            "{t}"
        );
        assert!(!t.contains("cpu1"), "an ok per-CPU row is not shown: {t}");
        assert!(t.contains("1 finding over 10.0 s: cpu"), "{t}");
        assert_eq!(findings(2), "2 findings");
        assert!(!t.contains('\x1b'), "no colours unless asked: {t:?}");
        assert!(table(&report(), true).contains(RED));
    }

    #[test]
    fn json_has_every_resource_and_the_findings() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(v["findings"], serde_json::json!(["cpu"]));
        assert_eq!(v["resources"].as_array().unwrap().len(), 3);
        assert_eq!(v["resources"][0]["verdict"], "saturated");
        assert_eq!(v["resources"][0]["utilization"]["value"], 1.0);
    }
}
