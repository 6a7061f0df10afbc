#!/usr/bin/env python3
"""Cost of reading every TCP socket: sojourn's netlink dump beside
/proc/net/tcp and node_exporter's tcpstat collector, in one run.

usage: scripts/bench_sockets.py [--sizes 10000,100000] [--repeat 7] [--no-build]

For each size S it opens S/2 loopback connections (S sockets: both ends),
spread over worker processes (a process may hold 20 000 files here) and over
127.0.x.y source addresses (so ephemeral ports do not run out), then:
- scrapes sojourn with only the tcp_ports collector and reads its
  sojourn_scrape_collector_duration_seconds (one inet_diag dump of listening
  sockets and one of established sockets with tcp_info, both families);
- reads /proc/net/tcp and /proc/net/tcp6 whole, as a /proc-based exporter does;
- scrapes node_exporter --collector.disable-defaults --collector.tcpstat and
  reads its node_scrape_collector_duration_seconds (tcpstat reads
  /proc/net/tcp{,6} or netlink, depending on version).
Medians of --repeat runs. Traffic stays on loopback; workers exit at the end.
"""
import argparse, http.client, os, resource, signal, socket, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_WORKER = 9000  # connections: 18 000 files, under the 20 000 limit

WORKER = r'''
import os, resource, socket, sys
n, base = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(4096); srv.setblocking(False)
port = srv.getsockname()[1]
keep = []
for i in range(n):
    c = socket.socket()
    c.bind(("127.%d.%d.%d" % (base, (i // 250) % 250 + 1, i % 250 + 1), 0))
    c.connect(("127.0.0.1", port))
    keep.append(c)
    while True:
        try:
            s, _ = srv.accept(); keep.append(s)
        except BlockingIOError:
            break
srv.setblocking(True)
while len(keep) < 2 * n:
    s, _ = srv.accept(); keep.append(s)
print("ready", port, flush=True)
sys.stdin.read()
'''


def scrape(port, path="/metrics"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    c.request("GET", path)
    body = c.getresponse().read().decode()
    return time.perf_counter() - t, body


def metric(body, prefix):
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise SystemExit(f"{prefix} not in scrape")


def wait_up(port, proc):
    for _ in range(100):
        if proc.poll() is not None:
            raise SystemExit("exporter exited")
        try:
            scrape(port)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} never came up")


def read_proc_tcp():
    t = time.perf_counter()
    lines = 0
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(f, "rb") as fh:
            lines += fh.read().count(b"\n")
    return time.perf_counter() - t, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--node-exporter", default="/usr/bin/prometheus-node-exporter")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    exporters = {
        "sojourn": subprocess.Popen([os.path.join(ROOT, "target/release/sojourn"), "--web.listen-address", "127.0.0.1:19819",
                                     "--collector.disable-defaults", "--collector.tcp_ports", "--log.level", "warn",
                                     # Every scrape dumps: this measures one dump, not the budget.
                                     "--collector.tcp_ports.cpu-budget", "1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        "node_exporter": subprocess.Popen([a.node_exporter, "--web.listen-address", "127.0.0.1:19101",
                                           "--collector.disable-defaults", "--collector.tcpstat", "--log.level", "warn"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    }
    workers = []
    results = {}
    try:
        wait_up(19819, exporters["sojourn"])
        wait_up(19101, exporters["node_exporter"])
        open_conns = 0
        for size in [int(s) for s in a.sizes.split(",")]:
            want = size // 2
            while open_conns < want:
                n = min(PER_WORKER, want - open_conns)
                w = subprocess.Popen([sys.executable, "-c", WORKER, str(n), str(len(workers) + 1)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                line = w.stdout.readline()
                if not line.startswith("ready"):
                    raise SystemExit(f"worker failed: {line!r}")
                workers.append(w)
                open_conns += n
            time.sleep(1)
            sj, sj_lat, ne, ne_lat, proc, proc_lines = [], [], [], [], [], 0
            for _ in range(a.repeat):
                dt, body = scrape(19819)
                sj.append(metric(body, 'sojourn_scrape_collector_duration_seconds{collector="tcp_ports"}'))
                sj_lat.append(dt)
                conns = sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines()
                            if l.startswith("sojourn_tcp_port_connections{"))
                dt, body = scrape(19101)
                ne.append(metric(body, 'node_scrape_collector_duration_seconds{collector="tcpstat"}'))
                ne_lat.append(dt)
                dt, proc_lines = read_proc_tcp()
                proc.append(dt)
            ms = lambda xs: round(statistics.median(xs) * 1000, 2)
            results[size] = {
                "sockets_in_proc_net_tcp": proc_lines - 2,
                "sojourn_connections_seen": int(conns),
                "sojourn_tcp_ports_ms": ms(sj), "sojourn_scrape_ms": ms(sj_lat),
                "proc_net_tcp_read_ms": ms(proc),
                "node_exporter_tcpstat_ms": ms(ne), "node_exporter_scrape_ms": ms(ne_lat),
            }
            print(size, results[size], flush=True)
    finally:
        for w in workers:
            try:
                w.stdin.close()
            except OSError:
                pass
            w.wait(30)
        for p in exporters.values():
            p.send_signal(signal.SIGTERM)
            p.wait(10)


if __name__ == "__main__":
    main()
