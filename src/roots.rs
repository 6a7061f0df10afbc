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

/// A missing file becomes [`CollectError::Missing`], so collectors can tell
/// "kernel lacks this" from a real failure.
fn io_error(path: &Path, e: io::Error) -> CollectError {
    if e.kind() == io::ErrorKind::NotFound {
        CollectError::Missing(path.display().to_string())
    } else {
        CollectError::Io(format!("{}: {e}", path.display()))
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
    let io_err = |e| io_error(path, e);
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

/// A /proc file kept open and re-read from offset 0, for the sampler that
/// reads the same few files a hundred times a second: it saves the path
/// lookup, open and close of each read (procfs regenerates the content on
/// every read at offset 0), and the read that would only return EOF.
pub struct KeptFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl KeptFile {
    pub fn new(path: PathBuf) -> Self {
        KeptFile {
            path,
            file: None,
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's whole current content. After an error the file is
    /// reopened on the next call.
    pub fn read(&mut self) -> Result<&str, CollectError> {
        match self.read_inner() {
            Ok(()) => std::str::from_utf8(&self.buf)
                .map_err(|_| CollectError::parse(&self.path, "file is not valid UTF-8")),
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    fn read_inner(&mut self) -> Result<(), CollectError> {
        let path = &self.path;
        let io_err = |e| io_error(path, e);
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(path).map_err(io_err)?);
        }
        let Some(file) = self.file.as_ref() else {
            return Err(CollectError::Io(format!("{}: not open", path.display())));
        };
        self.buf.clear();
        let mut offset = 0u64;
        loop {
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(self.buf.capacity().max(READ_CHUNK));
            }
            let asked = self.buf.capacity() - self.buf.len();
            // spare_capacity extends the Vec's length by what pread wrote.
            let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut self.buf), offset)
                .map_err(|e| io_err(e.into()))?;
            // procfs (seq_file) fills a read until the buffer or the content
            // ends, so a short read is the end: no second read for EOF.
            if n < asked {
                return Ok(());
            }
            offset += n as u64;
        }
    }
}
