#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (run after changing this file;
tests/product/dashboards.rs fails when the JSON and this script disagree).

Every dashboard: the Prometheus datasource as a variable, a stable uid, the
current schemaVersion, and `instance` (and where it applies `service` or
`queue`) variables. Every panel's query works whether Prometheus stores the
proxy's latency histograms as classic buckets or as native histograms
(`--enable-feature=native-histograms`), and tests/prometheus.rs runs each one
against a real Prometheus scraping sojourn and fails on an empty answer.

    python3 scripts/dashboards.py
"""
import json
import os

SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every query is narrowed to the chosen jobs and instances: a node's
# DaemonSet and the services' sidecars are different jobs.
I = 'job=~"$job",instance=~"$instance"'
LAT = "http_server_request_duration_seconds"


def var_datasource():
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
    }


def var_query(name, query, label=None, all_value=".*", multi=True):
    return {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": all_value if multi else None,
        "current": {},
        "sort": 1,
        "hide": 0,
    }


JOB = var_query("job", "label_values(sojourn_build_info, job)")
INSTANCE = var_query("instance", 'label_values(sojourn_build_info{job=~"$job"}, instance)')


class Board:
    def __init__(self, uid, title, description, variables, tags=()):
        self.uid, self.title, self.description = uid, title, description
        self.variables = [var_datasource()] + list(variables)
        self.tags = ["sojourn"] + list(tags)
        self.panels = []
        self.y = 0
        self.x = 0
        self.next_id = 1

    def row(self, title):
        if self.x:
            self.y += 8
            self.x = 0
        self.panels.append(
            {
                "id": self._id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def panel(self, title, description, targets, unit="short", width=8, kind="timeseries",
              max_value=None):
        if self.x + width > 24:
            self.y += 8
            self.x = 0
        defaults = {"unit": unit}
        if max_value is not None:
            defaults["max"] = max_value
            defaults["min"] = 0
        p = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
            if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
            "targets": [
                {"refId": chr(ord("A") + n), "datasource": DS, "expr": expr, "legendFormat": legend}
                for n, (expr, legend) in enumerate(targets)
            ],
        }
        self.panels.append(p)
        self.x += width

    def json(self):
        return {
            "uid": self.uid,
            "title": f"sojourn / {self.title}",
            "description": self.description,
            "tags": self.tags,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "timezone": "",
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [
                {"title": "sojourn dashboards", "type": "dashboards", "tags": ["sojourn"],
                 "asDropdown": True}
            ],
            "panels": self.panels,
        }


def both(classic, native):
    """A query over the proxy's histograms, classic or native storage."""
    return f"({classic}) or ({native})"


def quantile(q, metric, by, selector, wrap=None):
    """`histogram_quantile` of `metric` summed by the labels `by`, whether
    Prometheus keeps it as classic buckets or as a native histogram; `wrap`
    (e.g. topk) goes around each form."""
    classic = f'histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))'
    native = f'histogram_quantile({q}, sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval])))'
    if wrap:
        classic, native = wrap(classic), wrap(native)
    return both(classic, native)


# Panels over what the ebpf collector times in the kernel: empty where
# eBPF is not permitted (no CAP_BPF/CAP_PERFMON or no BTF), as each says.
EBPF_NOTE = " Timed in the kernel by eBPF; empty where sojourn may not load it (no CAP_BPF and CAP_PERFMON, or no kernel BTF)."


def disk_request_targets():
    """Each disk's p99 time queued (before the driver had the request) and
    served (by the device)."""
    return [(quantile(0.99, f"sojourn_disk_request_{phase}_seconds", "instance, device", I),
             f"{{{{instance}}}} {{{{device}}}} {phase}") for phase in ("queued", "served")]


def accept_wait_target():
    """Each listener's p99 accept wait, named by its pod where it is one's."""
    return (quantile(0.99, "sojourn_tcp_accept_wait_seconds", "instance, netns, namespace, pod, port", I),
            "{{instance}} {{namespace}}/{{pod}} {{netns}} :{{port}}")


def node():
    b = Board("sojourn-use-node", "USE / Node",
              "Utilization, saturation and errors of one host's resources, in Brendan Gregg's USE order. "
              "Saturation comes first where sojourn measures a queue: a standing queue (CoDel) is the sign "
              "that callers wait.", [JOB, INSTANCE], ["use"])
    b.row("CPU")
    b.panel("CPU utilization", "Busy share of all CPUs (/proc/stat); iowait is idle time with I/O "
            "outstanding and counts as idle, as in sojourn check and the recording rule.",
            [(f'1 - avg by (instance) (sum by (instance, cpu) (rate(sojourn_cpu_seconds_total{{mode=~"idle|iowait",{I}}}[$__rate_interval])))',
              "{{instance}}")], "percentunit", max_value=1)
    b.panel("Per-CPU utilization", "One CPU at 100 % while the average is not: a single-threaded bottleneck.",
            [(f'1 - sum by (instance, cpu) (rate(sojourn_cpu_seconds_total{{mode=~"idle|iowait",{I}}}[$__rate_interval]))',
              "{{instance}} cpu{{cpu}}")], "percentunit", max_value=1)
    b.panel("Run queue standing", "Share of time the CPU run queue stood (sojourn queue engine, CoDel): "
            "runnable threads waited longer than the delay target for a whole interval.",
            [(f'rate(sojourn_queue_standing_seconds_total{{queue="cpu",{I}}}[$__rate_interval])', "{{instance}}")],
            "percentunit", max_value=1)
    b.panel("Run queue minimum over target", "The run queue's smallest delay (timed by eBPF, else from "
            "schedstat) or length (from the load, without either) over the last interval, as a share of its "
            "target: above 1, the queue stands.",
            [(f'(sojourn_queue_min_delay_seconds{{queue="cpu",{I}}} / sojourn_queue_target_delay_seconds{{queue="cpu",{I}}})'
              f' or (sojourn_queue_min_length{{queue="cpu",{I}}} / sojourn_queue_target_length{{queue="cpu",{I}}})',
              "{{instance}}")], "percentunit")
    b.panel("CPU pressure", "Share of time some tasks stalled waiting for a CPU (PSI, /proc/pressure/cpu).",
            [(f'rate(sojourn_pressure_stalled_seconds_total{{resource="cpu",{I}}}[$__rate_interval])',
              "{{instance}} {{kind}}")], "percentunit")
    b.panel("Load per CPU", "1-minute load average over the number of CPUs.",
            [(f'sojourn_load1{{{I}}} / on (instance) count by (instance) (sojourn_cpu_seconds_total{{mode="idle",{I}}})',
              "{{instance}}")])
    b.panel("Run-queue wait", "Saturation: how long runnable tasks waited for a CPU, from wakeup or "
            "preemption until they ran, every wait counted (p50, p99)." + EBPF_NOTE,
            [(quantile(0.5, "sojourn_runqueue_wait_seconds", "instance", I), "{{instance}} p50"),
             (quantile(0.99, "sojourn_runqueue_wait_seconds", "instance", I), "{{instance}} p99")], "s")
    b.row("Memory")
    b.panel("Memory utilization", "Share of memory not available without swapping (/proc/meminfo MemAvailable).",
            [(f'1 - sojourn_memory_mem_available_bytes{{{I}}} / sojourn_memory_mem_total_bytes{{{I}}}', "{{instance}}")],
            "percentunit", max_value=1)
    b.panel("Memory pressure", "Share of time tasks stalled on memory (PSI): reclaim and refaults.",
            [(f'rate(sojourn_pressure_stalled_seconds_total{{resource="memory",{I}}}[$__rate_interval])',
              "{{instance}} {{kind}}")], "percentunit")
    b.panel("Major faults and OOM kills", "Page faults that read from disk (saturation), and processes the "
            "kernel killed for memory (errors), per second.",
            [(f'rate(sojourn_vmstat_pgmajfault_total{{{I}}}[$__rate_interval])', "{{instance}} major faults"),
             (f'rate(sojourn_vmstat_oom_kill_total{{{I}}}[$__rate_interval])', "{{instance}} OOM kills")], "ops")
    b.row("Disks")
    b.panel("Disk busy", "Share of time each disk had I/O in flight (/proc/diskstats).",
            [(f'rate(sojourn_disk_io_time_seconds_total{{{I}}}[$__rate_interval])', "{{instance}} {{device}}")],
            "percentunit", max_value=1)
    b.panel("Disk queue", "Average requests in flight (weighted I/O time), the disk's queue length.",
            [(f'rate(sojourn_disk_io_time_weighted_seconds_total{{{I}}}[$__rate_interval])', "{{instance}} {{device}}")])
    b.panel("Disk queue standing", "Share of time each disk's queue stood (sojourn queue engine).",
            [(f'rate(sojourn_queue_standing_seconds_total{{queue=~"disk:.*",{I}}}[$__rate_interval])',
              "{{instance}} {{queue}}")], "percentunit", max_value=1)
    b.panel("Disk requests queued and served", "Each disk's p99 time a request waited before the driver "
            "had it (queued: a deep queue) and the device took to serve it (served: a slow device)." + EBPF_NOTE,
            disk_request_targets(), "s")
    b.panel("I/O pressure", "Share of time tasks stalled on I/O (PSI).",
            [(f'rate(sojourn_pressure_stalled_seconds_total{{resource="io",{I}}}[$__rate_interval])',
              "{{instance}} {{kind}}")], "percentunit")
    b.panel("Disk throughput", "Bytes read and written per second.",
            [(f'rate(sojourn_disk_read_bytes_total{{{I}}}[$__rate_interval])', "{{instance}} {{device}} read"),
             (f'rate(sojourn_disk_written_bytes_total{{{I}}}[$__rate_interval])', "{{instance}} {{device}} write")],
            "Bps")
    b.row("Filesystems")
    b.panel("Filesystem used", "Share of each filesystem's space in use as df counts it (statfs): "
            "used / (used + available to users), blocks reserved for root left out; as in sojourn check.",
            [(f'1 - sojourn_filesystem_avail_bytes{{{I}}} / (sojourn_filesystem_size_bytes{{{I}}} - sojourn_filesystem_free_bytes{{{I}}} + sojourn_filesystem_avail_bytes{{{I}}})',
              "{{instance}} {{mountpoint}}")], "percentunit", max_value=1)
    b.panel("Inodes used", "Share of each filesystem's inodes in use.",
            [(f'1 - sojourn_filesystem_files_free{{{I}}} / sojourn_filesystem_files{{{I}}}',
              "{{instance}} {{mountpoint}}")], "percentunit", max_value=1)
    b.panel("Filesystem errors", "1 when statfs failed or the mount is read-only.",
            [(f'sojourn_filesystem_device_error{{{I}}} + sojourn_filesystem_readonly{{{I}}}',
              "{{instance}} {{mountpoint}}")])
    b.row("Network")
    b.panel("Interface throughput", "Bytes received and sent per second (/proc/net/dev).",
            [(f'rate(sojourn_network_receive_bytes_total{{{I}}}[$__rate_interval])', "{{instance}} {{device}} rx"),
             (f'rate(sojourn_network_transmit_bytes_total{{{I}}}[$__rate_interval])', "{{instance}} {{device}} tx")],
            "Bps")
    b.panel("Drops and softnet squeezes", "Packets dropped by interfaces, and softirq budget exhausted "
            "(saturation of packet processing).",
            [(f'rate(sojourn_network_receive_drop_total{{{I}}}[$__rate_interval]) + rate(sojourn_network_transmit_drop_total{{{I}}}[$__rate_interval])',
              "{{instance}} {{device}} drops"),
             (f'sum by (instance) (rate(sojourn_softnet_times_squeezed_total{{{I}}}[$__rate_interval]))',
              "{{instance}} squeezed")], "pps")
    b.panel("Interface errors", "Receive and transmit errors per second.",
            [(f'rate(sojourn_network_receive_errs_total{{{I}}}[$__rate_interval]) + rate(sojourn_network_transmit_errs_total{{{I}}}[$__rate_interval])',
              "{{instance}} {{device}}")], "pps")
    b.row("TCP and sockets")
    b.panel("Established connections", "TCP connections in ESTABLISHED or CLOSE-WAIT (/proc/net/snmp).",
            [(f'sojourn_netstat_tcp_curr_estab{{{I}}}', "{{instance}}")])
    b.panel("Accept queue", "Listen overflows and drops per second (saturation), and the share of time "
            "each port's accept queue stood.",
            [(f'rate(sojourn_netstat_tcpext_listen_overflows_total{{{I}}}[$__rate_interval])', "{{instance}} overflows"),
             (f'rate(sojourn_netstat_tcpext_listen_drops_total{{{I}}}[$__rate_interval])', "{{instance}} drops"),
             (f'rate(sojourn_queue_standing_seconds_total{{queue=~"tcp_accept:.*",{I}}}[$__rate_interval])',
              "{{instance}} {{queue}} standing")])
    b.panel("Accept wait", "Saturation: p99 time connections waited in each listener's accept queue, "
            "established until the application accepted them, every network namespace's listeners." + EBPF_NOTE,
            [accept_wait_target()], "s")
    b.panel("Retransmits", "Share of TCP segments sent again (errors), and resets sent.",
            [(f'rate(sojourn_netstat_tcp_retrans_segs_total{{{I}}}[$__rate_interval]) / (rate(sojourn_netstat_tcp_out_segs_total{{{I}}}[$__rate_interval]) > 0)',
              "{{instance}} retransmit ratio")], "percentunit")
    b.panel("Socket buffers", "Bytes queued in TCP receive and send queues, by local port.",
            [(f'sojourn_tcp_port_receive_queue_bytes{{{I}}}', "{{instance}} :{{port}} rx"),
             (f'sojourn_tcp_port_send_queue_bytes{{{I}}}', "{{instance}} :{{port}} tx")], "bytes")
    b.panel("File descriptors", "File handles allocated over the system's maximum (/proc/sys/fs/file-nr).",
            [(f'sojourn_filefd_allocated{{{I}}} / sojourn_filefd_maximum{{{I}}}', "{{instance}}")], "percentunit")
    b.panel("Connection tracking", "Conntrack entries over the table size: new flows are dropped when full.",
            [(f'sojourn_nf_conntrack_entries{{{I}}} / sojourn_nf_conntrack_entries_limit{{{I}}}', "{{instance}}")],
            "percentunit")
    b.row("sojourn itself")
    b.panel("Collectors failing", "Collectors that could not read their sources in the last scrape.",
            [(f'sum by (instance) (1 - sojourn_scrape_collector_success{{{I}}})', "{{instance}}")])
    b.panel("Queue sampler CPU", "CPU the queue sampler used, as a share of one core.",
            [(f'rate(sojourn_queue_sampler_cpu_seconds_total{{{I}}}[$__rate_interval])', "{{instance}}")],
            "percentunit")
    return b


def cluster():
    b = Board("sojourn-use-cluster", "USE / Cluster",
              "Every host side by side: which one is saturated, on which resource. Each panel shows the "
              "worst instances first.", [JOB, INSTANCE], ["use"])
    b.row("Saturation: standing queues")
    b.panel("Most-standing queues", "The queues that stood the largest share of time, across hosts.",
            [(f'topk(10, rate(sojourn_queue_standing_seconds_total{{{I}}}[$__rate_interval]))',
              "{{instance}} {{queue}}")], "percentunit", width=12, max_value=1)
    b.panel("CPU run queue standing by host", "Share of time each host's run queue stood.",
            [(f'rate(sojourn_queue_standing_seconds_total{{queue="cpu",{I}}}[$__rate_interval])', "{{instance}}")],
            "percentunit", width=12, max_value=1)
    b.panel("Run-queue wait p99 by host", "The hosts whose runnable tasks waited longest for a CPU, "
            "top 10." + EBPF_NOTE,
            [(quantile(0.99, "sojourn_runqueue_wait_seconds", "instance", I, wrap=lambda e: f"topk(10, {e})"),
              "{{instance}}")], "s", width=12)
    b.row("Utilization")
    b.panel("CPU utilization by host", "", [
        (f'1 - avg by (instance) (sum by (instance, cpu) (rate(sojourn_cpu_seconds_total{{mode=~"idle|iowait",{I}}}[$__rate_interval])))',
         "{{instance}}")], "percentunit", max_value=1)
    b.panel("Memory utilization by host", "", [
        (f'1 - sojourn_memory_mem_available_bytes{{{I}}} / sojourn_memory_mem_total_bytes{{{I}}}', "{{instance}}")],
        "percentunit", max_value=1)
    b.panel("Busiest disk by host", "", [
        (f'max by (instance) (rate(sojourn_disk_io_time_seconds_total{{{I}}}[$__rate_interval]))', "{{instance}}")],
        "percentunit", max_value=1)
    b.row("Pressure and errors")
    b.panel("Pressure by host and resource", "PSI 'some' stall share.", [
        (f'rate(sojourn_pressure_stalled_seconds_total{{kind="some",{I}}}[$__rate_interval])',
         "{{instance}} {{resource}}")], "percentunit")
    b.panel("TCP retransmit ratio by host", "", [
        (f'rate(sojourn_netstat_tcp_retrans_segs_total{{{I}}}[$__rate_interval]) / (rate(sojourn_netstat_tcp_out_segs_total{{{I}}}[$__rate_interval]) > 0)',
         "{{instance}}")], "percentunit")
    b.panel("Collectors failing by host", "", [
        (f'sum by (instance) (1 - sojourn_scrape_collector_success{{{I}}})', "{{instance}}")])
    return b


def queues():
    q = 'queue=~"$queue"'
    b = Board("sojourn-queues", "Queues",
              "Every queue sojourn samples (CPU run queue, disks, accept queues, container CPU throttling, "
              "the proxy's request queue), with CoDel's view: a queue is bad when it stands — its minimum "
              "delay over an interval stays above the target.",
              [JOB, INSTANCE, var_query("queue", 'label_values(sojourn_queue_standing{instance=~"$instance"}, queue)')],
              ["queues"])
    b.row("Standing")
    b.panel("Standing now", "1 while the queue stands (its minimum delay over the last interval is over target).",
            [(f'sojourn_queue_standing{{{I},{q}}}', "{{instance}} {{queue}}")], width=12)
    b.panel("Time standing", "Share of time each queue stood.",
            [(f'rate(sojourn_queue_standing_seconds_total{{{I},{q}}}[$__rate_interval])', "{{instance}} {{queue}}")],
            "percentunit", width=12, max_value=1)
    b.row("Delay and load")
    b.panel("Minimum over target", "The smallest delay (or length, for queues measured by length) seen in "
            "the last interval over its target: what every item waited at least; above 1 the queue stands.",
            [(f'(sojourn_queue_min_delay_seconds{{{I},{q}}} / sojourn_queue_target_delay_seconds{{{I},{q}}})'
              f' or (sojourn_queue_min_length{{{I},{q}}} / sojourn_queue_target_length{{{I},{q}}})',
              "{{instance}} {{queue}}")], "percentunit")
    b.panel("Minimum delay", "The smallest delay seen in the last interval, for queues measured by delay.",
            [(f'sojourn_queue_min_delay_seconds{{{I},{q}}}', "{{instance}} {{queue}}")], "s")
    b.panel("Delay p99", "99th percentile of sampled delays.",
            [(f'histogram_quantile(0.99, sum by (instance, queue, le) (rate(sojourn_queue_delay_seconds_bucket{{{I},{q}}}[$__rate_interval])))',
              "{{instance}} {{queue}}")], "s")
    b.panel("Load", "Arrivals over service capacity; above 1 the queue grows.",
            [(f'sojourn_queue_load_ratio{{{I},{q}}}', "{{instance}} {{queue}}")])
    b.panel("Minimum length", "The smallest length seen in the last interval.",
            [(f'sojourn_queue_min_length{{{I},{q}}}', "{{instance}} {{queue}}")])
    b.panel("Intervals by state", "Intervals judged good or standing, per second.",
            [(f'sum by (instance, queue, state) (rate(sojourn_queue_intervals_total{{{I},{q}}}[$__rate_interval]))',
              "{{instance}} {{queue}} {{state}}")])
    # The distributions behind the kernel-timed queues' minimum delays.
    b.row("Waits timed in the kernel")
    b.panel("Run-queue wait", "Every wait of a runnable task for a CPU, wakeup or preemption until it "
            "ran: p50, p99, p99.9." + EBPF_NOTE,
            [(quantile(q, "sojourn_runqueue_wait_seconds", "instance", I), f"{{{{instance}}}} p{q * 100:g}")
             for q in (0.5, 0.99, 0.999)], "s")
    b.panel("Run-queue wait p99 by CPU", "One CPU's tasks waiting while the others' do not: pinning, "
            "interrupts, an unbalanced load." + EBPF_NOTE,
            [(quantile(0.99, "sojourn_runqueue_cpu_wait_seconds", "instance, cpu", I), "{{instance}} cpu{{cpu}}")],
            "s")
    b.panel("Disk requests queued and served", "p99 per disk: queued (waiting for the driver) grows with a "
            "deep queue, served (in the device) with a slow device." + EBPF_NOTE,
            disk_request_targets(), "s")
    b.panel("Accept wait p99", "Each listener's connections, established until accepted, in every "
            "network namespace (a pod's named by its pod)." + EBPF_NOTE,
            [accept_wait_target()], "s")
    b.panel("Waits timed per second", "How many waits each histogram counted: the rate behind its quantiles.",
            [(both(f'sum by (instance) (rate({m}_count{{{I}}}[$__rate_interval]))',
                   f'sum by (instance) (histogram_count(rate({m}{{{I}}}[$__rate_interval])))'),
              f"{{{{instance}}}} {what}")
             for m, what in [("sojourn_runqueue_wait_seconds", "run queue"),
                             ("sojourn_disk_request_served_seconds", "disk requests"),
                             ("sojourn_tcp_accept_wait_seconds", "accepts")]], "ops")
    b.panel("Not timed", "Waits the programs could not time (no room in a kernel map, no task storage): "
            "above 0, the histograms undercount." + EBPF_NOTE,
            [(f'rate(sojourn_runqueue_wait_untimed_total{{{I}}}[$__rate_interval])', "{{instance}} run queue"),
             (f'rate(sojourn_disk_requests_untimed_total{{{I}}}[$__rate_interval])', "{{instance}} disk requests"),
             (f'rate(sojourn_tcp_accept_untimed_total{{{I}}}[$__rate_interval])', "{{instance}} accepts")], "ops")
    return b


def golden():
    s = 'service=~"$service"'
    b = Board("sojourn-golden-signals", "Golden signals / Service",
              "Latency, traffic, errors and saturation of each service behind `sojourn proxy`, and its probes.",
              [JOB, INSTANCE, var_query("service", 'label_values(sojourn_proxy_active_requests{instance=~"$instance"}, service)'),
               var_query("probe", 'label_values(sojourn_probe_attempts_total{instance=~"$instance"}, probe)')],
              ["golden-signals"])
    b.row("Latency")
    b.panel("p50 / p99 / p99.9 (sliding window)", "Exact quantiles over the proxy's sliding window "
            "(HdrHistogram, 1 %), per route.",
            [(f'sojourn_proxy_request_duration_window_seconds{{{I},{s},q=~"0.5|0.99|0.999"}}',
              "{{service}} {{http_route}} p{{q}}")], "s", width=12)
    b.panel("p99 from the histogram", "histogram_quantile over the latency histogram (classic or native).",
            [(both(f'histogram_quantile(0.99, sum by (service, le) (rate({LAT}_bucket{{{I},{s}}}[$__rate_interval])))',
                   f'histogram_quantile(0.99, sum by (service) (rate({LAT}{{{I},{s}}}[$__rate_interval])))'),
              "{{service}}")], "s", width=12)
    b.panel("Time to first byte p99", "Arrival to the upstream's response headers.",
            [(both(f'histogram_quantile(0.99, sum by (service, le) (rate(sojourn_proxy_time_to_first_byte_seconds_bucket{{{I},{s}}}[$__rate_interval])))',
                   f'histogram_quantile(0.99, sum by (service) (rate(sojourn_proxy_time_to_first_byte_seconds{{{I},{s}}}[$__rate_interval])))'),
              "{{service}}")], "s")
    b.row("Traffic")
    b.panel("Requests per second", "By status code.",
            [(both(f'sum by (service, http_response_status_code) (rate({LAT}_count{{{I},{s}}}[$__rate_interval]))',
                   f'sum by (service, http_response_status_code) (histogram_count(rate({LAT}{{{I},{s}}}[$__rate_interval])))'),
              "{{service}} {{http_response_status_code}}")], "reqps")
    b.panel("Bytes", "Request and response bodies per second.",
            [(f'rate(sojourn_proxy_request_body_bytes_total{{{I},{s}}}[$__rate_interval])', "{{service}} in"),
             (f'rate(sojourn_proxy_response_body_bytes_total{{{I},{s}}}[$__rate_interval])', "{{service}} out")],
            "Bps")
    b.row("Errors")
    errors = both(f'sum by (service) (rate({LAT}_count{{{I},{s},http_response_status_code=~"5.."}}[$__rate_interval]))',
                  f'sum by (service) (histogram_count(rate({LAT}{{{I},{s},http_response_status_code=~"5.."}}[$__rate_interval])))')
    total = both(f'sum by (service) (rate({LAT}_count{{{I},{s}}}[$__rate_interval]))',
                 f'sum by (service) (histogram_count(rate({LAT}{{{I},{s}}}[$__rate_interval])))')
    b.panel("5xx ratio", "Share of requests answered 5xx (the upstream's or the proxy's 502/503/504).",
            [(f'({errors} or 0 * {total}) / {total}', "{{service}}")], "percentunit", max_value=1)
    b.panel("Upstream errors", "Connect failures (502), timeouts (504), resets.",
            [(f'sum by (service, error_type) (rate(sojourn_proxy_upstream_errors_total{{{I},{s}}}[$__rate_interval]))',
              "{{service}} {{error_type}}")], "ops")
    b.panel("Cancelled and shed", "Clients gone before the end; requests shed by --shed codel.",
            [(f'rate(sojourn_proxy_requests_cancelled_total{{{I},{s}}}[$__rate_interval])', "{{service}} cancelled")],
            "ops")
    b.row("Saturation")
    b.panel("In flight", "Requests in flight, and waiting in the proxy's queue.",
            [(f'sojourn_proxy_active_requests{{{I},{s}}}', "{{service}} active"),
             (f'sojourn_proxy_queued_requests{{{I},{s}}}', "{{service}} queued")])
    b.panel("Request queue standing", "Share of time the proxy's request queue stood (--max-concurrency).",
            [(f'rate(sojourn_queue_standing_seconds_total{{{I},queue=~"proxy:.*"}}[$__rate_interval])',
              "{{queue}}")], "percentunit", max_value=1)
    b.panel("Connections", "Client connections open.",
            [(f'sojourn_proxy_open_connections{{{I},{s}}}', "{{service}}")])
    p = 'probe=~"$probe"'
    b.row("Probes")
    b.panel("Probe success", "1 if the last probe succeeded.",
            [(f'sojourn_probe_success{{{I},{p}}}', "{{probe}}")], max_value=1)
    b.panel("Probe phases p90", "Resolve, connect, TLS, processing, transfer.",
            [(both(f'histogram_quantile(0.9, sum by (probe, phase, le) (rate(sojourn_probe_phase_duration_seconds_bucket{{{I},{p}}}[$__rate_interval])))',
                   f'histogram_quantile(0.9, sum by (probe, phase) (rate(sojourn_probe_phase_duration_seconds{{{I},{p}}}[$__rate_interval])))'),
              "{{probe}} {{phase}}")], "s")
    b.panel("Probe failures", "Failures per second by reason.",
            [(f'sum by (probe, reason) (rate(sojourn_probe_failures_total{{{I},{p}}}[$__rate_interval]))',
              "{{probe}} {{reason}}")], "ops")
    b.panel("Certificate expiry", "Days until the earliest certificate a TLS probe saw expires.",
            [(f'(sojourn_probe_tls_cert_expiry_timestamp_seconds{{{I},{p}}} - time()) / 86400', "{{probe}}")], "d")
    return b


def containers():
    b = Board("sojourn-containers", "Containers",
              "Per-container CPU, throttling (a queue: runnable threads waiting for the next CFS period), "
              "memory and I/O, from cgroups.", [JOB, INSTANCE], ["containers"])
    c = "{{instance}} {{namespace}}{{pod}}{{container}} {{cgroup}}"
    b.row("CPU")
    b.panel("CPU usage", "Cores used, top 20.",
            [(f'topk(20, rate(sojourn_cgroup_cpu_usage_seconds_total{{{I}}}[$__rate_interval]))', c)], width=12)
    b.panel("Throttled periods", "Share of CFS periods in which the container was throttled.",
            [(f'rate(sojourn_cgroup_cpu_throttled_periods_total{{{I}}}[$__rate_interval]) / (rate(sojourn_cgroup_cpu_periods_total{{{I}}}[$__rate_interval]) > 0)', c)],
            "percentunit", width=12, max_value=1)
    b.panel("Throttling queue delay", "Minimum delay of the throttling queue (sojourn queue engine).",
            [(f'sojourn_queue_min_delay_seconds{{queue=~"cgroup_cpu:.*",{I}}}', "{{instance}} {{queue}}")], "s",
            width=12)
    b.panel("Quota", "CPU quota per period, in cores.",
            [(f'sojourn_cgroup_cpu_quota_seconds{{{I}}} / sojourn_cgroup_cpu_period_seconds{{{I}}}', c)], width=12)
    b.panel("Run-queue wait p99", "Saturation: how long the container's runnable threads waited to run, "
            "time throttled by its quota included, top 20." + EBPF_NOTE,
            [(quantile(0.99, "sojourn_cgroup_runqueue_wait_seconds",
                       "instance, namespace, pod, container, cgroup", I, wrap=lambda e: f"topk(20, {e})"), c)],
            "s", width=24)
    b.row("Memory and I/O")
    b.panel("Working set", "Memory the kernel cannot reclaim without I/O, what the OOM killer looks at.",
            [(f'topk(20, sojourn_cgroup_memory_working_set_bytes{{{I}}})', c)], "bytes")
    b.panel("Memory events", "Reclaim pressure and OOM events per second.",
            [(f'sum by (instance, cgroup, event) (rate(sojourn_cgroup_memory_events_total{{{I}}}[$__rate_interval]))',
              "{{instance}} {{cgroup}} {{event}}")], "ops")
    b.panel("Processes", "Tasks in each cgroup.",
            [(f'sojourn_cgroup_pids{{{I}}}', c)])
    # Each pod's own network namespace: what the node's counters cannot
    # tell apart (netns collector).
    n = "{{instance}} {{pod_uid}}{{process}}"
    b.row("Pod network")
    b.panel("Accept queues standing",
            "Saturation: share of time each listener's accept queue in a pod's network namespace "
            "stood (CoDel over each connection's timed wait with eBPF, else over the sampler's lengths, "
            "inet_diag through a socket in the pod's namespace).",
            [(f'rate(sojourn_queue_standing_seconds_total{{{I},netns!=""}}[$__rate_interval])',
              n + " {{queue}}")], "percentunit")
    b.panel("Accept-queue overflows",
            "Saturation: connections a pod's listeners dropped because their accept queue was full "
            "(TcpExt ListenOverflows in the pod's network namespace).",
            [(f'rate(sojourn_netns_tcp_listen_overflows_total{{{I}}}[$__rate_interval]) > 0', n)], "cps")
    b.panel("Accept wait p99",
            "Saturation: how long connections waited in a pod's listeners' accept queues before the "
            "application accepted them." + EBPF_NOTE,
            [(quantile(0.99, "sojourn_tcp_accept_wait_seconds", "instance, netns, namespace, pod, pod_uid, process, port",
                       f'{I},netns!=""'), n + " :{{port}}")], "s")
    b.panel("Retransmitted segments",
            "Errors: share of a pod's TCP segments sent again (RetransSegs / OutSegs in its namespace): "
            "loss on its path.",
            [(f'rate(sojourn_netns_tcp_retransmitted_segments_total{{{I}}}[$__rate_interval]) / '
              f'(rate(sojourn_netns_tcp_segments_sent_total{{{I}}}[$__rate_interval]) > 0)', n)],
            "percentunit")
    b.panel("Interface drops and errors",
            "Saturation and errors of a pod's interfaces: packets dropped or in error, both ways "
            "(/proc/PID/net/dev in its namespace).",
            [(f'sum by (instance, pod_uid, process, device) ('
              f'rate(sojourn_netns_network_receive_drops_total{{{I}}}[$__rate_interval]) + '
              f'rate(sojourn_netns_network_transmit_drops_total{{{I}}}[$__rate_interval]) + '
              f'rate(sojourn_netns_network_receive_errors_total{{{I}}}[$__rate_interval]) + '
              f'rate(sojourn_netns_network_transmit_errors_total{{{I}}}[$__rate_interval]))',
              n + " {{device}}")], "pps")
    return b


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dashboards")
    os.makedirs(out, exist_ok=True)
    for name, board in [("use-node", node()), ("use-cluster", cluster()), ("queues", queues()),
                        ("golden-signals", golden()), ("containers", containers())]:
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(board.json(), f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
