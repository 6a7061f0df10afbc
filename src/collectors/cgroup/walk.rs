//! Finding the cgroups that hold processes: a walk of a hierarchy with each
//! directory opened relative to its parent.

use super::*;

/// How many subdirectories `dir` has, where its filesystem says so
/// exactly (cgroupfs: the link count less two); None elsewhere.
fn subdirectory_count(dir: &rustix::fd::OwnedFd, cgroupfs: bool) -> Option<usize> {
    if !cgroupfs {
        return None;
    }
    let links = rustix::fs::fstat(dir).ok()?.st_nlink;
    usize::try_from(links).ok()?.checked_sub(2)
}

/// The names of a directory's subdirectories, sorted; none, without
/// listing it, when `expected` says it has none. Read with getdents into a
/// buffer on the stack: a cgroup directory lists a few dozen control
/// files for each subdirectory, none of which is worth an allocation.
/// (A listing is read to its end even when `expected` subdirectories are
/// found early: one made meanwhile must not hide one that was there.)
pub(super) fn subdirectories(dir: &rustix::fd::OwnedFd, expected: Option<usize>) -> Vec<String> {
    use rustix::fs::{FileType, RawDir};
    use std::mem::MaybeUninit;
    let mut names = Vec::new();
    if expected == Some(0) {
        return names;
    }
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    let mut entries = RawDir::new(dir, &mut buf);
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            // A filesystem that does not say in the entry (cgroupfs does).
            FileType::Unknown => rustix::fs::statat(
                dir,
                entry.file_name(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            _ => false,
        };
        if is_dir {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    names.sort();
    names
}

/// Cgroups under `base` holding processes, as paths relative to it
/// (`/a/b`), the root excepted: the first `limit` in path order, and how
/// many more there were. The hierarchy is listed anew at each call; a
/// [`Tree`] keeps the listing between calls.
pub fn walk(base: &Path, cfg: &Config, limit: usize) -> (Vec<String>, usize) {
    let Ok(root) = open_dir(base) else {
        return (Vec::new(), 0);
    };
    let dirs = try_list(&root, None).unwrap_or_default();
    select(&root, &dirs, cfg, limit)
}

fn open_dir(path: &Path) -> rustix::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A listed cgroup directory: its path relative to the hierarchy's root
/// (`/a/b`) and its cgroup.procs relative to the same root, made once at
/// listing rather than at every scrape.
struct Listed {
    rel: String,
    procs: String,
}

/// Of the directories `dirs`, those selected by
/// the include and exclude patterns whose cgroup.procs lists a process:
/// the first `limit`, and how many more there were. cgroup.procs is opened
/// relative to the hierarchy's root, so no path is walked from `/`.
fn select(
    root: &rustix::fd::OwnedFd,
    dirs: &[Listed],
    cfg: &Config,
    limit: usize,
) -> (Vec<String>, usize) {
    use rustix::fs::{Mode, OFlags};
    let (mut out, mut omitted) = (Vec::new(), 0);
    for Listed { rel, procs } in dirs {
        let selected =
            cfg.include.is_match(rel) && !cfg.exclude.as_ref().is_some_and(|x| x.is_match(rel));
        if !selected {
            continue;
        }
        let mut first = [0u8; 1];
        let holds = rustix::fs::openat(
            root,
            procs.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| rustix::io::read(&fd, &mut first))
        .is_ok_and(|n| n > 0);
        if !holds {
            continue;
        }
        if out.len() < limit {
            out.push(rel.clone());
        } else {
            omitted += 1;
        }
    }
    (out, omitted)
}

/// Every directory under `root` as a path relative to it (`/a/b`), the
/// root excepted, depth first in name order. Each directory is opened
/// relative to its parent, so a node's hundreds of cgroups cost one short
/// lookup each. On cgroupfs a directory's link count says how many
/// subdirectories it has: a leaf (most cgroups: a container's) is not
/// listed at all. With `watch`, each directory is watched for children
/// made and removed *before* it is listed, so none made meanwhile is
/// missed; None when a watch could not be added (the inotify limit).
fn try_list(
    root: &rustix::fd::OwnedFd,
    watch: Option<(&rustix::fd::OwnedFd, &Path)>,
) -> Option<Vec<Listed>> {
    use rustix::fs::{Mode, OFlags};
    use std::rc::Rc;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let cgroupfs = crate::roots::on_cgroupfs(root);
    let mut out = Vec::new();
    // Pending directories: the parent (open while a child of it waits),
    // the name in it, the relative path. Descriptors held at once are at
    // most the depth of the tree, not its breadth.
    type Parent = Option<(Rc<rustix::fd::OwnedFd>, String)>;
    let mut stack: Vec<(Parent, String)> = vec![(None, String::new())];
    while let Some((parent, rel)) = stack.pop() {
        let fd = match &parent {
            None => rustix::fs::openat(root, ".", flags, Mode::empty()),
            Some((dir, name)) => rustix::fs::openat(&**dir, name.as_str(), flags, Mode::empty()),
        };
        // Removed since its parent was listed.
        let Ok(fd) = fd else { continue };
        drop(parent);
        if let Some((inotify, base)) = watch {
            let path = base.join(rel.trim_start_matches('/'));
            match rustix::fs::inotify::add_watch(inotify, &path, DIRECTORY_CHANGES) {
                Ok(_) => {}
                // Removed since it was opened: nothing under it to list.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot watch cgroup directories (fs.inotify.max_user_watches?); \
                         listing the hierarchy at every scrape instead"
                    );
                    return None;
                }
            }
        }
        let children = subdirectories(&fd, subdirectory_count(&fd, cgroupfs));
        if !rel.is_empty() {
            let procs = format!("{}/cgroup.procs", rel.trim_start_matches('/'));
            out.push(Listed {
                rel: rel.clone(),
                procs,
            });
        }
        if children.is_empty() {
            continue;
        }
        let dir = Rc::new(fd);
        // Depth first, in name order.
        for name in children.into_iter().rev() {
            let child = format!("{rel}/{name}");
            stack.push((Some((dir.clone(), name)), child));
        }
    }
    Some(out)
}

/// What makes a listing of a hierarchy out of date: a directory made,
/// removed or renamed in a watched directory, or the watched one removed.
const DIRECTORY_CHANGES: rustix::fs::inotify::WatchFlags = rustix::fs::inotify::WatchFlags::CREATE
    .union(rustix::fs::inotify::WatchFlags::DELETE)
    .union(rustix::fs::inotify::WatchFlags::MOVED_FROM)
    .union(rustix::fs::inotify::WatchFlags::MOVED_TO)
    .union(rustix::fs::inotify::WatchFlags::DELETE_SELF)
    .union(rustix::fs::inotify::WatchFlags::ONLYDIR);

/// One cgroup hierarchy's directories, listed once and kept while inotify
/// reports no directory made or removed in it (cAdvisor finds containers
/// the same way). A scrape then lists no directory: it drains the inotify
/// descriptor (one read) and checks each kept cgroup's cgroup.procs, as
/// [`walk`] does. Without inotify (no descriptor, or the per-user watch
/// limit reached) it lists the hierarchy at every call, as [`walk`] does.
/// One watch per directory of the hierarchy.
pub struct Tree {
    base: PathBuf,
    inotify: Option<rustix::fd::OwnedFd>,
    /// The hierarchy's root and its directories, while known to be current.
    listed: Option<(rustix::fd::OwnedFd, Vec<Listed>)>,
}

impl Tree {
    pub fn new(base: &Path) -> Tree {
        use rustix::fs::inotify::{CreateFlags, init};
        let inotify = init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
            .map_err(|e| tracing::warn!(error = %e, "no inotify; cgroup directories are listed at every scrape"))
            .ok();
        Tree {
            base: base.to_path_buf(),
            inotify,
            listed: None,
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// [`walk`]'s answer, from the kept listing while it is current.
    pub fn walk(&mut self, cfg: &Config, limit: usize) -> (Vec<String>, usize) {
        let current = self.inotify.is_some() && !self.changed();
        let (root, dirs) = match self.listed.take() {
            Some(listed) if current => listed,
            _ => {
                let Ok(root) = open_dir(&self.base) else {
                    return (Vec::new(), 0);
                };
                let watch = self.inotify.as_ref().map(|fd| (fd, self.base.as_path()));
                let dirs = match try_list(&root, watch) {
                    Some(dirs) => dirs,
                    None => {
                        // Watching failed part-way: stop watching for good
                        // (dropping the descriptor drops its watches).
                        self.inotify = None;
                        try_list(&root, None).unwrap_or_default()
                    }
                };
                (root, dirs)
            }
        };
        let found = select(&root, &dirs, cfg, limit);
        if self.inotify.is_some() {
            self.listed = Some((root, dirs));
        }
        found
    }

    /// Whether anything was reported since the last look (the queue
    /// drained); always true without inotify.
    fn changed(&mut self) -> bool {
        use std::mem::MaybeUninit;
        let Some(inotify) = &self.inotify else {
            return true;
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut events = rustix::fs::inotify::Reader::new(inotify, &mut buf);
        let mut any = false;
        loop {
            match events.next() {
                Ok(_) => any = true,
                Err(rustix::io::Errno::INTR) => {}
                // WOULDBLOCK: drained; anything else: trust nothing kept.
                Err(rustix::io::Errno::WOULDBLOCK) => return any,
                Err(_) => return true,
            }
        }
    }
}
