//! The crate's layers, as data, and the test that keeps them: a module
//! may use modules of its own layer or below, never above, and within the
//! engines only those listed before it. ARCHITECTURE.md explains each.

/// Every top-level module, lowest layer first. Within a layer a module
/// may use those before it in the list (the engines' order is their
/// dependency order: the queue engine reads collectors' parsers, the
/// proxy feeds the queue engine, scrape runs them all, check reads
/// scrapes); a module may use any module of a lower layer.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "kernel sources",
        &[
            "error",
            "duration",
            "flag",
            "rt",
            "roots",
            "inet_diag",
            "ebpf",
            "kube",
            "netns",
            "tls_client",
            "kubelet",
        ],
    ),
    ("metrics model", &["native", "metrics", "atomic_histogram"]),
    (
        "engines",
        &["collectors", "queue", "proxy", "probe", "scrape", "check"],
    ),
    (
        "application",
        &["config", "web_config", "server", "cli", "layers"],
    ),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// (layer, position in the whole list) of a module.
    fn rank(module: &str) -> Option<(usize, usize)> {
        LAYERS
            .iter()
            .enumerate()
            .flat_map(|(layer, (_, mods))| mods.iter().map(move |m| (layer, *m)))
            .enumerate()
            .find(|(_, (_, m))| *m == module)
            .map(|(pos, (layer, _))| (layer, pos))
    }

    /// The top-level modules `crate::X` names in `text`, unit tests left
    /// out (they may use anything).
    fn uses(text: &str) -> BTreeSet<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        assert!(
            !code.contains("crate::{"),
            "name each module in its own `crate::module` path, so this scan sees it"
        );
        let mut out = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != "descs" {
                out.insert(name);
            }
        }
        out
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(path);
            }
        }
    }

    #[test]
    fn modules_use_only_their_layer_and_below() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        let mut checked = 0;
        for file in &files {
            let rel = file.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let Some((layer, pos)) = rank(&top) else {
                wrong.push(format!("{top}: not in LAYERS"));
                continue;
            };
            for used in uses(&std::fs::read_to_string(file).unwrap()) {
                if used == top {
                    continue;
                }
                checked += 1;
                match rank(&used) {
                    None => wrong.push(format!("{}: uses {used}, not in LAYERS", rel.display())),
                    Some((l, p)) if l > layer || (l == layer && p > pos) => {
                        wrong.push(format!("{}: {top} uses {used}, above it", rel.display()))
                    }
                    Some(_) => {}
                }
            }
        }
        assert!(
            checked > 50,
            "only {checked} uses found: is the scan right?"
        );
        assert!(wrong.is_empty(), "layers broken: {wrong:#?}");
    }
}
