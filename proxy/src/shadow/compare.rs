//! The shadow comparer: two HTTP answers in, the list of differences out.
//!
//! Status first, then a chosen set of headers, then the body: as JSON when both sides are
//! JSON (key order ignored, numbers compared by value), otherwise as bytes after removing a
//! `Content-Encoding`. Ignore rules remove JSON paths (with `*` for any one segment) and
//! header names. Differences are reported by path, in JSON Pointer form, so they can be
//! counted across requests and turned into ignore rules.

use std::io::Read as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use serde::Serialize;
use serde_json::Value;

/// One side's answer, as far as comparison cares.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body (bounded by the caller).
    pub body: Bytes,
}

/// What to compare and what to ignore.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Headers whose values must be equal.
    pub headers: Vec<HeaderName>,
    /// Headers never compared (wins over `headers`).
    pub ignore_headers: Vec<HeaderName>,
    /// JSON paths never compared, e.g. `/items/*/updated_at`.
    pub ignore_paths: Vec<String>,
}

/// One difference between the two answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `status`, `header:NAME`, `body`, or a JSON Pointer into the body (`/items/0/name`).
    pub path: String,
    /// The first side's value, shortened for display.
    pub left: String,
    /// The second side's value, shortened for display.
    pub right: String,
}

/// Most differences kept for one comparison; more are counted, not listed.
const MAX_DIFFERENCES: usize = 50;
/// Longest value shown in a difference.
const MAX_SHOWN: usize = 200;

/// Compares two answers under `rules`.
pub fn compare(left: &Answer, right: &Answer, rules: &Rules) -> Vec<Difference> {
    let mut diffs = Vec::new();
    if left.status != right.status {
        diffs.push(diff("status", left.status.as_str(), right.status.as_str()));
    }
    for name in &rules.headers {
        if rules.ignore_headers.contains(name) {
            continue;
        }
        let l = header_text(&left.headers, name);
        let r = header_text(&right.headers, name);
        if l != r {
            diffs.push(diff(&format!("header:{name}"), &l, &r));
        }
    }
    let lbody = decoded(&left.headers, &left.body);
    let rbody = decoded(&right.headers, &right.body);
    let json = is_json(&left.headers) && is_json(&right.headers);
    let parsed = if json {
        serde_json::from_slice::<Value>(&lbody)
            .ok()
            .zip(serde_json::from_slice::<Value>(&rbody).ok())
    } else {
        None
    };
    match parsed {
        Some((l, r)) => {
            let mut path = Vec::new();
            json_diff(&l, &r, &mut path, rules, &mut diffs);
        }
        None if lbody != rbody => diffs.push(diff("body", &lossy(&lbody), &lossy(&rbody))),
        None => {}
    }
    diffs.truncate(MAX_DIFFERENCES);
    diffs
}

/// A difference's path with array indices replaced by `*`, for counting the same field
/// across requests and for suggesting ignore rules.
pub fn generalize(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    path.split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a JSON Pointer matches an ignore pattern (`*` matches any one segment).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

fn json_diff(
    l: &Value,
    r: &Value,
    path: &mut Vec<String>,
    rules: &Rules,
    out: &mut Vec<Difference>,
) {
    if out.len() >= MAX_DIFFERENCES {
        return;
    }
    let here = pointer(path);
    if !path.is_empty() && rules.ignore_paths.iter().any(|p| path_matches(p, &here)) {
        return;
    }
    match (l, r) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                path.push(escape(k));
                match b.get(k) {
                    Some(bv) => json_diff(av, bv, path, rules, out),
                    None => push_unless_ignored(path, rules, out, &compact(av), "(missing)"),
                }
                path.pop();
            }
            for (k, bv) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                path.push(escape(k));
                push_unless_ignored(path, rules, out, "(missing)", &compact(bv));
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                path.push(i.to_string());
                match (a.get(i), b.get(i)) {
                    (Some(av), Some(bv)) => json_diff(av, bv, path, rules, out),
                    (Some(av), None) => {
                        push_unless_ignored(path, rules, out, &compact(av), "(missing)")
                    }
                    (None, Some(bv)) => {
                        push_unless_ignored(path, rules, out, "(missing)", &compact(bv))
                    }
                    (None, None) => {}
                }
                path.pop();
            }
        }
        (Value::Number(a), Value::Number(b)) if numbers_equal(a, b) => {}
        (a, b) if a == b => {}
        (a, b) => out.push(diff(
            if here.is_empty() { "/" } else { &here },
            &compact(a),
            &compact(b),
        )),
    }
}

fn push_unless_ignored(
    path: &[String],
    rules: &Rules,
    out: &mut Vec<Difference>,
    l: &str,
    r: &str,
) {
    let here = pointer(path);
    if !rules.ignore_paths.iter().any(|p| path_matches(p, &here)) && out.len() < MAX_DIFFERENCES {
        out.push(diff(&here, l, r));
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

fn pointer(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        s.push('/');
        s.push_str(seg);
    }
    s
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn diff(path: &str, l: &str, r: &str) -> Difference {
    Difference {
        path: path.to_string(),
        left: shorten(l),
        right: shorten(r),
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= MAX_SHOWN {
        return s.to_string();
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn header_text(h: &HeaderMap, name: &HeaderName) -> String {
    let values: Vec<String> = h
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        "(missing)".into()
    } else {
        values.join(", ")
    }
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"))
}

/// The body with its `Content-Encoding` (gzip, deflate) removed; other encodings, or a body
/// that fails to decode, are compared as they are.
fn decoded(h: &HeaderMap, body: &Bytes) -> Bytes {
    let encoding = h
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let mut out = Vec::new();
    let ok = match encoding.as_deref() {
        Some("gzip" | "x-gzip") => flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_ok(),
        Some("deflate") => flate2::read::ZlibDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_ok(),
        _ => false,
    };
    if ok {
        Bytes::from(out)
    } else {
        body.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(status: u16, ct: &str, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    fn rules() -> Rules {
        Rules {
            headers: vec![http::header::CONTENT_TYPE],
            ..Rules::default()
        }
    }

    #[test]
    fn json_ignores_key_order_and_number_form() {
        let a = answer(
            200,
            "application/json",
            r#"{"a": 1, "b": [1.0, 2], "c": {"x": "y"}}"#,
        );
        let b = answer(
            200,
            "application/json; charset=utf-8",
            r#"{"c": {"x": "y"}, "b": [1, 2.0], "a": 1}"#,
        );
        let mut r = rules();
        r.headers.clear();
        assert!(compare(&a, &b, &r).is_empty());
    }

    #[test]
    fn one_changed_field_is_reported_by_path() {
        let a = answer(
            200,
            "application/json",
            r#"{"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}"#,
        );
        let b = answer(
            200,
            "application/json",
            r#"{"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "B"}]}"#,
        );
        let d = compare(&a, &b, &rules());
        assert_eq!(
            d,
            vec![Difference {
                path: "/items/1/name".into(),
                left: "\"b\"".into(),
                right: "\"B\"".into()
            }]
        );
        assert_eq!(generalize(&d[0].path), "/items/*/name");
    }

    #[test]
    fn missing_and_extra_keys() {
        let a = answer(200, "application/json", r#"{"a": 1}"#);
        let b = answer(200, "application/json", r#"{"b": 1}"#);
        let paths: Vec<String> = compare(&a, &b, &rules())
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(paths, vec!["/a", "/b"]);
    }

    #[test]
    fn ignore_rules_remove_exactly_what_they_name() {
        let a = answer(
            200,
            "application/json",
            r#"{"items": [{"updated_at": 1, "price": 5}], "updated_at": 1}"#,
        );
        let b = answer(
            200,
            "application/json",
            r#"{"items": [{"updated_at": 2, "price": 6}], "updated_at": 2}"#,
        );
        let mut r = rules();
        r.ignore_paths = vec!["/items/*/updated_at".into()];
        let paths: Vec<String> = compare(&a, &b, &r).into_iter().map(|d| d.path).collect();
        assert_eq!(paths, vec!["/items/0/price", "/updated_at"]);
    }

    #[test]
    fn status_headers_and_bytes() {
        let a = answer(200, "text/plain", "hello");
        let b = answer(404, "text/html", "hullo");
        let paths: Vec<String> = compare(&a, &b, &rules())
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(paths, vec!["status", "header:content-type", "body"]);
        let mut r = rules();
        r.ignore_headers = vec![http::header::CONTENT_TYPE];
        assert_eq!(compare(&a, &b, &r).len(), 2);
    }

    #[test]
    fn gzip_is_removed_before_comparing_bytes() {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"same text").unwrap();
        let mut a = answer(200, "text/plain", "");
        a.body = Bytes::from(enc.finish().unwrap());
        a.headers
            .insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let b = answer(200, "text/plain", "same text");
        assert!(compare(&a, &b, &rules()).is_empty());
    }

    #[test]
    fn patterns() {
        assert!(path_matches("/a/*/c", "/a/7/c"));
        assert!(!path_matches("/a/*/c", "/a/7/c/d"));
        assert!(!path_matches("/a/*", "/a"));
        assert!(path_matches("/a", "/a"));
    }
}
