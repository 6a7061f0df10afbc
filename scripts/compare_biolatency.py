#!/usr/bin/env python3
"""sojourn's eBPF disk-request histograms beside libbpf-tools' biolatency,
over the same window and the same load.

usage: scripts/compare_biolatency.py [--seconds 10] [--writers 16] [--no-build]

Makes a loop device over a 256 MiB file, starts `target/release/sojourn`
(ebpf collector only, loop devices not excluded), starts N writers of
direct I/O to the loop device (`dd oflag=direct`, 4 KiB blocks, each its
own region), then runs `biolatency -d loopN SECONDS 1` and
`biolatency -Q -d loopN SECONDS 1` (Debian package libbpf-tools) while
scraping sojourn at the start and end. sojourn's served time (issue to
completion) is biolatency's latency; its queued time (insert to issue)
plus served is what `-Q` measures, which two separate histograms cannot
add up, so `-Q`'s quantiles are printed beside for reading, not checked.
Quantiles are the upper bound of the bucket that holds them; biolatency's
buckets are powers of two microseconds, sojourn's powers of two seconds
(2^-20 s = 0.954 µs): the two agree when each quantile's bucket is the
same or the adjacent one. Needs root and losetup. It prints, and exits 1
when a served quantile is more than one bucket apart.
"""
import argparse, math, os, re, signal, subprocess, sys, tempfile, time, urllib.request

from compare_runqlat import per_bucket, quantile, runqlat_buckets, start_sojourn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 19872


def scrape(device):
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
    out = {}
    for phase in ("queued", "served"):
        buckets = {}
        pattern = rf'^sojourn_disk_request_{phase}_seconds_bucket\{{device="{device}",le="([^"]+)"\}} (\d+)$'
        for m in re.finditer(pattern, text, re.M):
            buckets[float(m.group(1))] = int(m.group(2))
        out[phase] = buckets
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    backing = tempfile.NamedTemporaryFile(prefix="sojourn-loop-")
    backing.truncate(256 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", backing.name], capture_output=True,
                          text=True, check=True).stdout.strip()
    name = os.path.basename(loop)
    exporter = start_sojourn(PORT, "--collector.disk.device-exclude", "^$")
    writers = []
    try:
        time.sleep(1.5)
        region = (256 << 20) // 4096 // a.writers
        # Each dd writes its region again and again until killed.
        writers = [subprocess.Popen(
            ["sh", "-c", f"while :; do dd if=/dev/zero of={loop} bs=4k count={region} "
                         f"seek={w * region} oflag=direct status=none; done"])
            for w in range(a.writers)]
        time.sleep(1)
        before = scrape(name)
        plain = subprocess.Popen(["biolatency", "-d", name, str(a.seconds), "1"],
                                 stdout=subprocess.PIPE, text=True)
        queued = subprocess.Popen(["biolatency", "-Q", "-d", name, str(a.seconds), "1"],
                                  stdout=subprocess.PIPE, text=True)
        plain_out, queued_out = plain.communicate()[0], queued.communicate()[0]
        after = scrape(name)
    finally:
        for p in writers:
            p.kill()
        subprocess.run(["pkill", "-f", f"of={loop} "], check=False)
        exporter.send_signal(signal.SIGTERM)
        exporter.wait()
        subprocess.run(["losetup", "-d", loop], check=False)
    served = per_bucket(before["served"], after["served"])
    waited = per_bucket(before["queued"], after["queued"])
    theirs, theirs_q = runqlat_buckets(plain_out), runqlat_buckets(queued_out)
    if not served or not theirs:
        sys.exit(f"no requests timed on {name}: sojourn {len(served)} buckets, biolatency {len(theirs)}")
    print(f"{a.writers} direct-I/O writers on {name}, {a.seconds} s; requests counted: "
          f"sojourn {sum(c for _, c in served)}, biolatency {sum(c for _, c in theirs)}")
    worst = 0
    for q in (0.5, 0.99):
        s, r = quantile(served, q), quantile(theirs, q)
        apart = abs(round(math.log2(s / r))) if s > 0 and r > 0 else 99
        worst = max(worst, apart)
        print(f"served p{int(q * 100)}: sojourn ≤ {s * 1e3:.4g} ms, biolatency ≤ {r * 1e3:.4g} ms, "
              f"{apart} bucket(s) apart")
    for q in (0.5, 0.99):
        print(f"queued p{int(q * 100)}: sojourn ≤ {quantile(waited, q) * 1e3:.4g} ms "
              f"(queued and served together, biolatency -Q: ≤ {quantile(theirs_q, q) * 1e3:.4g} ms)")
    sys.exit(0 if worst <= 1 else 1)


if __name__ == "__main__":
    main()
