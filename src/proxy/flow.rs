//! An HTTP/2 client that keeps a stream's flow-control window shut: it
//! reads its socket and answers PINGs, so neither the socket-level send
//! timeout nor the keep-alive PING sees it, yet its response stops. Each
//! stream's task is watched: once the response body has handed hyper a
//! frame and hyper has not asked for the next for the send timeout, the
//! stream is dropped (hyper resets it, the request is recorded cancelled
//! and its upstream connection let go).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use super::stall::Stall;

tokio::task_local! {
    static STREAM: Arc<Waiting>;
}

/// Where one stream's response body stands with hyper.
#[derive(Default)]
pub struct Waiting {
    /// A frame (or the head) was handed over and hyper has not asked for
    /// the next: it waits for the client's window.
    handed: AtomicBool,
    /// hyper's asks for a frame so far.
    polls: AtomicU64,
}

impl Waiting {
    /// The stream being served on this task, on HTTP/2.
    pub fn current() -> Option<Arc<Waiting>> {
        STREAM.try_with(Arc::clone).ok()
    }

    pub fn handed(&self) {
        self.handed.store(true, Ordering::Relaxed);
    }

    pub fn asked(&self) {
        self.handed.store(false, Ordering::Relaxed);
        self.polls.fetch_add(1, Ordering::Relaxed);
    }
}

/// hyper's executor for the HTTP/2 streams it serves: each on its own task
/// (as `TokioExecutor`), under the watch above.
#[derive(Clone)]
pub struct StreamExecutor {
    pub send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let waiting = Arc::new(Waiting::default());
        let mut stall = Stall::new(self.send_timeout);
        tokio::spawn(async move {
            let stream = STREAM.scope(waiting.clone(), stream);
            tokio::pin!(stream);
            let mut asks_seen = 0;
            std::future::poll_fn(|cx| {
                if stream.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                if !waiting.handed.load(Ordering::Relaxed) {
                    return Poll::Pending;
                }
                let asks = waiting.polls.load(Ordering::Relaxed);
                if asks != asks_seen {
                    asks_seen = asks;
                    stall.progressed();
                }
                if stall.poll_expired(cx).is_ready() {
                    tracing::debug!("HTTP/2 stream reset: the client's window stayed shut");
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await
        });
    }
}
