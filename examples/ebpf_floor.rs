//! Loads an eBPF object whose programs are named after the `tp_btf`
//! tracepoints they attach to, attaches each, and holds them until killed:
//! the empty programs of `scripts/bpf/floor.bpf.c`, for
//! `scripts/bench_ebpf_overhead.sh` to measure what attaching anything to
//! the scheduler's tracepoints costs.
//! `ebpf_floor OBJECT TRACEPOINT...`
use aya::programs::BtfTracePoint;

fn main() {
    let mut args = std::env::args().skip(1);
    let object = args.next().expect("usage: ebpf_floor OBJECT TRACEPOINT...");
    let bytes = std::fs::read(&object).expect("read the object");
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::Ebpf::load(&bytes).expect("load the object");
    for name in args {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(&name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .expect("a tp_btf program");
        program.load(&name, &btf).expect("verifier");
        program.attach().expect("attach");
    }
    eprintln!("attached");
    loop {
        std::thread::park();
    }
}
