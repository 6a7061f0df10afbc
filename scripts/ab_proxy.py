#!/usr/bin/env python3
"""Side-by-side A/B of `sojourn proxy` builds: throughput, p99 and CPU per request.

usage: scripts/ab_proxy.py BINARY [BINARY ...] [--rounds 6] [--seconds 5]

Starts ../shared/bench/nginx_pair.conf's backend (nginx, `return 200` on
127.0.0.1:18081) and one `sojourn proxy` per binary (127.0.0.1:18100+i),
then drives wrk (1 thread, 50 connections) at each in turn, the order
reversed every other round so drift hits all alike. For each run it prints
requests/s, wrk's p99 and the proxy's user and system CPU per request
(utime and stime of /proc/<pid>/task/*/stat over the run, in clock ticks),
and at the end the medians. Changes of a few percent need the medians of
several rounds on a noisy machine; a copy of the build under test
(`cp target/release/sojourn /tmp/sj_a`) keeps it from being rebuilt
under the run. Loopback only.
"""
import argparse, os, re, signal, statistics, subprocess

# The backend's config and the port wait are bench_proxy.py's (this
# script's directory is on sys.path when it runs).
from bench_proxy import CONF, wait_port

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    user = system = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    prefix = "/tmp/sojourn-ab-nginx"
    os.makedirs(prefix, exist_ok=True)
    nginx = subprocess.Popen(["nginx", "-c", CONF, "-p", prefix],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxies = [subprocess.Popen([b, "proxy", "--listen", f"127.0.0.1:{18100 + i}",
                                 "--upstream", "http://127.0.0.1:18081",
                                 "--web.listen-address", f"127.0.0.1:{19900 + i}", "--log.level", "warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i, b in enumerate(args.binaries)]
    names = [f"{i}:{os.path.basename(b)}" for i, b in enumerate(args.binaries)]
    runs = {n: [] for n in names}
    try:
        wait_port(18081)
        for i in range(len(proxies)):
            wait_port(18100 + i)
        for r in range(args.rounds):
            order = list(range(len(proxies)))
            if r % 2:
                order.reverse()
            for i in order:
                before = cpu_ticks(proxies[i].pid)
                out = subprocess.run(["wrk", "-t1", "-c50", f"-d{args.seconds}s", "--latency",
                                      f"http://127.0.0.1:{18100 + i}/"],
                                     capture_output=True, text=True, check=True).stdout
                after = cpu_ticks(proxies[i].pid)
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
                p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
                requests = rps * args.seconds
                user = (after[0] - before[0]) / TICK * 1e6 / requests
                system = (after[1] - before[1]) / TICK * 1e6 / requests
                runs[names[i]].append((rps, p99, user, system))
                print(f"{names[i]:24} {rps:8.0f} req/s  p99 {p99:.3f} ms  "
                      f"user {user:.2f} µs  sys {system:.2f} µs per request", flush=True)
        print()
        for n in names:
            med = [statistics.median(x[k] for x in runs[n]) for k in range(4)]
            print(f"{n:24} median {med[0]:8.0f} req/s  p99 {med[1]:.3f} ms  "
                  f"user {med[2]:.2f} µs  sys {med[3]:.2f} µs per request")
    finally:
        for p in proxies + [nginx]:
            p.send_signal(signal.SIGTERM)
        for p in proxies + [nginx]:
            p.wait()


if __name__ == "__main__":
    main()
