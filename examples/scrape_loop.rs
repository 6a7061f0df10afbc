//! Runs N in-process scrapes of this host, for profilers (callgrind):
//! `cargo build --release --example scrape_loop && valgrind --tool=callgrind target/release/examples/scrape_loop 200`;
//! flags after the count choose collectors as the exporter's do
//! (`scrape_loop 200 --no-collector.queue --no-collector.tcp_ports`).
use sojourn::{cli, metrics, scrape::Scraper};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let flags = std::iter::once("sojourn".to_string()).chain(std::env::args().skip(2));
    let s = cli::parse(flags).expect("flags");
    let scraper = Scraper::new(s.collect, s.queue, &s.collectors);
    let mut bytes = 0;
    for _ in 0..n {
        bytes += metrics::encode(scraper.scrape(), metrics::Format::Text).len();
    }
    println!("{n} scrapes, {bytes} bytes");
}
