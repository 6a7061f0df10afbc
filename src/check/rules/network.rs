//! The network: interfaces, TCP and UDP, listening ports, kernel tables,
//! and every other network namespace's.

use super::*;

pub(super) fn network(w: &Window, rows: &mut Rows) {
    let last = w.last();
    for s in last.all("sojourn_network_receive_bytes_total") {
        let dev = s.label("device");
        let want = [("device", dev)];
        let inc = |n: &str| w.increase(n, &want).unwrap_or(0.0);
        let row = rows.row(Kind::Network, &format!("network {dev}"));
        row.headline = dev != "lo";
        if let Some(speed) = last
            .value("sojourn_network_speed_bytes", &want)
            .filter(|s| *s > 0.0)
        {
            let rx = inc("sojourn_network_receive_bytes_total") / w.seconds();
            let tx = inc("sojourn_network_transmit_bytes_total") / w.seconds();
            busy(row, (rx.max(tx) / speed).clamp(0.0, 1.0), "link used");
        }
        let packets = inc("sojourn_network_receive_packets_total")
            + inc("sojourn_network_transmit_packets_total");
        let drops = inc("sojourn_network_receive_drop_total")
            + inc("sojourn_network_receive_fifo_total")
            + inc("sojourn_network_transmit_drop_total")
            + inc("sojourn_network_transmit_fifo_total");
        if drops > 0.0 {
            row.saturation = Some(Signal::new(drops, format!("{} drops", count(drops))));
            // Some drivers count frames of unknown protocols as receive
            // drops, a trickle on an idle link: only a share of traffic counts.
            let share = drops / (packets + drops);
            if drops >= 10.0 && share >= 0.01 {
                row.judge(
                    Verdict::Saturated,
                    share,
                    format!(
                        "{} packets dropped ({} of packets): queue or ring full",
                        count(drops),
                        pct(share)
                    ),
                );
            }
        }
        let errors = inc("sojourn_network_receive_errs_total")
            + inc("sojourn_network_receive_frame_total")
            + inc("sojourn_network_transmit_errs_total")
            + inc("sojourn_network_transmit_carrier_total")
            + inc("sojourn_network_transmit_colls_total");
        if errors > 0.0 {
            row.errors = Some(Signal::new(errors, count(errors)));
            row.judge(
                Verdict::Errors,
                errors,
                format!("{} interface errors", count(errors)),
            );
        }
        if last.value("sojourn_network_up", &want) == Some(0.0)
            && w.first().value("sojourn_network_up", &want) == Some(1.0)
        {
            row.judge(Verdict::Errors, 1.0, "went down during the window");
        }
    }
    let dropped = w.gained(&["sojourn_softnet_dropped_total"]);
    if dropped > 0.0 {
        let row = rows.row(Kind::Network, "network softnet backlog");
        row.saturation = Some(Signal::new(dropped, format!("{} drops", count(dropped))));
        row.judge(
            Verdict::Saturated,
            dropped,
            format!(
                "{} packets dropped: a CPU's input backlog was full",
                count(dropped)
            ),
        );
    }
}

pub(super) fn tcp(w: &Window, rows: &mut Rows) {
    let Some(out) = w.increase("sojourn_netstat_tcp_out_segs_total", &[]) else {
        return;
    };
    let row = rows.row(Kind::Tcp, "tcp");
    row.headline = true;
    if let Some(estab) = w.last().value("sojourn_netstat_tcp_curr_estab", &[]) {
        row.evidence
            .push(format!("{} connections established", count(estab)));
    }
    let retrans = w.gained(&["sojourn_netstat_tcp_retrans_segs_total"]);
    // A SYN to a full listener is retransmitted too: that is the accept
    // queue's saturation, not the path's loss.
    let syn = w.gained(&["sojourn_netstat_tcpext_tcp_syn_retrans_total"]);
    let data = (retrans - syn).max(0.0);
    if out > 0.0 {
        let ratio = data / out;
        row.errors = Some(Signal::new(ratio, format!("{} retransmitted", pct(ratio))));
        if lossy(data, out).is_some() {
            row.judge(
                Verdict::Errors,
                ratio,
                format!(
                    "{} of {} segments retransmitted ({}): loss on the path or a peer not acknowledging",
                    count(data),
                    count(out),
                    pct(ratio)
                ),
            );
        }
    }
    let timeouts = w.gained(&["sojourn_netstat_tcpext_tcp_timeouts_total"]);
    if timeouts > 0.0 && row.verdict == Verdict::Errors {
        row.evidence
            .push(format!("{} retransmission timeouts", count(timeouts)));
    }
    let drops = w.gained(&[
        "sojourn_netstat_tcpext_tcp_backlog_drop_total",
        "sojourn_netstat_tcpext_tcp_rcv_q_drop_total",
    ]);
    if drops > 0.0 {
        row.saturation = Some(Signal::new(drops, format!("{} drops", count(drops))));
        row.judge(
            Verdict::Saturated,
            drops,
            format!(
                "{} segments dropped: socket backlog or receive queue full",
                count(drops)
            ),
        );
    }
}

pub(super) fn tcp_ports(w: &Window, rows: &mut Rows) {
    // Enough snapshots to call a queue standing rather than caught once.
    let needed = w.snapshots().len().min(3);
    for s in w.last().all("sojourn_tcp_port_connections") {
        let port = s.label("port");
        let netns = s.label("netns");
        let want = [("port", port), ("netns", netns)];
        // A port in another namespace is its pod's.
        let name = match netns {
            "" => format!("tcp_port {port}"),
            "other" => format!("tcp_port {port} (pods' ports past the cap)"),
            _ => format!("tcp_port {port} of {}", namespace_owner(s)),
        };
        for (gauge, largest, what, why) in [
            (
                "sojourn_tcp_port_receive_queue_bytes",
                "sojourn_tcp_port_receive_queue_max_bytes",
                "receive queue",
                "the application is not reading as fast as data arrives",
            ),
            (
                "sojourn_tcp_port_send_queue_bytes",
                "sojourn_tcp_port_send_queue_max_bytes",
                "send queue",
                "peers or the path are not taking data as fast as it is written",
            ),
        ] {
            if w.seen(gauge, &want) < needed {
                continue;
            }
            let Some(stood) = w.min(gauge, &want).filter(|b| *b >= SOCKET_QUEUE_BYTES) else {
                continue;
            };
            let row = rows.row(Kind::TcpPort, &name);
            row.saturation = Some(Signal::new(stood, format!("{what} {}", bytes(stood))));
            row.judge(
                Verdict::Saturated,
                1.0,
                format!(
                    "{what} stood at ≥ {} for {} over {} connections (largest {}): {why}",
                    bytes(stood),
                    duration(w.seconds()),
                    count(s.value),
                    bytes(w.last().value(largest, &want).unwrap_or(stood)),
                ),
            );
        }
    }
}

pub(super) fn udp(w: &Window, rows: &mut Rows) {
    let rcv = w.increase("sojourn_netstat_udp_rcvbuf_errors_total", &[]);
    let Some(rcv) = rcv else { return };
    let row = rows.row(Kind::Udp, "udp");
    let full = rcv
        + w.gained(&[
            "sojourn_netstat_udp_sndbuf_errors_total",
            "sojourn_netstat_udp6_rcvbuf_errors_total",
            "sojourn_netstat_udp6_sndbuf_errors_total",
        ]);
    if full > 0.0 {
        row.saturation = Some(Signal::new(full, format!("{} drops", count(full))));
        row.judge(
            Verdict::Saturated,
            full,
            format!(
                "{} datagrams dropped: a socket buffer was full",
                count(full)
            ),
        );
    }
    let csum = w.gained(&[
        "sojourn_netstat_udp_in_csum_errors_total",
        "sojourn_netstat_udp6_in_csum_errors_total",
    ]);
    if csum > 0.0 {
        row.errors = Some(Signal::new(csum, count(csum)));
        row.judge(
            Verdict::Errors,
            csum,
            format!("{} datagrams with a bad checksum", count(csum)),
        );
    }
}

pub(super) fn tables(w: &Window, rows: &mut Rows) {
    let last = w.last();
    for (kind, name, used, limit, what) in [
        (
            Kind::Fd,
            "file descriptors",
            "sojourn_filefd_allocated",
            "sojourn_filefd_maximum",
            "file handles allocated",
        ),
        (
            Kind::Conntrack,
            "conntrack",
            "sojourn_nf_conntrack_entries",
            "sojourn_nf_conntrack_entries_limit",
            "connection-tracking entries",
        ),
    ] {
        let (Some(u), Some(l)) = (last.value(used, &[]), last.value(limit, &[])) else {
            continue;
        };
        let row = rows.row(kind, name);
        row.headline = true;
        if l > 0.0 {
            let share = (u / l).clamp(0.0, 1.0);
            row.utilization = Some(Signal::new(share, pct(share)));
            if share >= TABLE_FULL {
                row.judge(
                    Verdict::Saturated,
                    share,
                    format!("{} of {} {what}", count(u), count(l)),
                );
            }
        }
    }
    let failed: f64 = ["drop", "early_drop", "insert_failed"]
        .iter()
        .filter_map(|e| w.increase("sojourn_nf_conntrack_events_total", &[("event", e)]))
        .sum();
    if failed > 0.0 {
        let row = rows.row(Kind::Conntrack, "conntrack");
        row.errors = Some(Signal::new(failed, count(failed)));
        row.judge(
            Verdict::Errors,
            failed,
            format!(
                "{} flows dropped or not inserted: the table is full",
                count(failed)
            ),
        );
    }
}

/// Listen overflows: connections turned away, a saturation finding of
/// their own.
pub(super) fn overflowed(rows: &mut Rows, resource: &str, overflows: f64, why: &str) {
    let row = rows.row(Kind::TcpAccept, resource);
    row.saturation = Some(Signal::new(
        overflows,
        format!("{} overflows", count(overflows)),
    ));
    row.judge(
        Verdict::Saturated,
        1.0,
        format!("{} connections dropped: {why}", count(overflows)),
    );
}

/// The retransmitted share of sent segments when it is a finding: at
/// least [`RETRANSMITS_MIN`] segments and [`RETRANSMIT_RATIO`] of those sent.
pub(super) fn lossy(retransmitted: f64, sent: f64) -> Option<f64> {
    let ratio = retransmitted / sent;
    (sent > 0.0 && retransmitted >= RETRANSMITS_MIN && ratio >= RETRANSMIT_RATIO).then_some(ratio)
}

/// Whose a network namespace is, as a finding says it: the pod's
/// namespace and name (with the kubelet's list) or uid, or the process
/// sojourn reads it through.
pub(super) fn namespace_owner(s: &crate::check::snapshot::Series) -> String {
    match (s.label("pod_uid"), s.label("pod")) {
        ("", _) => format!(
            "{}'s network namespace ({})",
            s.label("process"),
            s.label("netns")
        ),
        (uid, "") => format!("pod {uid}"),
        (_, pod) => format!("pod {}/{pod}", s.label("namespace")),
    }
}

/// Each workload's network namespace (a pod's): listeners overflowing and
/// retransmits, attributed to the pod.
pub(super) fn namespaces(w: &Window, rows: &mut Rows) {
    for s in w.last().all("sojourn_netns_tcp_listen_overflows_total") {
        let netns = s.label("netns");
        let want = [("netns", netns)];
        let owner = namespace_owner(s);
        let overflows = w
            .increase("sojourn_netns_tcp_listen_overflows_total", &want)
            .unwrap_or(0.0);
        if overflows > 0.0 {
            overflowed(
                rows,
                &format!("tcp_accept of {owner}"),
                overflows,
                &format!("full accept queues in {owner}: its server does not accept() fast enough"),
            );
        }
        let out = w
            .increase("sojourn_netns_tcp_segments_sent_total", &want)
            .unwrap_or(0.0);
        let retrans = w
            .increase("sojourn_netns_tcp_retransmitted_segments_total", &want)
            .unwrap_or(0.0);
        if let Some(ratio) = lossy(retrans, out) {
            let row = rows.row(Kind::Tcp, &format!("tcp of {owner}"));
            row.errors = Some(Signal::new(ratio, format!("{} retransmitted", pct(ratio))));
            row.judge(
                Verdict::Errors,
                ratio,
                format!(
                    "{} of {} segments retransmitted in {owner} ({}): loss on its path or a peer not acknowledging",
                    count(retrans),
                    count(out),
                    pct(ratio)
                ),
            );
        }
    }
}
