//! Counting a request's bodies and recording the request once: when its
//! response body ends or is dropped, or as cancelled (499) when the client
//! left before any response.

use super::*;

/// The request body on its way upstream, counted.
pub struct CountingBody {
    pub(super) inner: Incoming,
    pub(super) stats: Arc<ServiceStats>,
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.stats
                .request_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(super) enum Inner {
    Upstream(upstream::UpstreamBody),
    Local(Full<Bytes>),
}

/// A request's record, made once: by its response body when that ends or
/// is dropped, or, dropped before a response existed (the client left
/// while the upstream was thinking), as cancelled with status 499 (nginx's
/// "client closed request").
pub(super) struct Recording {
    pub(super) start: Instant,
    pub(super) stats: Arc<ServiceStats>,
    pub(super) key: RequestKey,
    pub(super) route_index: Option<usize>,
    pub(super) done: bool,
    /// The request's slot under --max-concurrency, given back with it.
    pub(super) permit: Option<Permit>,
    /// The request's claim on its client connection, ended with it.
    pub(super) in_flight: Option<client::InFlight>,
    /// HTTP/2: its stream's watch for a client window that stays shut.
    pub(super) client_window: Option<Arc<flow::Waiting>>,
    /// A frame of the response body has gone to the client.
    pub(super) handed_data: bool,
}

/// The status a request is recorded with when its client left before any
/// response.
pub(super) const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Recording {
    pub(super) fn begin(
        start: Instant,
        stats: &Arc<ServiceStats>,
        method: &'static str,
        route: Arc<str>,
        route_index: Option<usize>,
        in_flight: Option<client::InFlight>,
    ) -> Self {
        stats.active_requests.fetch_add(1, Ordering::Relaxed);
        Recording {
            start,
            stats: stats.clone(),
            key: RequestKey {
                method,
                status: CLIENT_CLOSED_REQUEST,
                route,
            },
            route_index,
            done: false,
            permit: None,
            in_flight,
            client_window: None,
            handed_data: false,
        }
    }

    /// The response's body, which records the request when it ends.
    pub(super) fn respond(mut self, status: StatusCode, inner: Inner) -> RecordedBody {
        self.key.status = stats::status_key(status.as_u16());
        // Until hyper asks for the first frame, the head is what the client
        // has to take (a window shut from the start is one never opened).
        if let Some(w) = &self.client_window {
            w.handed();
        }
        RecordedBody {
            inner,
            recording: self,
        }
    }

    pub(super) fn finish(&mut self, cancelled: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if cancelled {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        } else if let Some(in_flight) = &mut self.in_flight {
            in_flight.finish_clean();
        }
        let seconds = self.start.elapsed().as_secs_f64();
        self.stats.record_duration(&self.key, seconds);
        self.stats.record_window(self.route_index, seconds);
        self.stats.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.finish(true);
    }
}

/// The response body on its way to the client: counts bytes, and records
/// the request when it ends or is dropped.
pub struct RecordedBody {
    inner: Inner,
    recording: Recording,
}

impl RecordedBody {
    fn inner_is_end(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_end_stream(),
        }
    }
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(w) = &self.recording.client_window {
            w.asked();
        }
        let polled = match &mut self.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(w) = &self.recording.client_window {
                    w.handed();
                }
                self.recording.handed_data = true;
                if let Some(data) = frame.data_ref() {
                    self.recording
                        .stats
                        .response_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => self.recording.finish(false),
            Poll::Ready(Some(Err(e))) => {
                let why = if e.kind() == std::io::ErrorKind::TimedOut {
                    ErrorType::Timeout
                } else {
                    ErrorType::Reset
                };
                self.recording.stats.error(why);
                // Broken before a byte of its body: the client got no
                // usable response (at most a head and a reset), which is
                // what a 502 says, not the upstream's status.
                if !self.recording.handed_data {
                    self.recording.key.status = stats::status_key(StatusCode::BAD_GATEWAY.as_u16());
                }
                // A response cut short: its connection is not reused.
                self.recording.in_flight = None;
                self.recording.finish(false);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner_is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => b.size_hint(),
        }
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304), or one whose last frame said so,
        // may be dropped unread once done.
        let ended = self.inner_is_end();
        self.recording.finish(!ended);
    }
}
