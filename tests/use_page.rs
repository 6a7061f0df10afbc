//! The live USE page at `/`, loaded in headless Chromium (Debian's
//! `chromium`): the table fills from `/api/use`, a CPU fault turns its row
//! red with the evidence under it, and the page renders to a screenshot.
//! Without Chromium the test is skipped, unless SOJOURN_REQUIRE_CHROMIUM=1
//! (as in .ci/run) makes that a failure.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if found.is_none() {
        common::skip_unless_required(
            "SOJOURN_REQUIRE_CHROMIUM",
            "no chromium is installed (apt-get install chromium)",
        );
    }
    found
}

/// Runs headless Chromium on `url` with `args`; the page's scripts get
/// `budget` of virtual time (fetches to sojourn are real).
fn headless(browser: &str, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

/// A `<tr ...>` element of the dumped DOM whose attributes include `attr`.
fn row<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let at = dom.find(attr)?;
    let start = dom[..at].rfind("<tr")?;
    let end = dom[at..].find("</tr>")? + at;
    Some(&dom[start..end])
}

#[test]
fn the_page_shows_the_live_use_table_and_a_standing_cpu_queue_in_red() {
    let Some(browser) = chromium() else { return };
    let exporter = common::start(&[]);
    let base = format!("http://{}/", exporter.addr);

    // The first /api/use starts the sampler; wait until it has a table so
    // that the page's first fetch already has one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = common::get(exporter.addr, "/api/use", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        if r.text().contains("\"ready\":true") {
            break;
        }
        assert!(Instant::now() < deadline, "the live table never filled");
        std::thread::sleep(Duration::from_millis(200));
    }

    let dom = headless(browser, &base, &["--dump-dom"]);
    assert!(dom.contains("<title>sojourn — USE</title>"), "{dom}");
    let cpu = row(&dom, "data-resource=\"cpu\"").expect("a cpu row");
    assert_eq!(cpu.matches("<td").count(), 6, "{cpu}");
    assert!(
        cpu.contains("<svg class=\"spark\""),
        "a history chart: {cpu}"
    );
    // With its scale: utilization on 0–100 %, saturation to a stated top.
    assert!(
        cpu.contains("class=\"scale\"")
            && (cpu.contains("saturation 0–") || cpu.contains("collecting history")),
        "the chart states its scale: {cpu}"
    );
    assert!(row(&dom, "data-resource=\"memory\"").is_some(), "{dom}");
    assert!(
        dom.contains("data-state=\"clear\"") || dom.contains("data-state=\"findings\""),
        "the status line says what was found: {dom}"
    );
    assert!(
        dom.contains("href=\"metrics\""),
        "the metrics are a click away"
    );

    // More busy processes than CPUs: the run queue stands, and within the
    // live window (5 s) the page says so.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy = common::busy_shells(cpus + 2);
    let started = Instant::now();
    loop {
        let r = common::get(exporter.addr, "/api/use", &[]).text();
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        if v["report"]["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "cpu"))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "cpu never saturated: {r}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let dom = headless(browser, &base, &["--dump-dom"]);
    let shot = tempfile::tempdir().unwrap();
    let png_path = shot.path().join("use.png");
    headless(
        browser,
        &base,
        &[
            "--window-size=1200,900",
            &format!("--screenshot={}", png_path.display()),
        ],
    );
    let blank_path = shot.path().join("blank.png");
    headless(
        browser,
        "about:blank",
        &[
            "--window-size=1200,900",
            &format!("--screenshot={}", blank_path.display()),
        ],
    );
    drop(busy);
    assert!(dom.contains("data-state=\"findings\""), "{dom}");
    let cpu = row(&dom, "data-resource=\"cpu\"").expect("a cpu row");
    assert!(cpu.starts_with("<tr class=\"saturated\""), "{cpu}");
    // Seconds of history by now: the chart states both scales.
    assert!(
        cpu.contains("utilization 0–100 %, saturation 0–"),
        "the chart's scale: {cpu}"
    );
    assert!(
        dom.contains("run queue standing") || dom.contains("stall (PSI some) standing"),
        "the evidence is on the page: {dom}"
    );
    let png = std::fs::read(&png_path).unwrap();
    let blank = std::fs::read(&blank_path).unwrap();
    assert_eq!(png_size(&png), (1200, 900));
    // A rendered table compresses far worse than an empty page.
    assert!(
        png.len() > 4 * blank.len(),
        "screenshot {} bytes, blank page {} bytes",
        png.len(),
        blank.len()
    );
}

#[test]
fn the_assets_are_served_from_the_binary() {
    let exporter = common::start(&[]);
    let js = common::get(exporter.addr, "/assets/sojourn.js", &[]);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.text().contains("api/use"));
    let css = common::get(exporter.addr, "/assets/sojourn.css", &[]);
    assert_eq!(css.status, 200);
    let page = common::get(exporter.addr, "/", &[]).text();
    for link in [
        "assets/sojourn.js",
        "assets/sojourn.css",
        "href=\"metrics\"",
    ] {
        assert!(page.contains(link), "{link}: {page}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN: {page}"
    );
    assert!(!page.contains("{{"), "every placeholder filled: {page}");
}
