use super::*;

#[test]
fn defaults_enable_every_default_collector() {
    let s = parse(["sojourn"]).unwrap();
    assert_eq!(s.server.listen, [ListenAddr::AnyHost(9818)]);
    assert!(!s.server.systemd_socket);
    assert_eq!(
        s.collectors.len(),
        ALL.iter().filter(|e| e.default_enabled).count()
    );
    assert_eq!(s.server.telemetry_path, "/metrics");
}

#[test]
fn collector_flags_and_disable_defaults() {
    let s = parse(["sojourn", "--no-collector.cpu"]).unwrap();
    assert!(!s.collectors.contains(&"cpu"));
    let s = parse([
        "sojourn",
        "--collector.disable-defaults",
        "--collector.loadavg",
    ])
    .unwrap();
    assert_eq!(s.collectors, ["loadavg"]);
    let s = parse(["sojourn", "--no-collector.cpu", "--collector.cpu"]).unwrap();
    assert!(s.collectors.contains(&"cpu"), "the last flag wins");
}

#[test]
fn bad_values_name_the_flag() {
    for (args, flag) in [
        (
            vec!["sojourn", "--web.listen-address", "nonsense"],
            "--web.listen-address",
        ),
        (
            vec!["sojourn", "--collector.disk.device-exclude", "("],
            "--collector.disk.device-exclude",
        ),
        (
            vec!["sojourn", "--web.scrape-timeout", "10"],
            "--web.scrape-timeout",
        ),
        (
            vec!["sojourn", "--path.procfs", "/does/not/exist"],
            "--path.procfs",
        ),
        (
            vec!["sojourn", "--web.telemetry-path", "metrics"],
            "--web.telemetry-path",
        ),
        (
            vec!["sojourn", "--collector.nonexistent"],
            "--collector.nonexistent",
        ),
    ] {
        let err = parse(args.clone()).unwrap_err().to_string();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn each_subcommands_help_leads_with_its_own_flags() {
    let help = |name: &str| {
        command()
            .find_subcommand_mut(name)
            .unwrap()
            .render_long_help()
            .to_string()
    };
    let at = |text: &str, flag: &str| {
        text.find(flag)
            .unwrap_or_else(|| panic!("{flag} missing from:\n{text}"))
    };
    let check = help("check");
    assert!(
        at(&check, "--for") < at(&check, "--collector.cpu"),
        "{check}"
    );
    assert!(
        at(&check, "--json") < at(&check, "--path.procfs"),
        "{check}"
    );
    assert!(!check.contains("--web."), "check serves nothing:\n{check}");
    let proxy = help("proxy");
    assert!(
        at(&proxy, "--listen") < at(&proxy, "--collector.cpu"),
        "{proxy}"
    );
    assert!(
        at(&proxy, "--upstream") < at(&proxy, "--web.listen-address"),
        "{proxy}"
    );
    // A flag check does not use is not taken, let alone checked.
    let err = parse(["sojourn", "check", "--web.listen-address=:99999"]).unwrap_err();
    assert!(err.to_string().contains("--web.listen-address"), "{err}");
    let s = parse(["sojourn", "check", "--for", "1s"]).unwrap();
    assert!(s.server.listen.is_empty() && !s.server.systemd_socket);
    assert!(s.check.is_some());
}

#[test]
fn listen_shorthand_and_durations() {
    let s = parse(["sojourn", "--web.listen-address", ":9999"]).unwrap();
    assert_eq!(s.server.listen, [ListenAddr::AnyHost(9999)]);
    // Repeated, bracketed whatever the family (a node IP template).
    let s = parse([
        "sojourn",
        "--web.listen-address",
        "[10.0.0.7]:9818",
        "--web.listen-address",
        "[fd00::7]:9818",
        "--web.listen-address",
        "127.0.0.1:0",
    ])
    .unwrap();
    assert_eq!(
        s.server.listen,
        [
            ListenAddr::Addr("10.0.0.7:9818".parse().unwrap()),
            ListenAddr::Addr("[fd00::7]:9818".parse().unwrap()),
            ListenAddr::Addr("127.0.0.1:0".parse().unwrap()),
        ]
    );
    assert!(parse(["sojourn", "--web.listen-address", ":99999"]).is_err());
    assert!(parse(["sojourn", "--web.listen-address", "[10.0.0.7]:x"]).is_err());
    let s = parse(["sojourn", "--web.systemd-socket"]).unwrap();
    assert!(s.server.systemd_socket);
    assert!(
        parse([
            "sojourn",
            "--web.systemd-socket",
            "--web.listen-address",
            ":1"
        ])
        .is_err()
    );
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("5d").is_err());
    // Bounded: every value either fits or is an error, never a panic.
    for huge in ["99999999999999999999s", "8761h", "9999999999999999999999h"] {
        assert!(
            parse_duration(huge).unwrap_err().contains("8760h"),
            "{huge}"
        );
    }
    assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
    assert!(parse_duration("0.0000001s").unwrap_err().contains("1ms"));
    assert!(parse_duration("NaNs").is_err());
    assert!(parse_duration("infs").is_err());
    assert_eq!(parse_duration_or_zero("0s").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration_or_zero("0").unwrap(), Duration::ZERO);
    assert_eq!(
        parse_duration_or_zero("10s").unwrap(),
        Duration::from_secs(10)
    );
    assert!(parse_duration_or_zero("0d").is_err());
    assert!(parse_duration_or_zero("-1s").is_err());
}

#[test]
fn config_file_services_meet_the_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sojourn.yml");
    std::fs::write(
        &file,
        "services: [{name: shop, listen: '127.0.0.1:18999', upstream: 'http://127.0.0.1:1'}]",
    )
    .unwrap();
    let proxy = |service: &str| {
        parse([
            "sojourn",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
            "--service",
            service,
            "--config.file",
            file.to_str().unwrap(),
        ])
    };
    let err = proxy("shop").unwrap_err().to_string();
    assert!(
        err.contains("named twice") && err.contains("sojourn.yml"),
        "{err}"
    );
    let s = proxy("cart").unwrap();
    assert_eq!(s.services.len(), 2);
    // A file's service gets the flags' defaults for what it leaves out.
    let (flags, file) = (&s.services[0], &s.services[1]);
    assert_eq!(file.connect_timeout, flags.connect_timeout);
    assert_eq!(file.timeout, flags.timeout);
    assert_eq!(file.header_timeout, flags.header_timeout);
    assert_eq!(file.idle_timeout, flags.idle_timeout);
    assert_eq!(file.send_timeout, flags.send_timeout);
    assert_eq!(file.max_connections, flags.max_connections);
    assert_eq!(file.drain_timeout, flags.drain_timeout);
    assert_eq!(file.quantile_window, flags.quantile_window);
    assert_eq!(file.latency_target, flags.latency_target);
}

#[test]
fn check_takes_a_window_and_json_and_the_exporter_flags() {
    let s = parse([
        "sojourn",
        "check",
        "--for",
        "3s",
        "--json",
        "--no-collector.udp",
    ])
    .unwrap();
    assert_eq!(
        s.check,
        Some(CheckArgs {
            window: Duration::from_secs(3),
            json: true
        })
    );
    assert!(!s.collectors.contains(&"udp") && s.collectors.contains(&"queue"));
    assert_eq!(s.log_level, tracing::Level::WARN);
    let d = parse(["sojourn", "check"]).unwrap().check.unwrap();
    assert_eq!(d.window, Duration::from_secs(10));
    assert!(!d.json);
    let e = parse(["sojourn", "check", "--for", "100ms"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("at least 500ms"), "{e}");
    assert!(parse(["sojourn"]).unwrap().check.is_none());
}
