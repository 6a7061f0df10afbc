//! The proxied services' stats and request queues, as families for the
//! scraper.

use super::*;

/// Exposes the proxied services' stats, and their request queues, to the
/// scraper.
pub struct ProxyCollector {
    pub services: Vec<ServiceHandle>,
}

pub(super) const SHED: crate::metrics::Desc = crate::metrics::Desc::counter(
    "proxy_requests_shed",
    "Errors: requests answered 503 by --shed codel: they waited past the slough time (2 × the delay target) while the request queue stood.",
);
pub(super) const LATENCY_TARGET: crate::metrics::Desc = crate::metrics::Desc::gauge(
    "proxy_latency_target",
    "Latency: the p99 the service should stay under (--proxy.latency-target, config latency_target); sojourn check and the / page call it slow above.",
)
.seconds();
pub(super) const WAITING: crate::metrics::Desc = crate::metrics::Desc::gauge(
    "proxy_queued_requests",
    "Saturation: requests waiting for a slot under --max-concurrency.",
);

impl crate::collectors::Collect for ProxyCollector {
    fn collect(
        &self,
        _: &crate::collectors::Config,
    ) -> Result<Vec<crate::metrics::Family>, crate::collectors::CollectError> {
        let mut out = Vec::new();
        let mut targets = crate::metrics::Family::new(LATENCY_TARGET);
        for svc in &self.services {
            targets.push(
                vec![crate::metrics::label("service", svc.stats.service.clone())],
                svc.latency_target.as_secs_f64(),
            );
        }
        if !self.services.is_empty() {
            out.push(targets);
        }
        for svc in &self.services {
            out.extend(svc.stats.families());
            let Some(a) = &svc.admission else { continue };
            let service = || vec![crate::metrics::label("service", svc.stats.service.clone())];
            let mut shed = crate::metrics::Family::new(SHED);
            shed.push(service(), a.shed_total.load(Ordering::Relaxed));
            let mut waiting = crate::metrics::Family::new(WAITING);
            waiting.push(service(), a.waiting() as u64);
            out.push(shed);
            out.push(waiting);
            if let Ok(q) = a.queues.lock() {
                out.extend(q.emit());
            }
        }
        Ok(out)
    }
}
