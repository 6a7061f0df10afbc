use std::process::ExitCode;
use std::sync::Arc;

use sojourn::{cli, scrape::Scraper, server};

fn main() -> ExitCode {
    let settings = match cli::parse(std::env::args_os()) {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(settings.log_level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // One thread serves HTTP; scrapes run on the blocking pool, at most
    // --web.max-requests of them at once.
    let blocking = if settings.max_requests == 0 {
        512
    } else {
        settings.max_requests + 1
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sojourn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(settings))
}

async fn run(settings: cli::Settings) -> ExitCode {
    if settings.proxy.is_some() {
        return run_proxy(settings).await;
    }
    let Some(listener) = bind(settings.listen, "--web.listen-address").await else {
        return ExitCode::FAILURE;
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scraper = Scraper::new(settings.collect.clone(), &settings.collectors);
    tracing::info!(
        %address,
        path = %settings.telemetry_path,
        collectors = %settings.collectors.join(","),
        "listening"
    );
    let app = Arc::new(server::App::new(scraper, settings));
    server::serve(listener, app, shutdown_signal()).await;
    tracing::info!("shutting down");
    ExitCode::SUCCESS
}

/// `sojourn proxy`: the proxy on --listen, its metrics (and any host
/// collectors enabled) on --web.listen-address.
async fn run_proxy(mut settings: cli::Settings) -> ExitCode {
    let Some(cfg) = settings.proxy.take() else {
        return ExitCode::FAILURE;
    };
    let Some(proxy_listener) = bind(cfg.listen, "--listen").await else {
        return ExitCode::FAILURE;
    };
    let Some(metrics_listener) = bind(settings.listen, "--web.listen-address").await else {
        return ExitCode::FAILURE;
    };
    let stats = Arc::new(sojourn::proxy::stats::ServiceStats::new(
        cfg.service.clone(),
    ));
    let mut collectors: Vec<(&'static str, Box<dyn sojourn::collectors::Collect>)> =
        sojourn::collectors::ALL
            .iter()
            .filter(|e| settings.collectors.contains(&e.name))
            .map(|e| (e.name, (e.build)(&settings.collect)))
            .collect();
    let admission = cfg.admission.clone().map(|a| {
        Arc::new(sojourn::proxy::admission::Admission::new(
            a,
            &cfg.service,
            settings.collect.queue.clone(),
        ))
    });
    collectors.push((
        "proxy",
        Box::new(sojourn::proxy::ProxyCollector {
            stats: stats.clone(),
            admission: admission.clone(),
        }),
    ));
    let scraper = Scraper::with_collectors(settings.collect.clone(), collectors);
    let address =
        |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        proxy = %address(&proxy_listener),
        upstream = %cfg.upstream,
        metrics = %address(&metrics_listener),
        service = %cfg.service,
        "proxying"
    );
    let app = Arc::new(server::App::new(scraper, settings));
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = tokio::spawn(server::serve(metrics_listener, app, async {
        let _ = drained_rx.await;
    }));
    sojourn::proxy::serve(proxy_listener, cfg, stats, admission, shutdown_signal()).await;
    let _ = drained_tx.send(());
    let _ = metrics.await;
    tracing::info!("drained, exiting");
    ExitCode::SUCCESS
}

/// Binds `addr`, or says which flag named an address it cannot listen on.
async fn bind(addr: std::net::SocketAddr, flag: &str) -> Option<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| eprintln!("sojourn: cannot listen on {addr} ({flag}): {e}"))
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
