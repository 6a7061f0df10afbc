//! Time limits on a metrics connection's reads, told apart as hyper's own
//! header timeout does not: hyper starts it whenever it waits for a
//! request's head, so a keep-alive connection idle between two scrapes
//! was closed after it (Prometheus scraping every 15 s reconnected at
//! every scrape). Here a request's head must arrive within
//! [`HEADER_READ_TIMEOUT`] of its first byte (a client trickling a head
//! would otherwise hold its connection), while a connection idle between
//! requests is kept for [`IDLE_TIMEOUT`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// From a request head's first byte to its blank line.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Between requests: longer than Prometheus keeps an idle connection (5
/// minutes), so that it is Prometheus that closes one it no longer uses,
/// as with node_exporter, whatever its scrape interval.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(330);

/// A plaintext HTTP/1 connection (above TLS where there is TLS) whose
/// reads end as the module says.
pub struct HeadTimed<S> {
    inner: S,
    /// Waiting for a request: no byte of its head read yet.
    awaiting_head: bool,
    /// The last bytes of the head being read, to find its end across reads.
    tail: [u8; 3],
    /// Set at a head's first byte, cleared at its end.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Made when an idle wait first begins; moved on by any progress.
    idle: Option<Pin<Box<Sleep>>>,
    /// When bytes last moved either way.
    last_progress: Instant,
}

impl<S> HeadTimed<S> {
    pub fn new(inner: S) -> Self {
        HeadTimed {
            inner,
            awaiting_head: true,
            tail: [0; 3],
            deadline: None,
            idle: None,
            last_progress: Instant::now(),
        }
    }

    /// Bytes read: a head's first starts its deadline, its blank line
    /// (CRLF CRLF, or LF LF as hyper also accepts) ends it.
    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_progress = Instant::now();
        if self.awaiting_head {
            self.awaiting_head = false;
            self.tail = [0; 3];
            let deadline = Instant::now() + HEADER_READ_TIMEOUT;
            match &mut self.deadline {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        if self.deadline.is_some() && ends_head(&mut self.tail, bytes) {
            self.deadline = None;
        }
    }

    /// A response written: the next bytes read begin the next request.
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.last_progress = Instant::now();
            if self.deadline.is_none() {
                self.awaiting_head = true;
            }
        }
    }

    /// Nothing to read now: an error past the head's deadline, the end of
    /// the stream past the idle timeout.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(deadline) = &mut self.deadline {
            return match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no whole request head within the header read timeout",
                ))),
                Poll::Pending => Poll::Pending,
            };
        }
        let deadline = self.last_progress + IDLE_TIMEOUT;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if idle.deadline() != deadline {
            idle.as_mut().reset(deadline);
        }
        // Idle too long: read as the end of the stream, closed quietly.
        idle.as_mut().poll(cx).map(Ok)
    }
}

/// Whether `bytes`, following the `tail` of the head read before, hold
/// its end; `tail` becomes the last three bytes seen.
fn ends_head(tail: &mut [u8; 3], bytes: &[u8]) -> bool {
    let mut window = *tail;
    let mut ended = false;
    for &b in bytes {
        if b == b'\n' && (window[2] == b'\n' || (window[2] == b'\r' && window[1] == b'\n')) {
            ended = true;
        }
        window = [window[1], window[2], b];
        if ended {
            break;
        }
    }
    *tail = window;
    ended
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadTimed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_wait(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadTimed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.wrote(n);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.wrote(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A hyper HTTP/1 server over one end of an in-memory pipe, as the
    /// metrics server runs one; the other end returned.
    fn serve() -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(4096);
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        });
        tokio::spawn(super::super::http1_builder().serve_connection(
            hyper_util::rt::TokioIo::new(HeadTimed::new(server)),
            service,
        ));
        client
    }

    /// Reads one response (its head and the 2-byte body); None at the end
    /// of the stream.
    async fn response(client: &mut tokio::io::DuplexStream) -> Option<String> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if client.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            got.push(byte[0]);
            if got.ends_with(b"\r\n\r\nok") {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
        }
    }

    /// Keep-alive outlives the header timeout: a second request 60 s
    /// after the first is answered on the same connection.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_kept_between_scrapes() {
        let mut client = serve();
        client.write_all(REQUEST).await.unwrap();
        assert!(
            response(&mut client)
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(REQUEST).await.unwrap();
        assert!(response(&mut client).await.is_some(), "kept for 60 s idle");
        // Past the idle timeout, closed.
        let answered = Instant::now();
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        let idle = answered.elapsed();
        assert!(
            idle >= IDLE_TIMEOUT && idle < IDLE_TIMEOUT + Duration::from_secs(1),
            "closed after {idle:?} idle"
        );
    }

    /// A head begun and not finished is cut at the header timeout from its
    /// first byte, however it trickles.
    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_is_cut_at_the_header_timeout() {
        let mut client = serve();
        let started = Instant::now();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        for _ in 0..9 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client.write_all(b"X-A: b\r\n").await.unwrap();
        }
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
        let cut = started.elapsed();
        assert!(
            cut >= HEADER_READ_TIMEOUT && cut < HEADER_READ_TIMEOUT + Duration::from_secs(1),
            "cut after {cut:?}"
        );
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "closed unanswered: {rest:?}"
        );
    }

    proptest::proptest! {
        /// However a head is cut into reads, its end is found in the read
        /// that holds its blank line's last byte, and in no read before.
        #[test]
        fn the_end_of_a_head_is_found_however_it_is_cut(
            lines in proptest::collection::vec("[ -~]{1,20}", 0..6),
            crlf in proptest::bool::ANY,
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut head = format!("GET / HTTP/1.1{eol}");
            for l in &lines {
                head.push_str(l);
                head.push_str(eol);
            }
            head.push_str(eol);
            let bytes = head.as_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|c| c % bytes.len()).collect();
            at.push(bytes.len());
            at.sort_unstable();
            let mut tail = [0; 3];
            let mut start = 0;
            for end in at {
                let ended = ends_head(&mut tail, &bytes[start..end]);
                proptest::prop_assert_eq!(ended, end == bytes.len() && start < end);
                if ended {
                    break;
                }
                start = end;
            }
        }
    }

    /// The head's end is found across reads, CRLF or bare LF; a body after
    /// it is not a head.
    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let mut tail = [0; 3];
        assert!(!ends_head(&mut tail, b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!ends_head(&mut tail, b"\n\r"));
        assert!(ends_head(&mut tail, b"\nbody"));
        let mut tail = [0; 3];
        assert!(ends_head(&mut tail, b"GET / HTTP/1.0\n\n"));
        let mut tail = [0; 3];
        assert!(!ends_head(&mut tail, b"GET / HTTP/1.1\r\nA: b\r\n"));
    }
}
