#!/usr/bin/env python3
"""Scrape cost of sojourn beside node_exporter, in one run.

usage: scripts/bench_scrape.py [--scrapes 300] [--rounds 5] [--soak 10000]
                               [--time-wait 10000] [--gzip]
                               [--node-exporter PATH] [--no-build]
                               [--sojourn-args "FLAGS"]

Starts `target/release/sojourn` and node_exporter (Debian package
prometheus-node-exporter, default collectors) on loopback ports, warms both
up, then scrapes them in alternating rounds over a keep-alive connection,
as Prometheus does, so machine drift hits both alike. Per exporter it reports:
CPU time per scrape (utime+stime of the process from /proc/PID/stat), scrape
latency p50/p99 seen by the client, peak RSS (VmHWM), series per scrape and
bytes per scrape, and the ratios sojourn/node_exporter.

--time-wait N keeps at least N TIME-WAIT sockets on the host through the
run (made on loopback before each round: a connection to a listener of
the script's own, closed by the client first), as a busy web server has:
every one of them is in the kernel's established hash that a socket dump
walks.

--soak N then scrapes sojourn N more times and reports RSS before and after,
to catch growth over days of scraping. Nothing here is a pass/fail test:
these machines are noisy, so compare the ratios of one run.
"""
import argparse, http.client, json, os, signal, statistics, subprocess, sys, time

CLK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Scraper:
    def __init__(self, port, gzip):
        self.port = port
        self.headers = {"Accept": "text/plain;version=0.0.4"}
        if gzip:
            self.headers["Accept-Encoding"] = "gzip"
        self.conn = None

    def scrape(self):
        # A keep-alive connection idle longer than the server keeps it
        # (sojourn: 10 s, while the other exporter's round runs) is closed
        # by the server; like Prometheus' client, send again on a new one.
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            t = time.perf_counter()
            try:
                self.conn.request("GET", "/metrics", headers=self.headers)
                r = self.conn.getresponse()
                body = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        dt = time.perf_counter() - t
        if r.status != 200:
            raise SystemExit(f"port {self.port}: HTTP {r.status}")
        return dt, body


def wait_up(scraper, proc, secs=30):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"exporter exited early with {proc.returncode}")
        try:
            scraper.scrape()
            return
        except (OSError, http.client.HTTPException):
            scraper.conn = None
            time.sleep(0.1)
    raise SystemExit(f"port {scraper.port} never came up")


def time_wait_sockets():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return 0


def top_up_time_wait(listener, want):
    """Closes loopback connections client-first until `want` sockets are in TIME-WAIT."""
    import socket
    addr = listener.getsockname()
    have = time_wait_sockets()
    while have < want:
        for _ in range(min(1000, want - have)):
            c = socket.create_connection(addr)
            s, _ = listener.accept()
            c.close()
            s.close()
        have = time_wait_sockets()
    return have


def series(body):
    if body[:2] == b"\x1f\x8b":
        import gzip
        body = gzip.decompress(body)
    return sum(1 for l in body.splitlines() if l and not l.startswith(b"#"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scrapes", type=int, default=300, help="scrapes per exporter per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--soak", type=int, default=0, help="extra sojourn scrapes for the RSS soak")
    ap.add_argument("--gzip", action="store_true", help="ask for gzip, as Prometheus does")
    ap.add_argument("--time-wait", type=int, default=0, help="TIME-WAIT sockets kept on the host through the run")
    ap.add_argument("--node-exporter", default="/usr/bin/prometheus-node-exporter")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--sojourn-args", default="", help="extra sojourn flags, e.g. '--no-collector.queue --no-collector.tcp_ports --no-collector.ebpf' (core)")
    a = ap.parse_args()

    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    exporters = [
        ("sojourn", 19818, [os.path.join(ROOT, "target/release/sojourn"), "--web.listen-address", "127.0.0.1:19818", "--log.level", "warn"] + a.sojourn_args.split()),
        ("node_exporter", 19100, [a.node_exporter, "--web.listen-address", "127.0.0.1:19100", "--log.level", "warn"]),
    ]
    if not os.path.exists(a.node_exporter):
        raise SystemExit(f"{a.node_exporter} missing: apt-get install prometheus-node-exporter")
    procs, scrapers = {}, {}
    try:
        for name, port, cmd in exporters:
            procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            scrapers[name] = Scraper(port, a.gzip)
            wait_up(scrapers[name], procs[name])
            for _ in range(20):
                scrapers[name].scrape()
        res = {name: {"cpu": [], "lat": [], "series": 0, "bytes": 0} for name, _, _ in exporters}
        tw = []
        if a.time_wait:
            import socket
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
        for _ in range(a.rounds):
            if a.time_wait:
                tw.append(top_up_time_wait(listener, a.time_wait))
            for name, _, _ in exporters:
                p, s, r = procs[name], scrapers[name], res[name]
                c0 = cpu_s(p.pid)
                for _ in range(a.scrapes):
                    dt, body = s.scrape()
                    r["lat"].append(dt)
                r["cpu"].append((cpu_s(p.pid) - c0) / a.scrapes)
                r["series"], r["bytes"] = series(body), len(body)
        out = {}
        for name, _, _ in exporters:
            r, p = res[name], procs[name]
            lat = sorted(r["lat"])
            out[name] = {
                "cpu_ms_per_scrape": round(statistics.median(r["cpu"]) * 1000, 3),
                "cpu_ms_per_scrape_rounds": [round(x * 1000, 3) for x in r["cpu"]],
                "latency_ms_p50": round(lat[len(lat) // 2] * 1000, 3),
                "latency_ms_p99": round(lat[int(len(lat) * 0.99)] * 1000, 3),
                "peak_rss_mb": round(status_kb(p.pid, "VmHWM") / 1024, 1),
                "series": r["series"],
                "bytes": r["bytes"],
            }
        if tw:
            out["time_wait_sockets_per_round"] = tw
        s, n = out["sojourn"], out["node_exporter"]
        out["ratio_sojourn_to_node_exporter"] = {
            "cpu_per_scrape": round(s["cpu_ms_per_scrape"] / n["cpu_ms_per_scrape"], 3),
            "latency_p99": round(s["latency_ms_p99"] / n["latency_ms_p99"], 3),
            "peak_rss": round(s["peak_rss_mb"] / n["peak_rss_mb"], 3),
        }
        if a.soak:
            p, sc = procs["sojourn"], scrapers["sojourn"]
            before = status_kb(p.pid, "VmRSS")
            t = time.time()
            for i in range(a.soak):
                sc.scrape()
            out["soak"] = {
                "scrapes": a.soak,
                "seconds": round(time.time() - t, 1),
                "rss_mb_before": round(before / 1024, 1),
                "rss_mb_after": round(status_kb(p.pid, "VmRSS") / 1024, 1),
                "peak_rss_mb": round(status_kb(p.pid, "VmHWM") / 1024, 1),
            }
        print(json.dumps(out, indent=1))
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
