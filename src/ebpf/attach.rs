//! Attaching loaded programs by their file descriptors. The programs may
//! have been loaded by another process (the loader, see `loader.rs`) and
//! passed over a socket: aya attaches only programs it loaded itself, and
//! hides the links' descriptors, so the two attachments sojourn uses are
//! made here with the kernel's own calls. Each attachment lasts as long as
//! its [`Link`] (closing the descriptor detaches).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// An attached program: the raw tracepoint link or the perf event the
/// program runs on.
#[derive(Debug)]
pub struct Link {
    _fd: OwnedFd,
}

/// bpf(2) command `BPF_RAW_TRACEPOINT_OPEN`.
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

/// `union bpf_attr`'s `raw_tracepoint` member: the tracepoint is named by
/// the BTF id the program was loaded with when `name` is 0.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

/// Attaches a BTF-typed tracepoint program (`SEC("tp_btf/...")`), which
/// names its tracepoint by the BTF id it was loaded with.
pub fn btf_tracepoint(program: BorrowedFd<'_>) -> io::Result<Link> {
    let attr = RawTracepointOpen {
        name: 0,
        prog_fd: fd_u32(program),
        _pad: 0,
        cookie: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix of the size passed; the
    // kernel reads it and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            &attr as *const RawTracepointOpen,
            std::mem::size_of::<RawTracepointOpen>(),
        )
    };
    owned(fd).map(|fd| Link { _fd: fd })
}

/// `PERF_TYPE_TRACEPOINT`.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `PERF_EVENT_IOC_SET_BPF`: `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `PERF_EVENT_IOC_ENABLE`: `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// `struct perf_event_attr` as of its first version (`PERF_ATTR_SIZE_VER0`,
/// 64 bytes), all a tracepoint event needs; the kernel zero-fills the rest.
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// Attaches a tracepoint program (`SEC("tracepoint/...")`) to the
/// tracefs event `category/name`: a perf event of that tracepoint on CPU
/// 0 carries the program, which then runs wherever the tracepoint fires.
pub fn tracepoint(program: BorrowedFd<'_>, category: &str, name: &str) -> io::Result<Link> {
    let id = tracepoint_id(category, name)?;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: 0,
        wakeup_events: 1,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: attr is a perf_event_attr of the size it states; pid -1 and
    // cpu 0 ask for every task on CPU 0; no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    let event = owned(fd)?;
    // SAFETY: ioctls on a perf event descriptor this function owns; the
    // argument of SET_BPF is the program's descriptor, of ENABLE none.
    let set = unsafe {
        libc::ioctl(
            event.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            program.as_raw_fd(),
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Link { _fd: event })
}

/// Where tracefs is found mounted, the kernel's own place first.
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracepoint's id in tracefs, wherever it is mounted; where it is
/// mounted nowhere (a host that never mounted it, a container given /sys
/// without it), read from a mount of sojourn's own that no other process
/// sees ([`private_tracepoint_id`]).
fn tracepoint_id(category: &str, name: &str) -> io::Result<u64> {
    let mut last = None;
    for root in TRACEFS_ROOTS {
        match read_tracepoint_id(root, category, name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            other => return other,
        }
    }
    let last = last.unwrap_or_else(|| io::Error::other("no tracefs"));
    if TRACEFS_ROOTS
        .iter()
        .any(|root| std::path::Path::new(root).join("events").is_dir())
    {
        return Err(last);
    }
    private_tracepoint_id(category, name).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{last}; tracefs is not mounted, and mounting it for sojourn alone failed: {e}"
            ),
        )
    })
}

fn read_tracepoint_id(root: &str, category: &str, name: &str) -> io::Result<u64> {
    let path = format!("{root}/events/{category}/{name}/id");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {text:?}")))
}

/// Reads the tracepoint's id from a tracefs mounted at
/// /sys/kernel/tracing in a mount namespace of a thread's own, which ends
/// with the thread: the host's mounts (and the container's) stay as they
/// were, and nothing is left to unmount. Needs CAP_SYS_ADMIN, as entering
/// pods' network namespaces does.
pub fn private_tracepoint_id(category: &str, name: &str) -> io::Result<u64> {
    let (category, name) = (category.to_string(), name.to_string());
    std::thread::Builder::new()
        .name("tracefs".into())
        .spawn(move || {
            let call = |what: &str, ret: libc::c_int| {
                if ret == 0 {
                    Ok(())
                } else {
                    let e = io::Error::last_os_error();
                    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
                }
            };
            // SAFETY: unshare(2) changes only this thread's mount
            // namespace (and its copy of the filesystem context, which
            // CLONE_NEWNS implies): the process's other threads keep theirs.
            call("unshare(CLONE_NEWNS)", unsafe {
                libc::unshare(libc::CLONE_NEWNS)
            })?;
            // Private first, so that the mount below does not propagate to
            // the namespace this thread came from.
            // SAFETY: the strings are NUL-terminated literals; null source,
            // type and data are allowed with MS_PRIVATE.
            call("making / private", unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            })?;
            // SAFETY: as above; tracefs takes no data. EBUSY: tracefs is
            // mounted there already (as it is in every namespace copied
            // from one where it was).
            let mounted = call("mount -t tracefs /sys/kernel/tracing", unsafe {
                libc::mount(
                    c"tracefs".as_ptr(),
                    c"/sys/kernel/tracing".as_ptr(),
                    c"tracefs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                )
            });
            match mounted {
                Err(e) if e.kind() != io::ErrorKind::ResourceBusy => return Err(e),
                _ => {}
            }
            read_tracepoint_id("/sys/kernel/tracing", &category, &name)
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the tracefs thread panicked")))
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // Descriptors are never negative.
    fd.as_raw_fd() as u32
}

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us, open and
    // owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracefs_mounts() -> usize {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(" - tracefs "))
            .count()
    }

    #[test]
    fn a_private_tracefs_gives_the_ids_and_leaves_the_mounts_as_they_were() {
        let before = tracefs_mounts();
        let id = match private_tracepoint_id("syscalls", "sys_exit_accept4") {
            Ok(id) => id,
            // Without CAP_SYS_ADMIN; CI, which has it, requires the test.
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    && std::env::var_os("SOJOURN_REQUIRE_EBPF").is_none() =>
            {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert!(id > 0);
        assert_eq!(tracefs_mounts(), before, "nothing left mounted");
        // The same id as where tracefs is mounted, if it is.
        if let Some(mounted) = TRACEFS_ROOTS
            .iter()
            .find_map(|r| read_tracepoint_id(r, "syscalls", "sys_exit_accept4").ok())
        {
            assert_eq!(mounted, id);
        }
        assert_eq!(tracepoint_id("syscalls", "sys_exit_accept4").unwrap(), id);
        let e = private_tracepoint_id("syscalls", "no_such_event").unwrap_err();
        assert!(e.to_string().contains("no_such_event"), "{e}");
    }
}
