//! Loading the programs: relocating them against the kernel's BTF,
//! verifying them and creating their maps, then attaching them here.
//!
//! The load needs the kernel's BTF parsed (~19 MB of heap for a 5.4 MB
//! vmlinux, which aya's loader parses once more on its own), while the
//! loaded programs need none of it. Where the exporter names a loader
//! executable ([`set_executable`], `sojourn` names itself), the load runs
//! in that short-lived child process, which passes the programs' and maps'
//! descriptors back over a socket and exits: the parse never enters the
//! exporter's memory, and a loader killed or crashed (an OOM kill under a
//! tight memory limit, a bug in a parser of kernel data) costs the
//! exporter its eBPF measurements only, with the reason logged. Without
//! one (the library's own tests) the load runs in this process.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

use aya::maps::{Map, MapData};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, EbpfLoader};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

use super::attach::{self, Link};
use super::causes;

/// One compiled object and the parts of it the exporter uses.
pub struct Object {
    /// Its name in requests to the loader.
    pub name: &'static str,
    /// As messages name it ("loading the run-queue program: ...").
    pub what: &'static str,
    pub bytes: &'static [u8],
    /// Programs attached to the BTF tracepoint of their own name.
    pub btf_tracepoints: &'static [&'static str],
    /// The same, loaded only when a request names them, and where this
    /// kernel takes them: one it refuses (a tracepoint it lacks, or passes
    /// other arguments to) is left out, the reason kept
    /// ([`Attached::left_out`]), and the rest of the object works without
    /// it.
    pub optional_btf_tracepoints: &'static [&'static str],
    /// (program, tracefs category, event): programs on classic tracepoints.
    pub tracepoints: &'static [(&'static str, &'static str, &'static str)],
    /// The maps the exporter reads.
    pub maps: &'static [&'static str],
}

/// An object to load and the values of its `.rodata` globals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub object: String,
    pub globals: Vec<(String, u32)>,
    /// The optional programs wanted, of the object's.
    #[serde(default)]
    pub optional: Vec<String>,
}

impl Request {
    /// `object`, with no globals to set, no optional program.
    pub fn plain(object: &Object) -> Request {
        Request {
            object: object.name.into(),
            globals: Vec::new(),
            optional: Vec::new(),
        }
    }
}

/// An object attached: its links, and the maps the exporter reads.
pub struct Attached {
    /// Detach on drop.
    _links: Vec<Link>,
    maps: Vec<(String, Map)>,
    left_out: Vec<(String, String)>,
}

impl Attached {
    /// The optional programs this kernel refused, each with the reason.
    pub fn left_out(&self) -> &[(String, String)] {
        &self.left_out
    }

    /// The map `name`, as the typed map `M`.
    pub fn take_map<M>(&mut self, name: &str) -> Result<M, String>
    where
        M: TryFrom<Map>,
        M::Error: std::fmt::Display,
    {
        let at = self
            .maps
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| format!("the object has no map {name}"))?;
        let (_, map) = self.maps.swap_remove(at);
        M::try_from(map).map_err(|e| format!("{name} map: {e}"))
    }
}

/// The executable run as the loader; unset, programs load in process.
static EXECUTABLE: OnceLock<std::path::PathBuf> = OnceLock::new();

/// The environment variable that makes the executable a loader: the
/// requests as JSON. Set only by [`load`] for its child.
const REQUEST_VAR: &str = "SOJOURN_EBPF_LOADER_REQUEST";
/// The descriptor number of the loader's socket, in its environment.
const SOCKET_VAR: &str = "SOJOURN_EBPF_LOADER_SOCKET";

/// Loads programs in a child process running `executable` (which must
/// call [`serve_if_asked`] first thing in `main`).
pub fn set_executable(executable: std::path::PathBuf) {
    let _ = EXECUTABLE.set(executable);
}

/// Loads each request's object and attaches its programs: one result per
/// request, in order (one object refused leaves the others working).
pub fn load(objects: &[&'static Object], requests: &[Request]) -> Vec<Result<Attached, String>> {
    if requests.is_empty() {
        return Vec::new();
    }
    let started = std::time::Instant::now();
    let loaded = match EXECUTABLE.get() {
        Some(executable) => match load_in_child(executable, requests) {
            Ok(loaded) => loaded,
            Err(e) => requests.iter().map(|_| Err(e.clone())).collect(),
        },
        None => {
            let loaded = load_here(objects, requests);
            super::give_back_freed_heap();
            loaded
        }
    };
    let attached: Vec<_> = loaded
        .into_iter()
        .zip(requests)
        .map(|(loaded, request)| {
            let object = find(objects, &request.object)?;
            loaded.and_then(|l| attach_all(object, l))
        })
        .collect();
    tracing::debug!(
        objects = requests.len(),
        attached = attached.iter().filter(|a| a.is_ok()).count(),
        in_child = EXECUTABLE.get().is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "eBPF programs loaded"
    );
    attached
}

fn find(objects: &[&'static Object], name: &str) -> Result<&'static Object, String> {
    objects
        .iter()
        .find(|o| o.name == name)
        .copied()
        .ok_or_else(|| format!("no eBPF object named {name:?}"))
}

/// An object loaded (programs verified, maps created), not attached.
struct Loaded {
    programs: Vec<(String, OwnedFd)>,
    maps: Vec<(String, OwnedFd)>,
    /// Optional programs not loaded, and why.
    left_out: Vec<(String, String)>,
}

/// Loads every request's object against the kernel's BTF, parsed once.
fn load_here(objects: &[&'static Object], requests: &[Request]) -> Vec<Result<Loaded, String>> {
    // aya's loader parses the kernel's BTF when made; each parse is dropped
    // (btf(None)) before the next, and before the one shared below, so one
    // parse is held at a time.
    let mut loaders: Vec<EbpfLoader<'_>> = requests
        .iter()
        .map(|request| {
            let mut loader = EbpfLoader::new();
            loader
                .btf(None)
                // Task local storage (the run queue's enqueue times) is a
                // map type aya creates but has no typed wrapper for.
                .allow_unsupported_maps();
            for (name, value) in &request.globals {
                loader.override_global(name.as_str(), value, true);
            }
            loader
        })
        .collect();
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            let why = format!("no kernel BTF at /sys/kernel/btf/vmlinux: {e}");
            return requests.iter().map(|_| Err(why.clone())).collect();
        }
    };
    loaders
        .iter_mut()
        .zip(requests)
        .map(|(loader, request)| {
            let object = find(objects, &request.object)?;
            load_one(object, &request.optional, loader.btf(Some(&btf)), &btf)
        })
        .collect()
}

fn load_one(
    object: &Object,
    optional: &[String],
    loader: &mut EbpfLoader<'_>,
    btf: &Btf,
) -> Result<Loaded, String> {
    let what = object.what;
    let mut ebpf = loader
        .load(object.bytes)
        .map_err(|e| format!("loading the {what} program: {}", causes(&e)))?;
    let mut programs = Vec::new();
    for name in object.btf_tracepoints {
        let program: &mut BtfTracePoint = program_of(&mut ebpf, what, name)?;
        program
            .load(name, btf)
            .map_err(|e| format!("loading {name}: {}", causes(&e)))?;
        let fd = program
            .fd()
            .map_err(|e| format!("{name}: {}", causes(&e)))?;
        programs.push((name.to_string(), owned(fd.as_fd(), name)?));
    }
    let mut left_out = Vec::new();
    for name in object.optional_btf_tracepoints {
        if !optional.iter().any(|o| o == name) {
            continue;
        }
        let program: &mut BtfTracePoint = program_of(&mut ebpf, what, name)?;
        match program
            .load(name, btf)
            .map_err(|e| causes(&e))
            .and_then(|()| {
                let fd = program.fd().map_err(|e| causes(&e))?;
                owned(fd.as_fd(), name)
            }) {
            Ok(fd) => programs.push((name.to_string(), fd)),
            Err(mut why) => {
                // A verifier's log can be long; the first lines say why.
                truncate(&mut why, MAX_LEFT_OUT_REASON);
                left_out.push((name.to_string(), why));
            }
        }
    }
    for (name, _, _) in object.tracepoints {
        let program: &mut TracePoint = program_of(&mut ebpf, what, name)?;
        program
            .load()
            .map_err(|e| format!("loading {name}: {}", causes(&e)))?;
        let fd = program
            .fd()
            .map_err(|e| format!("{name}: {}", causes(&e)))?;
        programs.push((name.to_string(), owned(fd.as_fd(), name)?));
    }
    let mut maps = Vec::new();
    for name in object.maps {
        let map = ebpf
            .map(name)
            .ok_or_else(|| format!("the {what} object has no map {name}"))?;
        let fd = map_data(map)
            .ok_or_else(|| format!("{name} map: a type sojourn does not read"))?
            .fd();
        maps.push((name.to_string(), owned(fd.as_fd(), name)?));
    }
    // Dropping `ebpf` closes aya's descriptors; the copies keep the
    // programs loaded and the maps alive.
    Ok(Loaded {
        programs,
        maps,
        left_out,
    })
}

/// The program `name` of a loaded object, as the program type `P`.
fn program_of<'a, P>(ebpf: &'a mut aya::Ebpf, what: &str, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("the {what} object has no program {name}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| format!("{name}: {}", causes(&e)))
}

/// The map types the objects' maps are.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m) => Some(m),
        _ => None,
    }
}

fn owned(fd: BorrowedFd<'_>, name: &str) -> Result<OwnedFd, String> {
    fd.try_clone_to_owned()
        .map_err(|e| format!("copying {name}'s descriptor: {e}"))
}

fn attach_all(object: &Object, loaded: Loaded) -> Result<Attached, String> {
    let Loaded {
        programs,
        maps,
        mut left_out,
    } = loaded;
    let program = |name: &str| {
        programs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fd)| fd.as_fd())
            .ok_or_else(|| format!("the loader gave no program {name}"))
    };
    let mut links = Vec::new();
    for name in object.btf_tracepoints {
        links.push(
            attach::btf_tracepoint(program(name)?)
                .map_err(|e| format!("attaching to tracepoint {name}: {e}"))?,
        );
    }
    for name in object.optional_btf_tracepoints {
        // Not asked for, or left out at load.
        let Ok(fd) = program(name) else { continue };
        match attach::btf_tracepoint(fd) {
            Ok(link) => links.push(link),
            Err(e) => left_out.push((name.to_string(), format!("attaching: {e}"))),
        }
    }
    for (name, category, event) in object.tracepoints {
        links.push(
            attach::tracepoint(program(name)?, category, event)
                .map_err(|e| format!("attaching to tracepoint {event}: {e}"))?,
        );
    }
    let maps = maps
        .into_iter()
        .map(|(name, fd)| {
            let data = MapData::from_fd(fd).map_err(|e| format!("{name} map: {}", causes(&e)))?;
            let map = Map::from_map_data(data).map_err(|e| format!("{name} map: {e}"))?;
            Ok((name, map))
        })
        .collect::<Result<_, String>>()?;
    Ok(Attached {
        _links: links,
        maps,
        left_out,
    })
}

/// What the loader sends for one object, with the descriptors of its
/// programs, then of its maps, in these orders.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    error: Option<String>,
    programs: Vec<String>,
    maps: Vec<String>,
    left_out: Vec<(String, String)>,
}

/// The most descriptors one reply carries (the kernel allows 253).
const MAX_FDS: usize = 32;
/// The largest reply (an error message of a verifier refusal is cut to fit).
const MAX_REPLY: usize = 16 * 1024;
/// The most said of why an optional program was left out.
const MAX_LEFT_OUT_REASON: usize = 1024;

fn load_in_child(
    executable: &std::path::Path,
    requests: &[Request],
) -> Result<Vec<Result<Loaded, String>>, String> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("a socket for the eBPF loader: {e}"))?;
    // Theirs is inherited by the child only (and by any process this one
    // starts meanwhile; the replies are read without waiting, so such a
    // holder cannot stall them).
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
        .map_err(|e| format!("a socket for the eBPF loader: {e}"))?;
    let request = serde_json::to_string(requests).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(executable)
        // What ps shows for it.
        .arg0("sojourn (eBPF loader)")
        .env(REQUEST_VAR, request)
        .env(
            SOCKET_VAR,
            std::os::fd::AsRawFd::as_raw_fd(&theirs).to_string(),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the eBPF loader {}: {e}", executable.display()));
    drop(theirs);
    let status = wait_at_most(&mut child?, LOADER_TIMEOUT)?;
    let mut loaded = Vec::with_capacity(requests.len());
    while loaded.len() < requests.len() {
        match receive(&ours)? {
            Some(reply) => loaded.push(reply),
            None => break,
        }
    }
    if loaded.len() < requests.len() {
        let why = format!("the eBPF loader exited ({status}) before it answered");
        loaded.resize_with(requests.len(), || Err(why.clone()));
    }
    Ok(loaded)
}

/// The longest a load may take (140–300 ms measured): past it the loader is
/// killed and the exporter goes on without eBPF rather than never start.
const LOADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `child`'s exit status; killed, and an error, past `timeout`.
fn wait_at_most(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> Result<std::process::ExitStatus, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the eBPF loader took over {} s and was killed",
                    timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for the eBPF loader: {e}")),
        }
    }
}

/// One reply, without waiting (the loader has exited): None when none is
/// left.
fn receive(socket: &OwnedFd) -> Result<Option<Result<Loaded, String>>, String> {
    let mut bytes = vec![0u8; MAX_REPLY];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = match rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(r) => r,
        Err(rustix::io::Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(format!("reading the eBPF loader's reply: {e}")),
    };
    if received.bytes == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let reply: Reply = serde_json::from_slice(&bytes[..received.bytes])
        .map_err(|e| format!("the eBPF loader's reply: {e}"))?;
    if let Some(error) = reply.error {
        return Ok(Some(Err(error)));
    }
    if fds.len() != reply.programs.len() + reply.maps.len() {
        return Err(format!(
            "the eBPF loader sent {} descriptors for {} programs and {} maps",
            fds.len(),
            reply.programs.len(),
            reply.maps.len()
        ));
    }
    let maps = fds.split_off(reply.programs.len());
    Ok(Some(Ok(Loaded {
        programs: reply.programs.into_iter().zip(fds).collect(),
        maps: reply.maps.into_iter().zip(maps).collect(),
        left_out: reply.left_out,
    })))
}

/// Serves as the loader when this process was started as one: loads the
/// requested objects, sends each one's descriptors back and returns the
/// exit code; None in any other process. Call first thing in `main`.
pub fn serve_if_asked(objects: &[&'static Object]) -> Option<std::process::ExitCode> {
    let request = std::env::var(REQUEST_VAR).ok()?;
    let code = match serve(objects, &request) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sojourn: eBPF loader: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    Some(code)
}

fn serve(objects: &[&'static Object], request: &str) -> Result<(), String> {
    let requests: Vec<Request> =
        serde_json::from_str(request).map_err(|e| format!("{REQUEST_VAR}: {e}"))?;
    let raw: std::os::fd::RawFd = std::env::var(SOCKET_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{SOCKET_VAR} names no descriptor"))?;
    // SAFETY: the parent passed this descriptor, open, for this process
    // alone to use; nothing else here takes it.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    for loaded in load_here(objects, &requests) {
        send(&socket, loaded)?;
    }
    Ok(())
}

fn send(socket: &OwnedFd, loaded: Result<Loaded, String>) -> Result<(), String> {
    let (reply, fds): (Reply, Vec<BorrowedFd<'_>>);
    let held;
    match loaded {
        Ok(l) => {
            held = l;
            reply = Reply {
                error: None,
                programs: held.programs.iter().map(|(n, _)| n.clone()).collect(),
                maps: held.maps.iter().map(|(n, _)| n.clone()).collect(),
                left_out: held.left_out.clone(),
            };
            fds = held
                .programs
                .iter()
                .chain(&held.maps)
                .map(|(_, fd)| fd.as_fd())
                .collect();
        }
        Err(mut error) => {
            truncate(&mut error, MAX_REPLY / 2);
            reply = Reply {
                error: Some(error),
                programs: Vec::new(),
                maps: Vec::new(),
                left_out: Vec::new(),
            };
            fds = Vec::new();
        }
    }
    if fds.len() > MAX_FDS {
        return Err(format!("{} descriptors in one reply", fds.len()));
    }
    let bytes = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err("the descriptors do not fit one message".into());
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(|e| format!("sending to the exporter: {e}"))?;
    Ok(())
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loader that exits without answering fails every request with its
    /// exit status, and nothing waits on it.
    #[test]
    fn a_loader_that_dies_fails_each_request_and_says_how() {
        let requests = vec![
            Request {
                object: "runqueue".into(),
                globals: Vec::new(),
                optional: Vec::new(),
            },
            Request {
                object: "block".into(),
                globals: Vec::new(),
                optional: Vec::new(),
            },
        ];
        let loaded = load_in_child(std::path::Path::new("/bin/false"), &requests).unwrap();
        assert_eq!(loaded.len(), 2);
        for result in loaded {
            let why = result.err().expect("no programs from a loader that died");
            assert!(why.contains("exited (exit status: 1)"), "{why}");
        }
        let missing = load_in_child(std::path::Path::new("/nonexistent/sojourn"), &requests);
        assert!(missing.is_err_and(|e| e.contains("starting the eBPF loader")));
    }

    /// A loader that hangs is killed at the timeout.
    #[test]
    fn a_loader_that_hangs_is_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let why = wait_at_most(&mut child, std::time::Duration::from_millis(200)).unwrap_err();
        assert!(why.contains("killed"), "{why}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(child.try_wait().unwrap().is_some(), "reaped");
    }

    /// An optional program the kernel refuses (here: on a tracepoint no
    /// kernel has) is left out with the reason, and the rest of its object
    /// loads and attaches. The object is built by clang at test time;
    /// needs root and BTF, skipped without clang unless CI's
    /// SOJOURN_REQUIRE_EBPF is set.
    #[test]
    fn an_optional_program_the_kernel_refuses_is_left_out() {
        const SOURCE: &str = r#"
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
__u64 switches = 0;
SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch) { __sync_fetch_and_add(&switches, 1); return 0; }
SEC("tp_btf/sojourn_no_such_tracepoint")
int BPF_PROG(sojourn_no_such_tracepoint) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"#;
        let required = std::env::var_os("SOJOURN_REQUIRE_EBPF").is_some();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("optional.bpf.c"), SOURCE).unwrap();
        let multiarch = std::process::Command::new("gcc")
            .arg("-print-multiarch")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "x86_64-linux-gnu".into());
        let built = std::process::Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", "optional.bpf.c", "-o", "optional.bpf.o"])
            .current_dir(dir.path())
            .output();
        match built {
            Ok(o) if o.status.success() => {}
            other if !required => {
                eprintln!("skipped: no clang to build a BPF object: {other:?}");
                return;
            }
            other => panic!("building the object: {other:?}"),
        }
        let bytes: &'static [u8] =
            Vec::leak(std::fs::read(dir.path().join("optional.bpf.o")).unwrap());
        let object: &'static Object = Box::leak(Box::new(Object {
            name: "optional",
            what: "test",
            bytes,
            btf_tracepoints: &["sched_switch"],
            optional_btf_tracepoints: &["sojourn_no_such_tracepoint"],
            tracepoints: &[],
            maps: &[],
        }));
        let request = Request {
            optional: vec!["sojourn_no_such_tracepoint".into()],
            ..Request::plain(object)
        };
        let loaded = load_here(&[object], &[request]).pop().unwrap();
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) if !required => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let names: Vec<&str> = loaded.programs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sched_switch"]);
        let attached = attach_all(object, loaded).unwrap();
        assert_eq!(attached._links.len(), 1);
        let [(name, why)] = attached.left_out() else {
            panic!("left out: {:?}", attached.left_out());
        };
        assert_eq!(name, "sojourn_no_such_tracepoint");
        assert!(why.contains("sojourn_no_such_tracepoint"), "{why}");
    }

    #[test]
    fn long_errors_are_cut_at_a_character() {
        let mut text = "é".repeat(10);
        truncate(&mut text, 5);
        assert_eq!(text, "éé");
    }
}
