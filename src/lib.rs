//! sojourn: reads the Linux kernel's own accounting and serves it as
//! Prometheus metrics organised by the USE method (utilization, saturation,
//! errors per resource).
//!
//! Data flow: [`cli`] turns flags into settings; [`server`] answers a scrape
//! by running [`scrape::Scraper`] on the blocking pool; the scraper runs each
//! enabled collector in [`collectors`], which reads files under
//! [`roots::Roots`], parses them with pure functions and maps the values onto
//! [`metrics::Family`] snapshots; [`metrics::encode`] writes the exposition
//! format the scraper asked for.

pub mod atomic_histogram;
pub mod check;
pub mod cli;
pub mod collectors;
pub mod config;
pub mod duration;
pub mod ebpf;
pub mod error;
pub mod flag;
pub mod inet_diag;
pub mod kube;
pub mod kubelet;
pub mod layers;
pub mod metrics;
pub mod native;
pub mod netns;
pub mod probe;
pub mod proxy;
pub mod queue;
pub mod roots;
pub mod rt;
pub mod scrape;
pub mod server;
pub mod tls_client;
pub mod web_config;
