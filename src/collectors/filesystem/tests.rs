use super::*;
use std::time::Instant;

const MOUNTINFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/my\\040disk ro,nosuid - tmpfs tmpfs ro,size=4k
29 27 0:26 / /data rw shared:5 - xfs /dev/sdb1 rw
30 27 0:27 / /data rw - nfs srv:/export rw
31 27 0:28 / /var/lib/docker/overlay2/x rw - ext4 /dev/sdc rw
";

#[test]
fn parses_and_selects_real_mounts() {
    let m = select_mounts(parse_mountinfo(MOUNTINFO).unwrap(), &Config::default());
    let points: Vec<_> = m.iter().map(|m| m.mount_point.as_str()).collect();
    assert_eq!(points, ["/", "/mnt/my disk", "/data"]);
    assert!(m[1].read_only);
    assert_eq!(
        m[2].fs_type, "nfs",
        "the last mount over /data is the visible one"
    );
}

#[test]
fn rejects_malformed_lines() {
    assert!(parse_mountinfo("").is_err());
    assert!(
        parse_mountinfo("22 27 0:21 / /proc rw,relatime proc proc rw\n").is_err(),
        "no separator"
    );
    assert!(
        parse_mountinfo("22 27 0:21 / /proc rw -\n").is_err(),
        "nothing after the separator"
    );
    assert!(parse_mountinfo("hello world\n").is_err());
}

#[test]
fn unescapes_octal() {
    assert_eq!(unescape_octal(r"/a\040b\011c\134d"), "/a b\tc\\d");
    assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
}

fn slow_on_hang(p: &Path) -> Result<Usage, String> {
    if p.ends_with("hang") {
        std::thread::sleep(Duration::from_millis(600));
    }
    if p.ends_with("gone") {
        return Err("No such file or directory".into());
    }
    Ok(Usage {
        size_bytes: 1,
        free_bytes: 1,
        avail_bytes: 1,
        files: 1,
        files_free: 1,
    })
}

#[test]
fn a_hung_mount_is_stale_and_does_not_block_the_others() {
    let pool = StatPool::new(slow_on_hang);
    let paths: Vec<PathBuf> = ["/a", "/hang", "/b", "/gone"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let start = Instant::now();
    let out = pool.stat_all(&paths, Duration::from_millis(100));
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "waited for the hung mount"
    );
    assert!(matches!(out[0], Outcome::Measured(_)));
    assert_eq!(out[1], Outcome::Stale);
    assert!(matches!(out[2], Outcome::Measured(_)));
    assert!(matches!(out[3], Outcome::Failed(_)));

    // The next scrape does not wait at all while the call is stuck...
    let start = Instant::now();
    let out = pool.stat_all(&paths, Duration::from_millis(100));
    assert!(start.elapsed() < Duration::from_millis(90));
    assert_eq!(out[1], Outcome::Stale);

    // ...and measures the mount again once it has returned.
    std::thread::sleep(Duration::from_millis(700));
    assert!(!pool.stuck.contains(Path::new("/hang")));
    let out = pool.stat_all(&paths, Duration::from_secs(2));
    assert!(matches!(out[1], Outcome::Measured(_)));
}

#[test]
fn only_local_mounts_outside_network_ones_are_measured_inline() {
    let all = parse_mountinfo(
        "22 27 0:21 / /proc rw - proc proc rw
27 1 254:0 / / rw - ext4 /dev/vda rw
28 27 0:25 / /run rw - tmpfs tmpfs rw
29 27 0:26 / /data rw - xfs /dev/sdb1 rw
30 27 0:27 / /nfs rw - nfs4 srv:/export rw
31 30 254:1 / /nfs/scratch rw - ext4 /dev/vdb rw
32 27 0:28 / /fuse rw - fuse.sshfs host: rw
33 27 0:29 / /auto rw - autofs systemd-1 rw
34 33 254:2 / /auto/disk rw - ext4 /dev/vdc rw
",
    )
    .unwrap();
    let selected = select_mounts(all.clone(), &Config::default());
    let inline: Vec<(&str, bool)> = selected
        .iter()
        .map(|m| m.mount_point.as_str())
        .zip(answers_from_memory(&all, &selected))
        .collect();
    assert_eq!(
        inline,
        [
            ("/", true),
            ("/run", true),
            ("/data", true),
            ("/nfs", false),
            ("/nfs/scratch", false),
            ("/fuse", false),
            ("/auto/disk", false),
        ]
    );
}

#[test]
fn emits_errors_without_sizes() {
    let mounts = select_mounts(parse_mountinfo(MOUNTINFO).unwrap(), &Config::default());
    let outcomes = vec![
        Outcome::Measured(Usage {
            size_bytes: 10,
            free_bytes: 5,
            avail_bytes: 4,
            files: 3,
            files_free: 2,
        }),
        Outcome::Failed("x".into()),
        Outcome::Stale,
    ];
    let f = emit(&mounts, &outcomes);
    assert_eq!(f[0].samples.len(), 1);
    assert_eq!(f[6].samples[1].value, crate::metrics::Value::Int(1));
    assert_eq!(f[7].samples[2].value, crate::metrics::Value::Int(1));
}

proptest::proptest! {
    #[test]
    fn never_panics(s in "\\PC*") {
        let _ = parse_mountinfo(&s);
        let _ = unescape_octal(&s);
    }
}
