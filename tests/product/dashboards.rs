//! The Grafana dashboards are product: importable files with a datasource
//! variable, stable uids, the current schema, the variables their queries
//! use; and they are what `scripts/dashboards.py` writes (edit the script,
//! then run it). That every panel's query returns data from a live sojourn
//! is tests/prometheus.rs's part.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn dashboards() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(Path::new(ROOT).join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

#[test]
fn the_five_dashboards_exist_with_stable_uids_and_the_current_schema() {
    let all = dashboards();
    let titles: BTreeSet<&str> = all
        .iter()
        .map(|(_, d)| d["title"].as_str().unwrap())
        .collect();
    for want in [
        "sojourn / USE / Node",
        "sojourn / USE / Cluster",
        "sojourn / Queues",
        "sojourn / Golden signals / Service",
        "sojourn / Containers",
    ] {
        assert!(titles.contains(want), "no {want:?} dashboard: {titles:?}");
    }
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(
            uid.starts_with("sojourn-") && uid.len() <= 40,
            "{name}: uid {uid}"
        );
        assert!(uids.insert(uid), "{name}: uid {uid} used twice");
        assert_eq!(d["schemaVersion"], 39, "{name}");
        assert!(
            d["id"].is_null(),
            "{name}: an id ties the file to one Grafana"
        );
    }
}

#[test]
fn every_panel_uses_the_datasource_variable_and_defined_variables() {
    let var_use = regex::Regex::new(r"\$\{?([a-z_]+)").unwrap();
    for (name, d) in dashboards() {
        let vars = d["templating"]["list"].as_array().unwrap();
        let names: BTreeSet<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        assert!(names.contains("instance"), "{name}: no instance variable");
        // Sidecars and nodes are different jobs: one can be chosen.
        assert!(names.contains("job"), "{name}: no job variable");
        assert!(
            d["title"]
                .as_str()
                .unwrap_or_default()
                .starts_with("sojourn / "),
            "{name}: the title says whose it is"
        );
        let mut queries = 0;
        for p in panels(&d) {
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default();
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name} / {title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name} / {title}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name} / {title}");
                let expr = t["expr"].as_str().unwrap();
                queries += 1;
                for c in var_use.captures_iter(expr) {
                    let v = &c[1];
                    assert!(
                        v.starts_with("__") || names.contains(v),
                        "{name} / {title}: ${v} is not a variable of the dashboard"
                    );
                }
            }
        }
        assert!(queries >= 5, "{name}: {queries} queries");
    }
    let golden = dashboards()
        .into_iter()
        .find(|(_, d)| d["title"] == "sojourn / Golden signals / Service")
        .unwrap()
        .1;
    let queues = dashboards()
        .into_iter()
        .find(|(_, d)| d["title"] == "sojourn / Queues")
        .unwrap()
        .1;
    for (d, var) in [(&golden, "service"), (&queues, "queue")] {
        assert!(
            d["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == var),
            "{} has no {var} variable",
            d["title"]
        );
    }
}

#[test]
fn the_files_are_what_the_generator_writes() {
    let out = tempfile::tempdir().unwrap();
    let script = std::fs::read_to_string(Path::new(ROOT).join("scripts/dashboards.py")).unwrap();
    // Run the script as if it lived in a copy whose dashboards/ is the temp dir.
    let scripts = out.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    std::fs::write(scripts.join("dashboards.py"), script).unwrap();
    let status = std::process::Command::new("python3")
        .arg(scripts.join("dashboards.py"))
        .status()
        .expect("python3 runs the dashboard generator");
    assert!(status.success());
    let mut written: Vec<String> = std::fs::read_dir(out.path().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let committed: Vec<String> = dashboards().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        written, committed,
        "the generator and dashboards/ hold different files"
    );
    for (name, _) in dashboards() {
        let committed =
            std::fs::read_to_string(Path::new(ROOT).join("dashboards").join(&name)).unwrap();
        let generated = std::fs::read_to_string(out.path().join("dashboards").join(&name))
            .unwrap_or_else(|_| panic!("the generator does not write {name}"));
        assert!(
            committed == generated,
            "dashboards/{name} differs from what scripts/dashboards.py writes: run it"
        );
    }
}
