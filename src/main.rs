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
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "sojourn: cannot listen on {} (--web.listen-address): {e}",
                settings.listen
            );
            return ExitCode::FAILURE;
        }
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
