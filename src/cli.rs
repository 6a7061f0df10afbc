//! Command-line flags, turned into validated [`Settings`] in one step.
//! Flag names follow node_exporter's so that deployments and muscle memory
//! carry over. A bad value stops start-up with a message naming the flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use crate::collectors;
use crate::roots::Roots;
use crate::scrape::ALL;

/// Every address of the host, both families where it has IPv6.
pub const DEFAULT_LISTEN: &str = ":9818";

pub use crate::server::ListenAddr;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The metrics server's: `--web.*`.
    pub server: crate::server::Config,
    pub log_level: tracing::Level,
    pub collectors: Vec<&'static str>,
    pub collect: collectors::Config,
    /// The queue engine's: `--queue.*`.
    pub queue: crate::queue::QueueConfig,
    /// Services to proxy: `sojourn proxy`'s flags and `--config.file`'s.
    pub services: Vec<crate::proxy::Config>,
    /// Targets to probe, from `--config.file`.
    pub probes: Vec<crate::probe::Spec>,
    /// `sojourn check`: sample for a while, print the USE table, exit.
    pub check: Option<CheckArgs>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckArgs {
    /// How long to sample (`--for`).
    pub window: Duration,
    pub json: bool,
}

/// `HOST:PORT`, `[IPV6]:PORT`, or `[IPV4]:PORT` as Go's SplitHostPort
/// takes it, so that one template brackets a node's address whatever its
/// family (`[$(NODE_IP)]:9818`).
fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    if let Some((host, port)) = s.strip_prefix('[').and_then(|r| r.split_once("]:"))
        && let Ok(v4) = host.parse::<std::net::Ipv4Addr>()
    {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        return Ok(SocketAddr::new(v4.into(), port));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

/// A proxied service's `--listen`: ":8080" is every IPv4 address.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    match s.strip_prefix(':') {
        Some(_) => parse_host_port(&format!("0.0.0.0{s}")),
        None => parse_host_port(s),
    }
}

fn parse_web_listen(s: &str) -> Result<ListenAddr, String> {
    match s.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .map(ListenAddr::AnyHost)
            .map_err(|_| format!("{port:?} is not a port number")),
        None => parse_host_port(s).map(ListenAddr::Addr),
    }
}

pub use crate::duration::{MAX_DURATION, MIN_DURATION, parse_duration, parse_duration_or_zero};

fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.len() > 1 {
        Ok(s.to_string())
    } else {
        Err("must start with '/' and not be '/' (the landing page)".into())
    }
}

pub fn command() -> Command {
    let mut cmd = Command::new("sojourn")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Tells why calls are slow: USE metrics and queue delay for Prometheus.")
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDR")
                .default_value(DEFAULT_LISTEN)
                .action(ArgAction::Append)
                .value_parser(parse_web_listen)
                .help("Address to serve metrics on; repeat for several. \":PORT\" is every address, IPv6 and IPv4 where the host has both; \"[HOST]:PORT\" takes IPv4 too (port 0 picks a free one)"),
        )
        .arg(
            Arg::new("web.systemd-socket")
                .long("web.systemd-socket")
                .action(ArgAction::SetTrue)
                .conflicts_with("web.listen-address")
                .help("Serve on the sockets systemd passes (socket activation: LISTEN_FDS, LISTEN_PID) instead of --web.listen-address"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TLS and basic auth for the HTTP endpoints, in the Prometheus exporter-toolkit format"),
        )
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("YAML file of services to proxy and targets to probe (docs/configuration.md)"),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .default_value("/metrics")
                .value_parser(parse_telemetry_path)
                .help("Path under which metrics are served"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .default_value("40")
                .value_parser(clap::value_parser!(usize))
                .help("Concurrent scrapes allowed; more get 503 at once (0 = no limit)"),
        )
        .arg(
            Arg::new("web.max-connections")
                .long("web.max-connections")
                .value_name("N")
                .default_value("256")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Connections open at once on the metrics port; one more is closed unanswered"),
        )
        .arg(
            Arg::new("web.scrape-timeout")
                .long("web.scrape-timeout")
                .value_name("DURATION")
                .default_value("10s")
                .value_parser(parse_duration)
                .help("Longest a scrape may take; lowered to Prometheus' X-Prometheus-Scrape-Timeout-Seconds when sent"),
        )
        .arg(
            Arg::new("path.procfs")
                .long("path.procfs")
                .value_name("DIR")
                .default_value("/proc")
                .value_parser(crate::flag::dir)
                .help("procfs mount point"),
        )
        .arg(
            Arg::new("path.sysfs")
                .long("path.sysfs")
                .value_name("DIR")
                .default_value("/sys")
                .value_parser(crate::flag::dir)
                .help("sysfs mount point"),
        )
        .arg(
            Arg::new("path.rootfs")
                .long("path.rootfs")
                .value_name("DIR")
                .default_value("/")
                .value_parser(crate::flag::dir)
                .help("Host root filesystem mount point (filesystem collector)"),
        )
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Start with every collector off; enable each with --collector.NAME"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .default_value("info")
                .value_parser(
                    clap::builder::PossibleValuesParser::new([
                        "error", "warn", "info", "debug", "trace",
                    ])
                    .try_map(|s| s.parse::<tracing::Level>()),
                )
                .help("Least severe log level written to stderr"),
        );
    // Each collector's flags are declared beside it, as node_exporter's
    // are, each default once.
    cmd = collectors::disk::Config::augment_args(cmd);
    cmd = collectors::network::Config::augment_args(cmd);
    cmd = collectors::filesystem::Config::augment_args(cmd);
    cmd = collectors::tcp_ports::TcpPortsConfig::augment_args(cmd);
    cmd = collectors::udp::Config::augment_args(cmd);
    cmd = collectors::cgroup::Config::augment_args(cmd);
    cmd = collectors::ebpf::EbpfConfig::augment_args(cmd);
    cmd = collectors::process::Config::augment_args(cmd);
    cmd = collectors::netns::Config::augment_args(cmd);
    cmd = collectors::textfile::Config::augment_args(cmd);
    cmd = crate::queue::QueueConfig::augment_args(cmd);
    for entry in ALL {
        let on = format!("collector.{}", entry.name);
        let off = format!("no-collector.{}", entry.name);
        let default = if entry.default_enabled { "on" } else { "off" };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    // The negative flag is hidden to keep --help short and
                    // named here instead, node_exporter's --[no-] habit.
                    .help(format!(
                        "Enable the {} collector [default: {default}; --no-collector.{} disables it]: {}",
                        entry.name, entry.name, entry.help
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .hide(true),
            );
    }
    // A subcommand's help leads with its own flags (clap lists the options
    // without a heading first); the exporter's follow under headings.
    let shared = |heading: &'static str, keep: fn(&Arg) -> bool| {
        cmd.get_arguments()
            .filter(move |a| keep(a))
            .map(move |a| {
                let heading = if a.get_id().as_str().starts_with("web.") {
                    "Serving options"
                } else {
                    heading
                };
                a.clone().help_heading(heading)
            })
            .collect::<Vec<_>>()
    };
    let proxy = proxy_args(
        Command::new("proxy")
            .about("Sidecar reverse proxy: forwards --listen to --upstream and serves the service's golden signals on --web.listen-address (host collectors off unless enabled)"),
    )
    .args(shared("Host collector options", |_| true));
    // `check` serves nothing: no --web.* flag is offered, or checked.
    let check = Command::new("check")
        .about("Samples every collector and queue on this host for a while (--for) and prints the USE table, worst first; exits 1 when anything is saturated, erroring or slow")
        .arg(
            Arg::new("for")
                .long("for")
                .value_name("DURATION")
                .default_value("10s")
                .value_parser(|s: &str| {
                    let d = parse_duration(s)?;
                    if d < Duration::from_millis(500) {
                        return Err("at least 500ms: two snapshots and a queue interval".to_string());
                    }
                    Ok(d)
                })
                .help("How long to sample (500ms or more)"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the report as JSON (every resource, the findings, failed collectors)"),
        )
        .args(shared("Collector options", |a| {
            !a.get_id().as_str().starts_with("web.")
        }));
    cmd.subcommand(proxy).subcommand(check)
}

fn proxy_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("listen")
            .long("listen")
            .value_name("ADDR")
            .required_unless_present("config.file")
            .requires("upstream")
            .value_parser(parse_listen)
            .help("Address the proxy accepts client connections on"),
    )
    .arg(
        Arg::new("upstream")
            .long("upstream")
            .value_name("URL")
            .required_unless_present("config.file")
            .requires("listen")
            // Checked in `parse`: clap's own error would print the value,
            // and a URL may carry a password.
            .help("The service, e.g. http://127.0.0.1:8081; request paths and queries are kept"),
    )
    .arg(
        Arg::new("service")
            .long("service")
            .value_name("NAME")
            .default_value("default")
            .help("The service label of the proxy's metrics"),
    )
    .arg(
        Arg::new("route")
            .long("route")
            .value_name("TEMPLATE")
            .action(ArgAction::Append)
            .value_parser(|s: &str| crate::proxy::Route::parse(s))
            .help("A route template for the http_route label, e.g. /users/{id} or /static/* (repeatable; first match wins; unmatched paths get an empty route, never the raw path)"),
    )
    .arg(
        Arg::new("upstream.connect-timeout")
            .long("upstream.connect-timeout")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::CONNECT_TIMEOUT)
            .value_parser(parse_duration)
            .help("Longest wait for a connection to the upstream (502 after)"),
    )
    .arg(
        Arg::new("upstream.timeout")
            .long("upstream.timeout")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::TIMEOUT)
            .value_parser(parse_duration)
            .help("Longest wait for the upstream's response headers (504 after; during an upload, from the last request-body bytes sent, and a client silent that long mid-upload gets 408), and longest silence within a response body (the response is cut off)"),
    )
    .arg(
        Arg::new("proxy.latency-target")
            .long("proxy.latency-target")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::LATENCY_TARGET)
            .value_parser(parse_duration)
            .help("p99 above which `sojourn check` and the / page call the service slow (exported as sojourn_proxy_latency_target_seconds)"),
    )
    .arg(
        Arg::new("proxy.header-timeout")
            .long("proxy.header-timeout")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::HEADER_TIMEOUT)
            .value_parser(parse_duration)
            .help("Longest wait for a client's request headers, and for a new connection's first byte (slow clients are closed)"),
    )
    .arg(
        Arg::new("proxy.idle-timeout")
            .long("proxy.idle-timeout")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::IDLE_TIMEOUT)
            .value_parser(parse_duration)
            .help("Longest wait for the next request on an idle keep-alive connection (nginx's keepalive_timeout); an HTTP/2 connection with no stream open that long is told GOAWAY"),
    )
    .arg(
        Arg::new("proxy.send-timeout")
            .long("proxy.send-timeout")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::SEND_TIMEOUT)
            .value_parser(parse_duration)
            .help("Longest a client may take nothing of its response (nginx's send_timeout); a client that stops reading is closed after (HTTP/2: sent a PING after that long without a frame, closed if it goes unanswered as long; a stream whose window stays shut that long is reset)"),
    )
    .arg(
        Arg::new("proxy.max-connections")
            .long("proxy.max-connections")
            .value_name("N")
            .default_value(crate::proxy::defaults::MAX_CONNECTIONS)
            .value_parser(clap::value_parser!(usize))
            .help("Most client connections at once; more are closed on arrival"),
    )
    .arg(
        Arg::new("proxy.drain-timeout")
            .long("proxy.drain-timeout")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::DRAIN_TIMEOUT)
            .value_parser(parse_duration)
            .help("On SIGTERM, longest wait for requests in flight before exiting"),
    )
    .arg(
        Arg::new("proxy.quantile-window")
            .long("proxy.quantile-window")
            .value_name("DURATION")
            .default_value(crate::proxy::defaults::QUANTILE_WINDOW)
            .value_parser(parse_duration)
            .help("Span of the sliding window of the latency quantiles (p50 … p99.9), turned every sixth of it"),
    )
    .arg(
        Arg::new("max-concurrency")
            .long("max-concurrency")
            .value_name("N")
            .default_value("0")
            .value_parser(clap::value_parser!(usize))
            .help("Most requests forwarded at once; more wait in the proxy's queue, measured as queue=\"proxy:<service>\" (0: no limit, no queue)"),
    )
    .arg(
        Arg::new("shed")
            .long("shed")
            .value_name("POLICY")
            .default_value("none")
            .value_parser(clap::value_parser!(crate::proxy::admission::Shed))
            .help("codel: answer 503 (Retry-After: 1) to a request still waiting after 2 × --queue.delay-target while the queue stands (needs --max-concurrency)"),
    )
    .arg(
        Arg::new("queue-order")
            .long("queue-order")
            .value_name("ORDER")
            .default_value("fifo")
            .value_parser(clap::value_parser!(crate::proxy::admission::Order))
            .help("adaptive-lifo: serve the newest waiting request first while the queue stands (needs --max-concurrency)"),
    )
}

/// Parses arguments (the program name first) into settings. Errors are
/// clap's, which name the flag and exit with status 2.
pub fn parse<I, T>(args: I) -> Result<Settings, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = command().try_get_matches_from(args)?;
    Ok(match m.subcommand_matches("proxy") {
        Some(p) => {
            let unlimited = p.get_one::<usize>("max-concurrency") == Some(&0);
            use crate::proxy::admission::{Order, Shed};
            let queued = [
                ("shed", p.get_one::<Shed>("shed") != Some(&Shed::None)),
                (
                    "queue-order",
                    p.get_one::<Order>("queue-order") != Some(&Order::Fifo),
                ),
            ];
            for (flag, set) in queued {
                if unlimited && set {
                    return Err(command().error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--{flag} needs --max-concurrency: without a limit there is no queue"
                        ),
                    ));
                }
            }
            let mut s = settings(p, true)?;
            if p.contains_id("listen") {
                let raw = value::<String>(p, "upstream")?;
                let upstream = crate::proxy::parse_upstream(&raw).map_err(|e| {
                    command().error(
                        clap::error::ErrorKind::ValueValidation,
                        format!("invalid value for '--upstream <URL>': {e}"),
                    )
                })?;
                s.services.push(proxy_config(p, upstream)?);
            }
            load_config(p, s)?
        }
        None => match m.subcommand_matches("check") {
            Some(c) => {
                let mut s = load_config(c, settings(c, false)?)?;
                // The report is the output: start-up notes would only bury it.
                if c.value_source("log.level") != Some(clap::parser::ValueSource::CommandLine) {
                    s.log_level = tracing::Level::WARN;
                }
                s.check = Some(CheckArgs {
                    window: value(c, "for")?,
                    json: c.get_flag("json"),
                });
                s
            }
            None => load_config(&m, settings(&m, false)?)?,
        },
    })
}

/// Adds `--config.file`'s services and probes; an unreadable or invalid
/// file is a usage error naming the file and the problem.
fn load_config(m: &ArgMatches, mut s: Settings) -> Result<Settings, clap::Error> {
    let cgroup = &s.collect.cgroup;
    if let Some(url) = &cgroup.kubelet_url {
        let endpoint = crate::kubelet::Endpoint::new(
            url.clone(),
            cgroup.kubelet_ca_file.clone(),
            cgroup.kubelet_insecure_skip_verify,
            cgroup.kubelet_token_file.clone(),
        )
        .map_err(|e| {
            command().error(
                clap::error::ErrorKind::InvalidValue,
                format!("--collector.cgroup.kubelet-url: {e}"),
            )
        })?;
        s.collect.cgroup.kubelet = Some(endpoint);
    }
    if let Some(path) = m.try_get_one::<PathBuf>("web.config.file").ok().flatten() {
        s.server.web = crate::web_config::load(path).map_err(|msg| {
            command().error(
                clap::error::ErrorKind::InvalidValue,
                format!("--web.config.file {msg}"),
            )
        })?;
    }
    let Some(path) = m.get_one::<PathBuf>("config.file") else {
        return Ok(s);
    };
    let invalid = |msg: String| {
        command().error(
            clap::error::ErrorKind::InvalidValue,
            format!("--config.file {msg}"),
        )
    };
    let cfg = crate::config::load(path).map_err(invalid)?;
    s.services.extend(cfg.services);
    crate::config::check_services(&s.services)
        .map_err(|e| invalid(format!("{} with --service/--listen: {e}", path.display())))?;
    s.probes = cfg.probes;
    Ok(s)
}

/// The value of flag `id`, which has a default or was required: clap's
/// own error, not a panic, if a flag's declaration and its reading ever
/// disagree.
fn value<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Result<T, clap::Error> {
    m.try_get_one::<T>(id)
        .map_err(|e| command().error(clap::error::ErrorKind::InvalidValue, format!("--{id}: {e}")))?
        .cloned()
        .ok_or_else(|| {
            command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("--{id} is required"),
            )
        })
}

fn proxy_config(m: &ArgMatches, upstream: hyper::Uri) -> Result<crate::proxy::Config, clap::Error> {
    let dur = |id: &str| value::<Duration>(m, id);
    Ok(crate::proxy::Config {
        listen: value(m, "listen")?,
        upstream,
        service: value(m, "service")?,
        routes: m
            .get_many::<crate::proxy::Route>("route")
            .map(|r| r.cloned().collect())
            .unwrap_or_default(),
        connect_timeout: dur("upstream.connect-timeout")?,
        timeout: dur("upstream.timeout")?,
        header_timeout: dur("proxy.header-timeout")?,
        idle_timeout: dur("proxy.idle-timeout")?,
        send_timeout: dur("proxy.send-timeout")?,
        max_connections: value(m, "proxy.max-connections")?,
        drain_timeout: dur("proxy.drain-timeout")?,
        quantile_window: dur("proxy.quantile-window")?,
        latency_target: dur("proxy.latency-target")?,
        admission: match value::<usize>(m, "max-concurrency")? {
            0 => None,
            n => Some(crate::proxy::admission::AdmissionConfig {
                max_concurrency: n,
                shed: m.get_one("shed").copied().unwrap_or_default(),
                order: m.get_one("queue-order").copied().unwrap_or_default(),
            }),
        },
    })
}

/// `proxy_mode`: host collectors are off unless enabled by name.
fn settings(m: &ArgMatches, proxy_mode: bool) -> Result<Settings, clap::Error> {
    let path = |id: &str| value::<PathBuf>(m, id);
    let disable_defaults = proxy_mode || m.get_flag("collector.disable-defaults");
    let process: collectors::process::Config = FromArgMatches::from_arg_matches(m)?;
    let textfile: collectors::textfile::Config = FromArgMatches::from_arg_matches(m)?;
    // A selection or a directory is asked for only to use it: giving one
    // enables its collector, unless --no-collector.NAME says otherwise.
    let chosen_by_setting = |name: &str| match name {
        "process" => process.include.is_some(),
        "textfile" => textfile.directory.is_some(),
        _ => false,
    };
    let collectors = ALL
        .iter()
        .filter(|e| {
            let off = m.get_flag(&format!("no-collector.{}", e.name));
            if chosen_by_setting(e.name) {
                !off
            } else if m.get_flag(&format!("collector.{}", e.name)) {
                true
            } else if off {
                false
            } else {
                e.default_enabled && !disable_defaults
            }
        })
        .map(|e| e.name)
        .collect::<Vec<_>>();
    // Other namespaces' sockets are read when the netns collector is on.
    let namespaces = collectors.contains(&"netns");
    let log_level = value(m, "log.level")?;
    // `check` has no --web.* flags (it serves nothing): none is set there.
    fn web<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
        m.try_get_one::<T>(id).ok().flatten().cloned()
    }
    Ok(Settings {
        server: crate::server::Config {
            listen: m
                .try_get_many::<ListenAddr>("web.listen-address")
                .ok()
                .flatten()
                .map(|v| v.copied().collect())
                .unwrap_or_default(),
            systemd_socket: web::<bool>(m, "web.systemd-socket").unwrap_or(false),
            telemetry_path: web(m, "web.telemetry-path").unwrap_or_default(),
            max_requests: web(m, "web.max-requests").unwrap_or(0),
            max_connections: web::<u64>(m, "web.max-connections")
                .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            scrape_timeout: web(m, "web.scrape-timeout").unwrap_or(Duration::MAX),
            web: Default::default(),
        },
        log_level,
        collectors,
        collect: collectors::Config {
            roots: Roots {
                procfs: path("path.procfs")?,
                sysfs: path("path.sysfs")?,
                rootfs: path("path.rootfs")?,
            },
            disk: FromArgMatches::from_arg_matches(m)?,
            network: FromArgMatches::from_arg_matches(m)?,
            filesystem: FromArgMatches::from_arg_matches(m)?,
            process,
            textfile,
            netns: collectors::netns::Config {
                enabled: namespaces,
                ..FromArgMatches::from_arg_matches(m)?
            },
            cgroup: FromArgMatches::from_arg_matches(m)?,
            ebpf: FromArgMatches::from_arg_matches(m)?,
            tcp_ports: FromArgMatches::from_arg_matches(m)?,
            udp: FromArgMatches::from_arg_matches(m)?,
        },
        queue: FromArgMatches::from_arg_matches(m)?,
        services: Vec::new(),
        probes: Vec::new(),
        check: None,
    })
}

#[cfg(test)]
mod tests;
