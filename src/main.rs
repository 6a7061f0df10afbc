use std::process::ExitCode;
use std::sync::Arc;

use sojourn::{cli, scrape::Scraper, server};

fn main() -> ExitCode {
    // Started by itself to load eBPF programs (see sojourn::ebpf): no CLI.
    if let Some(code) = sojourn::ebpf::serve_loader_if_asked() {
        return code;
    }
    // eBPF programs load in a child process of this executable, so that
    // the kernel's BTF, parsed to load them, never enters this one's memory.
    sojourn::ebpf::set_loader_executable("/proc/self/exe".into());
    let settings = match cli::parse(std::env::args_os()) {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(settings.log_level)
        .with_target(false)
        // NO_COLOR (no-color.org): set to anything but empty, no colours.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    match sojourn::rt::raise_open_files_limit() {
        Ok(n) => tracing::debug!(limit = n, "open files"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }

    if let Some(args) = settings.check.clone() {
        let scraper = Scraper::new(
            settings.collect.clone(),
            settings.queue.clone(),
            &settings.collectors,
        );
        return sojourn::check::run(&scraper, args.window, args.json);
    }
    // One thread serves HTTP; scrapes run on the blocking pool, at most
    // --web.max-requests of them at once.
    let blocking = if settings.server.max_requests == 0 {
        512
    } else {
        settings.server.max_requests + 1
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        // Ready tasks are run 256 at a time between looks at the sockets
        // (tokio's default 61): the proxy's tasks are short, and fewer
        // epoll round trips gave +5 % requests/s through it under load
        // (scripts/bench_proxy.py, two runtimes side by side in one run).
        .event_interval(256)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sojourn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(settings));
    // Work still on the blocking pool (a bcrypt of a high cost, a read of
    // a hung file) does not hold up the exit: its answer has no one to go to.
    runtime.shutdown_background();
    code
}

/// The exporter; any services from `sojourn proxy` or `--config.file`
/// proxied, and any probes run, on the same thread.
async fn run(mut settings: cli::Settings) -> ExitCode {
    let services = std::mem::take(&mut settings.services);
    let probes = std::mem::take(&mut settings.probes);
    // Every address is bound before anything runs: a taken port stops
    // start-up, naming the flag or service.
    let metrics_listeners = if settings.server.systemd_socket {
        match server::systemd_listeners() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("sojourn: --web.systemd-socket: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut bound = Vec::with_capacity(settings.server.listen.len());
        for addr in &settings.server.listen {
            let Some(listener) = bind(*addr, "--web.listen-address") else {
                return ExitCode::FAILURE;
            };
            bound.push(listener);
        }
        bound
    };
    let mut proxies = Vec::with_capacity(services.len());
    for cfg in services {
        let what = format!("the listen address of service {:?}", cfg.service);
        let Some(listener) = bind(server::ListenAddr::Addr(cfg.listen), &what) else {
            return ExitCode::FAILURE;
        };
        proxies.push((listener, cfg));
    }
    let mut collectors =
        sojourn::scrape::build(&settings.collect, &settings.queue, &settings.collectors);
    let handles: Vec<_> = proxies
        .iter()
        .map(|(_, cfg)| cfg.new_handle(settings.queue.clone()))
        .collect();
    if !handles.is_empty() {
        collectors.push((
            "proxy",
            Box::new(sojourn::proxy::ProxyCollector {
                services: handles.clone(),
            }),
        ));
    }
    if !probes.is_empty() {
        let prober = Arc::new(sojourn::probe::Prober::start(probes));
        collectors.push(("probe", Box::new(sojourn::probe::ProbeCollector(prober))));
    }
    let scraper = Scraper::with_collectors(settings.collect.clone(), collectors);
    if let Some(auth) = &settings.server.web.auth {
        auth.warn_of_costly_hashes();
    }
    for listener in &metrics_listeners {
        tracing::info!(
            address = %address(listener),
            path = %settings.server.telemetry_path,
            collectors = %scraper.collector_names().join(","),
            "listening"
        );
    }
    let app = Arc::new(server::App::new(scraper, settings.server));
    if proxies.is_empty() {
        server::serve(metrics_listeners, app, shutdown_signal()).await;
        tracing::info!("shutting down");
        return ExitCode::SUCCESS;
    }
    // SIGTERM stops every proxy from accepting; metrics stay served until
    // the last one has drained, so that the drain itself is observable.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    for ((listener, cfg), handle) in proxies.into_iter().zip(handles) {
        tracing::info!(
            proxy = %address(&listener),
            upstream = %cfg.upstream,
            service = %cfg.service,
            "proxying"
        );
        let mut stop = stop_rx.clone();
        running.spawn(sojourn::proxy::serve(listener, cfg, handle, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = tokio::spawn(server::serve(metrics_listeners, app, async {
        let _ = drained_rx.await;
    }));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    while running.join_next().await.is_some() {}
    let _ = drained_tx.send(());
    let _ = metrics.await;
    tracing::info!("drained, exiting");
    ExitCode::SUCCESS
}

fn address(l: &tokio::net::TcpListener) -> String {
    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// Binds `addr`, or says which flag or service named an address it
/// cannot listen on.
fn bind(addr: server::ListenAddr, named_by: &str) -> Option<tokio::net::TcpListener> {
    server::bind(addr)
        .map_err(|e| eprintln!("sojourn: cannot listen on {addr} ({named_by}): {e}"))
        .ok()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
