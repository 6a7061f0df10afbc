//! A timeout between two moments of progress, as nginx's
//! `proxy_read_timeout` and `send_timeout` are: the upstream silent in the
//! middle of a response body, a client that takes nothing of its
//! response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct Stall {
    timeout: Duration,
    /// Made when a wait first begins: a stream that never waits (most
    /// bodies come with their head, most writes go at once) never touches
    /// a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes moved since the sleep was set: it is moved on before the next
    /// wait rather than on every move.
    progressed: bool,
}

impl Stall {
    pub fn new(timeout: Duration) -> Self {
        Stall {
            timeout,
            sleep: None,
            progressed: false,
        }
    }

    /// Bytes moved.
    pub fn progressed(&mut self) {
        if self.sleep.is_some() {
            self.progressed = true;
        }
    }

    /// A wait: Ready once nothing has moved for the timeout.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.timeout;
        let moved_on = std::mem::take(&mut self.progressed);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if moved_on {
            sleep.as_mut().reset(Instant::now() + timeout);
        }
        sleep.as_mut().poll(cx)
    }

    /// A write's outcome, failed once the peer has taken nothing for the
    /// timeout (nginx's `send_timeout`, between two writes): a client that
    /// stops reading would otherwise hold its connection and its response
    /// for good.
    pub fn timed_write<T>(
        &mut self,
        written: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.progressed();
            return written;
        }
        match self.poll_expired(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing of its response for the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One poll of the wait: has it expired?
    async fn expired(stall: &mut Stall) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(stall.poll_expired(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_expires_a_timeout_after_the_last_progress() {
        let mut stall = Stall::new(Duration::from_secs(1));
        stall.progressed();
        assert!(stall.sleep.is_none(), "no timer until a wait begins");
        assert!(!expired(&mut stall).await);
        tokio::time::sleep(Duration::from_millis(800)).await;
        stall.progressed();
        assert!(!expired(&mut stall).await, "moved on to 1.8 s");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            !expired(&mut stall).await,
            "1.7 s: 0.9 s since the progress"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(expired(&mut stall).await, "1.9 s: 1.1 s since the progress");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_begins_late_is_timed_from_its_beginning() {
        let mut stall = Stall::new(Duration::from_secs(1));
        // Bytes moved for 5 s without a wait: no timer ran meanwhile.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!expired(&mut stall).await);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!expired(&mut stall).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(expired(&mut stall).await);
    }
}
