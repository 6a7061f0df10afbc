//! Runs N in-process scrapes of this host, for profilers (callgrind):
//! `cargo build --release --example scrape_loop && valgrind --tool=callgrind target/release/examples/scrape_loop 200`.
use sojourn::{cli, metrics, scrape::Scraper};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let s = cli::parse(["sojourn"]).expect("default flags");
    let scraper = Scraper::new(s.collect, s.queue, &s.collectors);
    let mut bytes = 0;
    for _ in 0..n {
        bytes += metrics::encode(scraper.scrape(), metrics::Format::Text).len();
    }
    println!("{n} scrapes, {bytes} bytes");
}
