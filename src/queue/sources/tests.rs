use super::*;

#[test]
fn schedstat_delay_per_timeslice() {
    let mut s = SchedstatSource::default();
    let mut gone = Vec::new();
    assert!(
        s.sample(
            "version 15\ncpu0 0 0 0 0 0 0 100 1000000 10\ncpu1 0 0 0 0 0 0 100 0 5\n",
            &mut gone
        )
        .unwrap()
        .is_empty()
    );
    let out = s
        .sample(
            "version 15\ncpu0 0 0 0 0 0 0 200 21000000 20\ncpu1 0 0 0 0 0 0 100 0 5\n",
            &mut gone,
        )
        .unwrap();
    assert_eq!(&*out[0].queue, "cpu0");
    assert!(
        (out[0].value - 0.002).abs() < 1e-12,
        "20 ms waited over 10 slices"
    );
    assert_eq!(out[1].value, 0.0, "cpu1 ran no slice: idle");
    assert_eq!(&*out[2].queue, "cpu");
    assert!((out[2].value - 0.002).abs() < 1e-12);
    assert!(gone.is_empty());
    // cpu1 goes offline: its queue is reported gone, once.
    s.sample("version 15\ncpu0 0 0 0 0 0 0 300 21000000 30\n", &mut gone)
        .unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(&*gone[0], "cpu1");
    s.sample("version 15\ncpu0 0 0 0 0 0 0 400 21000000 40\n", &mut gone)
        .unwrap();
    assert_eq!(gone.len(), 1);
}

#[test]
fn loadavg_counts_runnable_beyond_the_cpus_less_the_reader() {
    let l = LoadavgSource::new(2);
    assert_eq!(l.sample("0.1 0.1 0.1 1/100 5\n").unwrap().value, 0.0);
    assert_eq!(l.sample("6.0 1 1 7/100 5\n").unwrap().value, 4.0);
    assert_eq!(l.sample("2.0 1 1 3/100 5\n").unwrap().value, 0.0);
    assert!(l.sample("garbage").is_err());
    assert!(l.sample("1 2 3 x/5 6").is_err());
}

#[test]
fn psi_share_between_readings() {
    let mut p = PsiSource::default();
    let line = |us: u64| {
        format!("some avg10=0 avg60=0 avg300=0 total={us}\nfull avg10=0 avg60=0 avg300=0 total=0\n")
    };
    assert_eq!(p.sample("cpu", 0, &line(1000)).unwrap(), None);
    let s = p.sample("cpu", 10_000_000, &line(6000)).unwrap().unwrap();
    assert_eq!(&*s.queue, "cpu:psi");
    assert!((s.value - 0.5).abs() < 1e-12, "5 ms stalled in 10 ms");
}

#[test]
fn listeners_become_accept_queues_with_limits() {
    let listener = |ip: &str, port, queued, backlog| Socket {
        family: 2,
        state: TCP_LISTEN,
        local: ip.parse().unwrap(),
        local_port: port,
        remote: "0.0.0.0".parse().unwrap(),
        remote_port: 0,
        rqueue: queued,
        wqueue: backlog,
        inode: 1,
        interface: 0,
        cookie: 0,
        tcp_info: None,
    };
    let mut src = ListenerSource::default();
    let first = src.sample(
        0,
        &[
            listener("0.0.0.0", 8080, 3, 128),
            listener("::1", 443, 0, 4096),
        ],
    );
    // Only the listener holding a connection is a queue yet.
    assert_eq!(first.samples.len(), 1, "{:?}", first.samples);
    assert_eq!(&*first.samples[0].queue, "tcp_accept:0.0.0.0:8080");
    assert_eq!(first.samples[0].value, 3.0);
    assert_eq!(first.limits[0].1, 128);
    // Once it has listened long enough, the empty one is too.
    let later = LISTENER_ADMIT_AFTER.as_nanos() as u64;
    let both = src.sample(
        later,
        &[
            listener("0.0.0.0", 8080, 0, 128),
            listener("::1", 443, 0, 4096),
        ],
    );
    assert_eq!(both.samples.len(), 2);
    assert_eq!(&*both.samples[1].queue, "tcp_accept:[::1]:443");
    assert!(
        Arc::ptr_eq(&first.samples[0].queue, &both.samples[0].queue),
        "the name is built once"
    );
    assert!(both.gone.is_empty());
    // A closed listener is reported gone, once; an emptied one stays a queue.
    let one = src.sample(later + 1, &[listener("0.0.0.0", 8080, 0, 128)]);
    assert_eq!(one.samples.len(), 1);
    assert_eq!(one.gone.len(), 1);
    assert_eq!(one.gone[0], QueueId::host("tcp_accept:[::1]:443"));
    assert!(
        src.sample(later + 2, &[listener("0.0.0.0", 8080, 0, 128)])
            .gone
            .is_empty()
    );
    // Reopened, it starts over: not a queue until it holds a connection.
    let back = src.sample(
        later + 3,
        &[
            listener("0.0.0.0", 8080, 0, 128),
            listener("::1", 443, 0, 4096),
        ],
    );
    assert_eq!(back.samples.len(), 1);
    // A listener that never was a queue is not reported gone.
    assert!(
        src.sample(later + 4, &[listener("0.0.0.0", 8080, 0, 128)])
            .gone
            .is_empty()
    );
    assert_eq!(src.forget_all().len(), 1);
}

#[test]
fn throttling_per_period() {
    let v2 = cfs_counters("usage_usec 1\nnr_periods 10\nnr_throttled 4\nthrottled_usec 200000\n")
        .unwrap();
    assert_eq!(v2, (10, 0.2));
    let v1 = cfs_counters("nr_periods 10\nnr_throttled 4\nthrottled_time 200000000\n").unwrap();
    assert_eq!(v1, (10, 0.2));
    assert!(cfs_counters("nr_periods 1\n").is_err());
    // 5 periods, 0.4 s more throttling: 80 ms per 100 ms period.
    assert!((throttle_delay((10, 0.2), (15, 0.6)) - 0.08).abs() < 1e-12);
    assert_eq!(throttle_delay((10, 0.2), (10, 0.2)), 0.0, "idle");
}

#[test]
fn rejects_garbage() {
    let mut d = DiskSource::new(Regex::new("^loop").unwrap());
    assert!(d.sample(" 8 0 sda 1 2 3\n", &mut Vec::new()).is_err());
    assert!(
        d.sample(" 8 0 sda 1 2 3 x 5 6 7 8 9 10 11\n", &mut Vec::new())
            .is_err()
    );
    assert!(d.sample("", &mut Vec::new()).is_err());
    assert!(some_total_us("some avg10=0 total=x\n").is_err());
    assert!(some_total_us("some avg10=0\n").is_err());
    assert_eq!(some_total_us("full avg10=0 total=5\n").unwrap(), None);
}

proptest::proptest! {
    #[test]
    fn never_panics(text in "\\PC*") {
        let _ = DiskSource::new(Regex::new("^loop").unwrap()).sample(&text, &mut Vec::new());
        let mut d = DiskSource::new(Regex::new("^loop").unwrap());
        let _ = d.sample(" 8 0 sda 1 0 0 1 0 0 0 0 0 1 0\n", &mut Vec::new());
        let _ = d.sample_device(0, &text, &mut Vec::new());
        let _ = SchedstatSource::default().sample(&text, &mut Vec::new());
        let _ = LoadavgSource::new(2).sample(&text);
        let _ = PsiSource::default().sample("cpu", 1, &text);
    }
}

#[test]
fn disk_queue_time_is_await_minus_service_time() {
    let mut d = DiskSource::new(Regex::new("^loop").unwrap());
    let line = |ios: u64, io_ms: u64, busy: u64, inflight: u64| {
        format!(
            " 8 0 sda {ios} 0 0 {io_ms} 0 0 0 0 {inflight} {busy} 0\n 7 0 loop0 1 0 0 0 0 0 0 0 0 0 0\n"
        )
    };
    let mut gone = Vec::new();
    let first = d.sample(&line(100, 1000, 500, 0), &mut gone).unwrap();
    assert_eq!(
        first.len(),
        1,
        "only in-flight on the first reading: {first:?}"
    );
    // 10 I/Os took 80 ms in all while the device was busy 30 ms: 5 ms queued each.
    let out = d.sample(&line(110, 1080, 530, 2), &mut gone).unwrap();
    assert_eq!(&*out[0].queue, "disk:sda");
    assert!((out[0].value - 0.005).abs() < 1e-12);
    assert_eq!(&*out[1].queue, "disk_inflight:sda");
    assert_eq!(out[1].value, 2.0);
    // Nothing completed while I/O is in flight: no delay sample.
    let out = d.sample(&line(110, 1080, 540, 2), &mut gone).unwrap();
    assert_eq!(out.len(), 1);
    // Idle: an empty queue.
    let out = d.sample(&line(110, 1080, 540, 0), &mut gone).unwrap();
    assert_eq!(out[0].value, 0.0);
    // The device's sysfs stat file continues from the diskstats reading.
    assert_eq!(d.device_names().collect::<Vec<_>>(), ["sda"]);
    let mut out = Vec::new();
    d.sample_device(0, "120 0 0 1200 0 0 0 0 1 550 0 0 0 0 0 0 0\n", &mut out)
        .unwrap();
    // 10 I/Os, 120 ms in all, 10 ms busy: 11 ms queued each.
    assert!((out[0].value - 0.011).abs() < 1e-12, "{out:?}");
    assert_eq!(out[1].value, 1.0);
    assert!(d.sample_device(0, "1 2 3\n", &mut out).is_err());
    // sda removed: both its queues are reported gone.
    assert!(gone.is_empty());
    d.sample(" 7 0 loop0 1 0 0 0 0 0 0 0 0 0 0\n", &mut gone)
        .unwrap();
    let gone: Vec<&str> = gone.iter().map(|g| &**g).collect();
    assert_eq!(gone, ["disk:sda", "disk_inflight:sda"]);
}

#[test]
fn ebpf_delay_is_the_mean_wait_of_the_waits_that_ended() {
    use crate::ebpf::RawHistogram;
    let cpu = |sum_ns: u64, waits: u64| {
        let mut h = RawHistogram {
            sum_ns,
            ..Default::default()
        };
        h.slots[20] = waits;
        h
    };
    let mut src = EbpfRunqueueSource::default();
    assert!(
        src.sample(&[cpu(0, 0), cpu(0, 0)]).is_empty(),
        "a first reading has no period"
    );
    // CPU 0: 4 waits of 2 ms each; CPU 1: none ended.
    let s = src.sample(&[cpu(8_000_000, 4), cpu(0, 0)]);
    let by_name = |n: &str| s.iter().find(|x| &*x.queue == n).map(|x| x.value);
    assert_eq!(by_name("cpu0"), Some(0.002));
    assert_eq!(
        by_name("cpu1"),
        None,
        "a CPU that never ran a task has no queue"
    );
    assert_eq!(by_name("cpu"), Some(0.002));
    assert!(
        s.iter()
            .all(|x| x.source == "ebpf" && x.measure == Measure::Delay)
    );
    // Next period: CPU 0 two more waits of 1 ms, CPU 1 two of 5 ms.
    let s = src.sample(&[cpu(10_000_000, 6), cpu(10_000_000, 2)]);
    let by_name = |n: &str| s.iter().find(|x| &*x.queue == n).map(|x| x.value);
    assert_eq!(by_name("cpu0"), Some(0.001));
    assert_eq!(by_name("cpu1"), Some(0.005));
    assert_eq!(by_name("cpu"), Some(0.003));
    // Nothing ended: no queue, delay 0.
    let s = src.sample(&[cpu(10_000_000, 6), cpu(10_000_000, 2)]);
    assert!(s.iter().all(|x| x.value == 0.0));
}

/// With the block program's totals, a disk's delay is the time the
/// requests issued since the last reading waited, on average, whatever
/// diskstats' await says; a disk the program has not seen issued nothing.
#[test]
fn disk_queue_time_from_the_block_program() {
    let mut d = DiskSource::new(Regex::new("^loop").unwrap());
    let line = |ios: u64, io_ms: u64, inflight: u64| {
        format!(
            " 8 0 sda {ios} 0 0 {io_ms} 0 0 0 0 {inflight} 0 0\n 8 16 sdb 0 0 0 0 0 0 0 0 0 0 0\n"
        )
    };
    let (sda, sdb) = (8 << 20, 8 << 20 | 16);
    let mut gone = Vec::new();
    // Before the first reading no disk is known: none is timed yet.
    d.set_timed(timed_totals(d.devs(), |_| Ok::<_, ()>(None), || Ok(0)).unwrap());
    let first = d.sample(&line(100, 1000, 0), &mut gone).unwrap();
    assert!(
        first.iter().all(|s| s.measure == Measure::Length),
        "{first:?}"
    );
    assert_eq!(d.devs().collect::<Vec<_>>(), [sda, sdb]);
    let program = |issued, ns| move |dev| Ok::<_, ()>((dev == sda).then_some((issued, ns)));
    // First totals: nothing to compare yet. Then 10 requests issued, 30 ms
    // waited in all: 3 ms each.
    d.set_timed(timed_totals(d.devs(), program(100, 400_000_000), || Ok(0)).unwrap());
    d.sample(&line(100, 1000, 0), &mut gone).unwrap();
    d.set_timed(timed_totals(d.devs(), program(110, 430_000_000), || Ok(0)).unwrap());
    let out = d.sample(&line(110, 5000, 1), &mut gone).unwrap();
    assert_eq!((&*out[0].queue, out[0].source), ("disk:sda", "ebpf"));
    assert!((out[0].value - 0.003).abs() < 1e-12, "{out:?}");
    assert_eq!(
        (&*out[1].queue, out[1].source),
        ("disk_inflight:sda", "diskstats")
    );
    // sdb, never seen by the program, is an idle disk timed by it.
    assert_eq!(
        (&*out[2].queue, out[2].source, out[2].value),
        ("disk:sdb", "ebpf", 0.0)
    );
    // Nothing issued while one is in flight: nothing measured. Past the
    // program's disk slots (a request missed), a disk it has no totals for
    // keeps diskstats.
    let totals = timed_totals(d.devs(), program(110, 430_000_000), || Ok(3)).unwrap();
    assert_eq!(totals, [(sda, (110, 430_000_000))]);
    d.set_timed(totals);
    let out = d.sample(&line(110, 5000, 1), &mut gone).unwrap();
    assert_eq!(&*out[0].queue, "disk_inflight:sda");
    assert_eq!((&*out[1].queue, out[1].source), ("disk:sdb", "diskstats"));
    // The missed count is asked only when a disk has no totals; errors
    // pass through.
    let asked = std::cell::Cell::new(false);
    timed_totals([sda].into_iter(), program(1, 1), || {
        asked.set(true);
        Ok(0)
    })
    .unwrap();
    assert!(!asked.get());
    assert_eq!(
        timed_totals([sda].into_iter(), |_| Err("EIO"), || Ok(0)),
        Err("EIO")
    );
}

/// With the accept-queue program's totals, a listener's queue is a delay:
/// while connections wait and none is accepted, the time since the queue
/// was last clear; then the mean wait of those accepted; 0 when empty.
#[test]
fn a_timed_accept_queue_is_the_wait_for_accept() {
    let listener = |queued| Socket {
        family: 2,
        state: TCP_LISTEN,
        local: "127.0.0.1".parse().unwrap(),
        local_port: 8080,
        remote: "0.0.0.0".parse().unwrap(),
        remote_port: 0,
        rqueue: queued,
        wqueue: 16,
        inode: 1,
        interface: 0,
        cookie: 0,
        tcp_info: None,
    };
    let ms = 1_000_000;
    let mut src = ListenerSource::default();
    let mut at = |now: u64, queued: u32, totals: Option<Timed>| {
        let t = move |port: u16| totals.filter(|_| port == 8080);
        let s = src.sample_timed(now, &[listener(queued)], Some(&t));
        let sample = &s.samples[0];
        assert_eq!((sample.measure, sample.source), (Measure::Delay, "ebpf"));
        sample.value
    };
    // Two connections waiting from the first sampling, none accepted yet.
    assert_eq!(at(0, 2, None), 0.0);
    assert!((at(50 * ms, 2, None) - 0.050).abs() < 1e-12);
    // Both accepted, having waited 100 ms in all: 50 ms each.
    assert!((at(60 * ms, 0, Some((2, 100 * ms))) - 0.050).abs() < 1e-12);
    assert_eq!(at(70 * ms, 0, Some((2, 100 * ms))), 0.0, "empty");
    // One more waits from 70 ms on; at 90 ms it has waited 20 ms at least.
    assert!((at(90 * ms, 1, Some((2, 100 * ms))) - 0.020).abs() < 1e-12);
}
