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
//! Parsing is pure (`parse_head`, `ChunkedDecoder`) and tested on bytes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::buf::Chain;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::http::request;
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
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

/// How the request body is framed on the upstream connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RequestFraming {
    /// No body.
    None,
    /// As many bytes as the Content-Length header says.
    Length,
    /// Chunked: a body of unknown length (streamed by an HTTP/1.1 client
    /// in chunks, or sent by an HTTP/2 client without a length).
    Chunked,
}

impl RequestFraming {
    fn of(headers: &HeaderMap, body_ended: bool) -> Self {
        if headers.contains_key(hyper::header::CONTENT_LENGTH) {
            RequestFraming::Length
        } else if body_ended {
            RequestFraming::None
        } else {
            RequestFraming::Chunked
        }
    }
}

/// The request line and headers, as the upstream reads them: the target
/// in origin form (an HTTP/2 request's URI is absolute).
fn encode_head(parts: &request::Parts, framing: RequestFraming, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
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

/// A parsed response head.
#[derive(Debug)]
struct ResponseHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: ResponseFraming,
    /// The upstream leaves the connection open after this response.
    keep_alive: bool,
}

/// How a response's body ends (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
enum ResponseFraming {
    /// After this many more bytes.
    Length(u64),
    /// At its last chunk.
    Chunked(ChunkedDecoder),
    /// When the upstream closes the connection.
    UntilClose,
}

/// Parses a response head from the front of `buf`, taking its bytes off;
/// `Ok(None)` if more bytes are needed. Header values share the head's
/// bytes rather than being copied.
fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialised: a head has a handful of fields, and zeroing room for
    // a hundred on every response shows in a profile.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err("response head too large"),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err("response head too large");
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many header fields"),
        Err(_) => return Err("not an HTTP/1.x response head"),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("bad status code")?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each name and value sits in the head, to slice it after the
    // head's bytes are taken off the buffer.
    let base = buf.as_ptr() as usize;
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = parsed.headers.len();
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        // Within a head of at most MAX_HEAD: fits in u32.
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        *span = (
            offset(field.name.as_bytes()),
            field.name.len() as u32,
            offset(field.value),
            field.value.len() as u32,
        );
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut close = version == Version::HTTP_10;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut length: Option<u64> = None;
    for &(name, name_len, value, value_len) in &spans[..count] {
        let (name, name_len, value, value_len) = (
            name as usize,
            name_len as usize,
            value as usize,
            value_len as usize,
        );
        let name =
            HeaderName::from_bytes(&head[name..name + name_len]).map_err(|_| "bad header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
            .map_err(|_| "bad header value")?;
        if name == hyper::header::CONNECTION {
            for token in value.to_str().unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        } else if name == hyper::header::TRANSFER_ENCODING {
            transfer_encoded = true;
            // Only a final `chunked` delimits the body.
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == hyper::header::CONTENT_LENGTH {
            let n = value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("bad content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-length");
            }
            length = Some(n);
        }
        headers.append(name, value);
    }
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        ResponseFraming::Length(0)
    } else if transfer_encoded {
        // With Transfer-Encoding, Content-Length is ignored and the
        // connection not trusted for another exchange (RFC 9112 §6.3).
        if length.is_some() {
            close = true;
            // And an intermediary removes it before forwarding: a client
            // would frame the body by it, truncated or waiting for bytes
            // that never come, and HTTP/2 forbids the mismatch.
            headers.remove(hyper::header::CONTENT_LENGTH);
        }
        if chunked {
            ResponseFraming::Chunked(ChunkedDecoder::default())
        } else {
            ResponseFraming::UntilClose
        }
    } else if let Some(n) = length {
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::UntilClose
    };
    if framing == ResponseFraming::UntilClose {
        close = true;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive: !close,
    }))
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum ChunkState {
    /// At a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk, in the trailer section (this many bytes of it
    /// seen).
    Trailers(usize),
    /// The body has ended.
    Done,
}

/// Decodes a chunked body (RFC 9112 §7.1) incrementally; chunk extensions
/// and trailer fields are read past and dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

/// What the decoder made of the bytes it had.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    NeedMore,
    /// The last chunk and trailers are read.
    End,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes from the front of `buf` what it can; data comes out as soon
    /// as any of a chunk is there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some(end) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err("chunk size line too long");
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err("chunk size line too long");
                    }
                    let line = &buf[..end];
                    let digits = line
                        .iter()
                        .position(|b| !b.is_ascii_hexdigit())
                        .unwrap_or(line.len());
                    let rest = &line[digits..];
                    // After the size: optional whitespace and extensions.
                    if digits == 0
                        || digits > 16
                        || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t'))
                    {
                        return Err("bad chunk size");
                    }
                    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| "bad chunk size")?;
                    let size = u64::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(n).freeze();
                    self.state = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let Some(end) = find_crlf(buf) else {
                        if seen + buf.len() > MAX_HEAD {
                            return Err("trailer section too large");
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(end + 2);
                    self.state = if end == 0 {
                        ChunkState::Done
                    } else if seen + end + 2 > MAX_HEAD {
                        return Err("trailer section too large");
                    } else {
                        ChunkState::Trailers(seen + end + 2)
                    };
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A response body read from the upstream connection as the client takes
/// it; the connection goes back to the pool when the body has ended.
pub struct UpstreamBody {
    state: BodyState,
    pool: Arc<UpstreamPool>,
    /// The connection goes back to the pool once the body has ended:
    /// false if it may not carry another exchange (the upstream closes it,
    /// or the request did not go out whole).
    reusable: bool,
    /// Runs while the body waits for the upstream, from the last read that
    /// brought bytes (the read timeout).
    stall: Stall,
}

enum BodyState {
    Reading(Conn, ResponseFraming),
    /// A 101: the connection, for the tunnel.
    Switched(Option<Conn>),
    Done,
}

impl UpstreamBody {
    /// The upstream's side of a switched protocol (after a 101).
    pub fn take_switched(&mut self) -> Option<super::client::Replay> {
        match &mut self.state {
            BodyState::Switched(conn) => conn
                .take()
                .map(|c| super::client::Replay::upstream(c.stream, c.rbuf.freeze())),
            _ => None,
        }
    }

    /// Once the body has ended, the connection is given back (if the
    /// exchange left it reusable and nothing unasked-for followed it).
    fn release_if_done(&mut self) {
        let ended = match &self.state {
            BodyState::Reading(_, ResponseFraming::Length(0)) => true,
            BodyState::Reading(_, ResponseFraming::Chunked(d)) => d.is_done(),
            _ => false,
        };
        if !ended {
            return;
        }
        if let BodyState::Reading(conn, _) = std::mem::replace(&mut self.state, BodyState::Done)
            && conn.rbuf.is_empty()
            && self.reusable
        {
            self.pool.give_back(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let BodyState::Reading(conn, framing) = &mut this.state else {
                return Poll::Ready(None);
            };
            let data = match framing {
                ResponseFraming::Length(0) => None,
                ResponseFraming::Length(left) => {
                    if conn.rbuf.is_empty() {
                        None
                    } else {
                        let n = (conn.rbuf.len() as u64).min(*left) as usize;
                        *left -= n as u64;
                        Some(conn.rbuf.split_to(n).freeze())
                    }
                }
                ResponseFraming::Chunked(decoder) => match decoder.decode(&mut conn.rbuf) {
                    Ok(Decoded::Data(d)) => Some(d),
                    Ok(Decoded::NeedMore | Decoded::End) => None,
                    Err(why) => {
                        this.state = BodyState::Done;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            why,
                        ))));
                    }
                },
                ResponseFraming::UntilClose => {
                    (!conn.rbuf.is_empty()).then(|| conn.rbuf.split().freeze())
                }
            };
            if let Some(data) = data {
                this.release_if_done();
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            this.release_if_done();
            let BodyState::Reading(conn, framing) = &mut this.state else {
                return Poll::Ready(None);
            };
            let filled = match conn.poll_fill(cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    if this.stall.poll_expired(cx).is_ready() {
                        this.state = BodyState::Done;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the upstream sent nothing of the body for the read timeout",
                        ))));
                    }
                    return Poll::Pending;
                }
            };
            match filled {
                Ok(0) if *framing == ResponseFraming::UntilClose => {
                    this.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Ok(_) => this.stall.progressed(),
                Err(e) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done | BodyState::Switched(_))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Reading(_, ResponseFraming::Length(n)) => SizeHint::with_exact(*n),
            BodyState::Reading(..) => SizeHint::default(),
            _ => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<Option<ResponseHead>, &'static str> {
        parse_head(&mut BytesMut::from(bytes), false)
    }

    #[test]
    fn a_head_with_content_length_keeps_the_connection() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nok\n"[..],
        );
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, ResponseFraming::Length(3));
        assert!(h.keep_alive);
        assert_eq!(h.headers["server"], "nginx");
        assert_eq!(&buf[..], b"ok\n", "the body stays in the buffer");
    }

    #[test]
    fn a_partial_head_asks_for_more_and_takes_nothing() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut buf, false).unwrap().is_none());
        assert_eq!(buf.len(), 27);
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let chunked = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(chunked.framing, ResponseFraming::Chunked(_)));
        assert!(chunked.keep_alive);
        // Both: Transfer-Encoding wins, and the connection is not reused.
        let both =
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(matches!(both.framing, ResponseFraming::Chunked(_)));
        assert!(!both.keep_alive);
        assert!(
            !both.headers.contains_key(hyper::header::CONTENT_LENGTH),
            "not forwarded"
        );
        let identity =
            head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(identity.framing, ResponseFraming::UntilClose);
        assert!(!identity.headers.contains_key(hyper::header::CONTENT_LENGTH));
        let neither = head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(neither.framing, ResponseFraming::UntilClose);
        assert!(!neither.keep_alive);
        for bodiless in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"[..],
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                head(bodiless).unwrap().unwrap().framing,
                ResponseFraming::Length(0)
            );
        }
        let to_head = parse_head(
            &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"[..]),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(to_head.framing, ResponseFraming::Length(0));
    }

    #[test]
    fn connection_tokens_decide_reuse() {
        let close =
            head(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n");
        assert!(!close.unwrap().unwrap().keep_alive);
        let old = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!old.unwrap().unwrap().keep_alive);
        let old_kept =
            head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(old_kept.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Repeated equal lengths are one length.
        let same = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(same.unwrap().unwrap().framing, ResponseFraming::Length(3));
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEAD {
            huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(head(&huge).is_err(), "an endless head is refused");
    }

    fn decode_all(input: &[u8], split: &[usize]) -> Result<Vec<u8>, &'static str> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for &at in split.iter().chain(std::iter::once(&input.len())) {
            let at = at.clamp(fed, input.len());
            buf.extend_from_slice(&input[fed..at]);
            fed = at;
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok(out),
                }
            }
        }
        Err("ended early")
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = b"4;name=value\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        assert_eq!(
            decode_all(body, &[]).unwrap(),
            b"Wikipedia in\r\n\r\nchunks."
        );
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX",
            b"11111111111111111\r\n",
            b"4x\r\nWiki\r\n0\r\n\r\n",
        ] {
            assert!(
                decode_all(bad, &[]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        /// However the bytes arrive, the same body comes out.
        #[test]
        fn chunked_decoding_does_not_depend_on_how_bytes_arrive(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300), 0..8),
            mut split in proptest::collection::vec(0usize..3000, 0..12),
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            split.sort_unstable();
            proptest::prop_assert_eq!(decode_all(&wire, &split).unwrap(), chunks.concat());
        }

        /// Arbitrary bytes give data, a wait or an error: never a panic.
        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = decode_all(&bytes, &[bytes.len() / 2]);
            let _ = head(&bytes);
            let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = head(&prefixed);
        }
    }

    #[test]
    fn request_heads_carry_the_framing_the_body_needs() {
        let req = hyper::Request::post("/upload?x=1")
            .header("host", "svc")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, RequestFraming::Chunked, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /upload?x=1 HTTP/1.1\r\nhost: svc\r\nx-a: 1\r\nx-a: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let absolute = hyper::Request::get("http://shop.example/a?b")
            .body(())
            .unwrap();
        encode_head(&absolute.into_parts().0, RequestFraming::None, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "GET /a?b HTTP/1.1\r\n\r\n");
        let mut headers = HeaderMap::new();
        assert_eq!(RequestFraming::of(&headers, true), RequestFraming::None);
        assert_eq!(RequestFraming::of(&headers, false), RequestFraming::Chunked);
        headers.insert("content-length", HeaderValue::from_static("5"));
        assert_eq!(RequestFraming::of(&headers, false), RequestFraming::Length);
    }
}
