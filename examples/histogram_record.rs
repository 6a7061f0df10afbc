//! Cost of recording one request into the proxy's latency histogram, with
//! two threads recording at once (budget: ≤ 50 ns):
//! `cargo run --release --example histogram_record`.
//! "observe" is the atomic histogram alone; "lookup + observe" adds finding
//! the series by its labels; "+ window" adds the HdrHistogram of the
//! sliding-window quantiles: all the proxy does at the end of each request.
use std::sync::Arc;
use std::time::Instant;

use sojourn::proxy::stats::{AtomicHistogram, RequestKey, ServiceStats};

fn per_record_ns(threads: usize, n: u64, record: impl Fn(u64) + Send + Sync + 'static) -> f64 {
    let record = Arc::new(record);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let record = record.clone();
            std::thread::spawn(move || (0..n).for_each(|i| record(i)))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    // Wall time per record on each thread: what one request pays.
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n = 20_000_000;
    let h = Arc::new(AtomicHistogram::default());
    for threads in [1, 2] {
        let h = h.clone();
        let ns = per_record_ns(threads, n, move |i| {
            h.observe((i % 1000) as f64 * 1e-5);
        });
        println!("observe, {threads} thread(s): {ns:.1} ns per record");
    }
    let stats = Arc::new(ServiceStats::with_routes(
        "bench",
        vec![Arc::from("/users/{id}")],
    ));
    let key = RequestKey {
        method: "GET",
        status: 200,
        route: Arc::from("/users/{id}"),
    };
    for threads in [1, 2] {
        let (stats, key) = (stats.clone(), key.clone());
        let ns = per_record_ns(threads, n / 4, move |i| {
            stats.record_duration(&key, (i % 1000) as f64 * 1e-5);
        });
        println!("lookup + observe, {threads} thread(s): {ns:.1} ns per record");
    }
    let w = Arc::new(sojourn::proxy::window::WindowedQuantiles::default());
    for threads in [1, 2] {
        let w = w.clone();
        let ns = per_record_ns(threads, n / 4, move |i| {
            w.record((i % 1000) as f64 * 1e-5);
        });
        println!("window alone, {threads} thread(s): {ns:.1} ns per record");
    }
    for threads in [1, 2] {
        let (stats, key) = (stats.clone(), key.clone());
        let ns = per_record_ns(threads, n / 4, move |i| {
            let s = (i % 1000) as f64 * 1e-5;
            stats.record_duration(&key, s);
            stats.record_window(Some(0), s);
        });
        println!("lookup + observe + window, {threads} thread(s): {ns:.1} ns per record");
    }
}
