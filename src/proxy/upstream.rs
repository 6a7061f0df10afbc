//! The proxy's own pool of HTTP/1.1 connections to its one upstream.
//!
//! hyper-util's general client (any host, any protocol) spawned a task per
//! request to watch the connection come back to its pool and took a pool
//! lock twice; a sidecar talks to one address, so a stack of idle senders
//! is all it needs: the most recently used connection first (its buffers
//! are warm), at most `MAX_IDLE` kept (nginx's `keepalive 64`), a sender
//! given back only when its response body has ended.

use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::CountingBody;

const MAX_IDLE: usize = 64;

pub struct UpstreamPool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<CountingBody>>>,
}

/// Why a request did not get a response from the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection: refused, unreachable, or not accepted in time.
    Connect(String),
    /// The connection broke before a response came.
    Reset(hyper::Error),
}

impl UpstreamPool {
    pub fn new(uri: &hyper::Uri, connect_timeout: Duration) -> Self {
        UpstreamPool {
            host: uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']'])
                .to_string(),
            port: uri.port_u16().unwrap_or(80),
            connect_timeout,
            idle: Mutex::new(Vec::with_capacity(MAX_IDLE)),
        }
    }

    async fn connect(&self) -> Result<SendRequest<CountingBody>, UpstreamError> {
        let connecting = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
            Err(_) => return Err(UpstreamError::Connect("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// An idle connection ready for a request, or a new one.
    async fn checkout(&self) -> Result<SendRequest<CountingBody>, UpstreamError> {
        loop {
            let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
            let Some(mut sender) = idle else { break };
            if sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        self.connect().await
    }

    /// Sends `req`; a pooled connection the upstream closed meanwhile is
    /// replaced by a new one and the request sent again (it was never
    /// written). Returns the response and the sender, to give back when
    /// the response body has ended.
    pub async fn send(
        &self,
        req: Request<CountingBody>,
    ) -> Result<(Response<Incoming>, SendRequest<CountingBody>), UpstreamError> {
        let mut sender = self.checkout().await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    let mut sender = self.connect().await?;
                    let resp = sender
                        .send_request(req)
                        .await
                        .map_err(UpstreamError::Reset)?;
                    Ok((resp, sender))
                }
                None => Err(UpstreamError::Reset(e.into_error())),
            },
        }
    }

    /// Keeps a connection whose exchange has ended for the next request.
    pub fn give_back(&self, sender: SendRequest<CountingBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
    }
}
