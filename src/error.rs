//! What reading a kernel source can go wrong with: the errors of the
//! source layer (roots, parsers, netlink, the kubelet's list), which the
//! collectors and the queue sampler above it report.

use std::fmt;
use std::path::Path;

/// Why a collector produced no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectError {
    /// A source file is absent. When a collector decides the kernel simply
    /// lacks the feature it reports [`CollectError::Unsupported`] instead.
    Missing(String),
    /// The kernel does not provide this source (config option off, no
    /// hardware), or refuses it to this process (no capability for eBPF).
    Unsupported(String),
    /// Reading failed (permission, I/O).
    Io(String),
    /// The content was not what the kernel documents.
    Parse(String),
    /// The collector panicked; caught so the scrape survives.
    Panicked(String),
}

impl CollectError {
    /// A parse failure in the file at `path`.
    pub fn parse(path: &Path, what: impl fmt::Display) -> Self {
        CollectError::Parse(format!("{}: {what}", path.display()))
    }

    /// Converts "file missing" into "kernel lacks this feature".
    pub fn missing_means_unsupported(self, why: &str) -> Self {
        match self {
            CollectError::Missing(p) => CollectError::Unsupported(format!("{p} absent: {why}")),
            other => other,
        }
    }
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::Missing(p) => write!(f, "{p}: file not found"),
            CollectError::Unsupported(why) => write!(f, "not available here: {why}"),
            CollectError::Io(e) => write!(f, "read failed: {e}"),
            CollectError::Parse(e) => write!(f, "unexpected content: {e}"),
            CollectError::Panicked(e) => write!(f, "collector panicked: {e}"),
        }
    }
}

impl std::error::Error for CollectError {}

/// What a pure parser reports: which line or field was not as the kernel
/// documents it. The collector adds the file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
