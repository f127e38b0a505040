//! The recorded-request file: one JSON object a line, the format `strangler compare` replays
//! and a shadow route's `record:` writes.
//!
//! ```json
//! {"method": "GET", "path": "/api/products/7?x=1", "headers": {"accept": "application/json"}}
//! {"method": "POST", "path": "/api/orders", "headers": {"content-type": "application/json"}, "body": "{\"customer_id\": 1}"}
//! ```
//!
//! `path` includes the query. `headers` is optional (repeated headers joined with `, `).
//! `body` is UTF-8 text; a binary body is written as `body_base64` instead.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A UTF-8 body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A binary body, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl RecordedRequest {
    /// Records a request.
    pub fn new(method: &Method, path_and_query: &str, headers: &HeaderMap, body: &Bytes) -> Self {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in headers {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            map.entry(k.as_str().to_string())
                .and_modify(|e| {
                    e.push_str(", ");
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let (body, body_base64) = match std::str::from_utf8(body) {
            _ if body.is_empty() => (None, None),
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(body)),
            ),
        };
        RecordedRequest {
            method: method.as_str().to_string(),
            path: path_and_query.to_string(),
            headers: map,
            body,
            body_base64,
        }
    }

    /// The method, checked.
    pub fn method(&self) -> Result<Method, String> {
        Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("invalid method `{}`", self.method))
    }

    /// The headers, checked.
    pub fn header_map(&self) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("invalid value for header `{k}`"))?;
            h.append(name, value);
        }
        Ok(h)
    }

    /// The body bytes.
    pub fn body_bytes(&self) -> Result<Bytes, String> {
        match (&self.body, &self.body_base64) {
            (Some(text), _) => Ok(Bytes::from(text.clone())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Bytes::from)
                .map_err(|e| format!("invalid body_base64: {e}")),
            (None, None) => Ok(Bytes::new()),
        }
    }
}

/// Reads a request file; errors carry the line number.
pub fn read_file(path: &Path) -> Result<Vec<RecordedRequest>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let req: RecordedRequest =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        req.method()
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if !req.path.starts_with('/') {
            return Err(format!(
                "{}:{}: path must start with `/`",
                path.display(),
                i + 1
            ));
        }
        out.push(req);
    }
    Ok(out)
}

/// Appends one JSON line to a file (created if needed).
pub fn append_line(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = HeaderMap::new();
        h.append("accept", "a".parse().unwrap());
        h.append("accept", "b".parse().unwrap());
        let r = RecordedRequest::new(&Method::POST, "/x?y=1", &h, &Bytes::from_static(b"hi"));
        let line = serde_json::to_string(&r).unwrap();
        let back: RecordedRequest = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.headers["accept"], "a, b");
        assert_eq!(&back.body_bytes().unwrap()[..], b"hi");
        let bin = RecordedRequest::new(
            &Method::PUT,
            "/b",
            &HeaderMap::new(),
            &Bytes::from_static(&[0xff, 0]),
        );
        assert!(bin.body.is_none());
        assert_eq!(&bin.body_bytes().unwrap()[..], &[0xff, 0]);
    }

    #[test]
    fn file_errors_have_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "{\"method\":\"GET\",\"path\":\"/a\"}\n\nnot json\n").unwrap();
        let e = read_file(&p).unwrap_err();
        assert!(e.contains(":3:"), "{e}");
    }
}
