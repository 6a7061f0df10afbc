use super::*;

#[test]
fn text_format_names_counters_with_total_and_units() {
    let fam = Family::single(
        Desc::counter("cpu", "CPU time.").seconds(),
        Value::Float(1.5),
    );
    let out = encode(vec![fam], Format::Text);
    assert!(
        out.contains("# TYPE sojourn_cpu_seconds_total counter"),
        "{out}"
    );
    assert!(out.contains("sojourn_cpu_seconds_total 1.5"), "{out}");
    assert!(!out.contains("# EOF"));
}

#[test]
fn openmetrics_format_ends_with_eof() {
    let fam = Family::single(Desc::gauge("load1", "Load."), Value::Float(0.5));
    let out = encode(vec![fam], Format::OpenMetrics);
    assert!(out.ends_with("# EOF\n"), "{out}");
    assert!(out.contains("sojourn_load1 0.5"), "{out}");
}

#[test]
fn snake_case_names() {
    for (kernel, metric) in [
        ("MemTotal", "mem_total"),
        ("AnonHugePages", "anon_huge_pages"),
        ("Active(anon)", "active_anon"),
        ("Inactive(file)", "inactive_file"),
        ("DirectMap2M", "direct_map_2m"),
        ("DirectMap4k", "direct_map_4k"),
        ("NFS_Unstable", "nfs_unstable"),
        ("SReclaimable", "s_reclaimable"),
        ("Committed_AS", "committed_as"),
        ("HugePages_Total", "huge_pages_total"),
        ("TCPOFODrop", "tcp_ofo_drop"),
        ("TCPSynRetrans", "tcp_syn_retrans"),
        ("ListenOverflows", "listen_overflows"),
        ("TcpExt", "tcp_ext"),
        ("Udp6", "udp_6"),
        ("InCsumErrors", "in_csum_errors"),
    ] {
        assert_eq!(snake_case(kernel), metric, "{kernel}");
    }
}

#[test]
fn exposed_name_matches_encoder() {
    let d = Desc::counter("disk_read", "x").bytes();
    assert_eq!(d.exposed_name(), "sojourn_disk_read_bytes_total");
}

#[test]
fn protobuf_carries_native_buckets_and_text_stays_classic() {
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily;
    use prost::Message;
    let h = crate::proxy::stats::AtomicHistogram::default();
    for v in [0.001, 0.001, 0.0011, 2.0, 0.0] {
        h.observe(v);
    }
    let family = Family::new(Desc::histogram("lat", "Latency (test).").seconds())
        .with(vec![label("service", "a")], h.snapshot());
    let body = encode_bytes(vec![family.clone()], Format::Protobuf);
    let mut buf = &body[..];
    let decoded = MetricFamily::decode_length_delimited(&mut buf).unwrap();
    assert_eq!(decoded.name, "sojourn_lat_seconds");
    let hist = decoded.metric[0].histogram.as_ref().unwrap();
    assert_eq!(hist.sample_count, 5);
    assert_eq!(hist.schema, crate::native::SCHEMA);
    assert_eq!(hist.zero_count, 1);
    // 0.001 and 0.0011 are in buckets -79 and -78; 2.0 in 8.
    let spans: Vec<(i32, u32)> = hist
        .positive_span
        .iter()
        .map(|s| (s.offset, s.length))
        .collect();
    assert_eq!(spans, vec![(-79, 2), (85, 1)]);
    assert_eq!(hist.positive_delta, vec![2, -1, 0]);
    assert!(!hist.bucket.is_empty(), "classic buckets too");
    let text = encode(vec![family], Format::Text);
    assert!(
        text.contains("sojourn_lat_seconds_bucket{service=\"a\",le=\"0.001\"} 3"),
        "{text}"
    );
}

#[test]
fn negotiation_reads_weights_and_whole_media_types() {
    let n = |a: &str| Format::negotiate(Some(a));
    // q=0 refuses: the substring alone chose protobuf before.
    assert_eq!(
        n(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0, text/plain"
        ),
        Format::Text
    );
    assert_eq!(
        n("application/openmetrics-text;q=0.1, text/plain;q=0.9"),
        Format::Text
    );
    assert_eq!(
        n("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"),
        Format::OpenMetrics
    );
    assert_eq!(n("application/openmetrics-textual"), Format::Text);
    assert_eq!(
        n("text/html, application/openmetrics-text"),
        Format::OpenMetrics
    );
    assert_eq!(
        n("text/plain;q=0"),
        Format::Text,
        "nothing acceptable: text"
    );
    assert_eq!(n("application/*"), Format::Text);
    // The most specific range decides: text/plain;q=0 outranks */*.
    assert_eq!(
        n("text/plain;q=0, */*, application/openmetrics-text;q=0.2"),
        Format::OpenMetrics
    );
    assert_eq!(
        n("text/plain;q=0, application/openmetrics-text;q=0.2"),
        Format::OpenMetrics
    );
    assert_eq!(n("application/openmetrics-text;q=bogus"), Format::Text);
}

proptest::proptest! {
    #[test]
    fn weighted_lists_never_panic(s in "\\PC*") {
        let _ = weighted_list(&s).count();
        let _ = Format::negotiate(Some(&s));
    }
}

#[test]
fn negotiation_prefers_openmetrics_only_when_named() {
    assert_eq!(
        Format::negotiate(Some(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        )),
        Format::Protobuf
    );
    assert_eq!(Format::negotiate(None), Format::Text);
    assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
    assert_eq!(
        Format::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )),
        Format::OpenMetrics
    );
}

#[test]
fn a_long_label_vec_keeps_its_buffer_and_an_array_stays_inline() {
    let identity: Vec<Label> = [
        "cgroup",
        "pod_uid",
        "container_id",
        "qos_class",
        "namespace",
    ]
    .into_iter()
    .map(|k| label(k, "x"))
    .collect();
    let buffer = identity.as_ptr();
    let mut f = Family::new(Desc::gauge("g", "G (test)."));
    f.push(identity, 1u64);
    assert!(f.samples[0].labels.spilled());
    assert_eq!(f.samples[0].labels.as_ptr(), buffer, "moved, not copied");
    f.push([label("device", "sda")], 2u64);
    assert!(!f.samples[1].labels.spilled());
}
