#!/usr/bin/env python3
"""Cost of the netns collector with many network namespaces.

usage: scripts/bench_netns.py [--namespaces 200] [--listeners 5] [--scrapes 100]
                              [--sampler-seconds 20] [--no-build]

Needs root. Makes --namespaces network namespaces (`ip netns add`), each
with loopback up and one process holding --listeners listening sockets on
127.0.0.1 (as a pod's server would), starts sojourn with only the netns
collector (every namespace is found at its first scrape), scrapes it
--scrapes times over one keep-alive connection and reports: series per
scrape, CPU per scrape (utime+stime from /proc/PID/stat), the collector's
own median duration, the client's median scrape time, and sojourn's file
descriptors.

Then it starts sojourn with the netns and queue collectors, so that the
queue sampler samples every namespace's listeners, waits until they are
queues (a listener is one after 10 s), and reports over --sampler-seconds:
the sampler thread's share of one core (rate of
sojourn_queue_sampler_cpu_seconds_total), beside the same with
`--no-collector.netns` (the host's queues only) in the same run; how often
the namespaces were sampled (sojourn_queue_namespace_sample_interval_seconds);
the queues tracked and omitted; and the file descriptors, which grow by one
socket per namespace.

Last it runs the tcp_ports collector with the netns collector for
--sampler-seconds, scraping every second, and reports what a round of
dumps over every namespace costs, how old the served round gets under
the CPU budget, and the slowest scrape. Everything it made is removed at the end, also on Ctrl-C.
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


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    return conn.getresponse().read().decode()


def value(body, name):
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def start(port, flags):
    """sojourn on 127.0.0.1:`port` with only `flags`' collectors, once it answers."""
    p = subprocess.Popen([os.path.join(ROOT, "target/release/sojourn"),
                          "--web.listen-address", f"127.0.0.1:{port}",
                          "--collector.disable-defaults", "--log.level", "warn"] + flags,
                         stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            metrics(port)
            break
        except OSError:
            time.sleep(0.1)
    return p


def sampler(extra, seconds, port):
    """The sampler's share of a core over `seconds`, with `extra` flags."""
    p = start(port, ["--collector.queue"] + extra)
    try:
        time.sleep(12)  # listeners become queues after 10 s
        b0, t0 = metrics(port), time.monotonic()
        time.sleep(seconds)
        b1, t1 = metrics(port), time.monotonic()
        cpu = "sojourn_queue_sampler_cpu_seconds_total"
        share = (value(b1, cpu) - value(b0, cpu)) / (t1 - t0)
        return {
            "share": share,
            "interval": value(b1, "sojourn_queue_namespace_sample_interval_seconds"),
            "queues": len(set(re.findall(r'^sojourn_queue_info\{queue="tcp_accept:[^"]*",.*netns="(\d+)"', b1, re.M))),
            "pod_queues": sum(1 for l in b1.splitlines() if l.startswith("sojourn_queue_info{") and "netns=" in l),
            "omitted": value(b1, "sojourn_queue_omitted"),
            "overruns": value(b1, "sojourn_queue_sampler_overruns_total"),
            "fds": len(os.listdir(f"/proc/{p.pid}/fd")),
        }
    finally:
        p.terminate()
        p.wait()


def tcp_ports(namespaces, seconds, port):
    """The namespaces' dump rounds of tcp_ports, scraped every second."""
    p = start(port, ["--collector.tcp_ports", "--collector.netns",
                     "--collector.netns.max-namespaces", str(namespaces + 10)])
    try:
        c0, t0, ages, took = proc_cpu(p.pid), time.monotonic(), [], []
        while time.monotonic() - t0 < seconds:
            t = time.perf_counter()
            body = metrics(port)
            took.append(time.perf_counter() - t)
            ages.append(value(body, "sojourn_tcp_port_namespace_dump_age_seconds") or 0.0)
            time.sleep(1)
        share = (proc_cpu(p.pid) - c0) / (time.monotonic() - t0)
        return {
            "round_cpu": value(body, "sojourn_tcp_port_namespace_dump_cpu_seconds"),
            "rounds": value(body, "sojourn_tcp_port_namespace_dumps_total"),
            "entered": value(body, "sojourn_tcp_port_namespaces"),
            "max_age": max(ages),
            "scrape_max": max(took),
            "share": share,
            "fds": len(os.listdir(f"/proc/{p.pid}/fd")),
        }
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--listeners", type=int, default=5)
    ap.add_argument("--scrapes", type=int, default=100)
    ap.add_argument("--sampler-seconds", type=float, default=20)
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
        sojourn = start(PORT, ["--collector.netns",
                               "--collector.netns.max-namespaces", str(a.namespaces + 10)])
        # One keep-alive connection, as Prometheus scrapes.
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
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
        sojourn.terminate()
        sojourn.wait()
        sojourn = None
        host = sampler(["--no-collector.netns"], a.sampler_seconds, PORT + 1)
        pods = sampler(["--collector.netns", "--collector.netns.max-namespaces", str(a.namespaces + 10)],
                       a.sampler_seconds, PORT + 2)
        print(f"queue sampler, host's queues only      {host['share'] * 100:.2f} % of a core, {host['fds']} fds")
        print(f"queue sampler, every namespace's too   {pods['share'] * 100:.2f} % of a core, {pods['fds']} fds, "
              f"overruns {pods['overruns']:.0f}")
        print(f"  namespaces sampled every {pods['interval'] * 1000 if pods['interval'] else float('nan'):.1f} ms; "
              f"pods' queues tracked {pods['pod_queues']} in {pods['queues']} namespaces, omitted {pods['omitted']:.0f}")
        t = tcp_ports(a.namespaces, a.sampler_seconds, PORT + 3)
        print(f"tcp_ports over {t['entered']:.0f} namespaces: a round {t['round_cpu'] * 1000:.1f} ms CPU, "
              f"{t['rounds']:.0f} rounds in {a.sampler_seconds:.0f} s, served round at most {t['max_age']:.1f} s old; "
              f"whole process {t['share'] * 100:.2f} % of a core (scraped every second), {t['fds']} fds; "
              f"slowest scrape {t['scrape_max'] * 1000:.1f} ms (rounds run beside scrapes, not in them)")
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
