#!/usr/bin/env python3
"""CPU share of the queue sampler at several sampling periods.

usage: scripts/bench_sampler.py [--periods 10ms,1ms] [--seconds 10]
                                [--sojourn-args "FLAGS"] [--no-build]

Starts sojourn with only the queue collector for each period, lets it run,
and reads sojourn_queue_sampler_cpu_seconds_total (the sampler thread's own
CLOCK_THREAD_CPUTIME_ID) and ..._ticks_total twice, --seconds apart. Reports
the share of one core, the CPU per tick, and the whole process's CPU share
from /proc/PID/stat (which adds the HTTP thread, idle here).
--sojourn-args "--collector.ebpf" times the CPU, disk and accept queues
with eBPF instead, as the default collectors do where permitted.
"""
import argparse, http.client, os, signal, subprocess, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    vals = {}
    for line in body.splitlines():
        for name in ("sojourn_queue_sampler_cpu_seconds_total", "sojourn_queue_sampler_ticks_total"):
            if line.startswith(name + " "):
                vals[name] = float(line.split()[1])
    return vals


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--periods", default="10ms,1ms")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--sojourn-args", default="", help="more flags for sojourn")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    for period in a.periods.split(","):
        p = subprocess.Popen([os.path.join(ROOT, "target/release/sojourn"), "--web.listen-address", "127.0.0.1:19830",
                              "--collector.disable-defaults", "--collector.queue", "--queue.sample-interval", period,
                              "--log.level", "warn", *a.sojourn_args.split()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):
                try:
                    scrape(19830)
                    break
                except OSError:
                    time.sleep(0.1)
            time.sleep(1)
            v0, c0, t0 = scrape(19830), proc_cpu(p.pid), time.time()
            time.sleep(a.seconds)
            v1, c1, t1 = scrape(19830), proc_cpu(p.pid), time.time()
            cpu = v1["sojourn_queue_sampler_cpu_seconds_total"] - v0["sojourn_queue_sampler_cpu_seconds_total"]
            ticks = v1["sojourn_queue_sampler_ticks_total"] - v0["sojourn_queue_sampler_ticks_total"]
            wall = t1 - t0
            print(f"period {period:>5}: sampler {100 * cpu / wall:.2f}% of one core, "
                  f"{1e6 * cpu / ticks:.1f} us per tick, {ticks / wall:.0f} ticks/s; "
                  f"process {100 * (c1 - c0) / wall:.2f}%", flush=True)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


if __name__ == "__main__":
    main()
