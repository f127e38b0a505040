//! Request-path normalization, applied before route matching.
//!
//! The normalized path is both what routes are matched against and what is
//! forwarded upstream, so the proxy and the upstream can never disagree about
//! which resource a request names. Paths that cannot be normalized without
//! guessing are refused (the caller answers 400).

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `..` segment would climb above the root.
    #[error("path uses `..` to go above the root")]
    EscapesRoot,
    /// The path contains `%2F` (an encoded `/`).
    #[error("path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// The path contains `%5C` (an encoded `\`).
    #[error("path contains an encoded backslash (%5C)")]
    EncodedBackslash,
    /// The path contains a raw backslash.
    #[error("path contains a backslash")]
    Backslash,
    /// The path contains a NUL byte, raw or as `%00`.
    #[error("path contains a NUL byte")]
    Nul,
    /// A `%` is not followed by two hex digits.
    #[error("path contains an invalid percent escape")]
    BadEscape,
    /// The path contains a raw byte at or above 0x80 (it must be percent-encoded).
    #[error("path contains a non-ASCII character that is not percent-encoded")]
    NonAscii,
    /// The path contains a raw control character (below 0x20, or 0x7F).
    #[error("path contains a control character")]
    ControlChar,
    /// The path is not empty and does not start with `/`.
    #[error("path does not start with `/`")]
    NotAbsolute,
}

/// Normalizes a request path (no query) for matching and forwarding.
///
/// Dot segments are resolved, repeated slashes merged, percent-encoded
/// unreserved characters decoded and the remaining escapes uppercased. An
/// empty path becomes `/`; a trailing slash is kept.
///
/// # Errors
///
/// Returns a [`PathError`] for a path that cannot be normalized safely: not
/// starting with `/`, `..` above the root, encoded `/`, `\` or NUL, a raw
/// backslash, NUL, control or non-ASCII byte, or a malformed `%` escape.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if raw.is_empty() {
        return Ok(String::from("/"));
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    // Almost every real request path is already normal: one scan, one copy.
    if is_already_normal(raw.as_bytes()) {
        return Ok(raw.to_owned());
    }
    normalize_segments(rest)
}

/// True if `path` (starting with `/`) would come out of the slow path unchanged.
///
/// Conservative: any segment starting with `.` takes the slow path, even
/// `/.well-known`, which keeps this a single byte-at-a-time check.
fn is_already_normal(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in path {
        let ok = match b {
            b'%' | b'\\' => false,
            b'/' | b'.' => prev != b'/',
            0x20..=0x7E => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        prev = b;
    }
    true
}

/// The full normalizer; `rest` is the path after its leading `/`.
fn normalize_segments(rest: &str) -> Result<String, PathError> {
    // Built as "/seg/seg" with no trailing slash; each segment is decoded in
    // place so a `..` can pop its parent by truncating to the previous `/`.
    let mut out = String::with_capacity(rest.len() + 1);
    let mut trailing_slash = false;
    for segment in rest.as_bytes().split(|&b| b == b'/') {
        let start = out.len();
        out.push('/');
        // Decoding comes first so that `%2e%2e` counts as `..`.
        decode_segment(segment, &mut out)?;
        match &out[start + 1..] {
            // An empty segment is a repeated (or trailing) slash. Like RFC 3986
            // remove_dot_segments, a final `.` or `..` leaves a trailing slash.
            "" | "." => {
                out.truncate(start);
                trailing_slash = true;
            }
            ".." => {
                out.truncate(start);
                // Unlike RFC 3986 we refuse rather than clamp at the root:
                // such a request is almost certainly a traversal attempt.
                let parent = out.rfind('/').ok_or(PathError::EscapesRoot)?;
                out.truncate(parent);
                trailing_slash = true;
            }
            _ => trailing_slash = false,
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Appends one segment to `out`, decoding unreserved escapes and checking bytes.
fn decode_segment(segment: &[u8], out: &mut String) -> Result<(), PathError> {
    let mut bytes = segment.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let (Some(h1), Some(h2)) = (bytes.next(), bytes.next()) else {
                    return Err(PathError::BadEscape);
                };
                let (Some(hi), Some(lo)) = (hex_value(h1), hex_value(h2)) else {
                    return Err(PathError::BadEscape);
                };
                match hi << 4 | lo {
                    // Decoding these would change how the path splits into
                    // segments (or truncate it in C upstreams); refuse them.
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    0 => return Err(PathError::Nul),
                    c if is_unreserved(c) => out.push(char::from(c)),
                    // RFC 3986 6.2.2.1: keep the escape, uppercase its digits.
                    _ => {
                        out.push('%');
                        out.push(char::from(h1.to_ascii_uppercase()));
                        out.push(char::from(h2.to_ascii_uppercase()));
                    }
                }
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            0x01..=0x1F | 0x7F => return Err(PathError::ControlChar),
            0x80..=0xFF => return Err(PathError::NonAscii),
            _ => out.push(char::from(b)),
        }
    }
    Ok(())
}

/// The value of one hex digit, either case.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(raw: &str) -> String {
        normalize_path(raw).unwrap()
    }

    fn err(raw: &str) -> PathError {
        normalize_path(raw).unwrap_err()
    }

    #[test]
    fn already_normal_paths_are_unchanged() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/api/v1/users", "/a.b/c-d_e~f"] {
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn empty_is_root() {
        assert_eq!(ok(""), "/");
    }

    #[test]
    fn not_absolute_is_refused() {
        assert_eq!(err("a/b"), PathError::NotAbsolute);
        assert_eq!(err("."), PathError::NotAbsolute);
        assert_eq!(err("%2Fa"), PathError::NotAbsolute);
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert_eq!(ok("/a/b/"), "/a/b/");
        assert_eq!(ok("/a/b//"), "/a/b/");
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/./b/../c"), "/a/c");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/./a"), "/a");
        assert_eq!(ok("/a/b/../../c/"), "/c/");
    }

    #[test]
    fn dots_inside_names_are_not_segments() {
        assert_eq!(ok("/.well-known/x"), "/.well-known/x");
        assert_eq!(ok("/a/.../b"), "/a/.../b");
        assert_eq!(ok("/a/..b/.c"), "/a/..b/.c");
        assert_eq!(ok("/a./b.."), "/a./b..");
    }

    #[test]
    fn repeated_slashes_are_merged() {
        assert_eq!(ok("//a///b"), "/a/b");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("///a"), "/a");
    }

    #[test]
    fn encoded_dots_are_decoded_before_resolution() {
        assert_eq!(ok("/a/%2e%2e/b"), "/b");
        assert_eq!(ok("/a/%2E%2E/b"), "/b");
        assert_eq!(ok("/a/.%2e/b"), "/b");
        assert_eq!(ok("/a/%2e/b"), "/a/b");
        assert_eq!(ok("/a%2eb"), "/a.b");
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(ok("/%41%62%30"), "/Ab0");
        assert_eq!(ok("/%2D%5f%7E%2e"), "/-_~.");
    }

    #[test]
    fn other_escapes_stay_encoded_uppercased() {
        assert_eq!(ok("/b%20c"), "/b%20c");
        assert_eq!(ok("/a%3f"), "/a%3F");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/%25"), "/%25");
        assert_eq!(ok("/%2a%7f%01"), "/%2A%7F%01");
    }

    #[test]
    fn escaping_the_root_is_refused() {
        assert_eq!(err("/.."), PathError::EscapesRoot);
        assert_eq!(err("/a/../.."), PathError::EscapesRoot);
        assert_eq!(err("/../a"), PathError::EscapesRoot);
        assert_eq!(err("/%2e%2e"), PathError::EscapesRoot);
        assert_eq!(err("/./.."), PathError::EscapesRoot);
    }

    #[test]
    fn encoded_separators_are_refused() {
        assert_eq!(err("/a%2Fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%2fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%5Cb"), PathError::EncodedBackslash);
        assert_eq!(err("/a%5cb"), PathError::EncodedBackslash);
    }

    #[test]
    fn backslash_is_refused() {
        assert_eq!(err("/a\\b"), PathError::Backslash);
        assert_eq!(err("/..\\.."), PathError::Backslash);
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(err("/a%00b"), PathError::Nul);
        assert_eq!(err("/a\0b"), PathError::Nul);
    }

    #[test]
    fn bad_escapes_are_refused() {
        assert_eq!(err("/%zz"), PathError::BadEscape);
        assert_eq!(err("/%4"), PathError::BadEscape);
        assert_eq!(err("/a%"), PathError::BadEscape);
        assert_eq!(err("/%4/a"), PathError::BadEscape);
        assert_eq!(err("/%g0"), PathError::BadEscape);
    }

    #[test]
    fn raw_unprintable_bytes_are_refused() {
        assert_eq!(err("/caf\u{e9}"), PathError::NonAscii);
        assert_eq!(err("/a\tb"), PathError::ControlChar);
        assert_eq!(err("/a\nb"), PathError::ControlChar);
        assert_eq!(err("/a\u{7f}"), PathError::ControlChar);
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            PathError::EscapesRoot.to_string(),
            "path uses `..` to go above the root"
        );
    }

    /// Paths assembled from segments chosen to hit every rule.
    fn interesting_path() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec![
            "a", "b", ".", "..", "%2e", "%2E%2e", ".%2e", "", "%41", "%2F", "%5c", "b%20c",
            "%c3%a9", "\\", "%", "%4", "%00", "...", ".a", "~", "x%2ey",
        ]);
        (any::<bool>(), prop::collection::vec(segment, 0..10)).prop_map(|(lead, segs)| {
            let body = segs.join("/");
            if lead {
                format!("/{body}")
            } else {
                body
            }
        })
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => interesting_path(),
            2 => "/[a-c./%25eE2F\\\\]{0,24}",
            1 => "[ -~]{0,32}",
            1 => any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn normalizing_is_idempotent(raw in any_path()) {
            if let Ok(once) = normalize_path(&raw) {
                prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
            }
        }

        #[test]
        fn no_dot_segments_in_output(raw in any_path()) {
            if let Ok(out) = normalize_path(&raw) {
                prop_assert!(out.split('/').all(|s| s != "." && s != ".."), "{out}");
            }
        }

        #[test]
        fn output_stays_under_root(raw in any_path()) {
            if let Ok(out) = normalize_path(&raw) {
                prop_assert!(out.starts_with('/'), "{out}");
                prop_assert!(!out.contains("//"), "{out}");
                // Resolve as a client would: depth must never go negative.
                let mut depth = 0i32;
                for seg in out.split('/').filter(|s| !s.is_empty()) {
                    match seg {
                        "." => {}
                        ".." => depth -= 1,
                        _ => depth += 1,
                    }
                    prop_assert!(depth >= 0, "{out}");
                }
            }
        }

        #[test]
        fn output_is_printable_ascii(raw in any_path()) {
            if let Ok(out) = normalize_path(&raw) {
                prop_assert!(out.bytes().all(|b| (0x20..=0x7E).contains(&b)), "{out}");
                prop_assert!(!out.contains('\\'), "{out}");
            }
        }

        #[test]
        fn fast_path_agrees_with_slow_path(raw in any_path()) {
            if let Some(rest) = raw.strip_prefix('/') {
                if is_already_normal(raw.as_bytes()) {
                    prop_assert_eq!(normalize_segments(rest), Ok(raw.clone()));
                }
            }
        }
    }
}
