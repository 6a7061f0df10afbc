#!/usr/bin/env bash
# Context-switch cost with sojourn's eBPF programs attached, beside
# libbpf-tools' runqlat alone and beside nothing: `perf bench sched pipe`
# (two tasks passing a byte back and forth, two context switches and two
# wakeups a round trip), in alternating rounds so that drift hits all three
# alike. Prints usecs/op per round and the medians. Needs root, perf
# (linux-perf) and runqlat (libbpf-tools).
# usage: scripts/bench_ebpf_overhead.sh [ROUNDS] [LOOPS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
loops=${2:-200000}
bin=target/release/sojourn
[[ -x $bin ]] || cargo build --release --locked
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
done
for k in off sojourn runqlat; do
  median=$(tr ' ' '\n' <<<"${all[$k]}" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  echo "$k: ${all[$k]}-> median $median usecs/op"
done
