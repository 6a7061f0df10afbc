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

/// The tracepoint's id in tracefs, wherever it is mounted.
fn tracepoint_id(category: &str, name: &str) -> io::Result<u64> {
    let mut last = None;
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let path = format!("{root}/events/{category}/{name}/id");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return text.trim().parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {text:?}"))
                });
            }
            Err(e) => last = Some(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no tracefs")))
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
