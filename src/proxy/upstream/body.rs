//! The response body as the client reads it from the upstream connection;
//! the connection goes back to the pool when the body has ended.

use super::*;

/// A response body read from the upstream connection as the client takes
/// it; the connection goes back to the pool when the body has ended.
pub struct UpstreamBody {
    pub(super) state: BodyState,
    pub(super) pool: Arc<UpstreamPool>,
    /// The connection goes back to the pool once the body has ended:
    /// false if it may not carry another exchange (the upstream closes it,
    /// or the request did not go out whole).
    pub(super) reusable: bool,
    /// Runs while the body waits for the upstream, from the last read that
    /// brought bytes (the read timeout).
    pub(super) stall: Stall,
}

pub(super) enum BodyState {
    Reading(Conn, ResponseFraming),
    /// A 101: the connection, for the tunnel.
    Switched(Option<Conn>),
    Done,
}

impl UpstreamBody {
    /// The upstream's side of a switched protocol (after a 101).
    pub fn take_switched(&mut self) -> Option<crate::proxy::client::Replay> {
        match &mut self.state {
            BodyState::Switched(conn) => conn
                .take()
                .map(|c| crate::proxy::client::Replay::upstream(c.stream, c.rbuf.freeze())),
            _ => None,
        }
    }

    /// Once the body has ended, the connection is given back (if the
    /// exchange left it reusable and nothing unasked-for followed it).
    pub(super) fn release_if_done(&mut self) {
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
