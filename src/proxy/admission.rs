//! The proxy's own request queue: with `--max-concurrency N`, requests
//! beyond N wait here, and every request's exact wait (zero when admitted at
//! once) feeds the queue engine as `proxy:<service>`. The queue is standing
//! by the same CoDel rule as every other queue sojourn watches.
//!
//! `--shed codel`: a request still waiting after the slough time (twice
//! the target, as folly's Codel) while the queue stands is answered 503 at
//! once rather than after a long wait — the caller can retry elsewhere,
//! and the admitted requests' latency stays bounded.
//! `--queue-order adaptive-lifo`: while the queue stands, the newest waiter
//! is served first (Facebook's "Fail at Scale"): in a standing queue the
//! oldest callers have likely given up already.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::queue::{Measure, QueueConfig, QueueSet, Sample};

/// Which waiting request goes first (`--queue-order`, `queue_order:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    #[default]
    Fifo,
    /// The newest first while the queue stands.
    AdaptiveLifo,
}

/// Whether a waiting request may be turned away (`--shed`, `shed:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shed {
    /// Every request waits its turn.
    #[default]
    None,
    /// 503 to a request still waiting after the slough time while the
    /// queue stands.
    Codel,
}

#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub max_concurrency: usize,
    pub shed: Shed,
    pub order: Order,
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    waiters: VecDeque<Waiter>,
    next_id: u64,
}

pub struct Admission {
    cfg: AdmissionConfig,
    state: Mutex<State>,
    queue: Arc<str>,
    pub queues: Mutex<QueueSet>,
    origin: Instant,
    slough: Duration,
    pub shed_total: AtomicU64,
}

/// Held while a request is in flight; passes its slot on when dropped.
pub struct Permit(Arc<Admission>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

pub enum Admit {
    Go(Permit),
    /// Shed by CoDel: answer 503.
    Shed,
}

/// Removes a waiter that gave up (its client left, or it was shed), and
/// passes on a slot granted to it in the meantime.
struct WaitGuard<'a> {
    adm: &'a Arc<Admission>,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        if let Ok(mut s) = self.adm.state.lock() {
            s.waiters.retain(|w| w.id != self.id);
        }
        rx.close();
        if rx.try_recv().is_ok() {
            self.adm.release();
        }
    }
}

impl Admission {
    pub fn new(cfg: AdmissionConfig, service: &str, queue_cfg: QueueConfig) -> Self {
        let slough = Duration::from_secs_f64(2.0 * queue_cfg.delay_target);
        Admission {
            cfg,
            state: Mutex::new(State::default()),
            queue: Arc::from(crate::queue::name::QueueName::Proxy(service.to_string()).to_string()),
            queues: Mutex::new(QueueSet::new(queue_cfg)),
            origin: Instant::now(),
            slough,
            shed_total: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, wait: Duration) {
        let now = self.now_ns();
        if let Ok(mut q) = self.queues.lock() {
            q.observe(
                now,
                &Sample {
                    queue: self.queue.clone(),
                    scope: None,
                    measure: Measure::Delay,
                    source: "proxy",
                    value: wait.as_secs_f64(),
                },
            );
        }
    }

    pub fn standing(&self) -> bool {
        self.queues
            .lock()
            .ok()
            .and_then(|q| q.is_standing(&self.queue))
            .unwrap_or(false)
    }

    /// Waits for a slot; sheds instead when `--shed codel` says so.
    pub async fn admit(self: &Arc<Self>) -> Admit {
        let arrived = Instant::now();
        let (id, rx) = {
            let Ok(mut s) = self.state.lock() else {
                return Admit::Go(Permit(self.clone()));
            };
            if s.in_flight < self.cfg.max_concurrency {
                s.in_flight += 1;
                drop(s);
                self.record(Duration::ZERO);
                return Admit::Go(Permit(self.clone()));
            }
            let (grant, rx) = oneshot::channel();
            let id = s.next_id;
            s.next_id += 1;
            s.waiters.push_back(Waiter { id, grant });
            (id, rx)
        };
        let mut guard = WaitGuard {
            adm: self,
            id,
            rx: Some(rx),
        };
        // With shedding, the waiter looks again every slough time: the
        // queue may start standing while it waits (its estimator learns
        // from the waits of the requests admitted meanwhile).
        // A waiter's sender leaves the queue only by release(), which sends
        // the grant, or by this waiter's own guard: the receive cannot fail.
        loop {
            let rx = guard.rx.as_mut().expect("set above");
            if self.cfg.shed == Shed::None {
                let _ = rx.await;
                break;
            }
            tokio::select! {
                _ = rx => break,
                _ = tokio::time::sleep(self.slough) => {}
            }
            if self.standing() {
                self.shed_total.fetch_add(1, Ordering::Relaxed);
                // The guard removes the waiter and passes on a slot granted meanwhile.
                drop(guard);
                self.record(arrived.elapsed());
                return Admit::Shed;
            }
        }
        // The slot is ours now: the guard must not pass it on.
        guard.rx = None;
        drop(guard);
        self.record(arrived.elapsed());
        Admit::Go(Permit(self.clone()))
    }

    fn release(&self) {
        let lifo = self.cfg.order == Order::AdaptiveLifo && self.standing();
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        loop {
            let next = if lifo {
                s.waiters.pop_back()
            } else {
                s.waiters.pop_front()
            };
            match next {
                // A waiter whose client left meanwhile: try the next one.
                Some(w) => {
                    if w.grant.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    s.in_flight = s.in_flight.saturating_sub(1);
                    let idle = s.in_flight == 0;
                    drop(s);
                    if idle {
                        // An empty queue clears the standing state.
                        self.record(Duration::ZERO);
                    }
                    return;
                }
            }
        }
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.waiters.len()).unwrap_or(0)
    }
}
