//! Runs the queue sampler's read-and-observe step N times back to back on
//! this host, without its sleep, for profilers:
//! `valgrind --tool=callgrind target/release/examples/sampler_loop 2000`.
use sojourn::queue::QueueSet;
use sojourn::queue::sampler::Sources;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let s = sojourn::cli::parse(["sojourn"]).expect("default flags");
    let mut sources = Sources::new(&s.collect, &s.queue);
    let mut queues = QueueSet::new(s.queue.clone());
    let mut samples = Vec::new();
    let start = std::time::Instant::now();
    for i in 0..n {
        let now = i * 10_000_000;
        samples.clear();
        let _ = sources.read(now, &mut samples);
        for s in &samples {
            queues.observe(now, s);
        }
    }
    println!(
        "{n} ticks, {:.1} us each",
        start.elapsed().as_secs_f64() / n as f64 * 1e6
    );
}
