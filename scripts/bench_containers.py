#!/usr/bin/env python3
"""Cost of the cgroup and process collectors at scale.

usage: scripts/bench_containers.py [--containers 500] [--processes 2000]
                                   [--selected 10] [--scrapes 50] [--no-build]

cgroup: builds a cgroup v2 tree of --containers kubelet containers (systemd
driver, containerd scopes, two per pod; each container's files copied from
the fixture tests/fixtures/sys/fs/cgroup) in a temporary directory, runs
sojourn with only the cgroup collector on it, and reports the collector's
own duration (sojourn_scrape_collector_duration_seconds) and the scrape
latency seen by the client, medians and maxima over --scrapes scrapes, with
the series count.

process: runs sojourn with only the process collector selecting --selected
processes (copies of /bin/sleep named sjbench_sel), and reports its
duration first with only those, then with --processes more idle processes
(/bin/sleep, not selected) present: the cost should grow with the selected
processes, not with all of them (/proc is listed once per
--collector.process.rescan-interval, 30 s); then the same with a rescan at
every scrape, to show what a listing costs. Children are killed at the end.
"""
import argparse, http.client, os, re, shutil, signal, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/fixtures/sys/fs/cgroup")
CONTAINER = ("kubepods.slice/kubepods-burstable.slice/"
             "kubepods-burstable-pod0d3fc3ab_1c36_4a7a_9b3e_6d3c2b1a0f9e.slice/"
             "cri-containerd-4f1c3a8e2b6d7f90a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef01.scope")
PORT = 19840


def build_tree(root, containers):
    cg = os.path.join(root, "sys/fs/cgroup")
    os.makedirs(cg)
    shutil.copy(os.path.join(FIXTURE, "cgroup.controllers"), cg)
    src = os.path.join(FIXTURE, CONTAINER)
    for i in range(containers):
        pod = i // 2
        uid = f"{pod:08x}-1c36-4a7a-9b3e-6d3c2b1a0f9e"
        pod_dir = os.path.join(cg, "kubepods.slice/kubepods-burstable.slice",
                               f"kubepods-burstable-pod{uid.replace('-', '_')}.slice")
        cid = f"{i:064x}"
        shutil.copytree(src, os.path.join(pod_dir, f"cri-containerd-{cid}.scope"))
    return cg


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t = time.perf_counter()
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    return time.perf_counter() - t, body


def collector_seconds(body, name):
    m = re.search(r'^sojourn_scrape_collector_duration_seconds\{collector="%s"\} (\S+)$' % name, body, re.M)
    return float(m.group(1))


def run_sojourn(args):
    p = subprocess.Popen([os.path.join(ROOT, "target/release/sojourn"), "--web.listen-address",
                          f"127.0.0.1:{PORT}", "--collector.disable-defaults", "--log.level", "warn"] + args,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            scrape(PORT)
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("sojourn did not start")


def measure(name, n):
    durations, latencies, series = [], [], 0
    for _ in range(n):
        lat, body = scrape(PORT)
        durations.append(collector_seconds(body, name) * 1e3)
        latencies.append(lat * 1e3)
        series = sum(1 for l in body.splitlines() if l and not l.startswith("#"))
    return {"collector_ms_median": round(statistics.median(durations), 2),
            "collector_ms_max": round(max(durations), 2),
            "scrape_ms_median": round(statistics.median(latencies), 2),
            "series": series}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", type=int, default=500)
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--selected", type=int, default=10)
    ap.add_argument("--scrapes", type=int, default=50)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)

    with tempfile.TemporaryDirectory() as tmp:
        cg = build_tree(tmp, a.containers)
        p = run_sojourn(["--collector.cgroup", "--collector.cgroup.root", cg,
                         "--collector.cgroup.max-cgroups", str(max(500, a.containers))])
        try:
            measure("cgroup", 3)
            print(f"cgroup, {a.containers} containers:", measure("cgroup", a.scrapes), flush=True)
        finally:
            p.terminate()
            p.wait(10)

    children = []
    with tempfile.TemporaryDirectory() as tmp:
        sel = os.path.join(tmp, "sjbench_sel")
        shutil.copy("/bin/sleep", sel)
        try:
            for _ in range(a.selected):
                children.append(subprocess.Popen([sel, "600"]))
            p = run_sojourn(["--collector.process", "--collector.process.include", "^(sjbench_sel)$"])
            try:
                measure("process", 3)
                base = measure("process", a.scrapes)
                print(f"process, {a.selected} selected, {len(os.listdir('/proc'))} /proc entries:", base, flush=True)
                for _ in range(a.processes):
                    children.append(subprocess.Popen(["/bin/sleep", "600"]))
                measure("process", 3)
                loaded = measure("process", a.scrapes)
                print(f"process, {a.selected} selected, {a.processes} idle more:", loaded, flush=True)
                print(f"ratio with/without idle processes: "
                      f"{loaded['collector_ms_median'] / base['collector_ms_median']:.2f}")
            finally:
                p.terminate()
                p.wait(10)
            # The listing each rescan adds, here forced at every scrape.
            p = run_sojourn(["--collector.process", "--collector.process.include", "^(sjbench_sel)$",
                             "--collector.process.rescan-interval", "0s"])
            try:
                measure("process", 3)
                print(f"process, {a.selected} selected, {a.processes} idle more, rescan every scrape:",
                      measure("process", a.scrapes), flush=True)
            finally:
                p.terminate()
                p.wait(10)
        finally:
            for c in children:
                c.send_signal(signal.SIGKILL)
            for c in children:
                c.wait()


if __name__ == "__main__":
    main()
