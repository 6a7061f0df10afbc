//! What the proxy does to a message's headers: hop-by-hop fields dropped
//! (RFC 9110 §7.6.1), upgrades asked for again, X-Forwarded-* added.

use super::*;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
pub(super) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present: most messages have
    // none or only `Connection`, and a lookup for each of the nine would
    // cost more than the pass.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name.as_str()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(t))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// The protocol a request asks to switch to (`Connection: upgrade` and
/// `Upgrade: …`, HTTP/1.1 only), e.g. websocket.
pub(super) fn upgrade_protocol(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != hyper::Version::HTTP_11 {
        return None;
    }
    connection_has(req.headers(), "upgrade")
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

pub(super) fn mark_upgrade(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// The options every `Connection` header lists (RFC 9110 §7.6.1).
pub(super) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether a `Connection` header names `token`.
pub(super) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

/// The request's head as the upstream gets it: hop-by-hop fields gone, the
/// upgrade asked for again, Host from an HTTP/2 authority, X-Forwarded-For
/// and -Proto added.
pub(super) fn upstream_head(
    parts: &mut hyper::http::request::Parts,
    upgrade: Option<&HeaderValue>,
    peer_ip: HeaderValue,
) {
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        mark_upgrade(&mut parts.headers, protocol);
    }
    // An HTTP/2 request names its host in the URI only; the upstream
    // speaks HTTP/1.1 and must see it as Host.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let forwarded_for = match parts
        .headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => {
            HeaderValue::from_str(&format!("{prior}, {}", peer_ip.to_str().unwrap_or(""))).ok()
        }
        None => Some(peer_ip),
    };
    if let Some(v) = forwarded_for {
        parts.headers.insert(X_FORWARDED_FOR, v);
    }
    parts
        .headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
}
