//! The exporter's `/` page: the live USE table in a browser. Its HTML,
//! script and stylesheet are in the binary (no CDN, nothing to install);
//! the HTTP server only routes to what is here.

use std::sync::Arc;

use super::live::Live;
use crate::scrape::Scraper;

const PAGE: &str = include_str!("page/index.html");
const JS: &str = include_str!("page/sojourn.js");
const CSS: &str = include_str!("page/sojourn.css");

/// The page's script or stylesheet at `path`, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/assets/sojourn.js" => Some((JS, "text/javascript; charset=utf-8")),
        "/assets/sojourn.css" => Some((CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page, naming the version, the metrics' path and the collectors.
/// Its links are relative, so it works behind a path prefix; the
/// telemetry path is made relative too.
pub fn landing(telemetry_path: &str, collectors: &[&str]) -> String {
    let collectors: String = collectors
        .iter()
        .map(|c| format!("<li>{}</li>", escape(c)))
        .collect();
    let metrics = escape(telemetry_path.trim_start_matches('/'));
    PAGE.replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
        .replace("{{METRICS_PATH}}", &metrics)
        .replace("{{COLLECTORS}}", &collectors)
}

/// `/api/use`: the live USE table as JSON (every resource's history with
/// `all`). The first request starts the sampling task, which stops a
/// minute after the last; call from within the runtime.
pub fn api_use(live: &Arc<Live>, scraper: &Arc<Scraper>, all: bool) -> String {
    if live.touch() {
        tokio::spawn(super::live::sample(live.clone(), scraper.clone()));
    }
    live.json(all)
}
