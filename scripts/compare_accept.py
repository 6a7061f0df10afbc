#!/usr/bin/env python3
"""sojourn's eBPF accept-queue histogram beside the waits the server and its
clients measure themselves, over the same connections.

usage: scripts/compare_accept.py [--seconds 20] [--rate 18] [--service-ms 50]
                                 [--no-build]

Starts `target/release/sojourn` (ebpf collector only) on a loopback port and
a listener of the script's own that accepts one connection at a time and
serves it for a time drawn from an exponential distribution of mean
--service-ms before accepting the next, while clients connect at random (Poisson) at --rate a second:
an M/M/1 queue, its accept queue the waiting room. Each client notes when
its connect() returned (the handshake done), the server when accept()
returned that connection (matched by the client's port), both on
CLOCK_MONOTONIC, the clock the kernel program stamps with; the difference
is each connection's wait as the application sees it.

Prints the count and mean of both, and the p50 and p99 of each placed in
the histogram's text buckets (2^-13 s to 2^-1 s by factors of eight): they
agree when the means are within 1 ms and each quantile is in the same or
the adjacent bucket. M/M/1 also predicts the mean wait in queue,
rho / (mu - lambda), printed beside them. Needs root. Exits 1 when they
disagree.
"""
import argparse, os, random, re, signal, socket, subprocess, sys, threading, time, urllib.request

from compare_runqlat import start_sojourn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 19872


def scrape(port):
    """{le: cumulative count}, sum and count of the listener's histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
    series = r'sojourn_tcp_accept_wait_seconds_(bucket|sum|count)\{port="' + str(port) + r'",[^}]*?(?:le="([^"]+)")?\} (\S+)$'
    buckets, total, count = {}, 0.0, 0
    for m in re.finditer("^" + series, text, re.M):
        kind, le, value = m.group(1), m.group(2), float(m.group(3))
        if kind == "bucket":
            buckets[float(le)] = int(value)
        elif kind == "sum":
            total = value
        else:
            count = int(value)
    return buckets, total, count


def quantile(pairs, q):
    total = sum(c for _, c in pairs)
    seen = 0
    for bound, c in pairs:
        seen += c
        if total and seen >= q * total:
            return bound
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=18, help="connections a second")
    ap.add_argument("--service-ms", type=float, default=50, help="mean service time")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    exporter = start_sojourn(PORT)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    connected, accepted, clients = {}, {}, []
    stop = threading.Event()

    def serve():
        # Accept, then serve (sleep) before the next accept: the accept
        # queue is the waiting room.
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except socket.timeout:
                continue
            accepted[peer[1]] = time.monotonic_ns()
            conn.close()
            time.sleep(random.expovariate(1000 / a.service_ms))

    try:
        time.sleep(1.5)
        # A first connection makes the listener known to the exporter.
        warm = socket.create_connection(("127.0.0.1", port))
        server = threading.Thread(target=serve)
        server.start()
        time.sleep(1)
        warm.close()
        before = scrape(port)
        accepted.clear()
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            time.sleep(random.expovariate(a.rate))
            c = socket.create_connection(("127.0.0.1", port))
            connected[c.getsockname()[1]] = time.monotonic_ns()
            clients.append(c)
        # Let the queue drain.
        while len([p for p in connected if p in accepted]) < len(connected) and time.monotonic() < end + 30:
            time.sleep(0.1)
        time.sleep(0.5)
        after = scrape(port)
    finally:
        stop.set()
        for c in clients:
            c.close()
        exporter.send_signal(signal.SIGTERM)
        exporter.wait()
    waits = sorted((accepted[p] - t) / 1e9 for p, t in connected.items() if p in accepted)
    bounds = sorted(after[0])
    cumulative = [after[0][b] - before[0].get(b, 0) for b in bounds]
    ours = [(b, c - (cumulative[i - 1] if i else 0)) for i, (b, c) in enumerate(zip(bounds, cumulative))]
    count = after[2] - before[2]
    mean = (after[1] - before[1]) / count if count else float("nan")
    theirs = [(b, 0) for b in bounds]
    for w in waits:
        i = next(i for i, b in enumerate(bounds) if w <= b)
        theirs[i] = (bounds[i], theirs[i][1] + 1)
    app_mean = sum(waits) / len(waits) if waits else float("nan")
    lam, mu = a.rate, 1000 / a.service_ms
    print(f"M/M/1, {a.rate}/s arriving, {a.service_ms} ms served on average, {a.seconds} s: "
          f"predicted mean wait {lam / mu / (mu - lam) * 1e3:.1f} ms" if lam < mu else "overloaded")
    print(f"connections timed: sojourn {count}, the application {len(waits)}; "
          f"mean wait: sojourn {mean * 1e3:.2f} ms, the application {app_mean * 1e3:.2f} ms")
    worst = 0
    for q in (0.5, 0.99):
        s, r = quantile(ours, q), quantile(theirs, q)
        apart = abs(bounds.index(s) - bounds.index(r))
        worst = max(worst, apart)
        print(f"p{int(q * 100)}: sojourn ≤ {s * 1e3:.4g} ms, the application ≤ {r * 1e3:.4g} ms, {apart} bucket(s) apart")
    agree = worst <= 1 and abs(mean - app_mean) < 0.001 and count == len(waits)
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
