#!/usr/bin/env bash
# Builds the eBPF objects in bpf/ from their C sources, or with --check
# verifies that the committed objects are what the sources build.
#
# The objects are committed so that `cargo build` needs no C toolchain;
# this script is how they are made (Debian packages: clang, llvm for
# llvm-strip, libbpf-dev for bpf_helpers.h, linux-libc-dev). The types
# the programs read come from bpf/types.h, not from the building machine's
# kernel, and debug sections (which record the build directory) are
# stripped, keeping the BTF that CO-RE relocation needs: the same compiler
# makes the same bytes anywhere.
set -euo pipefail
cd "$(dirname "$0")/../bpf"

check=0
[[ "${1:-}" == "--check" ]] && check=1

multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
status=0
for src in *.bpf.c; do
  obj="${src%.c}.o"
  out=$(mktemp)
  clang -O2 -g -target bpf -D__TARGET_ARCH_x86 \
    -I"/usr/include/$multiarch" -Wall -Werror -ffile-prefix-map="$PWD"=. \
    -c "$src" -o "$out"
  llvm-strip -g "$out"
  if ((check)); then
    if ! cmp -s "$out" "$obj"; then
      echo "bpf/$obj is not what bpf/$src builds ($(clang --version | head -1)); run scripts/build_bpf.sh" >&2
      status=1
    fi
    rm -f "$out"
  else
    mv "$out" "$obj"
    chmod 644 "$obj"
    echo "built bpf/$obj ($(stat -c %s "$obj") bytes)"
  fi
done
exit $status
