//! System-wide file handle utilization from `/proc/sys/fs/file-nr`.
//!
//! ```text
//! 1024    0    1631329
//! ```
//! allocated handles, allocated-but-unused (always 0 since 2.6), maximum
//! (Documentation/admin-guide/sysctl/fs.rst "file-max & file-nr").

use super::{Collect, CollectError, Config, ParseError, parse_u64};
use crate::metrics::{Desc, Family};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileNr {
    pub allocated: u64,
    pub maximum: u64,
}

pub fn parse_file_nr(text: &str) -> Result<FileNr, ParseError> {
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() != 3 {
        return Err(ParseError(format!("{} fields, 3 expected", f.len())));
    }
    Ok(FileNr {
        allocated: parse_u64("allocated", f[0])?,
        maximum: parse_u64("maximum", f[2])?,
    })
}

const ALLOCATED: Desc = Desc::gauge(
    "filefd_allocated",
    "Utilization: file handles allocated system-wide (/proc/sys/fs/file-nr field 1).",
);
const MAXIMUM: Desc = Desc::gauge(
    "filefd_maximum",
    "Utilization (denominator): most file handles the kernel will allocate, fs.file-max (/proc/sys/fs/file-nr field 3).",
);

pub struct FilefdCollector;

impl Collect for FilefdCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("sys/fs/file-nr");
        let nr = parse_file_nr(&crate::roots::read_kept(&path)?)
            .map_err(|e| CollectError::parse(&path, e))?;
        Ok(vec![
            Family::single(ALLOCATED, nr.allocated),
            Family::single(MAXIMUM, nr.maximum),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixture() {
        let nr = parse_file_nr(include_str!("../../tests/fixtures/proc/sys/fs/file-nr")).unwrap();
        assert_eq!(
            nr,
            FileNr {
                allocated: 1024,
                maximum: 1631329
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_file_nr("1 2\n").is_err());
        assert!(parse_file_nr("a 0 3\n").is_err());
        assert!(parse_file_nr("").is_err());
    }
}
