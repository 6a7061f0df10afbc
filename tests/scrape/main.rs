//! Scrapes of fixture trees: the golden output, formats and encodings
//! (e2e), and every collector's sources missing or malformed (failures).

#[path = "../common/mod.rs"]
mod common;

mod e2e;
mod failures;
