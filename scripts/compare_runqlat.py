#!/usr/bin/env python3
"""sojourn's eBPF run-queue histogram beside libbpf-tools' runqlat, over the
same window and the same load.

usage: scripts/compare_runqlat.py [--seconds 10] [--busy-per-cpu 3] [--pin CPU]
                                  [--cgroup [--quota CPUS]] [--no-build]

Starts `target/release/sojourn` (ebpf collector only) on a loopback port,
starts N busy processes per CPU (with --pin, all of them pinned to that one
CPU, competing there while the others idle), then runs `runqlat SECONDS 1` (Debian
package libbpf-tools) while scraping sojourn at its start and end, and
prints both histograms' p50 and p99 as the upper bound of the bucket that
holds them. runqlat's buckets are powers of two microseconds, sojourn's
powers of two seconds (2^-20 s = 0.954 µs): bounds differ by 4.6 %, so the
two agree when each quantile's bucket is the same or the adjacent one.

--cgroup puts the busy processes in a cgroup of their own (the cpu
controller's hierarchy on a v1 host, the unified one on v2), with --quota
limited to that many CPUs (cpu.cfs_quota_us per 100 ms, cpu.max on v2), and
compares that cgroup's histogram (sojourn_cgroup_runqueue_wait_seconds)
with the sum of runqlat's per-process ones (`runqlat -P`) over the busy
processes: the same waits, attributed by cgroup in the kernel by one and by
process by the other. The cgroup histogram's text buckets are coarse
(2^-13 s to 2^-1 s by factors of eight), so there both quantiles are placed
in those buckets and agree when in the same or adjacent one.

Needs root. Nothing here is a pass/fail test: it prints, and exits 1 when
a quantile is more than one bucket apart.
"""
import argparse, math, os, re, signal, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 19871


def scrape(cgroup=None):
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
    if cgroup is None:
        pattern = r'^sojourn_runqueue_wait_seconds_bucket\{le="([^"]+)"\} (\d+)$'
    else:
        pattern = (r'^sojourn_cgroup_runqueue_wait_seconds_bucket\{cgroup="' + re.escape(cgroup)
                   + r'",[^}]*le="([^"]+)"\} (\d+)$')
    buckets = {}
    for m in re.finditer(pattern, text, re.M):
        buckets[float(m.group(1))] = int(m.group(2))
    if not buckets:
        sys.exit(f"sojourn serves no run-queue histogram {'for ' + cgroup if cgroup else ''} (is it root?)")
    return buckets


class Cgroup:
    """A cgroup of the cpu controller's hierarchy, removed on close."""

    def __init__(self, quota):
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        base = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/cpu"
        self.name = f"sojourn-compare-{os.getpid()}"
        self.dir = os.path.join(base, self.name)
        os.mkdir(self.dir)
        self.procs = os.path.join(self.dir, "cgroup.procs")
        if quota:
            if v2:
                self.write("cpu.max", f"{int(quota * 100000)} 100000")
            else:
                self.write("cpu.cfs_period_us", "100000")
                self.write("cpu.cfs_quota_us", str(int(quota * 100000)))

    def write(self, name, value):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(value)

    def add(self, pid):
        self.write("cgroup.procs", str(pid))

    def close(self):
        for _ in range(50):
            try:
                os.rmdir(self.dir)
                return
            except OSError:
                time.sleep(0.1)


def start_sojourn(port, *flags):
    """target/release/sojourn with only the ebpf collector (and `flags`) on
    127.0.0.1:`port`; the caller stops it."""
    return subprocess.Popen(
        [os.path.join(ROOT, "target/release/sojourn"), "--web.listen-address", f"127.0.0.1:{port}",
         "--collector.disable-defaults", "--collector.ebpf", *flags, "--log.level", "warn"])


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


def runqlat_per_process(out, pids):
    """The sum of runqlat -P's histograms of the processes `pids`."""
    total = {}
    for block in re.split(r"^pid = ", out, flags=re.M)[1:]:
        pid = int(block.split()[0])
        if pid in pids:
            for bound, count in runqlat_buckets(block):
                total[bound] = total.get(bound, 0) + count
    return sorted(total.items())


def coarse(pairs, bounds):
    """(bound, count) pairs re-counted into `bounds` (ascending, the last
    +Inf): each count goes to the first bound at or above its own."""
    counts = [0] * len(bounds)
    for bound, count in pairs:
        i = next(i for i, b in enumerate(bounds) if bound <= b * 1.0000001)
        counts[i] += count
    return list(zip(bounds, counts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--busy-per-cpu", type=int, default=3)
    ap.add_argument("--pin", type=int, help="pin every busy process to this CPU")
    ap.add_argument("--cgroup", action="store_true", help="compare a cgroup of the busy processes")
    ap.add_argument("--quota", type=float, help="with --cgroup: its CPU limit, in CPUs")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    exporter = start_sojourn(PORT)
    busy = []
    cgroup = Cgroup(a.quota) if a.cgroup else None
    try:
        time.sleep(1.5)
        cpus = os.cpu_count()
        spin = [sys.executable, "-c", "while True: pass"]
        if a.pin is not None:
            spin = ["taskset", "-c", str(a.pin)] + spin
        busy = [subprocess.Popen(spin) for _ in range(a.busy_per_cpu * cpus)]
        label = None
        if cgroup:
            for p in busy:
                cgroup.add(p.pid)
            label = "/" + cgroup.name
            # The exporter lists cgroups holding processes when scraped.
            scrape()
        time.sleep(1)
        before = scrape(label) if label else scrape()
        command = ["runqlat"] + (["-P"] if cgroup else []) + [str(a.seconds), "1"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        after = scrape(label) if label else scrape()
    finally:
        for p in busy:
            p.kill()
            p.wait()
        if cgroup:
            cgroup.close()
        exporter.send_signal(signal.SIGTERM)
        exporter.wait()
    ours = per_bucket(before, after)
    if cgroup:
        theirs = coarse(runqlat_per_process(out, {p.pid for p in busy}), [b for b, _ in ours])
    else:
        theirs = runqlat_buckets(out)
    worst = 0
    where = (f"{len(busy)} busy processes pinned to CPU {a.pin}" if a.pin is not None
             else f"{a.busy_per_cpu} busy processes per CPU")
    if cgroup:
        where += f" in cgroup {label}" + (f" limited to {a.quota} CPU" if a.quota else "")
    print(f"{where}, {a.seconds} s; waits counted: "
          f"sojourn {sum(c for _, c in ours)}, runqlat {sum(c for _, c in theirs)}")
    for q in (0.5, 0.99):
        s, r = quantile(ours, q), quantile(theirs, q)
        if cgroup:
            bounds = [b for b, _ in ours]
            apart = abs(bounds.index(s) - bounds.index(r))
        else:
            apart = abs(round(math.log2(s / r))) if s > 0 and r > 0 else 99
        worst = max(worst, apart)
        print(f"p{int(q * 100)}: sojourn ≤ {s * 1e3:.4g} ms, runqlat ≤ {r * 1e3:.4g} ms, {apart} bucket(s) apart")
    sys.exit(0 if worst <= 1 else 1)


if __name__ == "__main__":
    main()
