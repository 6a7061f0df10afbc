//! Finding the cgroups that hold processes: a walk of a hierarchy with each
//! directory opened relative to its parent.

use super::*;

/// Whether cgroup.procs lists a process: its first bytes say, however
/// many thousands of pids follow.
pub(super) fn holds_processes(dir: impl rustix::fd::AsFd) -> bool {
    use rustix::fs::{Mode, OFlags};
    let mut first = [0u8; 1];
    rustix::fs::openat(
        dir,
        "cgroup.procs",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| rustix::io::read(&fd, &mut first))
    .is_ok_and(|n| n > 0)
}

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
/// many more there were. Each directory is opened relative to its parent
/// and its cgroup.procs relative to it, so no path is walked from `/` again:
/// a node's hundreds of cgroups cost one short lookup each. On cgroupfs a
/// directory's link count says how many subdirectories it has: a leaf
/// (most cgroups: a container's) is not listed at all; a child made
/// meanwhile is found at the next walk.
pub fn walk(base: &Path, cfg: &Config, limit: usize) -> (Vec<String>, usize) {
    use rustix::fs::{Mode, OFlags};
    use std::rc::Rc;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut out = Vec::new();
    let mut omitted = 0;
    let Ok(root) = rustix::fs::open(base, flags, Mode::empty()) else {
        return (out, omitted);
    };
    let cgroupfs = crate::roots::on_cgroupfs(&root);
    // Pending directories: the parent (open while a child of it waits),
    // the name in it, the relative path. Descriptors held at once are at
    // most the depth of the tree, not its breadth.
    type Parent = Option<(Rc<rustix::fd::OwnedFd>, String)>;
    let mut stack: Vec<(Parent, String)> = Vec::new();
    let mut first = Some(root);
    stack.push((None, String::new()));
    while let Some((parent, rel)) = stack.pop() {
        let fd = match (&parent, first.take()) {
            (None, Some(root)) => root,
            (Some((dir, name)), _) => {
                let Ok(fd) = rustix::fs::openat(&**dir, name.as_str(), flags, Mode::empty()) else {
                    // Removed since its parent was listed.
                    continue;
                };
                fd
            }
            (None, None) => continue,
        };
        drop(parent);
        let children = subdirectories(&fd, subdirectory_count(&fd, cgroupfs));
        if !rel.is_empty() {
            let holds = holds_processes(&fd);
            let selected = cfg.include.is_match(&rel)
                && !cfg.exclude.as_ref().is_some_and(|x| x.is_match(&rel));
            if holds && selected {
                if out.len() < limit {
                    out.push(rel.clone());
                } else {
                    omitted += 1;
                }
            }
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
    (out, omitted)
}
