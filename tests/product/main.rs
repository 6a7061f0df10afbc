//! The product files as code: alert rules and their runbooks, dashboards,
//! deployment manifests, and the documents (metrics reference, links),
//! each checked against what the binary emits or accepts. One test binary:
//! none of these needs a quiet machine.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod dashboards;
mod deploy;
mod docs;
