//! Where the kernel's files are: `--path.procfs`, `--path.sysfs`,
//! `--path.rootfs`. Passed to every collector so that a container with the
//! host's /proc mounted elsewhere, and tests with a fixture tree, read the
//! same code paths as a bare host.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::CollectError;

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
/// A cgroup's files are a line or a few dozen; memory.stat, the longest,
/// is under 2 KiB.
const SMALL_READ: usize = 4 * 1024;

/// Reads a whole file, turning a missing file into [`CollectError::Missing`]
/// so collectors can tell "kernel lacks this" from a real failure.
///
/// /proc files report size 0, so `std::fs::read` would stat the file and then
/// grow its buffer over several reads; starting with a 16 KiB buffer makes a
/// typical /proc file cost one open, two reads and a close.
pub fn read(path: &Path) -> Result<String, CollectError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    read_file(path, file)
}

fn read_file(path: &Path, file: std::fs::File) -> Result<String, CollectError> {
    let io_err = |e| io_error(path, e);
    let mut buf = Vec::with_capacity(READ_CHUNK);
    // Through `Take`, read_to_end skips File's size probe (a statx that /proc
    // answers with 0) and reads straight into the reserved capacity.
    file.take(u64::MAX).read_to_end(&mut buf).map_err(io_err)?;
    String::from_utf8(buf).map_err(|_| CollectError::parse(path, "file is not valid UTF-8"))
}

/// A directory whose files are read by name, each with one `openat`
/// relative to it: a cgroup's dozen files then cost one path walk, not a
/// dozen (each walk of `/sys/fs/cgroup/memory/kubepods/…/file` is a fifth
/// of reading the file). The directory is held only while it is read, so
/// a removed cgroup is never pinned.
pub struct Dir {
    path: PathBuf,
    fd: rustix::fd::OwnedFd,
}

impl Dir {
    /// `None` when the directory does not exist.
    pub fn open(path: &Path) -> Result<Option<Dir>, CollectError> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir {
                path: path.to_path_buf(),
                fd,
            })),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(io_error(path, e.into())),
        }
    }

    /// The full path of a file in it, for errors.
    pub fn path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A file's content; `None` when the directory has no such file.
    pub fn read(&self, name: &str) -> Result<Option<String>, CollectError> {
        use rustix::fs::{Mode, OFlags};
        match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let path = || self.path(name);
                let io_err = |e: io::Error| io_error(&path(), e);
                // Read on the stack, kept at its own size: a large buffer
                // per file would make the allocator sort its free lists
                // at every one.
                let mut first = [0u8; SMALL_READ];
                let n = rustix::io::pread(&fd, &mut first, 0).map_err(|e| io_err(e.into()))?;
                let bytes = if n < first.len() {
                    first[..n].to_vec()
                } else {
                    let mut buf = Vec::with_capacity(2 * SMALL_READ);
                    buf.extend_from_slice(&first);
                    read_rest(&fd, &mut buf).map_err(io_err)?;
                    buf
                };
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| CollectError::parse(&path(), "file is not valid UTF-8"))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io_error(&self.path(name), e.into())),
        }
    }
}

/// A mount table (`/proc/PID/mountinfo`) kept open and read again only
/// when the kernel says it changed: poll(2) on it reports POLLPRI once
/// any mount, unmount or remount happened in its namespace since the last
/// poll (Documentation/filesystems/proc.rst, 3.5). A node running pods has
/// hundreds of mounts; formatting them at every scrape is what this saves.
pub struct MountTable {
    path: PathBuf,
    file: std::fs::File,
    /// Whether the file is procfs's, which polls; a copy on disk (a
    /// fixture tree) never reports a change and is read every time.
    polls: bool,
}

impl MountTable {
    pub fn open(path: &Path) -> Result<MountTable, CollectError> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let polls = fs_magic(&file) == Some(PROC_SUPER_MAGIC);
        Ok(MountTable {
            path: path.to_path_buf(),
            file,
            polls,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the table may differ from the last [`MountTable::read`]
    /// (always, for a file that does not poll). The first call after
    /// opening says no: read once after opening.
    pub fn changed(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        if !self.polls {
            return true;
        }
        let mut fds = [PollFd::new(&self.file, PollFlags::PRI)];
        match poll(&mut fds, Some(&Timespec::default())) {
            Ok(_) => fds[0]
                .revents()
                .intersects(PollFlags::PRI | PollFlags::ERR | PollFlags::NVAL),
            Err(_) => true,
        }
    }

    /// The whole table, as the kernel formats it now.
    pub fn read(&self) -> Result<String, CollectError> {
        if !self.polls {
            // Read afresh: a file on disk may have been replaced.
            return read(&self.path);
        }
        let mut buf = Vec::with_capacity(READ_CHUNK);
        read_rest(&self.file, &mut buf).map_err(|e| io_error(&self.path, e))?;
        String::from_utf8(buf)
            .map_err(|_| CollectError::parse(&self.path, "file is not valid UTF-8"))
    }
}

/// Reads a small sysfs attribute, trimmed; `None` when absent or unreadable
/// (optional attributes such as link speed fail with EINVAL when the link is down).
pub fn read_attr(path: &Path) -> Option<String> {
    read_kept_with(
        path,
        // The error is dropped: not worth formatting a message at every
        // scrape for an attribute that has no value (a down link's speed).
        |kept| {
            kept.read_value()
                .map(|v| v.trim().to_owned())
                .ok_or(CollectError::Io(String::new()))
        },
        |text| text.trim().to_owned(),
    )
    .ok()
}

/// Kernel files that host collectors read at every scrape, kept open
/// between scrapes: the path walk, open and close of each cost about a
/// fifth of a scrape's CPU. Only files on procfs and sysfs are kept, as
/// they regenerate their content on every read at offset 0; a file on a
/// disk (a fixture tree) could be replaced or removed under a kept
/// descriptor and is read afresh each time.
///
/// Not for cgroup or per-process files: an open descriptor pins a removed
/// cgroup or an exited process in the kernel. /proc/net files stay bound to
/// the network namespace of the thread that opened them. Each file with
/// when it was last read. A fast hash: each file is looked up twice a
/// read, by paths sojourn makes (never a client's).
type Kept = foldhash::HashMap<PathBuf, (KeptFile, std::time::Instant)>;

static KEPT: std::sync::Mutex<Option<Kept>> = std::sync::Mutex::new(None);

/// Most files kept open, whatever the host has: descriptors are bounded
/// like any other cost. Files past it are read as [`read`] does.
const MAX_KEPT: usize = 256;
/// When the set is full, kept files unread for this long make room.
const KEPT_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// The filesystem a file is on, by its statfs magic number.
fn fs_magic(file: &std::fs::File) -> Option<i64> {
    magic(rustix::fs::fstatfs(file))
}

fn magic(statfs: rustix::io::Result<rustix::fs::StatFs>) -> Option<i64> {
    // f_type is i64 on x86_64 and another width elsewhere.
    #[allow(clippy::unnecessary_cast)]
    statfs.ok().map(|s| s.f_type as i64)
}

const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `dir` is on a cgroup filesystem (v1 or v2). There (kernfs) a
/// directory's link count is two plus its subdirectories, always up to
/// date, which a walk can trust to skip listing a leaf.
pub fn on_cgroupfs(dir: impl rustix::fd::AsFd) -> bool {
    matches!(
        magic(rustix::fs::fstatfs(dir)),
        Some(CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC)
    )
}

/// Whether `path` is a procfs mount (the live kernel's answers) rather
/// than a tree of files standing for one (a fixture, a copy).
pub fn is_procfs(path: &Path) -> bool {
    magic(rustix::fs::statfs(path)) == Some(PROC_SUPER_MAGIC)
}

fn is_kernel_fs(magic: Option<i64>) -> bool {
    matches!(magic, Some(PROC_SUPER_MAGIC | SYSFS_MAGIC))
}

fn on_kernel_fs(file: &std::fs::File) -> bool {
    is_kernel_fs(fs_magic(file))
}

/// [`read`], through a descriptor kept open when the file is on procfs or
/// sysfs. The file is taken out of the set while it is read, so a read
/// that hangs holds up no other scrape.
pub fn read_kept(path: &Path) -> Result<String, CollectError> {
    read_kept_with(path, |kept| kept.read().map(str::to_owned), |text| text)
}

/// [`read_kept`], the kept file read by `read`, a file on a disk read
/// whole and handed to `from_disk`.
fn read_kept_with<T>(
    path: &Path,
    read: impl FnOnce(&mut KeptFile) -> Result<T, CollectError>,
    from_disk: impl FnOnce(String) -> T,
) -> Result<T, CollectError> {
    // Taken out with its key, which goes back in with it: no path is
    // copied at each read.
    let taken = KEPT
        .lock()
        .ok()
        .and_then(|mut k| k.as_mut()?.remove_entry(path));
    let (key, mut kept) = match taken {
        Some((key, (kept, _))) => (Some(key), kept),
        None => {
            if known_absent(path) {
                return Err(CollectError::Missing(path.display().to_string()));
            }
            let file = std::fs::File::open(path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    note_absent(path);
                }
                io_error(path, e)
            })?;
            if !on_kernel_fs(&file) {
                return read_file(path, file).map(from_disk);
            }
            (None, KeptFile::opened(path.to_path_buf(), file))
        }
    };
    let text = read(&mut kept);
    if !kept.is_open() {
        return text;
    }
    if let Ok(mut guard) = KEPT.lock() {
        let set = guard.get_or_insert_with(Kept::default);
        let now = std::time::Instant::now();
        if set.len() >= MAX_KEPT {
            set.retain(|_, (_, used)| now.duration_since(*used) < KEPT_IDLE);
        }
        if set.len() < MAX_KEPT {
            set.insert(key.unwrap_or_else(|| path.to_path_buf()), (kept, now));
        }
    }
    text
}

/// Kernel files found missing, and when. What procfs and sysfs lack is
/// mostly what the kernel was built or booted without (/proc/schedstat,
/// /proc/pressure/irq, a virtual CPU's thermal_throttle, a virtio disk's
/// ioerr_cnt): looking again at every scrape is a failed path walk each,
/// for nothing. A file that appears later (a hot-plugged device's
/// attribute) is read within [`ABSENT_RECHECK`]; one that goes is missed
/// at once, as nothing of it is cached.
type Absent = std::collections::HashMap<PathBuf, std::time::Instant>;

static ABSENT: std::sync::Mutex<Option<Absent>> = std::sync::Mutex::new(None);

/// How long a kernel file found missing is taken as still missing.
pub const ABSENT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// Most missing files remembered; past it, none more are (each is looked
/// up as before).
const MAX_ABSENT: usize = 1024;

fn known_absent(path: &Path) -> bool {
    let Ok(mut guard) = ABSENT.lock() else {
        return false;
    };
    let Some(set) = guard.as_mut() else {
        return false;
    };
    match set.get(path) {
        Some(at) if at.elapsed() < ABSENT_RECHECK => true,
        Some(_) => {
            set.remove(path);
            false
        }
        None => false,
    }
}

/// Remembers a missing file when the nearest directory above it that
/// exists is on procfs or sysfs; a file on a disk (a fixture tree) is
/// looked for every time.
fn note_absent(path: &Path) {
    let Some(parent) = path.ancestors().skip(1).find(|a| a.exists()) else {
        return;
    };
    if !is_kernel_fs(magic(rustix::fs::statfs(parent))) {
        return;
    }
    if let Ok(mut guard) = ABSENT.lock() {
        let set = guard.get_or_insert_with(Absent::new);
        if set.len() >= MAX_ABSENT {
            set.retain(|_, at| at.elapsed() < ABSENT_RECHECK);
        }
        if set.len() < MAX_ABSENT {
            set.insert(path.to_path_buf(), std::time::Instant::now());
        }
    }
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

    /// A file opened already (its first read is one read, like later ones).
    fn opened(path: PathBuf, file: std::fs::File) -> Self {
        KeptFile {
            path,
            file: Some(file),
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's whole current content. After an error the file is
    /// reopened on the next call.
    pub fn read(&mut self) -> Result<&str, CollectError> {
        match self.fill() {
            Ok(()) => std::str::from_utf8(&self.buf)
                .map_err(|_| CollectError::parse(&self.path, "file is not valid UTF-8")),
            Err(e) => Err(io_error(&self.path, e)),
        }
    }

    /// [`Self::read`] without the error: None when the file could not be
    /// read or is not UTF-8.
    pub fn read_value(&mut self) -> Option<&str> {
        self.fill().ok()?;
        std::str::from_utf8(&self.buf).ok()
    }

    /// Whether the file is open (after an error, only when the error said
    /// nothing of the file itself).
    fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Fills the buffer; after an error the file is closed, unless the
    /// error was EINVAL: an attribute with no value now (a down link's
    /// speed), not a file gone, and reopening it at every read would cost
    /// an open.
    fn fill(&mut self) -> io::Result<()> {
        let result = self.fill_open();
        if let Err(e) = &result
            && e.raw_os_error() != Some(rustix::io::Errno::INVAL.raw_os_error())
        {
            self.file = None;
        }
        result
    }

    fn fill_open(&mut self) -> io::Result<()> {
        let file = match &self.file {
            Some(file) => file,
            None => self.file.insert(std::fs::File::open(&self.path)?),
        };
        self.buf.clear();
        read_rest(file, &mut self.buf)
    }
}

/// Reads the rest of a kernel file into `buf`, from the offset of what
/// `buf` holds already (empty: the whole file). procfs (seq_file) and
/// kernfs fill a read until the buffer or the content ends, so a short
/// read is the end: no second read for EOF.
fn read_rest(file: &impl rustix::fd::AsFd, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut offset = buf.len() as u64;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.capacity().max(READ_CHUNK));
        }
        let asked = buf.capacity() - buf.len();
        // spare_capacity extends the Vec's length by what pread wrote.
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut *buf), offset)?;
        if n < asked {
            return Ok(());
        }
        offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kernel_file_is_remembered_and_a_missing_disk_file_is_not() {
        let kernel = Path::new("/proc/sojourn-no-such-file/attr");
        assert!(matches!(read_kept(kernel), Err(CollectError::Missing(_))));
        assert!(known_absent(kernel), "absence under /proc remembered");
        assert!(matches!(read_kept(kernel), Err(CollectError::Missing(_))));

        let dir = std::env::temp_dir().join(format!("sojourn-absent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("attr");
        assert!(matches!(read_kept(&file), Err(CollectError::Missing(_))));
        assert!(
            !known_absent(&file),
            "a fixture tree is looked at every time"
        );
        std::fs::write(&file, "7\n").unwrap();
        assert_eq!(read_attr(&file).as_deref(), Some("7"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn kept(path: &Path) -> bool {
        KEPT.lock()
            .unwrap()
            .as_ref()
            .is_some_and(|k| k.contains_key(path))
    }

    #[test]
    fn a_directory_reads_files_of_any_length_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        // Shorter than, as long as, and longer than the stack buffer.
        for len in [10, SMALL_READ, 3 * SMALL_READ + 7] {
            let content: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            std::fs::write(dir.path().join("f"), &content).unwrap();
            let d = Dir::open(dir.path()).unwrap().unwrap();
            assert_eq!(
                d.read("f").unwrap().as_deref(),
                Some(content.as_str()),
                "{len}"
            );
            assert_eq!(d.read("absent").unwrap(), None);
        }
        assert!(Dir::open(&dir.path().join("absent")).unwrap().is_none());
    }

    #[test]
    fn a_file_on_disk_is_read_afresh_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(&path, "one\n").unwrap();
        assert_eq!(read_kept(&path).unwrap(), "one\n");
        assert!(!kept(&path), "a disk file is never kept open");
        // Replaced under the old name, as a fixture or a config file is.
        let new = dir.path().join("stat.new");
        std::fs::write(&new, "two\n").unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(read_kept(&path).unwrap(), "two\n");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(read_kept(&path), Err(CollectError::Missing(_))));
    }

    #[test]
    fn a_kernel_file_is_kept_and_fails_once_its_source_is_gone() {
        let uptime = Path::new("/proc/uptime");
        let first = read_kept(uptime).unwrap();
        assert!(kept(uptime));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_ne!(read_kept(uptime).unwrap(), first, "regenerated at offset 0");
        // A process's file, kept while it lives, errors once it is reaped
        // rather than repeating its last content.
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let stat = PathBuf::from(format!("/proc/{}/stat", child.id()));
        assert!(read_kept(&stat).unwrap().contains("(sleep)"));
        assert!(kept(&stat));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(read_kept(&stat).is_err());
        assert!(!kept(&stat), "a failed read is not kept");
    }

    #[test]
    fn an_attribute_without_a_value_stays_open() {
        // The loopback device has no link speed: sysfs answers EINVAL.
        let speed = Path::new("/sys/class/net/lo/speed");
        match read_kept(speed) {
            Err(CollectError::Io(e)) if e.contains("Invalid argument") => {
                assert!(kept(speed), "reopened at every scrape: {e}");
                assert!(read_kept(speed).is_err());
                assert!(kept(speed));
                assert_eq!(read_attr(speed), None, "read as an attribute");
                assert!(kept(speed));
            }
            other => eprintln!("lo has a speed here ({other:?}); nothing to check"),
        }
    }
}
