//! The filesystem collector keeps the mount table open and reads it again
//! only when the kernel says it changed: mounts, remounts and unmounts must
//! still show at the next scrape. A process in a mount namespace of the
//! test's own stands for the host (its /proc/PID is the tree's PID 1), so
//! nothing is mounted on the machine running the tests.

mod common;

use std::path::Path;
use std::process::Command;

use sojourn::metrics::{self, Format};
use sojourn::roots::MountTable;

/// A sleeping process in a private mount namespace of its own.
fn namespace() -> Option<common::Killed> {
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "120"])
        .spawn()
        .ok()?;
    let ns = common::Killed(child);
    let pid = ns.0.id();
    // unshare execs sleep once the namespace is made.
    for _ in 0..200 {
        let own = std::fs::read_link("/proc/self/ns/mnt").ok()?;
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
            && std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|m| m != own)
        {
            return Some(ns);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

fn in_namespace(ns: &common::Killed, args: &[&str]) {
    let status = Command::new("nsenter")
        .args(["-t", &ns.0.id().to_string(), "-m", "--"])
        .args(args)
        .status()
        .expect("nsenter runs");
    assert!(status.success(), "{args:?} in the test's namespace");
}

fn mount_lines(text: &str, mount_point: &Path) -> Vec<String> {
    let needle = format!("mountpoint=\"{}\"", mount_point.display());
    text.lines()
        .filter(|l| l.starts_with("sojourn_filesystem") && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn mounts_remounts_and_unmounts_show_at_the_next_scrape() {
    let Some(ns) = namespace() else {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "unshare --mount needs root (CAP_SYS_ADMIN)",
        );
        return;
    };
    let pid = ns.0.id();
    let dir = tempfile::tempdir().unwrap();
    // The tree's /proc/1 is the namespace's process; its root is the rootfs.
    let proc = dir.path().join("proc");
    std::fs::create_dir(&proc).unwrap();
    std::os::unix::fs::symlink(format!("/proc/{pid}"), proc.join("1")).unwrap();
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let args = [
        "--path.procfs".to_string(),
        proc.display().to_string(),
        "--path.rootfs".to_string(),
        format!("/proc/{pid}/root"),
        "--collector.disable-defaults".to_string(),
        "--collector.filesystem".to_string(),
    ];
    let scraper = common::scraper_for(args);
    let scrape =
        || String::from_utf8(metrics::encode_bytes(scraper.scrape(), Format::Text)).unwrap();

    assert!(
        mount_lines(&scrape(), &target).is_empty(),
        "not mounted yet"
    );
    // Twice: the second scrape answers from the kept table.
    assert!(mount_lines(&scrape(), &target).is_empty());

    let t = target.display().to_string();
    in_namespace(&ns, &["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", &t]);
    let text = scrape();
    let lines = mount_lines(&text, &target);
    let size = lines
        .iter()
        .find(|l| l.starts_with("sojourn_filesystem_size_bytes"))
        .unwrap_or_else(|| panic!("a new mount shows at the next scrape:\n{text}"));
    assert!(size.ends_with(" 1048576"), "{size}");
    let ro = |text: &str| {
        mount_lines(text, &target)
            .into_iter()
            .find(|l| l.starts_with("sojourn_filesystem_readonly"))
            .expect("readonly series")
    };
    assert!(ro(&text).ends_with(" 0"));
    assert!(
        ro(&scrape()).ends_with(" 0"),
        "unchanged table, same answer"
    );

    in_namespace(&ns, &["mount", "-o", "remount,ro", &t]);
    assert!(ro(&scrape()).ends_with(" 1"), "a remount shows");

    in_namespace(&ns, &["umount", &t]);
    assert!(
        mount_lines(&scrape(), &target).is_empty(),
        "an unmount shows"
    );
}

#[test]
fn the_kernel_says_when_a_kept_table_changed() {
    let Some(ns) = namespace() else {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_NAMESPACES",
            "unshare --mount needs root (CAP_SYS_ADMIN)",
        );
        return;
    };
    let table = MountTable::open(Path::new(&format!("/proc/{}/mountinfo", ns.0.id()))).unwrap();
    assert!(!table.changed(), "nothing changed since it was opened");
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().display().to_string();
    in_namespace(&ns, &["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", &t]);
    assert!(table.changed());
    assert!(!table.changed(), "said once per change");
    assert!(table.read().unwrap().contains(&t));
    in_namespace(&ns, &["umount", &t]);
    assert!(table.changed());
    assert!(!table.read().unwrap().contains(&t));

    // A copy on disk cannot tell: it is read every time.
    let copy = dir.path().join("mountinfo");
    std::fs::write(&copy, table.read().unwrap()).unwrap();
    let on_disk = MountTable::open(&copy).unwrap();
    assert!(on_disk.changed());
}
