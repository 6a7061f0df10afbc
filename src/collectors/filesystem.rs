//! Filesystem utilization (space and inodes) and errors (read-only, stale)
//! for the mounts in `/proc/1/mountinfo`, measured with statvfs(2).
//!
//! ```text
//! 27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
//! ```
//! (Documentation/filesystems/proc.rst "3.5 /proc/<pid>/mountinfo"; octal
//! escapes such as `\040` are undone.)
//!
//! statvfs on a dead NFS server blocks in the kernel, uninterruptibly. So
//! statvfs runs on a worker thread and each mount gets at most
//! `--collector.filesystem.mount-timeout`; a mount that does not answer is
//! reported stale, and is not asked again until its stuck call returns —
//! node_exporter's rule, which keeps one hung mount from tying up a thread
//! per scrape.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;

use super::{Collect, CollectError, Config as CollectConfig, ParseError};
use crate::metrics::{Desc, Family, Label, label};

/// Pseudo and image filesystems with no space to run out of (node_exporter's list).
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";
/// Kernel and container-runtime trees (node_exporter's list).
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
pub const DEFAULT_MOUNT_TIMEOUT: &str = "5s";

/// The filesystem collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    #[arg(
        id = "collector.filesystem.fs-types-exclude",
        long = "collector.filesystem.fs-types-exclude",
        value_name = "REGEX",
        default_value = DEFAULT_FS_TYPES_EXCLUDE,
        value_parser = crate::flag::regex,
        help = "Filesystem types to leave out (pseudo filesystems by default)"
    )]
    pub fs_types_exclude: Regex,
    #[arg(
        id = "collector.filesystem.mount-points-exclude",
        long = "collector.filesystem.mount-points-exclude",
        value_name = "REGEX",
        default_value = DEFAULT_MOUNT_POINTS_EXCLUDE,
        value_parser = crate::flag::regex,
        help = "Mount points to leave out"
    )]
    pub mount_points_exclude: Regex,
    #[arg(
        id = "collector.filesystem.mount-timeout",
        long = "collector.filesystem.mount-timeout",
        value_name = "DURATION",
        default_value = DEFAULT_MOUNT_TIMEOUT,
        value_parser = crate::flag::duration,
        help = "Longest wait for statvfs on one mount before it is reported stale"
    )]
    pub mount_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub read_only: bool,
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash.
pub fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo lines:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
/// procfs-core parses this file too, but builds two option maps per mount on
/// every scrape; only the mount point, type, source and `ro` are needed here.
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::with_capacity(32);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || ParseError(format!("line {line:?} is not a mountinfo entry"));
        let mut fields = line.split(' ');
        let (
            Some(_id),
            Some(_parent),
            Some(_majmin),
            Some(_root),
            Some(mount_point),
            Some(options),
        ) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        )
        else {
            return Err(bad());
        };
        if !fields.any(|f| f == "-") {
            return Err(bad());
        }
        let (Some(fs_type), Some(source)) = (fields.next(), fields.next()) else {
            return Err(bad());
        };
        if mount_point.is_empty() || fs_type.is_empty() {
            return Err(bad());
        }
        mounts.push(Mount {
            device: unescape_octal(source),
            mount_point: unescape_octal(mount_point),
            fs_type: fs_type.to_string(),
            read_only: options.split(',').any(|o| o == "ro"),
        });
    }
    // Every mount namespace has a root mount: no lines means a truncated read.
    if mounts.is_empty() {
        return Err(ParseError::new("no mounts listed"));
    }
    Ok(mounts)
}

/// Mounts to measure: exclusions applied, and for a mount point mounted over
/// several times only the last (visible) one.
pub fn select_mounts(mounts: Vec<Mount>, cfg: &Config) -> Vec<Mount> {
    let mut seen = HashSet::new();
    let mut out: Vec<Mount> = mounts
        .into_iter()
        .rev()
        .filter(|m| {
            !cfg.fs_types_exclude.is_match(&m.fs_type)
                && !cfg.mount_points_exclude.is_match(&m.mount_point)
        })
        .filter(|m| seen.insert(m.mount_point.clone()))
        .collect();
    out.reverse();
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub files: u64,
    pub files_free: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Measured(Usage),
    /// statvfs failed (permission, mount gone).
    Failed(String),
    /// statvfs did not answer in time, now or in an earlier scrape.
    Stale,
}

pub type StatFn = fn(&Path) -> Result<Usage, String>;

fn statvfs(path: &Path) -> Result<Usage, String> {
    let s = rustix::fs::statvfs(path).map_err(|e| e.to_string())?;
    let frsize = s.f_frsize;
    Ok(Usage {
        size_bytes: s.f_blocks.saturating_mul(frsize),
        free_bytes: s.f_bfree.saturating_mul(frsize),
        avail_bytes: s.f_bavail.saturating_mul(frsize),
        files: s.f_files,
        files_free: s.f_ffree,
    })
}

/// Paths whose statvfs call has not returned: shared by every scrape.
#[derive(Debug, Default, Clone)]
struct StuckSet(Arc<Mutex<HashSet<PathBuf>>>);

impl StuckSet {
    fn contains(&self, p: &Path) -> bool {
        self.0.lock().map(|s| s.contains(p)).unwrap_or(false)
    }
    fn insert(&self, p: &Path) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(p.to_path_buf());
        }
    }
    fn remove(&self, p: &Path) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(p);
        }
    }
}

/// The mounts of one scrape, answered in order on the job's own channel.
/// One job per scrape rather than one per mount: every hand-off between
/// threads is a wake-up that costs more than the statvfs itself.
struct Job {
    paths: Vec<PathBuf>,
    reply: mpsc::Sender<Result<Usage, String>>,
}

/// One long-lived thread runs statvfs for every scrape (no thread start per
/// scrape). When a call does not return in time that thread is abandoned
/// to its stuck call — it exits once the call returns, as nobody sends it
/// work any more — and the next request starts a fresh one.
pub struct StatPool {
    stat: StatFn,
    stuck: StuckSet,
    worker: Mutex<Option<mpsc::Sender<Job>>>,
}

impl StatPool {
    pub fn new(stat: StatFn) -> Self {
        StatPool {
            stat,
            stuck: StuckSet::default(),
            worker: Mutex::new(None),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>, String> {
        let mut worker = self
            .worker
            .lock()
            .map_err(|_| "statvfs pool poisoned".to_string())?;
        if let Some(tx) = worker.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let stuck = self.stuck.clone();
        let stat = self.stat;
        std::thread::Builder::new()
            .name("statvfs".into())
            .spawn(move || {
                for job in rx {
                    for path in &job.paths {
                        stuck.insert(path);
                        let r = stat(path);
                        stuck.remove(path);
                        if job.reply.send(r).is_err() {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start statvfs thread: {e}"))?;
        *worker = Some(tx.clone());
        Ok(tx)
    }

    /// Measures each path, waiting at most `timeout` for each. A mount that
    /// does not answer in time is stale and its thread abandoned; the
    /// mounts after it go to a fresh thread.
    pub fn stat_all(&self, paths: &[PathBuf], timeout: Duration) -> Vec<Outcome> {
        let mut out: Vec<Option<Outcome>> = paths
            .iter()
            .map(|p| self.stuck.contains(p).then_some(Outcome::Stale))
            .collect();
        loop {
            let pending: Vec<usize> = (0..paths.len()).filter(|&i| out[i].is_none()).collect();
            if pending.is_empty() {
                break;
            }
            let failed = |out: &mut Vec<Option<Outcome>>, e: &str| {
                for &i in &pending {
                    out[i] = Some(Outcome::Failed(e.to_string()));
                }
            };
            let tx = match self.sender() {
                Ok(tx) => tx,
                Err(e) => {
                    failed(&mut out, &e);
                    break;
                }
            };
            let (reply, rx) = mpsc::channel();
            let job = Job {
                paths: pending.iter().map(|&i| paths[i].clone()).collect(),
                reply,
            };
            if tx.send(job).is_err() {
                self.abandon_worker();
                failed(&mut out, "statvfs thread exited");
                break;
            }
            for &i in &pending {
                match rx.recv_timeout(timeout) {
                    Ok(Ok(u)) => out[i] = Some(Outcome::Measured(u)),
                    Ok(Err(e)) => out[i] = Some(Outcome::Failed(e)),
                    Err(_) => {
                        // This mount holds the thread; the rest go round again.
                        self.abandon_worker();
                        out[i] = Some(Outcome::Stale);
                        break;
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or(Outcome::Stale))
            .collect()
    }

    fn abandon_worker(&self) {
        if let Ok(mut w) = self.worker.lock() {
            *w = None;
        }
    }
}

const SIZE: Desc = Desc::gauge(
    "filesystem_size",
    "Filesystem size (statvfs f_blocks x f_frsize).",
)
.bytes();
const FREE: Desc = Desc::gauge(
    "filesystem_free",
    "Utilization: free space, including blocks reserved for root (statvfs f_bfree).",
)
.bytes();
const AVAIL: Desc = Desc::gauge(
    "filesystem_avail",
    "Utilization: space available to unprivileged users (statvfs f_bavail).",
)
.bytes();
const FILES: Desc = Desc::gauge(
    "filesystem_files",
    "Inodes in the filesystem (statvfs f_files).",
);
const FILES_FREE: Desc = Desc::gauge(
    "filesystem_files_free",
    "Utilization: free inodes (statvfs f_ffree).",
);
const READONLY: Desc = Desc::gauge(
    "filesystem_readonly",
    "Errors: 1 when mounted read-only, as after an error remount (mountinfo options).",
);
const DEVICE_ERROR: Desc = Desc::gauge(
    "filesystem_device_error",
    "Errors: 1 when statvfs failed on the mount point (statvfs, mounts from /proc/1/mountinfo).",
);
const STALE: Desc = Desc::gauge(
    "filesystem_stale",
    "Errors: 1 when statvfs did not answer within --collector.filesystem.mount-timeout, as on a hung network filesystem; not retried until it returns (statvfs).",
);

pub fn emit(mounts: &[Mount], outcomes: &[Outcome]) -> Vec<Family> {
    let mut fams: Vec<Family> = [
        SIZE,
        FREE,
        AVAIL,
        FILES,
        FILES_FREE,
        READONLY,
        DEVICE_ERROR,
        STALE,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    for (m, outcome) in mounts.iter().zip(outcomes) {
        let labels = || -> Vec<Label> {
            vec![
                label("device", m.device.clone()),
                label("mountpoint", m.mount_point.clone()),
                label("fstype", m.fs_type.clone()),
            ]
        };
        if let Outcome::Measured(u) = outcome {
            fams[0].push(labels(), u.size_bytes);
            fams[1].push(labels(), u.free_bytes);
            fams[2].push(labels(), u.avail_bytes);
            fams[3].push(labels(), u.files);
            fams[4].push(labels(), u.files_free);
        }
        fams[5].push(labels(), u64::from(m.read_only));
        fams[6].push(labels(), u64::from(matches!(outcome, Outcome::Failed(_))));
        fams[7].push(labels(), u64::from(matches!(outcome, Outcome::Stale)));
    }
    fams
}

pub struct FilesystemCollector {
    pool: StatPool,
    /// The mount table, the mounts selected from it at its last change and
    /// which of them are measured inline.
    table: Mutex<Option<(crate::roots::MountTable, Selected)>>,
}

impl Default for FilesystemCollector {
    fn default() -> Self {
        FilesystemCollector {
            pool: StatPool::new(statvfs),
            table: Mutex::new(None),
        }
    }
}

/// The mounts to measure, and which of them are measured inline; shared
/// with the scrapes that read them until the table changes.
type Selected = Arc<(Vec<Mount>, Vec<bool>)>;

impl FilesystemCollector {
    /// The mounts to measure: from the kept table when the kernel says it
    /// has not changed, else read and parsed anew.
    fn mounts(&self, cfg: &CollectConfig) -> Result<Selected, CollectError> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((file, selected)) = table.as_ref()
            && !file.changed()
        {
            return Ok(selected.clone());
        }
        let (file, text) = match table.take() {
            Some((file, _)) => match file.read() {
                Ok(text) => (file, text),
                // Gone (sojourn's PID 1 view changed): open it again.
                Err(_) => open_mount_table(cfg)?,
            },
            None => open_mount_table(cfg)?,
        };
        let all = parse_mountinfo(&text).map_err(|e| CollectError::parse(file.path(), e))?;
        let mounts = select_mounts(all.clone(), &cfg.filesystem);
        let inline = answers_from_memory(&all, &mounts);
        let selected = Arc::new((mounts, inline));
        *table = Some((file, selected.clone()));
        Ok(selected)
    }
}

/// Filesystems whose statfs answers from counters in memory, never
/// waiting on a device or a server (and the kernel's pseudo filesystems,
/// whose directories never wait either).
const IN_MEMORY_STATFS: &[&str] = &[
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "f2fs",
    "tmpfs",
    "ramfs",
    "vfat",
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "mqueue",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "pstore",
    "configfs",
    "hugetlbfs",
    "nsfs",
];

/// Which of the `selected` mounts are measured on the scrape's own thread
/// (saving the two thread hand-offs of the statvfs thread): those of an
/// in-memory filesystem with no other kind of mount above them in `all`,
/// as the path walk to them could wait on that parent.
fn answers_from_memory(all: &[Mount], selected: &[Mount]) -> Vec<bool> {
    let in_memory = |m: &Mount| IN_MEMORY_STATFS.contains(&m.fs_type.as_str());
    let may_wait: Vec<&Path> = all
        .iter()
        .filter(|m| !in_memory(m))
        .map(|m| Path::new(&m.mount_point))
        .collect();
    selected
        .iter()
        .map(|m| {
            in_memory(m)
                && !may_wait
                    .iter()
                    .any(|parent| Path::new(&m.mount_point).starts_with(parent))
        })
        .collect()
}

/// PID 1's mount table (the host's when sojourn runs in a container with
/// hostPID), else sojourn's own; opened and read.
fn open_mount_table(
    cfg: &CollectConfig,
) -> Result<(crate::roots::MountTable, String), CollectError> {
    use crate::roots::MountTable;
    let first = MountTable::open(&cfg.roots.proc("1/mountinfo")).and_then(|t| {
        let text = t.read()?;
        Ok((t, text))
    });
    match first {
        Ok(opened) => Ok(opened),
        Err(CollectError::Missing(_) | CollectError::Io(_)) => {
            let t = MountTable::open(&cfg.roots.proc("self/mountinfo"))?;
            let text = t.read()?;
            Ok((t, text))
        }
        Err(e) => Err(e),
    }
}

impl Collect for FilesystemCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let selected = self.mounts(cfg)?;
        let (mounts, inline) = &*selected;
        let path = |m: &Mount| cfg.roots.host_path(Path::new(&m.mount_point));
        // Local filesystems answer from memory, here; the rest go to the
        // statvfs thread, which waits for them no longer than the timeout.
        let remote: Vec<PathBuf> = mounts
            .iter()
            .zip(inline)
            .filter(|(_, here)| !**here)
            .map(|(m, _)| path(m))
            .collect();
        let mut remote = self
            .pool
            .stat_all(&remote, cfg.filesystem.mount_timeout)
            .into_iter();
        let outcomes: Vec<Outcome> = mounts
            .iter()
            .zip(inline)
            .map(|(m, here)| match here {
                true => match (self.pool.stat)(&path(m)) {
                    Ok(u) => Outcome::Measured(u),
                    Err(e) => Outcome::Failed(e),
                },
                false => remote.next().unwrap_or(Outcome::Stale),
            })
            .collect();
        for (m, o) in mounts.iter().zip(&outcomes) {
            if let Outcome::Stale = o {
                tracing::debug!(mountpoint = %m.mount_point, "statvfs did not answer; mount reported stale");
            }
        }
        Ok(emit(mounts, &outcomes))
    }
}

#[cfg(test)]
mod tests;
