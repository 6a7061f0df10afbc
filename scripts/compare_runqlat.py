#!/usr/bin/env python3
"""sojourn's eBPF run-queue histogram beside libbpf-tools' runqlat, over the
same window and the same load.

usage: scripts/compare_runqlat.py [--seconds 10] [--busy-per-cpu 3] [--pin CPU]
                                  [--no-build]

Starts `target/release/sojourn` (ebpf collector only) on a loopback port,
starts N busy processes per CPU (with --pin, all of them pinned to that one
CPU, competing there while the others idle), then runs `runqlat SECONDS 1` (Debian
package libbpf-tools) while scraping sojourn at its start and end, and
prints both histograms' p50 and p99 as the upper bound of the bucket that
holds them. runqlat's buckets are powers of two microseconds, sojourn's
powers of two seconds (2^-20 s = 0.954 µs): bounds differ by 4.6 %, so the
two agree when each quantile's bucket is the same or the adjacent one.
Needs root. Nothing here is a pass/fail test: it prints, and exits 1 when
a quantile is more than one bucket apart.
"""
import argparse, math, os, re, signal, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 19871


def scrape():
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
    buckets = {}
    for m in re.finditer(r'^sojourn_runqueue_wait_seconds_bucket\{le="([^"]+)"\} (\d+)$', text, re.M):
        buckets[float(m.group(1))] = int(m.group(2))
    if not buckets:
        sys.exit("sojourn serves no sojourn_runqueue_wait_seconds (is it root?)")
    return buckets


def quantile(bounds_counts, q):
    """Upper bound of the bucket holding quantile q; (bound, count) pairs of
    per-bucket (not cumulative) counts in ascending bound order."""
    total = sum(c for _, c in bounds_counts)
    if total == 0:
        return float("nan")
    seen = 0
    for bound, count in bounds_counts:
        seen += count
        if seen >= q * total:
            return bound
    return bounds_counts[-1][0]


def per_bucket(before, after):
    """(bound, count in the window) pairs from two scrapes' cumulative
    buckets, {bound: count}."""
    bounds = sorted(after)
    cumulative = [after[b] - before.get(b, 0) for b in bounds]
    return [(b, c - (cumulative[i - 1] if i else 0)) for i, (b, c) in enumerate(zip(bounds, cumulative))]


def runqlat_buckets(out):
    pairs = []
    for m in re.finditer(r"^\s*(\d+) -> (\d+)\s*: (\d+)", out, re.M):
        # [lo, hi] microseconds, integers: the bucket's upper bound is hi + 1 µs.
        pairs.append(((int(m.group(2)) + 1) / 1e6, int(m.group(3))))
    return pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--busy-per-cpu", type=int, default=3)
    ap.add_argument("--pin", type=int, help="pin every busy process to this CPU")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    exporter = subprocess.Popen(
        [os.path.join(ROOT, "target/release/sojourn"), "--web.listen-address", f"127.0.0.1:{PORT}",
         "--collector.disable-defaults", "--collector.ebpf", "--log.level", "warn"])
    busy = []
    try:
        time.sleep(1.5)
        cpus = os.cpu_count()
        spin = [sys.executable, "-c", "while True: pass"]
        if a.pin is not None:
            spin = ["taskset", "-c", str(a.pin)] + spin
        busy = [subprocess.Popen(spin) for _ in range(a.busy_per_cpu * cpus)]
        time.sleep(1)
        before = scrape()
        out = subprocess.run(["runqlat", str(a.seconds), "1"], capture_output=True, text=True, check=True).stdout
        after = scrape()
    finally:
        for p in busy:
            p.kill()
        exporter.send_signal(signal.SIGTERM)
        exporter.wait()
    ours = per_bucket(before, after)
    theirs = runqlat_buckets(out)
    worst = 0
    where = (f"{len(busy)} busy processes pinned to CPU {a.pin}" if a.pin is not None
             else f"{a.busy_per_cpu} busy processes per CPU")
    print(f"{where}, {a.seconds} s; waits counted: "
          f"sojourn {sum(c for _, c in ours)}, runqlat {sum(c for _, c in theirs)}")
    for q in (0.5, 0.99):
        s, r = quantile(ours, q), quantile(theirs, q)
        apart = abs(round(math.log2(s / r))) if s > 0 and r > 0 else 99
        worst = max(worst, apart)
        print(f"p{int(q * 100)}: sojourn ≤ {s * 1e3:.4g} ms, runqlat ≤ {r * 1e3:.4g} ms, {apart} bucket(s) apart")
    sys.exit(0 if worst <= 1 else 1)


if __name__ == "__main__":
    main()
