#!/usr/bin/env python3
"""Throughput and latency of `sojourn proxy` beside nginx as a reverse proxy.

usage: scripts/bench_proxy.py [--seconds 10] [--rounds 3] [--connections 50]
                              [--idle 1000] [--pace-ms N] [--no-build]

Runs nginx (Debian's package) with ../shared/bench/nginx_pair.conf: a
backend on 127.0.0.1:18081 answering `return 200`, and a keep-alive reverse
proxy to it on 127.0.0.1:18082 (1 worker, which serves the backend too:
the reference peer). Also starts a second nginx whose one worker only
proxies, on 127.0.0.1:18084 to the same backend ("nginx-own": a proxy in
its own process, as a sidecar is, whose every request wakes another
process), and `sojourn proxy` on 127.0.0.1:18083 to the same backend (its
one-thread runtime, the same budget). Then drives wrk (1 thread,
--connections, --latency) at the backend directly and through each proxy,
alternating for
--rounds rounds so machine drift hits all alike, and reports requests/s
and p50/p99 per target (median over rounds). Finally it opens --idle
keep-alive connections to sojourn, each having made one request, and reads
sojourn's RSS 3 s later. For each target it also prints, per process the
requests pass through (wrk, proxy, backend), its share of a CPU, its time
runnable but waiting for a CPU (/proc/<pid>/schedstat), and its CPU time
per request. With --pace-ms, each wrk connection waits that long between
a response and its next request (wrk's Lua `delay()`): latency below
saturation. Loopback only; everything started is stopped at the end.
"""
import argparse, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "..", "shared", "bench", "nginx_pair.conf")
TARGETS = {"direct": 18081, "nginx": 18082, "nginx-own": 18084, "sojourn": 18083}
# The second nginx: the shared config's proxy alone, its backend the first's.
PROXY_ONLY = """worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream be {{ server 127.0.0.1:18081; keepalive 64; }}
  server {{ listen 127.0.0.1:18084;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
}}
"""


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def to_ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def schedstat(pid):
    """(ns on a CPU, ns runnable but waiting for one) of every thread of pid."""
    run = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                r, w, _ = map(int, f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        run += r
        wait += w
    return run, wait


def wrk(port, seconds, connections, watch=None, script=None):
    """Requests/s, p50, p99 (ms), non-2xx; with watch ({name: pid}), each
    process's CPU % and wait-for-a-CPU % and its CPU µs per request,
    measured over the run less half a second at each end; script: a wrk
    Lua script."""
    run = subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
                           + (["-s", script] if script else []) + [f"http://127.0.0.1:{port}/"],
                           stdout=subprocess.PIPE, text=True)
    cpu = {}
    if watch:
        watch = dict(watch, wrk=run.pid)
        time.sleep(0.5)
        t0, before = time.monotonic(), {n: schedstat(p) for n, p in watch.items()}
        time.sleep(max(seconds - 1, 0.5))
        span, after = time.monotonic() - t0, {n: schedstat(p) for n, p in watch.items()}
        cpu = {n: ((after[n][0] - before[n][0]) / span, (after[n][1] - before[n][1]) / span) for n in watch}
    out = run.communicate()[0]
    if run.returncode != 0:
        raise SystemExit(f"wrk failed on port {port}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {}
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        pct[p] = to_ms(m.group(1), m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # ns per second of wall time → %, and ns per request → µs.
    cpu = {n: (r / 1e7, w / 1e7, r / 1e3 / rps) for n, (r, w) in cpu.items()}
    return rps, pct["50"], pct["99"], int(errors.group(1)) if errors else 0, cpu


def worker(master):
    """The one worker process of an nginx started as master."""
    deadline = time.time() + 10
    while time.time() < deadline:
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.05)
    raise SystemExit("nginx started no worker")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--pace-ms", type=int, default=0)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} not installed (apt-get install -y nginx wrk)")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.makedirs("/tmp/ngx", exist_ok=True)
    own = tempfile.mkdtemp(prefix="ngx-own-")
    with open(os.path.join(own, "nginx.conf"), "w") as f:
        f.write(PROXY_ONLY.format(dir=own))
    script = None
    if a.pace_ms:
        script = os.path.join(own, "pace.lua")
        with open(script, "w") as f:
            f.write(f"function delay()\n  return {a.pace_ms}\nend\n")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = []
    try:
        nginx = subprocess.Popen([nginx_bin, "-c", os.path.abspath(CONF), "-p", "/tmp/ngx"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nginx)
        procs.append(subprocess.Popen([nginx_bin, "-c", os.path.join(own, "nginx.conf"), "-p", own],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        sj = subprocess.Popen([os.path.join(ROOT, "target/release/sojourn"), "proxy", "--listen", "127.0.0.1:18083",
                               "--upstream", "http://127.0.0.1:18081", "--web.listen-address", "127.0.0.1:19850",
                               "--log.level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sj)
        for port in (18081, 18082, 18083, 18084, 19850):
            wait_port(port)
        backend, own_worker = worker(nginx.pid), worker(procs[1].pid)
        # The processes each target's requests pass through (wrk is added).
        watch = {
            "direct": {"backend": backend},
            "nginx": {"nginx (proxy and backend)": backend},
            "nginx-own": {"nginx proxy": own_worker, "backend": backend},
            "sojourn": {"sojourn": sj.pid, "backend": backend},
        }
        results = {t: [] for t in TARGETS}
        for t, port in TARGETS.items():
            wrk(port, 2, a.connections, script=script)  # warm-up: pools, caches
        for r in range(a.rounds):
            for t, port in TARGETS.items():
                results[t].append(wrk(port, a.seconds, a.connections, watch[t], script))
                print(f"round {r + 1} {t:9}: {results[t][-1][0]:9.0f} req/s  p50 {results[t][-1][1]:.3f} ms  "
                      f"p99 {results[t][-1][2]:.3f} ms  non-2xx {results[t][-1][3]}", flush=True)
        print()
        print("| target | requests/s | p50 | p99 |")
        print("| --- | --- | --- | --- |")
        med = {}
        for t in TARGETS:
            rps = statistics.median(x[0] for x in results[t])
            p50 = statistics.median(x[1] for x in results[t])
            p99 = statistics.median(x[2] for x in results[t])
            med[t] = (rps, p50, p99)
            print(f"| {t} | {rps:.0f} | {p50:.3f} ms | {p99:.3f} ms |")
        print(f"\nsojourn / nginx: throughput {med['sojourn'][0] / med['nginx'][0]:.2f}, "
              f"p99 {med['sojourn'][2] / med['nginx'][2]:.2f}")
        print(f"sojourn / nginx-own: throughput {med['sojourn'][0] / med['nginx-own'][0]:.2f}, "
              f"p99 {med['sojourn'][2] / med['nginx-own'][2]:.2f}")
        # Two vCPUs: a proxy in its own process makes three busy processes,
        # and what they wait for a CPU shows in the latency tail.
        print("\n| target | process | CPU | waiting for a CPU | CPU µs per request |")
        print("| --- | --- | --- | --- | --- |")
        for t in TARGETS:
            for n in list(watch[t]) + ["wrk"]:
                run, wait, per = (statistics.median(x[4][n][k] for x in results[t]) for k in range(3))
                print(f"| {t} | {n} | {run:.0f} % | {wait:.0f} % | {per:.1f} |")
        # Idle keep-alive connections: each makes one request, then stays open.
        before = rss_kb(sj.pid)
        conns = []
        for _ in range(a.idle):
            s = socket.create_connection(("127.0.0.1", 18083))
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            conns.append(s)
        for s in conns:
            s.settimeout(5)
            data = b""
            while b"ok\n" not in data:
                data += s.recv(4096)
        # Idle means idle: a connection gives its HTTP buffers back after
        # one to two seconds without a request (src/proxy/client.rs).
        time.sleep(3)
        print(f"sojourn RSS: {before} kB before, {rss_kb(sj.pid)} kB holding {len(conns)} idle keep-alive connections")
        for s in conns:
            s.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(own, ignore_errors=True)


if __name__ == "__main__":
    main()
