//! Header rewriting at the proxy boundary: hop-by-hop removal (both directions) and the
//! `X-Forwarded-*` set.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Whether the request asks for a protocol upgrade (WebSocket): an `Upgrade` header and
/// `upgrade` among the `Connection` tokens.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-*`, `TE` (except `trailers`), `Trailer`, `Transfer-Encoding`, and `Upgrade` unless
/// `upgrading` (then `Connection: upgrade` and `Upgrade` are kept).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // Most messages carry none: one pass over the names then beats a dozen hashed removals.
    if !upgrading && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Most requests name nothing in `Connection`: then this collects into an empty Vec,
    // which does not allocate.
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        if name == header::TE || (upgrading && name == header::UPGRADE) {
            continue;
        }
        headers.remove(&name);
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for k in proxy {
            headers.remove(k);
        }
    }
    // `TE: trailers` is end-to-end in practice (gRPC needs it); any other value is dropped.
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrading {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The peer's address as a header value. A keep-alive connection sends request after
/// request from one address: the last one formatted on this thread is kept.
fn peer_value(peer: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((ip, value)) if *ip == peer => value.clone(),
            _ => {
                let value = HeaderValue::from_str(&peer.to_canonical().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
                *last = Some((peer, value.clone()));
                value
            }
        }
    })
}

/// Whether `name` is one [`remove_hop_by_hop`] may act on (a header named in `Connection`
/// only counts when `Connection` itself is present, which this covers).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name.as_str().starts_with("proxy-")
}

/// What the proxy knows about the hop a request arrived on, for `X-Forwarded-*`.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The peer's address.
    pub peer: IpAddr,
    /// The host the client asked for (`Host`, or the absolute-form authority).
    pub host: Option<&'a HeaderValue>,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether the peer is a trusted proxy whose `X-Forwarded-*` are believed.
    pub trusted: bool,
}

/// Sets the `X-Forwarded-*` headers. From a trusted peer, its `X-Forwarded-For` is kept and
/// the peer appended, and its `-Proto` and `-Host` are kept when present. From anyone else
/// they are replaced: `X-Forwarded-For` is the peer alone, `-Proto` is this hop's scheme,
/// `-Host` the host asked for.
pub fn set_forwarded(headers: &mut HeaderMap, hop: Hop<'_>) {
    let incoming: Vec<&str> = if hop.trusted {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    // Several X-Forwarded-For lines are one comma-separated list (RFC 9110 5.3).
    let xff = if incoming.is_empty() {
        Some(peer_value(hop.peer))
    } else {
        let peer = hop.peer.to_canonical();
        HeaderValue::from_str(&format!("{}, {peer}", incoming.join(", "))).ok()
    };
    if let Some(v) = xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    let keep_proto = hop.trusted && headers.contains_key(&X_FORWARDED_PROTO);
    if !keep_proto {
        let proto = if hop.tls { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    let keep_host = hop.trusted && headers.contains_key(&X_FORWARDED_HOST);
    if !keep_host {
        match hop.host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, te"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "x"),
            ("proxy-foo", "x"),
            ("te", "trailers, deflate"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep", "te"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrade_is_kept_when_upgrading() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    fn hop(trusted: bool, tls: bool) -> Hop<'static> {
        static SHOP: HeaderValue = HeaderValue::from_static("shop");
        Hop {
            peer: "10.0.0.1".parse().unwrap(),
            host: Some(&SHOP),
            tls,
            trusted,
        }
    }

    #[test]
    fn a_trusted_peer_is_appended_and_its_proto_and_host_kept() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "www.example.com"),
        ]);
        set_forwarded(&mut h, hop(true, false));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "www.example.com");
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ]);
        set_forwarded(&mut h, hop(false, false));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop");
    }

    #[test]
    fn tls_sets_https() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, hop(false, true));
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
    }
}
