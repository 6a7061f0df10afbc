//! One client connection, served so that an idle keep-alive connection
//! holds its socket and little else.
//!
//! hyper keeps an HTTP/1 connection's read buffer (8–16 KiB), write buffer
//! (8 KiB) and the box its request future lives in for the connection's
//! whole life, busy or idle: 33 kB of heap per idle keep-alive connection
//! (heaptrack, 1000 connections). nginx frees a keep-alive connection's
//! buffers once its response is out (`ngx_http_set_keepalive`); so does
//! this, a little later. A connection that has begun no request for a
//! whole sweep (`idle_sweep`: so after 1–2 s idle), whose responses all
//! ended cleanly, is asked to stop; keep-alive is turned off only after
//! every response head went out, so the client is never told to close. The
//! socket and whatever hyper had read ahead are taken back, and the task
//! waits for the next request holding the socket only; a new hyper
//! connection serves it. HTTP/2 (prior knowledge) connections are served by
//! one hyper connection for their life.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use super::stall::Stall;

/// The client preface that starts an HTTP/2 connection with prior
/// knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often busy HTTP/1 connections are looked at for idleness: every
/// second, or four times per header timeout if that is shorter. hyper's
/// header timer runs from the moment a connection waits for its next
/// request, so a connection must be parked well before it fires; a new
/// hyper connection's timer starts at the next request's first byte.
pub fn idle_sweep(header_timeout: Duration) -> Duration {
    (header_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// What the requests on one client connection tell the task serving it.
#[derive(Default)]
pub struct ClientConn {
    /// Requests begun, ever: unchanged between two sweeps means idle.
    began: AtomicU64,
    /// Requests begun whose responses have not ended.
    in_flight: AtomicUsize,
    /// Something on the current hyper connection forbids reusing the socket
    /// after it: the client asked to close, an upgrade, a response that
    /// broke off or was cancelled.
    spoiled: AtomicBool,
    /// The upstream's side of a protocol switch (101), relayed to the
    /// client's socket once hyper has written the 101.
    upgrade: Mutex<Option<Replay>>,
    /// The task has asked hyper to stop in order to reuse the socket:
    /// hyper's closing of it must not reach the socket.
    recycling: AtomicBool,
}

impl ClientConn {
    /// A new hyper connection starts on the socket; returns the count of
    /// requests begun so far, to tell which came after.
    fn start_over(&self) -> u64 {
        self.recycling.store(false, Ordering::Relaxed);
        self.spoiled.store(false, Ordering::Relaxed);
        self.began.load(Ordering::Relaxed)
    }

    /// A request begins; `keep_alive` says whether its exchange leaves the
    /// connection open (HTTP/1.1 without `Connection: close`, no upgrade).
    pub fn begin(self: &Arc<Self>, keep_alive: bool) -> InFlight {
        self.began.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if !keep_alive {
            self.spoiled.store(true, Ordering::Relaxed);
        }
        InFlight {
            conn: self.clone(),
            clean: false,
        }
    }

    fn end(&self, clean: bool) {
        if !clean {
            self.spoiled.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the socket may serve on after the hyper connection that
    /// started when `began` requests had begun: it has served one since,
    /// none is in flight, and nothing spoiled it.
    fn reusable_since(&self, began: u64) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.began.load(Ordering::Relaxed) > began
            && !self.spoiled.load(Ordering::Relaxed)
    }

    /// Keeps the upstream's side of a switched protocol for the relay.
    pub fn set_upgrade(&self, upstream: Replay) {
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(upstream);
        }
    }

    fn take_upgrade(&self) -> Option<Replay> {
        self.upgrade.lock().ok().and_then(|mut s| s.take())
    }
}

/// One request's claim on its connection; ends it when dropped (with the
/// response body), cleanly only if `finish_clean` was called.
pub struct InFlight {
    conn: Arc<ClientConn>,
    clean: bool,
}

impl InFlight {
    /// The response went out whole.
    pub fn finish_clean(&mut self) {
        self.clean = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.end(self.clean);
    }
}

/// A socket, with bytes already read from it served first: the client's
/// (read by the protocol sniffing or by a previous hyper connection), or
/// the upstream's after a 101 (read with its head).
pub struct Replay {
    unread: Bytes,
    stream: TcpStream,
    /// The client connection whose socket this is; None upstream.
    conn: Option<Arc<ClientConn>>,
    /// Runs while a write waits for the peer to take bytes (the client's
    /// send timeout); None upstream.
    send_stall: Option<Stall>,
}

impl Replay {
    /// The upstream's side of a switched connection.
    pub fn upstream(stream: TcpStream, read_ahead: Bytes) -> Self {
        Replay {
            unread: read_ahead,
            stream,
            conn: None,
            send_stall: None,
        }
    }

    fn put_back(&mut self, read_ahead: Bytes) {
        if read_ahead.is_empty() {
            // Even empty, it would keep hyper's whole read buffer alive.
            return;
        }
        if self.unread.is_empty() {
            // A copy: a slice would keep hyper's whole read buffer alive.
            self.unread = Bytes::copy_from_slice(&read_ahead);
        } else {
            let mut joined = Vec::with_capacity(read_ahead.len() + self.unread.len());
            joined.extend_from_slice(&read_ahead);
            joined.extend_from_slice(&self.unread);
            self.unread = Bytes::from(joined);
        }
    }

    /// A write's outcome, failed if the peer has taken nothing for the
    /// send timeout: see [`Stall::timed_write`].
    fn timed<T>(
        &mut self,
        written: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match &mut self.send_stall {
            Some(stall) => stall.timed_write(written, cx),
            None => written,
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.timed(written, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.timed(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.recycling.load(Ordering::Relaxed))
        {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts a connection as idle while it lives.
struct Idle<'a>(&'a AtomicU64);

impl<'a> Idle<'a> {
    fn count(idle: &'a AtomicU64) -> Self {
        idle.fetch_add(1, Ordering::Relaxed);
        Idle(idle)
    }
}

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the first bytes of a connection say it speaks.
#[derive(Debug, PartialEq)]
enum Sniffed {
    Http1,
    Http2,
    /// Too few bytes to tell ("P", "PR"): wait for more.
    Undecided,
}

fn sniff(first: &[u8]) -> Sniffed {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Sniffed::Http1
    } else if n >= 4 {
        // "PRI " is no HTTP/1 method anyone sends; hyper's HTTP/2 side
        // checks the rest of the preface.
        Sniffed::Http2
    } else {
        Sniffed::Undecided
    }
}

/// Serves one accepted client connection until it closes, times out, or
/// the proxy stops.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let conn = Arc::new(ClientConn::default());
    let mut io = Replay {
        unread: Bytes::new(),
        stream,
        conn: Some(conn.clone()),
        send_stall: Some(Stall::new(shared.cfg.send_timeout)),
    };
    let mut first = true;
    loop {
        if io.unread.is_empty() {
            // Before the first request the client has the header timeout
            // to start; between requests, the idle timeout.
            let wait = if first {
                shared.cfg.header_timeout
            } else {
                shared.cfg.idle_timeout
            };
            let waiting = wait_for_bytes(&mut io, first, Instant::now() + wait);
            let idle = Idle::count(&shared.stats.idle_connections);
            let sniffed = tokio::select! {
                s = waiting => s,
                _ = shared.control.stopped() => return,
            };
            drop(idle);
            match sniffed {
                Some(Sniffed::Http2) => {
                    return Box::pin(serve_h2(io, &conn, peer, &shared)).await;
                }
                Some(_) => {}
                None => return,
            }
        }
        first = false;
        // Boxed: only a connection being served carries that state.
        match Box::pin(serve_h1(io, peer, &shared, &conn)).await {
            Some(back) => io = back,
            None => return,
        }
    }
}

/// Waits until the client has sent bytes; on the first request, tells
/// which protocol they start. None: closed, failed or timed out.
async fn wait_for_bytes(io: &mut Replay, first: bool, deadline: Instant) -> Option<Sniffed> {
    let mut head = [0u8; 24];
    loop {
        // A peek, not a readiness wait: its EAGAIN clears readiness left
        // over from the last read, so the wait is for new bytes.
        let n = tokio::time::timeout_at(deadline, io.stream.peek(&mut head))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if !first {
            return Some(Sniffed::Http1);
        }
        let sniffed = if io.unread.is_empty() {
            sniff(&head[..n])
        } else {
            sniff(&[&io.unread[..], &head[..n]].concat())
        };
        match sniffed {
            Sniffed::Undecided => {
                // Too few bytes to tell ("P"): taken out of the socket and
                // kept, so that the next peek waits for more instead of
                // seeing these again at once.
                let taken = io.stream.try_read(&mut head[..n]).ok()?;
                io.unread = [&io.unread[..], &head[..taken]].concat().into();
            }
            decided => return Some(decided),
        }
    }
}

/// What the proxy tells the connections it serves: a sweep (look at
/// yourself for idleness) or the stop. A busy HTTP/1 connection's task
/// looks at it only when its generation has moved, not on every wake:
/// polling two channels there on every wake cost 3 % of the proxy's user
/// CPU. Connections waiting outside hyper (parked, or before their first
/// request) and HTTP/2 ones wait for the stop alone, so that a sweep does
/// not wake every idle connection.
#[derive(Default)]
pub struct Control {
    /// Moved by every sweep and by the stop, before the connections are
    /// woken.
    generation: AtomicU64,
    stopping: AtomicBool,
    /// Sweeps and the stop, for busy HTTP/1 connections.
    changed: Notify,
    /// The stop alone, for every other connection.
    stopped: Notify,
}

impl Control {
    pub fn sweep(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stopped.notify_waiters();
        self.sweep();
    }

    /// Resolves once the proxy stops (at once if it has).
    async fn stopped(&self) {
        // Made before the flag is read: a stop between the two still wakes
        // it (`notify_waiters` reaches every `Notified` made before it).
        let stopped = self.stopped.notified();
        if !self.stopping.load(Ordering::Acquire) {
            stopped.await;
        }
    }

    /// Resolves with the connection when it ends, or with None when the
    /// control's generation has moved past `seen`.
    async fn or_changed<F: Future + Unpin>(&self, seen: u64, conn: &mut F) -> Option<F::Output> {
        let notified = std::pin::pin!(self.changed.notified());
        let mut notified = Some(notified);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(ended) = Pin::new(&mut *conn).poll(cx) {
                return Poll::Ready(Some(ended));
            }
            // Polled once, to be woken; afterwards the generation tells
            // whether that wake came, without touching the waiters' lock.
            if let Some(n) = notified.take()
                && n.poll(cx).is_ready()
            {
                return Poll::Ready(None);
            }
            if self.generation.load(Ordering::Acquire) != seen {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

/// Serves HTTP/1 requests on `io` until the connection goes idle after a
/// response that allows keep-alive; then hands the socket back (with any
/// bytes read ahead). None: the connection is over.
async fn serve_h1(
    io: Replay,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    conn: &Arc<ClientConn>,
) -> Option<Replay> {
    let started = conn.start_over();
    let service = super::service(shared.clone(), peer, Some(conn.clone()));
    let mut http = shared.h1.serve_connection(TokioIo::new(io), service);
    let control = &shared.control;
    let mut seen = control.generation.load(Ordering::Acquire);
    let mut began = started;
    let mut stopping = control.stopping.load(Ordering::Acquire);
    if stopping {
        Pin::new(&mut http).graceful_shutdown();
    }
    let ended = loop {
        if let Some(ended) = control.or_changed(seen, &mut http).await {
            break ended;
        }
        seen = control.generation.load(Ordering::Acquire);
        if stopping {
            continue;
        }
        if control.stopping.load(Ordering::Acquire) {
            Pin::new(&mut http).graceful_shutdown();
            stopping = true;
            continue;
        }
        // Not after every response: taking a busy connection apart and
        // building it again cost a quarter of the throughput.
        if !conn.recycling.load(Ordering::Relaxed) {
            let now = conn.began.load(Ordering::Relaxed);
            if now == began && conn.reusable_since(started) {
                // Every response head is out: this only stops hyper from
                // reading another request itself.
                conn.recycling.store(true, Ordering::Relaxed);
                Pin::new(&mut http).graceful_shutdown();
            }
            began = now;
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
        return None;
    }
    let parts = http.into_parts();
    let mut io = parts.io.into_inner();
    io.put_back(parts.read_buf);
    if let Some(upstream) = conn.take_upgrade() {
        tokio::spawn(super::tunnel(io, upstream, shared.stats.clone()));
        return None;
    }
    let parked =
        conn.recycling.load(Ordering::Relaxed) && !stopping && conn.reusable_since(started);
    if parked {
        shared.parked.fetch_add(1, Ordering::Relaxed);
    }
    parked.then_some(io)
}

/// Serves an HTTP/2 connection for its life. One that has had no stream
/// open for the idle timeout is told GOAWAY (after 1–1.5 times it: it is
/// looked at every quarter); one whose client stops reading, or answers
/// nothing, is caught by hyper's keep-alive PING (the send timeout: see
/// `super::serve`).
async fn serve_h2(io: Replay, conn: &Arc<ClientConn>, peer: SocketAddr, shared: &Arc<Shared>) {
    let service = super::service(shared.clone(), peer, Some(conn.clone()));
    let http = shared.h2.serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let mut stopping = false;
    // Not zero, which interval refuses: --proxy.idle-timeout may be 1ns.
    let mut look =
        tokio::time::interval((shared.cfg.idle_timeout / 4).max(Duration::from_millis(1)));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut began, mut quiet_looks) = (conn.began.load(Ordering::Relaxed), 0);
    loop {
        tokio::select! {
            ended = &mut http => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "HTTP/2 client connection ended with an error");
                }
                return;
            }
            _ = shared.control.stopped(), if !stopping => {
                http.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = look.tick(), if !stopping => {
                let now = conn.began.load(Ordering::Relaxed);
                if now != began || conn.in_flight.load(Ordering::Relaxed) > 0 {
                    (began, quiet_looks) = (now, 0);
                } else {
                    quiet_looks += 1;
                    if quiet_looks > 4 {
                        http.as_mut().graceful_shutdown();
                        stopping = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_http2_prior_knowledge_from_http1() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"POST /x HTTP/1.1\r\n"), Sniffed::Http1);
        assert_eq!(sniff(b"PUT"), Sniffed::Http1);
        assert_eq!(sniff(b"P"), Sniffed::Undecided);
        assert_eq!(sniff(b"PR"), Sniffed::Undecided);
        assert_eq!(sniff(b"PRI"), Sniffed::Undecided);
        assert_eq!(sniff(b"PRI "), Sniffed::Http2);
        assert_eq!(sniff(H2_PREFACE), Sniffed::Http2);
    }

    #[test]
    fn a_connection_is_reusable_only_when_every_exchange_ended_cleanly() {
        let c = Arc::new(ClientConn::default());
        let started = c.start_over();
        assert!(!c.reusable_since(started), "nothing served yet");
        let mut a = c.begin(true);
        let mut b = c.begin(true);
        a.finish_clean();
        drop(a);
        assert!(!c.reusable_since(started), "one still in flight");
        b.finish_clean();
        drop(b);
        assert!(c.reusable_since(started));
        let cancelled = c.begin(true);
        drop(cancelled);
        assert!(!c.reusable_since(started), "a cancelled response spoils it");
        let started = c.start_over();
        let mut close = c.begin(false);
        close.finish_clean();
        drop(close);
        assert!(!c.reusable_since(started), "Connection: close spoils it");
    }
}
