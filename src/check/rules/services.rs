//! Proxied services (errors, latency against the target) and probes.

use super::*;

pub(super) fn probes(w: &Window, rows: &mut Rows) {
    for s in w.last().all("sojourn_probe_attempts_total") {
        let probe = s.label("probe");
        let want = [("probe", probe)];
        let attempts = w
            .increase("sojourn_probe_attempts_total", &want)
            .unwrap_or(0.0);
        let row = rows.row(Kind::Probe, &format!("probe {probe}"));
        row.headline = true;
        let mut reasons = BTreeMap::new();
        for f in w.last().all("sojourn_probe_failures_total") {
            if f.label("probe") != probe {
                continue;
            }
            let reason = f.label("reason");
            let n = w
                .increase(
                    "sojourn_probe_failures_total",
                    &[("probe", probe), ("reason", reason)],
                )
                .unwrap_or(0.0);
            if n > 0.0 {
                reasons.insert(reason.to_string(), n);
            }
        }
        let failed: f64 = reasons.values().sum();
        if failed > 0.0 {
            let why: Vec<String> = reasons
                .iter()
                .map(|(r, n)| format!("{} {r}", count(*n)))
                .collect();
            row.errors = Some(Signal::new(failed, format!("{} failed", count(failed))));
            row.judge(
                Verdict::Errors,
                failed / attempts.max(failed),
                format!(
                    "{} of {} probes failed: {}",
                    count(failed),
                    count(attempts.max(failed)),
                    why.join(", ")
                ),
            );
        } else if w.last().value("sojourn_probe_success", &want) == Some(0.0) {
            row.judge(Verdict::Errors, 1.0, "the last probe failed");
        }
    }
}

pub(super) fn services(w: &Window, rows: &mut Rows) {
    let hist = "http_server_request_duration_seconds";
    let names: BTreeSet<String> = w
        .last()
        .all(hist)
        .iter()
        .map(|s| s.label("service").to_string())
        .chain(
            w.last()
                .all("sojourn_proxy_active_requests")
                .iter()
                .map(|s| s.label("service").to_string()),
        )
        .collect();
    let host_findings: Vec<String> = rows
        .rows
        .iter()
        .filter(|r| r.verdict.is_finding() && r.kind != Kind::Service && r.kind != Kind::Probe)
        .map(|r| r.resource.clone())
        .collect();
    for svc in names {
        let want = [("service", svc.as_str())];
        let resource = format!("service {svc}");
        let target = w
            .last()
            .value("sojourn_proxy_latency_target_seconds", &want)
            .unwrap_or(0.5);
        let all = w.histogram_increase(hist, &want);
        let requests = all.as_ref().map_or(0, |b| b.total());
        let row = rows.row(Kind::Service, &resource);
        row.headline = true;
        let rate = requests as f64 / w.seconds();
        row.utilization = Some(Signal::new(rate, format!("{rate:.1} req/s")));
        if let Some(inflight) = w.last().value("sojourn_proxy_active_requests", &want) {
            row.evidence.push(format!(
                "{} requests in {}, {} in flight",
                requests,
                duration(w.seconds()),
                count(inflight)
            ));
        }
        let p99 = all.as_ref().and_then(|b| b.quantile(0.99));
        if let Some(p99) = p99.filter(|_| requests >= SERVICE_MIN_REQUESTS)
            && p99 > target
        {
            let ttfb = w
                .histogram_increase("sojourn_proxy_time_to_first_byte_seconds", &want)
                .and_then(|b| b.quantile(0.99));
            let mut line = format!(
                "p99 {} over the {} target ({} requests)",
                duration(p99),
                duration(target),
                requests
            );
            if let Some(t) = ttfb {
                line.push_str(&format!(
                    "; time to the upstream's first byte p99 {}",
                    duration(t)
                ));
            }
            let queued = rows
                .find(&resource)
                .is_some_and(|r| r.verdict == Verdict::Saturated);
            if queued {
                line.push_str("; requests wait in the proxy's own queue");
            } else if host_findings.is_empty() {
                line.push_str(
                    "; no resource on this host is saturated: the time is spent upstream",
                );
            } else {
                line.push_str(&format!(
                    "; while {} on this host",
                    host_findings.join(", ")
                ));
            }
            let row = rows.row(Kind::Service, &resource);
            row.judge(Verdict::Slow, p99 / target, line);
        }
        let row = rows.row(Kind::Service, &resource);
        let errors: f64 = w
            .last()
            .all(hist)
            .iter()
            .filter(|s| {
                s.label("service") == svc && s.label("http_response_status_code").starts_with('5')
            })
            .filter_map(|s| {
                let labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                w.increase(hist, &labels)
            })
            .sum();
        let upstream = w
            .increase("sojourn_proxy_upstream_errors_total", &want)
            .unwrap_or(0.0);
        if requests > 0 {
            let ratio = errors / requests as f64;
            row.errors = Some(Signal::new(ratio, format!("{} 5xx", pct(ratio))));
            if ratio >= SERVICE_ERROR_RATIO {
                row.judge(
                    Verdict::Errors,
                    ratio,
                    format!(
                        "{} of {requests} requests answered 5xx ({})",
                        count(errors),
                        pct(ratio)
                    ),
                );
            }
        }
        if upstream > 0.0 {
            row.evidence.push(format!(
                "{} upstream connect, timeout or reset errors",
                count(upstream)
            ));
        }
        let shed = w
            .increase("sojourn_proxy_requests_shed_total", &want)
            .unwrap_or(0.0);
        if shed > 0.0 {
            row.judge(
                Verdict::Saturated,
                1.0,
                format!(
                    "{} requests shed (503) by CoDel: the request queue stood",
                    count(shed)
                ),
            );
        }
    }
}
