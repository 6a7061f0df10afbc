//! Every collector with its source missing, unreadable or corrupted: the
//! scrape still completes, that collector reports success 0, and every other
//! collector still reports 1. Runs the library in-process on a copy of the
//! fixture tree.

use crate::common;

use std::path::{Path, PathBuf};

use sojourn::metrics::{self, Format};

/// Which files each collector depends on, relative to the fixture root.
const SOURCES: &[(&str, &[&str])] = &[
    ("cpu", &["proc/stat"]),
    ("schedstat", &["proc/schedstat"]),
    (
        "pressure",
        &[
            "proc/pressure/cpu",
            "proc/pressure/memory",
            "proc/pressure/io",
            "proc/pressure/irq",
        ],
    ),
    ("loadavg", &["proc/loadavg"]),
    ("memory", &["proc/meminfo", "proc/vmstat"]),
    ("disk", &["proc/diskstats"]),
    ("filesystem", &["proc/1/mountinfo"]),
    ("network", &["proc/net/dev", "proc/net/softnet_stat"]),
    (
        "netstat",
        &["proc/net/snmp", "proc/net/netstat", "proc/net/sockstat"],
    ),
    ("udp", &["proc/net/udp", "proc/net/udp6"]),
    (
        "cgroup",
        &[
            "sys/fs/cgroup/system.slice/sshd.service/cpu.stat",
            "sys/fs/cgroup/cgroup.controllers",
        ],
    ),
    ("filefd", &["proc/sys/fs/file-nr"]),
    // The namespace link sojourn tells its own namespace by.
    ("netns", &["proc/self/ns/net"]),
    (
        "conntrack",
        &[
            "proc/sys/net/netfilter/nf_conntrack_count",
            "proc/sys/net/netfilter/nf_conntrack_max",
        ],
    ),
    (
        "edac",
        &[
            "sys/devices/system/edac/mc/mc0/ce_count",
            "sys/devices/system/edac/mc/mc0/ue_count",
        ],
    ),
];

fn fresh_tree() -> (tempfile::TempDir, PathBuf) {
    common::fixture_copy()
}

/// Scrapes the tree with every collector on; returns the text and success per collector.
fn scrape(root: &Path) -> (String, Vec<(String, bool)>) {
    let scraper = common::tree_scraper(root);
    let text = metrics::encode(scraper.scrape(), Format::Text);
    let success = text
        .lines()
        .filter_map(|l| l.strip_prefix("sojourn_scrape_collector_success{collector=\""))
        .map(|rest| {
            let (name, value) = rest.split_once("\"} ").unwrap();
            (name.to_string(), value == "1")
        })
        .collect();
    (text, success)
}

fn assert_only_failed(root: &Path, collector: &str, case: &str) {
    let (text, success) = scrape(root);
    assert_eq!(
        success.len(),
        SOURCES.len(),
        "{collector}/{case}: every collector reports"
    );
    for (name, ok) in success {
        if name == collector {
            assert!(!ok, "{collector}/{case}: expected success 0");
        } else {
            assert!(ok, "{collector}/{case}: {name} should be unaffected");
        }
    }
    assert!(
        text.contains("sojourn_build_info"),
        "{collector}/{case}: scrape completed"
    );
}

#[test]
fn the_fixture_tree_satisfies_every_collector() {
    let (_dir, root) = fresh_tree();
    let (_, success) = scrape(&root);
    assert!(success.iter().all(|(_, ok)| *ok), "{success:?}");
}

#[test]
fn missing_sources_fail_only_their_collector() {
    for (collector, files) in SOURCES {
        let (_dir, root) = fresh_tree();
        for f in *files {
            std::fs::remove_file(root.join(f)).unwrap();
        }
        assert_only_failed(&root, collector, "missing");
    }
}

#[test]
fn unreadable_sources_fail_only_their_collector() {
    // A directory in place of the file: read(2) fails with EISDIR even for root,
    // which chmod 000 would not stop.
    for (collector, files) in SOURCES {
        let (_dir, root) = fresh_tree();
        let f = root.join(files[0]);
        std::fs::remove_file(&f).unwrap();
        std::fs::create_dir(&f).unwrap();
        assert_only_failed(&root, collector, "unreadable");
    }
}

#[test]
fn corrupted_sources_fail_only_their_collector() {
    let corruptions: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("binary", b"\x00\xff\xfe garbage \x01\x02\n\x7f"),
        ("words", b"hello world\nthis is not a kernel file\n"),
        (
            "out of range",
            b"99999999999999999999999999 99999999999999999999999999 99999999999999999999999999\n",
        ),
        ("negative", b"-1 -2 -3 -4 -5 -6 -7 -8 -9 -10 -11 -12\n"),
    ];
    for (collector, files) in SOURCES {
        for (case, bytes) in corruptions {
            let (_dir, root) = fresh_tree();
            for f in *files {
                // Replaced, not written through: a namespace link is a
                // symlink to nowhere.
                std::fs::remove_file(root.join(f)).unwrap();
                std::fs::write(root.join(f), bytes).unwrap();
            }
            assert_only_failed(&root, collector, case);
        }
    }
}

#[test]
fn truncated_and_widened_sources_never_break_the_scrape() {
    for (collector, files) in SOURCES {
        for f in *files {
            let (_dir, root) = fresh_tree();
            let path = root.join(f);
            let original = match std::fs::read_link(&path) {
                Ok(target) => target.into_os_string().into_encoded_bytes(),
                Err(_) => std::fs::read(&path).unwrap(),
            };
            // Cut mid-line: may or may not still parse, but must not panic or hang.
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, &original[..original.len() / 2]).unwrap();
            let (text, success) = scrape(&root);
            assert_eq!(success.len(), SOURCES.len(), "{collector} {f} truncated");
            assert!(text.contains("sojourn_build_info"));

            // A newer kernel appending columns to every line and a new line.
            let widened: String = String::from_utf8_lossy(&original)
                .lines()
                .map(|l| format!("{l} 0 0\n"))
                .chain(std::iter::once("newkey 1 2 3\n".to_string()))
                .collect();
            std::fs::write(&path, widened).unwrap();
            let (_, success) = scrape(&root);
            assert_eq!(success.len(), SOURCES.len(), "{collector} {f} widened");
        }
    }
}
