//! Where the kernel's files are: `--path.procfs`, `--path.sysfs`,
//! `--path.rootfs`. Passed to every collector so that a container with the
//! host's /proc mounted elsewhere, and tests with a fixture tree, read the
//! same code paths as a bare host.

use std::io::{self, Read};
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

/// Most /proc files sojourn reads fit in one read of this size.
const READ_CHUNK: usize = 16 * 1024;

/// Reads a whole file, turning a missing file into [`CollectError::Missing`]
/// so collectors can tell "kernel lacks this" from a real failure.
///
/// /proc files report size 0, so `std::fs::read` would stat the file and then
/// grow its buffer over several reads; starting with a 16 KiB buffer makes a
/// typical /proc file cost one open, two reads and a close.
pub fn read(path: &Path) -> Result<String, CollectError> {
    let io_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            CollectError::Missing(path.display().to_string())
        } else {
            CollectError::Io(format!("{}: {e}", path.display()))
        }
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    // Through `Take`, read_to_end skips File's size probe (a statx that /proc
    // answers with 0) and reads straight into the reserved capacity.
    file.take(u64::MAX).read_to_end(&mut buf).map_err(io_err)?;
    String::from_utf8(buf).map_err(|_| CollectError::parse(path, "file is not valid UTF-8"))
}

/// Reads a small sysfs attribute, trimmed; `None` when absent or unreadable
/// (optional attributes such as link speed fail with EINVAL when the link is down).
pub fn read_attr(path: &Path) -> Option<String> {
    read(path).ok().map(|s| s.trim().to_string())
}
