//! Every queue the sampler watches, judged by whether it stood, and the
//! resource each belongs to.

use super::*;

/// Splits a queue name into the kind and name of the resource it belongs to.
pub fn queue_resource(queue: &str) -> (Kind, String) {
    use crate::queue::name::QueueName;
    let Ok(name) = queue.parse::<QueueName>();
    match name {
        QueueName::Cpu => (Kind::Cpu, "cpu".into()),
        QueueName::CpuOne(_) => (Kind::Cpu, queue.into()),
        QueueName::Psi(r) => match r.as_str() {
            "cpu" => (Kind::Cpu, "cpu".into()),
            "memory" => (Kind::Memory, "memory".into()),
            "io" => (Kind::Disk, "disk io (all devices)".into()),
            _ => (Kind::Queue, format!("queue {queue}")),
        },
        QueueName::Disk(d) | QueueName::DiskInflight(d) => (Kind::Disk, format!("disk {d}")),
        QueueName::CgroupCpu(c) => (Kind::ContainerCpu, format!("cgroup {c} cpu")),
        QueueName::TcpAccept(a) => (Kind::TcpAccept, format!("tcp_accept {a}")),
        QueueName::Proxy(s) => (Kind::Service, format!("service {s}")),
        QueueName::Other(_) => (Kind::Queue, format!("queue {queue}")),
    }
}

/// What the eBPF programs timed of a queue's items over the window, where
/// the `ebpf` collector exports it: every wait on the run queues (the
/// host's `cpu` queue), a disk's requests, queued and served, and a
/// listener's connections waiting for accept() (by port, in its namespace).
fn measured(w: &Window, queue: &str, netns: &str) -> Option<String> {
    use crate::queue::name::QueueName;
    let Ok(name) = queue.parse::<QueueName>();
    match name {
        QueueName::Cpu => {
            let waits = w.histogram_increase("sojourn_runqueue_wait_seconds", &[])?;
            Some(format!(
                "p99 wait {} of {} waits timed (eBPF)",
                duration(waits.quantile(0.99)?),
                count(waits.total() as f64)
            ))
        }
        QueueName::Disk(device) => {
            let want = [("device", device.as_str())];
            let queued = w.histogram_increase("sojourn_disk_request_queued_seconds", &want)?;
            let mut text = format!("p99 queued {}", duration(queued.quantile(0.99)?));
            if let Some(served) = w
                .histogram_increase("sojourn_disk_request_served_seconds", &want)
                .and_then(|b| b.quantile(0.99))
            {
                text.push_str(&format!(", served {}", duration(served)));
            }
            text.push_str(&format!(
                " of {} requests timed (eBPF)",
                count(queued.total() as f64)
            ));
            Some(text)
        }
        QueueName::TcpAccept(address) => {
            let port = address.rsplit(':').next()?;
            let want = [("port", port), ("netns", netns)];
            let waits = w.histogram_increase("sojourn_tcp_accept_wait_seconds", &want)?;
            Some(format!(
                "p99 wait for accept {} of {} connections timed (eBPF)",
                duration(waits.quantile(0.99)?),
                count(waits.total() as f64)
            ))
        }
        _ => None,
    }
}

/// The run queue's timed waits (eBPF) over the window, where the run
/// queue itself stood less than [`NOTICE_SHARE`] of it (else its own line
/// quotes them).
fn timed_run_queue_not_standing(w: &Window) -> Option<String> {
    let standing = w
        .increase(
            "sojourn_queue_standing_seconds_total",
            &[("queue", "cpu"), ("netns", "")],
        )
        .unwrap_or(0.0);
    if standing / w.seconds() >= NOTICE_SHARE {
        return None;
    }
    measured(w, "cpu", "")
}

pub(super) fn queues(w: &Window, rows: &mut Rows) {
    let last = w.last();
    let host_overflows = w.gained(&["sojourn_netstat_tcpext_listen_overflows_total"]);
    let mut overflow_named = false;
    // (queue, measure, netns, whose): a listener in another namespace (a
    // pod's) is named by its owner, as the netns collector's rows are.
    let infos: Vec<(String, String, String, Option<String>)> = last
        .all("sojourn_queue_info")
        .iter()
        .map(|s| {
            let netns = s.label("netns").to_string();
            let whose = (!netns.is_empty()).then(|| namespace_owner(s));
            (
                s.label("queue").to_string(),
                s.label("measure").to_string(),
                netns,
                whose,
            )
        })
        .collect();
    for (queue, measure, netns, whose) in infos {
        let want = [("queue", queue.as_str()), ("netns", netns.as_str())];
        let standing = w
            .increase("sojourn_queue_standing_seconds_total", &want)
            .unwrap_or(0.0);
        let share = (standing / w.seconds()).clamp(0.0, 1.0);
        let (kind, mut resource) = queue_resource(&queue);
        let overflows = match &whose {
            None => host_overflows,
            Some(_) => w
                .increase(
                    "sojourn_netns_tcp_listen_overflows_total",
                    &[("netns", netns.as_str())],
                )
                .unwrap_or(0.0),
        };
        if share < NOTICE_SHARE && !(kind == Kind::TcpAccept && overflows > 0.0 && share > 0.0) {
            continue;
        }
        let (gauge, target, show): (&str, &str, fn(f64) -> String) = match measure.as_str() {
            "delay" => (
                "sojourn_queue_min_delay_seconds",
                "sojourn_queue_target_delay_seconds",
                duration,
            ),
            "share" => (
                "sojourn_queue_min_stall_ratio",
                "sojourn_queue_target_stall_ratio",
                pct,
            ),
            _ => (
                "sojourn_queue_min_length",
                "sojourn_queue_target_length",
                count,
            ),
        };
        let worst = w.max(gauge, &want).unwrap_or(0.0);
        let target = last.value(target, &want).unwrap_or(0.0);
        let what = match (queue.as_str(), &whose) {
            ("cpu", _) => "run queue".to_string(),
            ("cpu:psi" | "memory:psi" | "io:psi", _) => "stall (PSI some)".to_string(),
            (q, Some(_)) => format!(
                "accept queue {}",
                q.strip_prefix("tcp_accept:").unwrap_or(q)
            ),
            (q, None) => format!("queue {q}"),
        };
        let mut line = format!(
            "{what} standing {} of {} ({}), min {measure} up to {} (target {})",
            duration(standing),
            duration(w.seconds()),
            pct(share),
            show(worst),
            show(target)
        );
        if let Some(measured) = measured(w, &queue, &netns) {
            line.push_str("; ");
            line.push_str(&measured);
        } else if queue == "cpu:psi"
            && let Some(waits) = timed_run_queue_not_standing(w)
        {
            // The CPU stalls while its run queue's timed delay is within
            // target (the scheduler lets short waits jump the busy
            // threads): what the waiting threads waited still says how
            // much the contention costs.
            line.push_str("; run queue ");
            line.push_str(&waits);
        }
        if let Some(limit) = last.value("sojourn_queue_limit", &want) {
            line.push_str(&format!(", backlog {}", count(limit)));
        }
        if kind == Kind::TcpAccept && overflows > 0.0 {
            match &whose {
                None => {
                    line.push_str(&format!(
                        "; {} connections dropped by full accept queues on this host",
                        count(overflows)
                    ));
                    overflow_named = true;
                }
                Some(owner) => line.push_str(&format!(
                    "; {} connections dropped by full accept queues in {owner}",
                    count(overflows)
                )),
            }
        }
        if let Some(owner) = &whose {
            // One row per pod: its listeners' queues and its overflows.
            resource = format!("tcp_accept of {owner}");
        }
        let row = rows.row(kind, &resource);
        let prior = row.saturation.as_ref().map_or(0.0, |s| s.value);
        if share >= prior {
            row.saturation = Some(Signal::new(share, format!("standing {}", pct(share))));
        }
        let saturated = share >= STANDING_SHARE || (kind == Kind::TcpAccept && overflows > 0.0);
        row.judge(
            if saturated {
                Verdict::Saturated
            } else {
                Verdict::Ok
            },
            share,
            line,
        );
    }
    if host_overflows > 0.0 && !overflow_named {
        overflowed(
            rows,
            "tcp_accept (all listeners)",
            host_overflows,
            "a listener's accept queue was full (it did not stand at 10 ms samples: bursts)",
        );
    }
}
