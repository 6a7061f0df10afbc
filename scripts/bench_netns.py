#!/usr/bin/env python3
"""Cost of the netns collector with many network namespaces.

usage: scripts/bench_netns.py [--namespaces 200] [--listeners 5] [--scrapes 100] [--no-build]

Needs root. Makes --namespaces network namespaces (`ip netns add`), each
with loopback up and one process holding --listeners listening sockets on
127.0.0.1 (as a pod's server would), starts sojourn with only the netns
collector (every namespace is found at its first scrape), scrapes it
--scrapes times over one keep-alive connection and reports: series per
scrape, CPU per scrape (utime+stime from /proc/PID/stat), the collector's
own median duration, the client's median scrape time, and sojourn's file
descriptors. Everything it made is removed at the end, also on Ctrl-C.
"""
import argparse, http.client, os, re, signal, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")
PORT = 19831

HOLDER = r"""
import socket, sys, time
held = []
for i in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 8080 + i)); s.listen(16); held.append(s)
time.sleep(3600)
"""


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--listeners", type=int, default=5)
    ap.add_argument("--scrapes", type=int, default=100)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_netns.py: needs root (ip netns)")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    names = [f"sojourn-bench-{os.getpid()}-{i}" for i in range(a.namespaces)]
    holders, sojourn = [], None
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            subprocess.run(["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"], check=True)
            holders.append(subprocess.Popen(["ip", "netns", "exec", n, "python3", "-c", HOLDER, str(a.listeners)]))
        time.sleep(1)
        sojourn = subprocess.Popen([os.path.join(ROOT, "target/release/sojourn"),
                                    "--web.listen-address", f"127.0.0.1:{PORT}",
                                    "--collector.disable-defaults", "--collector.netns",
                                    "--collector.netns.max-namespaces", str(a.namespaces + 10),
                                    "--log.level", "warn"], stdout=subprocess.DEVNULL)
        conn = None
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
                conn.request("GET", "/metrics")
                conn.getresponse().read()
                break
            except OSError:
                time.sleep(0.1)
        c0, durations, took = proc_cpu(sojourn.pid), [], []
        for _ in range(a.scrapes):
            t = time.perf_counter()
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
            took.append(time.perf_counter() - t)
            m = re.search(r'collector_duration_seconds\{collector="netns"\} (\S+)', body)
            durations.append(float(m.group(1)))
        cpu = (proc_cpu(sojourn.pid) - c0) / a.scrapes
        series = sum(1 for l in body.splitlines() if l.startswith("sojourn_netns_"))
        found = len(set(re.findall(r'netns="(\d+)"', body)))
        fds = len(os.listdir(f"/proc/{sojourn.pid}/fd"))
        durations.sort()
        took.sort()
        print(f"namespaces made {a.namespaces} (found {found}), {a.listeners} listeners each")
        print(f"series per scrape      {series}")
        print(f"CPU per scrape         {cpu * 1000:.2f} ms")
        print(f"collector median       {durations[len(durations) // 2] * 1000:.2f} ms")
        print(f"scrape median (client) {took[len(took) // 2] * 1000:.2f} ms, p99 {took[int(len(took) * 0.99)] * 1000:.2f} ms")
        print(f"file descriptors       {fds}")
    finally:
        if sojourn:
            sojourn.terminate()
            sojourn.wait()
        for h in holders:
            h.terminate()
            h.wait()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
