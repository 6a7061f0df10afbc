use super::*;

#[test]
fn flat_and_limits() {
    let f = parse_flat("nr_periods 10\nnr_throttled 4\nthrottled_usec 2500000\n").unwrap();
    assert_eq!(get(&f, "nr_throttled"), Some(4));
    assert!(parse_flat("nr_periods x\n").is_err());
    assert_eq!(parse_cpu_max("max 100000\n").unwrap(), (None, 100000));
    assert_eq!(
        parse_cpu_max("20000 100000\n").unwrap(),
        (Some(20000), 100000)
    );
    assert!(parse_cpu_max("20000\n").is_err());
    assert_eq!(parse_limit("max\n").unwrap(), None);
    assert_eq!(
        parse_limit("9223372036854771712\n").unwrap(),
        None,
        "v1 'unlimited'"
    );
    assert_eq!(parse_limit("536870912\n").unwrap(), Some(536870912));
}

#[test]
fn io_stat_and_blkio() {
    let io = parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n").unwrap();
    assert_eq!(io, vec![("8:0".to_string(), 4096, 8192, 1, 2)]);
    assert!(parse_io_stat("8:0 rbytes\n").is_err());
    let b = parse_blkio(
        "8:0 Read 100\n8:0 Write 200\n8:0 Sync 0\n8:0 Async 300\n8:0 Total 300\nTotal 300\n",
        "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
    )
    .unwrap();
    assert_eq!(b, vec![("8:0".to_string(), 100, 200, 1, 2)]);
}

proptest::proptest! {
    #[test]
    fn never_panics(s in "\\PC*") {
        let _ = parse_flat(&s);
        let _ = parse_cpu_max(&s);
        let _ = parse_limit(&s);
        let _ = parse_io_stat(&s);
        let _ = parse_blkio(&s, &s);
    }
}

/// A kept listing follows directories made and removed after it, at any
/// depth, and lists nothing when nothing changed.
#[test]
fn a_kept_tree_sees_cgroups_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let make = |rel: &str, procs: &str| {
        let d = dir.path().join(rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup.procs"), procs).unwrap();
    };
    make("a", "");
    make("a/b", "42\n");
    let cfg = Config::default();
    let mut tree = Tree::new(dir.path());
    assert_eq!(tree.walk(&cfg, 10), (vec!["/a/b".to_string()], 0));
    assert_eq!(tree.walk(&cfg, 10).0, ["/a/b"], "unchanged");
    // Made two levels under a watched directory: the new parent is listed.
    make("a/c", "");
    make("a/c/d", "7\n");
    assert_eq!(tree.walk(&cfg, 10).0, ["/a/b", "/a/c/d"]);
    // Made under a directory that was itself made after the first listing.
    make("a/c/e", "8\n");
    assert_eq!(tree.walk(&cfg, 1), (vec!["/a/b".to_string()], 2));
    std::fs::remove_dir_all(dir.path().join("a/c")).unwrap();
    assert_eq!(tree.walk(&cfg, 10).0, ["/a/b"]);
    // The processes' presence is read at every walk, not kept.
    std::fs::write(dir.path().join("a/b/cgroup.procs"), "").unwrap();
    assert!(tree.walk(&cfg, 10).0.is_empty());
    assert_eq!(walk(dir.path(), &cfg, 10), (vec![], 0));
}

/// A hierarchy a cgroup was found absent from is not looked up again while
/// the absence is remembered; forgotten, the directory made since is read.
#[test]
fn an_absent_hierarchy_is_remembered_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("memory");
    let cpu = dir.path().join("cpu");
    std::fs::create_dir_all(memory.join("c")).unwrap();
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(memory.join("c/memory.usage_in_bytes"), "4096\n").unwrap();
    let layout = Layout::V1 {
        cpu: Some(cpu.clone()),
        cpuacct: None,
        memory: Some(memory),
        pids: None,
        blkio: None,
        unified: None,
    };
    let mut absent: Absent = 0;
    let s = read_v1(&layout, "/c", &mut absent).unwrap();
    assert_eq!(s.memory_usage_bytes, Some(4096));
    assert_eq!(absent, 1 << 1, "cpu found absent, memory present");
    std::fs::create_dir_all(cpu.join("c")).unwrap();
    std::fs::write(
        cpu.join("c/cpu.stat"),
        "nr_periods 3\nnr_throttled 1\nthrottled_time 5\n",
    )
    .unwrap();
    assert_eq!(
        read_v1(&layout, "/c", &mut absent).unwrap().periods,
        None,
        "remembered"
    );
    let mut forgotten: Absent = 0;
    assert_eq!(
        read_v1(&layout, "/c", &mut forgotten).unwrap().periods,
        Some(3)
    );
    assert_eq!(forgotten, 0);
}
