#!/usr/bin/env bash
# Context-switch cost with sojourn's eBPF programs attached, beside
# libbpf-tools' runqlat alone, beside empty programs on the same
# tracepoints (the floor: what attaching anything there costs) and beside
# nothing: `perf bench sched pipe` (two tasks passing a byte back and
# forth, two context switches and two wakeups a round trip), in alternating
# rounds so that drift hits all four alike. Prints usecs/op per round and
# the medians. Needs root, perf (linux-perf), runqlat (libbpf-tools) and
# clang (for scripts/bpf/floor.bpf.c).
# usage: scripts/bench_ebpf_overhead.sh [ROUNDS] [LOOPS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
loops=${2:-200000}
bin=target/release/sojourn
[[ -x $bin ]] || cargo build --release --locked
cargo build --release --locked --example ebpf_floor
floor_obj=$(mktemp --suffix .bpf.o)
trap 'rm -f "$floor_obj"' EXIT
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
clang -O2 -g -target bpf -I"/usr/include/$multiarch" -c scripts/bpf/floor.bpf.c -o "$floor_obj"
pipe() { perf bench sched pipe -l "$loops" 2>&1 | awk '/usecs\/op/ {print $1}'; }
declare -A all
for ((r = 1; r <= rounds; r++)); do
  all[off]+="$(pipe) "
  $bin --web.listen-address 127.0.0.1:19873 --collector.disable-defaults \
    --collector.ebpf --log.level warn &
  pid=$!
  sleep 1.5
  all[sojourn]+="$(pipe) "
  kill $pid; wait $pid 2>/dev/null || true
  runqlat 3600 1 >/dev/null 2>&1 &
  pid=$!
  sleep 1.5
  all[runqlat]+="$(pipe) "
  kill -INT $pid; wait $pid 2>/dev/null || true
  target/release/examples/ebpf_floor "$floor_obj" sched_wakeup sched_wakeup_new sched_switch 2>/dev/null &
  pid=$!
  sleep 1.5
  all[floor]+="$(pipe) "
  kill $pid; wait $pid 2>/dev/null || true
done
for k in off floor sojourn runqlat; do
  median=$(tr ' ' '\n' <<<"${all[$k]}" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  echo "$k: ${all[$k]}-> median $median usecs/op"
done
