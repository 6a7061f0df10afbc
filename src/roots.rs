//! Where the kernel's files are: `--path.procfs`, `--path.sysfs`,
//! `--path.rootfs`. Passed to every collector so that a container with the
//! host's /proc mounted elsewhere, and tests with a fixture tree, read the
//! same code paths as a bare host.

use std::io;
use std::path::{Path, PathBuf};

use crate::collectors::CollectError;

#[derive(Debug, Clone)]
pub struct Roots {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl Roots {
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }

    /// A host path (as seen in mountinfo) inside `--path.rootfs`.
    pub fn host_path(&self, host: &Path) -> PathBuf {
        match host.strip_prefix("/") {
            Ok(rel) => self.rootfs.join(rel),
            Err(_) => self.rootfs.join(host),
        }
    }

    pub fn read_proc(&self, rel: &str) -> Result<String, CollectError> {
        read(&self.proc(rel))
    }

    pub fn read_sys(&self, rel: &str) -> Result<String, CollectError> {
        read(&self.sys(rel))
    }
}

/// Reads a whole file, turning a missing file into [`CollectError::Missing`]
/// so collectors can tell "kernel lacks this" from a real failure.
pub fn read(path: &Path) -> Result<String, CollectError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| CollectError::parse(path, "file is not valid UTF-8")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(CollectError::Missing(path.display().to_string()))
        }
        Err(e) => Err(CollectError::Io(format!("{}: {e}", path.display()))),
    }
}

/// Reads a small sysfs attribute, trimmed; `None` when absent or unreadable
/// (optional attributes such as link speed fail with EINVAL when the link is down).
pub fn read_attr(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}
