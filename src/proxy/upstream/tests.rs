use super::*;
use hyper::http::{HeaderMap, HeaderValue};

fn head(bytes: &[u8]) -> Result<Option<ResponseHead>, &'static str> {
    parse_head(&mut BytesMut::from(bytes), false)
}

#[test]
fn a_head_with_content_length_keeps_the_connection() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nok\n"[..]);
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
    let both = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
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
    let old_kept = head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
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
