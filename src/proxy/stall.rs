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
}
