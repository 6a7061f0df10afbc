//! The upstream connection's HTTP/1.1 wire format: the request head as
//! written, the response head parsed (RFC 9112), and chunked bodies
//! decoded. Pure over bytes, tested on bytes.

use bytes::{Buf, Bytes, BytesMut};
use hyper::http::request;
use hyper::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::{MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS};

/// How the request body is framed on the upstream connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RequestFraming {
    /// No body.
    None,
    /// As many bytes as the Content-Length header says.
    Length,
    /// Chunked: a body of unknown length (streamed by an HTTP/1.1 client
    /// in chunks, or sent by an HTTP/2 client without a length).
    Chunked,
}

impl RequestFraming {
    pub(super) fn of(headers: &HeaderMap, body_ended: bool) -> Self {
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
pub(super) fn encode_head(parts: &request::Parts, framing: RequestFraming, out: &mut Vec<u8>) {
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

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) framing: ResponseFraming,
    /// The upstream leaves the connection open after this response.
    pub(super) keep_alive: bool,
}

/// How a response's body ends (RFC 9112 §6.3).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ResponseFraming {
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
pub(super) fn parse_head(
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
pub(super) enum ChunkState {
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

pub(super) fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}
