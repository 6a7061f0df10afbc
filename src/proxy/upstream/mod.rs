//! The proxy's own HTTP/1.1 client for its one upstream, and its pool of
//! keep-alive connections.
//!
//! hyper's client runs each connection in a task of its own and hands
//! requests and responses to it over channels: four task wake-ups per
//! request on the proxy's one thread, where nginx's event loop has two.
//! Here the exchange runs in the task of the client connection that asked
//! for it — the request head is written from the request's own future, the
//! response head and body are read when the upstream socket wakes that
//! task — and a connection in the pool is only a socket and its buffers.
//!
//! The pool: a stack of idle connections, the most recently used first
//! (its buffers are warm), at most `MAX_IDLE` kept (nginx's `keepalive
//! 64`), a connection given back only when its request went out whole and
//! its response was read to the end.
//!
//! Parsing is pure (`codec`: `parse_head`, `ChunkedDecoder`) and tested on
//! bytes; the response body the client reads is `body::UpstreamBody`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::buf::Chain;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::http::request;
use hyper::http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::CountingBody;
use super::stall::Stall;

/// Idle connections kept for reuse (nginx's `keepalive 64`).
const MAX_IDLE: usize = 64;
/// Longest response head or trailer section accepted (the client side's
/// limit too).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// A read is made into at least this much free buffer.
const MIN_READ: usize = 4 * 1024;
/// What a connection's read buffer grows by.
const READ_BUF: usize = 16 * 1024;

pub struct UpstreamPool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// Longest silence of the upstream in the middle of a response body
    /// (nginx's `proxy_read_timeout`, between two reads).
    read_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

/// Why a request did not get a response from the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection: refused, unreachable, or not accepted in time.
    Connect(String),
    /// The connection broke, or the upstream sent what is not HTTP/1.x,
    /// before a whole response head came.
    Reset(String),
    /// The client's request body broke off before all of it went upstream:
    /// the client failed, not the upstream.
    RequestBody(hyper::Error),
    /// No response head by the deadline, or the upstream took no request
    /// body for the timeout.
    Timeout,
    /// The client sent nothing of its request body for the timeout: the
    /// client is slow, not the upstream.
    ClientTimeout,
}

/// One connection to the upstream.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// The request head being written.
    wbuf: Vec<u8>,
    /// It has carried an exchange before (so it may have been closed by
    /// the upstream while it sat in the pool).
    reused: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            reused: false,
        }
    }

    /// Reads what the socket has into `rbuf`; `Ok(0)` is the end of the
    /// stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ {
            self.rbuf.reserve(READ_BUF);
        }
        let spare = self.rbuf.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        // poll_read, not try_read: a short read clears the socket's
        // readiness, so the next read waits for the reactor instead of
        // costing a system call that finds nothing.
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        // SAFETY: the first `n` bytes of the spare capacity were just
        // initialised by the read.
        unsafe { self.rbuf.advance_mut(n) };
        Poll::Ready(Ok(n))
    }

    /// Whether an idle connection is still open: the upstream may have
    /// closed it (its keep-alive timeout) while it sat in the pool. No
    /// system call unless the reactor saw the socket become readable.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl UpstreamPool {
    pub fn new(uri: &hyper::Uri, connect_timeout: Duration, read_timeout: Duration) -> Self {
        UpstreamPool {
            host: uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']'])
                .to_string(),
            port: uri.port_u16().unwrap_or(80),
            connect_timeout,
            read_timeout,
            idle: Mutex::new(Vec::with_capacity(MAX_IDLE)),
        }
    }

    /// A new connection, made by `deadline` (the request's).
    async fn connect_by(&self, deadline: tokio::time::Instant) -> Result<Conn, UpstreamError> {
        // Boxed: rare once the pool is warm, and its future would otherwise
        // widen every request's.
        match tokio::time::timeout_at(deadline, Box::pin(self.connect())).await {
            Ok(connected) => connected,
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
            Err(_) => return Err(UpstreamError::Connect("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn::new(stream))
    }

    /// An idle connection that is still open, if any.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let conn = self.idle.lock().ok()?.pop()?;
            if conn.is_open() {
                return Some(conn);
            }
        }
    }

    fn give_back(&self, mut conn: Conn) {
        conn.reused = true;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    /// Sends the request (its head in origin form, hop-by-hop headers
    /// already gone) and returns the response once its head has come; the
    /// body streams from the upstream socket as the client reads it.
    ///
    /// A pooled connection that turns out closed before any byte of the
    /// response came is replaced by a new one and the request sent again,
    /// if it is idempotent and has no body (RFC 9110 §9.2.2): the upstream
    /// closing an idle connection as the request crosses it is not an
    /// error of the upstream's.
    ///
    /// The response head must come by `deadline`; a request body moves it:
    /// while the body flows, the upstream has the timeout from the last
    /// bytes that went (an upload slower than the timeout is no upstream
    /// failure), and a body the client stops sending is the client's
    /// timeout, not the upstream's.
    pub async fn send(
        self: &Arc<Self>,
        request: Prepared,
        mut body: CountingBody,
        deadline: tokio::time::Instant,
    ) -> Result<hyper::Response<UpstreamBody>, UpstreamError> {
        let Prepared {
            head: request_head,
            framing,
            head_request,
            retryable,
        } = request;
        let mut conn = match self.checkout() {
            Some(c) => c,
            None => self.connect_by(deadline).await?,
        };
        conn.wbuf = request_head;
        let mut timer = std::pin::pin!(tokio::time::sleep_until(deadline));
        let mut exchange = Exchange {
            body: &mut body,
            framing,
            head_request,
            timer: timer.as_mut(),
            timeout: self.read_timeout,
        };
        let exchanged = match exchange.run(&mut conn).await {
            Err(Failure::Io(e)) if retryable && conn.reused && conn.rbuf.is_empty() => {
                tracing::debug!(error = %e, "pooled upstream connection was closed; sending again");
                let mut fresh = self.connect_by(deadline).await?;
                std::mem::swap(&mut fresh.wbuf, &mut conn.wbuf);
                conn = fresh;
                exchange.run(&mut conn).await
            }
            other => other,
        };
        let (head, request_sent) = exchanged.map_err(|f| match f {
            Failure::RequestBody(e) => UpstreamError::RequestBody(e),
            Failure::TimedOut { client: true } => UpstreamError::ClientTimeout,
            Failure::TimedOut { client: false } => UpstreamError::Timeout,
            other => UpstreamError::Reset(other.to_string()),
        })?;
        let body = if head.status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the tunnel's now.
            UpstreamBody {
                state: BodyState::Switched(Some(conn)),
                pool: self.clone(),
                reusable: false,
                stall: Stall::new(self.read_timeout),
            }
        } else {
            let mut body = UpstreamBody {
                state: BodyState::Reading(conn, head.framing),
                pool: self.clone(),
                reusable: head.keep_alive && request_sent,
                stall: Stall::new(self.read_timeout),
            };
            body.release_if_done();
            body
        };
        let mut resp = hyper::Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }
}

/// A request encoded for the upstream: its head's bytes, and what the
/// exchange must know of it.
pub struct Prepared {
    head: Vec<u8>,
    framing: RequestFraming,
    head_request: bool,
    /// Idempotent and without a body: may be sent again on a new
    /// connection if a pooled one closes under it.
    retryable: bool,
}

/// Room for a request head: most fit, and the allocation is served from
/// the allocator's per-thread cache.
const HEAD_CAPACITY: usize = 1024;

impl Prepared {
    /// The head in origin form (hop-by-hop headers already gone);
    /// `body_ended`: the request has no body to send.
    pub fn new(parts: &request::Parts, body_ended: bool) -> Self {
        let framing = RequestFraming::of(&parts.headers, body_ended);
        let mut head = Vec::with_capacity(HEAD_CAPACITY);
        encode_head(parts, framing, &mut head);
        Prepared {
            head,
            framing,
            head_request: parts.method == Method::HEAD,
            retryable: framing == RequestFraming::None && parts.method.is_idempotent(),
        }
    }
}

/// Why an exchange failed before a response head came.
#[derive(Debug)]
enum Failure {
    /// The connection broke or closed.
    Io(io::Error),
    /// The upstream answered with something that is not an HTTP/1.x
    /// response head.
    Malformed(&'static str),
    /// Reading the client's request body failed (the client went away, or
    /// framed it wrongly).
    RequestBody(hyper::Error),
    /// The deadline passed; `client`: while the request body waited for
    /// the client.
    TimedOut { client: bool },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Malformed(why) => write!(f, "malformed response: {why}"),
            Failure::RequestBody(e) => write!(f, "request body: {e}"),
            Failure::TimedOut { client } => {
                write!(f, "timed out (waiting for the client: {client})")
            }
        }
    }
}

/// One request's exchange with the upstream: what it sends, and its
/// timer.
struct Exchange<'a> {
    body: &'a mut CountingBody,
    framing: RequestFraming,
    head_request: bool,
    timer: Pin<&'a mut tokio::time::Sleep>,
    /// How long the upstream has after the request body last moved.
    timeout: Duration,
}

impl Exchange<'_> {
    /// Writes the request and reads the response head, the body going out
    /// while the head is awaited: an upstream may answer (413, 401…) before
    /// it has read the whole body. Returns the head and whether the request
    /// went out whole.
    async fn run(&mut self, conn: &mut Conn) -> Result<(ResponseHead, bool), Failure> {
        conn.rbuf.clear();
        let mut sending = match self.framing {
            RequestFraming::None => None,
            framing => Some(BodySender {
                chunked: framing == RequestFraming::Chunked,
                out: None,
                ended: false,
                moved: false,
                waiting_for_client: false,
            }),
        };
        let mut head_written = 0;
        let mut write_error = None;
        std::future::poll_fn(|cx| {
            let step = poll_exchange(
                conn,
                self.body,
                &mut sending,
                &mut head_written,
                &mut write_error,
                self.head_request,
                cx,
            );
            if step.is_ready() {
                return step;
            }
            if let Some(s) = &mut sending
                && std::mem::take(&mut s.moved)
            {
                // Body bytes went: the upstream's time runs from them.
                let from_now = tokio::time::Instant::now() + self.timeout;
                if from_now > self.timer.deadline() {
                    self.timer.as_mut().reset(from_now);
                }
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Failure::TimedOut {
                    client: sending.as_ref().is_some_and(|s| s.waiting_for_client),
                })),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// One turn of the exchange: the head, what the body has ready, and what
/// the upstream has answered.
fn poll_exchange(
    conn: &mut Conn,
    body: &mut CountingBody,
    sending: &mut Option<BodySender>,
    head_written: &mut usize,
    write_error: &mut Option<io::Error>,
    head_request: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(ResponseHead, bool), Failure>> {
    // The head first, whole, before anything else is read or written.
    while *head_written < conn.wbuf.len() {
        match ready!(Pin::new(&mut conn.stream).poll_write(cx, &conn.wbuf[*head_written..])) {
            Ok(0) => return Poll::Ready(Err(Failure::Io(io::ErrorKind::WriteZero.into()))),
            Ok(n) => *head_written += n,
            Err(e) => return Poll::Ready(Err(Failure::Io(e))),
        }
    }
    if let Some(s) = sending
        && write_error.is_none()
    {
        match s.poll_send(&mut conn.stream, body, cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(SendError::Body(e))) => {
                return Poll::Ready(Err(Failure::RequestBody(e)));
            }
            // The upstream may have answered and closed: read on.
            Poll::Ready(Err(SendError::Io(e))) => *write_error = Some(e),
            Poll::Pending => {}
        }
    }
    loop {
        match parse_head(&mut conn.rbuf, head_request) {
            Ok(Some(h)) if h.status.is_informational() && h.status.as_u16() != 101 => continue,
            Ok(Some(h)) => {
                let sent = sending.as_ref().is_none_or(|s| s.ended && s.out.is_none())
                    && write_error.is_none();
                return Poll::Ready(Ok((h, sent)));
            }
            Ok(None) => {}
            Err(why) => return Poll::Ready(Err(Failure::Malformed(why))),
        }
        match ready!(conn.poll_fill(cx)) {
            Ok(0) => {
                let e = write_error
                    .take()
                    .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                return Poll::Ready(Err(Failure::Io(e)));
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Failure::Io(e))),
        }
    }
}

enum SendError {
    Io(io::Error),
    Body(hyper::Error),
}

/// Copies the client's request body to the upstream, framed.
struct BodySender {
    chunked: bool,
    /// Bytes taken from the body and not yet written: a chunk's size line,
    /// its data, its CRLF.
    out: Option<Chain<Chain<Bytes, Bytes>, Bytes>>,
    /// The body has ended (and, chunked, its last chunk is in `out`).
    ended: bool,
    /// Bytes were written upstream since the exchange last looked.
    moved: bool,
    /// The last turn stopped because the client had sent no more of the
    /// body (not because the upstream took no more).
    waiting_for_client: bool,
}

impl BodySender {
    fn poll_send(
        &mut self,
        stream: &mut TcpStream,
        body: &mut CountingBody,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        self.waiting_for_client = false;
        loop {
            if let Some(out) = &mut self.out {
                while out.has_remaining() {
                    let mut slices = [io::IoSlice::new(&[]); 3];
                    let n = out.chunks_vectored(&mut slices);
                    match ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n])) {
                        Ok(0) => {
                            return Poll::Ready(Err(SendError::Io(
                                io::ErrorKind::WriteZero.into(),
                            )));
                        }
                        Ok(n) => {
                            out.advance(n);
                            self.moved = true;
                        }
                        Err(e) => return Poll::Ready(Err(SendError::Io(e))),
                    }
                }
                self.out = None;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            let polled = Pin::new(&mut *body).poll_frame(cx);
            self.waiting_for_client = polled.is_pending();
            match ready!(polled) {
                Some(Ok(frame)) => {
                    // Request trailers are not forwarded.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    self.out = Some(if self.chunked {
                        let size = Bytes::from(format!("{:x}\r\n", data.len()));
                        size.chain(data).chain(Bytes::from_static(b"\r\n"))
                    } else {
                        Bytes::new().chain(data).chain(Bytes::new())
                    });
                }
                Some(Err(e)) => return Poll::Ready(Err(SendError::Body(e))),
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.out = Some(
                            Bytes::from_static(b"0\r\n\r\n")
                                .chain(Bytes::new())
                                .chain(Bytes::new()),
                        );
                    }
                }
            }
        }
    }
}

mod body;
mod codec;
#[cfg(test)]
mod tests;

use body::BodyState;
pub use body::UpstreamBody;
use codec::*;
pub use codec::{ChunkedDecoder, Decoded};
