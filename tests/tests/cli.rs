//! The one-shot commands: `check`, `explain`, and `run` refusing an invalid file.

use std::path::Path;
use std::time::Duration;

use strangler_e2e::{free_port, CliOutput};

const LIMIT: Duration = Duration::from_secs(20);

fn run(args: &[&str], cwd: &Path) -> CliOutput {
    CliOutput::run(args, cwd, LIMIT)
}

/// Writes `yaml` to `dir/name` and runs `check --config NAME` in `dir`.
fn check_file(dir: &Path, name: &str, yaml: &str) -> CliOutput {
    std::fs::write(dir.join(name), yaml).expect("write");
    run(&["check", "--config", name], dir)
}

/// Runs `explain --config routes.yaml ARGS...` in `dir`.
fn explain(dir: &Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["explain", "--config", "routes.yaml"];
    all.extend_from_slice(args);
    run(&all, dir)
}

const VALID: &str = r#"listen: 127.0.0.1:18080
admin: 127.0.0.1:19901
upstreams:
  legacy: http://127.0.0.1:18081
  catalog: {url: http://127.0.0.1:18082, timeout: 2s, connect_timeout: 250ms}
  orders: http://127.0.0.1:18083/base
fallback: legacy
routes:
  - name: catalog
    match:
      prefix: /api/products
      methods: [GET, HEAD]
    upstream: catalog
    mode: canary
    percent: 30
    sticky: header:x-user-id
  - name: orders
    match:
      prefix: /api/orders
      headers: {x-beta: "1"}
    upstream: orders
    mode: extracted
  - name: old-admin
    match: {exact: /admin}
    upstream: catalog
    mode: legacy
  - name: reports
    match: {prefix: /reports}
    upstream: orders
    mode: shadow
adapters:
  catalog: remote
  orders: local
limits:
  max_head_bytes: 65536
  header_read_timeout: 10s
  idle_timeout: 1m
"#;

/// Line numbers (1-based) of the problems planted in `INVALID`. Each sits on a route (or
/// upstream) that is otherwise valid, so no problem can hide another.
const BAD_DURATION_LINE: usize = 8;
const DUPLICATE_NAME_LINE: usize = 15;
const UNKNOWN_UPSTREAM_LINE: usize = 21;
const BAD_MODE_LINE: usize = 26;
const UNKNOWN_FIELD_LINE: usize = 31;
const BAD_PERCENT_LINE: usize = 36;
const BAD_STICKY_LINE: usize = 42;

const INVALID: &str = r#"listen: 127.0.0.1:18080
admin: 127.0.0.1:19901
upstreams:
  legacy: http://127.0.0.1:18081
  catalog: http://127.0.0.1:18082
  slowpoke:
    url: http://127.0.0.1:18083
    timeout: 5 parsecs
fallback: legacy
routes:
  - name: catalog
    match: {prefix: /api/products}
    upstream: catalog
    mode: extracted
  - name: catalog
    match: {prefix: /api/other}
    upstream: legacy
    mode: extracted
  - name: bad-upstream
    match: {prefix: /x}
    upstream: nowhere
    mode: extracted
  - name: bad-mode
    match: {prefix: /y}
    upstream: legacy
    mode: sideways
  - name: extra-field
    match: {prefix: /z}
    upstream: legacy
    mode: extracted
    colour: blue
  - name: orders
    match: {prefix: /api/orders}
    upstream: catalog
    mode: canary
    percent: 150
  - name: carts
    match: {prefix: /api/carts}
    upstream: catalog
    mode: canary
    percent: 10
    sticky: ip:whatever
"#;

/// Diagnostics on stderr in the `FILE:LINE:COL: message` form: (line, column, message).
fn diagnostics(stderr: &str, file: &str) -> Vec<(usize, usize, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(file)?.strip_prefix(':')?;
            let mut parts = rest.splitn(3, ':');
            let line = parts.next()?.parse().ok()?;
            let col = parts.next()?.parse().ok()?;
            let msg = parts.next()?.trim().to_string();
            Some((line, col, msg))
        })
        .collect()
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_file(dir.path(), "routes.yaml", VALID);
    assert_eq!(out.code, Some(0), "check on a valid file: {out:?}");
    // Default --config is ./routes.yaml.
    let out = run(&["check"], dir.path());
    assert_eq!(
        out.code,
        Some(0),
        "check with the default --config: {out:?}"
    );
}

#[test]
fn check_reports_every_problem_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf")).expect("mkdir");
    std::fs::write(dir.path().join("conf/bad-routes.yaml"), INVALID).expect("write");
    let file = "./conf/bad-routes.yaml";
    let out = run(&["check", "--config", file], dir.path());
    assert_eq!(out.code, Some(1), "check on an invalid file: {out:?}");
    let found = diagnostics(&out.stderr, file);
    let errors: Vec<_> = found
        .iter()
        .filter(|(_, _, msg)| !msg.starts_with("warning:"))
        .collect();
    for (line, what, hints) in [
        (
            BAD_DURATION_LINE,
            "bad duration",
            &["duration", "parsecs", "timeout"][..],
        ),
        (BAD_PERCENT_LINE, "percent 150", &["percent", "150"][..]),
        (
            DUPLICATE_NAME_LINE,
            "duplicate route name",
            &["duplicate", "catalog"][..],
        ),
        (UNKNOWN_UPSTREAM_LINE, "unknown upstream", &["nowhere"][..]),
        (BAD_MODE_LINE, "bad mode", &["sideways", "mode"][..]),
        (UNKNOWN_FIELD_LINE, "unknown field", &["colour"][..]),
        (
            BAD_STICKY_LINE,
            "bad sticky",
            &["sticky", "ip:whatever"][..],
        ),
    ] {
        let hit = errors.iter().find(|(l, col, msg)| {
            *l == line
                && *col >= 1
                && hints
                    .iter()
                    .any(|h| msg.to_ascii_lowercase().contains(&h.to_ascii_lowercase()))
        });
        assert!(
            hit.is_some(),
            "no `{file}:{line}:COL: message` for the {what} (expected one mentioning one of {hints:?}); stderr:\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_warns_but_accepts_ignored_percent_and_hidden_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = r#"listen: 127.0.0.1:18080
admin: 127.0.0.1:19901
upstreams:
  legacy: http://127.0.0.1:18081
  catalog: http://127.0.0.1:18082
fallback: legacy
routes:
  - name: catalog
    match: {prefix: /api/products}
    upstream: catalog
    mode: extracted
    percent: 30
    sticky: header:x-user-id
  - name: first
    match: {prefix: /api/orders}
    upstream: catalog
    mode: extracted
  - name: hidden
    match: {prefix: /api/orders}
    upstream: legacy
    mode: extracted
"#;
    let out = check_file(dir.path(), "warn.yaml", yaml);
    assert_eq!(out.code, Some(0), "warnings do not fail check: {out:?}");
    let warnings: Vec<_> = diagnostics(&out.stderr, "warn.yaml")
        .into_iter()
        .filter(|(_, _, msg)| msg.starts_with("warning:"))
        .collect();
    // The ignored percent/sticky: lines 8-13 (the route `catalog`).
    assert!(
        warnings.iter().any(|(l, _, _)| (8..=13).contains(l)),
        "no warning for percent on a non-canary route; stderr:\n{}",
        out.stderr
    );
    // The hidden route: lines 18-21 (the second `/api/orders` route).
    assert!(
        warnings.iter().any(|(l, _, _)| (18..=21).contains(l)),
        "no warning for a route hidden by an identical earlier one; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn check_missing_file_exits_1_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&["check", "--config", "does-not-exist.yaml"], dir.path());
    assert_eq!(out.code, Some(1), "missing file: {out:?}");
    assert!(!out.stderr.is_empty());
    let out = run(&["check", "--no-such-flag"], dir.path());
    assert_eq!(out.code, Some(2), "unknown flag: {out:?}");
    let out = run(&["frobnicate"], dir.path());
    assert_eq!(out.code, Some(2), "unknown command: {out:?}");
    let out = run(&["explain", "--config", "routes.yaml"], dir.path());
    assert_eq!(out.code, Some(2), "explain without METHOD PATH: {out:?}");
}

#[test]
fn run_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.yaml"), INVALID).expect("write");
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let out = run(
        &[
            "run", "--config", "bad.yaml", "--listen", &listen, "--admin", &admin,
        ],
        dir.path(),
    );
    assert_eq!(out.code, Some(1), "run on an invalid file: {out:?}");
    let found = diagnostics(&out.stderr, "bad.yaml");
    assert!(
        found.iter().any(|(l, _, _)| *l == UNKNOWN_UPSTREAM_LINE),
        "run prints the same FILE:LINE:COL messages; stderr:\n{}",
        out.stderr
    );
}

fn explain_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = explain(dir, &all);
    assert_eq!(out.code, Some(0), "explain {args:?}: {out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("explain --json output is not JSON ({e}): {}", out.stdout))
}

#[test]
fn explain_json_shows_path_route_mode_upstream_and_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("routes.yaml"), VALID).expect("write");

    let j = explain_json(dir.path(), &["GET", "/api/orders/../products//7"]);
    assert_eq!(j["path"], "/api/products/7", "{j}");
    assert_eq!(j["route"], "catalog", "{j}");
    assert_eq!(j["mode"], "canary", "{j}");
    assert_eq!(j["upstream"], "catalog", "{j}");
    assert_eq!(j["percent"].as_f64(), Some(30.0), "{j}");
    assert!(
        j["side"].is_null(),
        "a canary without its key is random: {j}"
    );

    for key in ["alice", "bob", "carol", "dave"] {
        let header = format!("x-user-id: {key}");
        let j = explain_json(dir.path(), &["GET", "/api/products/7", "-H", &header]);
        let bucket = j["bucket"]
            .as_u64()
            .unwrap_or_else(|| panic!("bucket: {j}"));
        assert!(bucket < 10_000, "{j}");
        let side = if bucket < 3000 {
            "upstream"
        } else {
            "fallback"
        };
        assert_eq!(j["side"], side, "{j}");
        // Stable: the same key, the same bucket.
        let again = explain_json(dir.path(), &["GET", "/api/products/7", "-H", &header]);
        assert_eq!(again["bucket"], j["bucket"]);
    }

    let j = explain_json(dir.path(), &["GET", "/api/orders/1", "-H", "X-Beta: 1"]);
    assert_eq!(j["route"], "orders", "{j}");
    assert_eq!(j["mode"], "extracted", "{j}");
    assert_eq!(j["upstream"], "orders", "{j}");
    assert_eq!(j["side"], "upstream", "{j}");

    let j = explain_json(dir.path(), &["GET", "/admin"]);
    assert_eq!(j["route"], "old-admin", "{j}");
    assert_eq!(j["mode"], "legacy", "{j}");
    assert_eq!(j["side"], "fallback", "{j}");

    // Methods and headers filters apply.
    let j = explain_json(dir.path(), &["POST", "/api/products/7"]);
    assert!(j["route"].is_null(), "POST skips the GET/HEAD route: {j}");
    let j = explain_json(dir.path(), &["GET", "/api/orders/1"]);
    assert!(j["route"].is_null(), "no x-beta header: {j}");

    let j = explain_json(dir.path(), &["GET", "/nothing/here"]);
    assert!(j["route"].is_null(), "{j}");
    assert_eq!(j["upstream"], "legacy", "{j}");
    assert_eq!(j["path"], "/nothing/here", "{j}");
}

#[test]
fn explain_text_names_path_route_mode_and_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("routes.yaml"), VALID).expect("write");
    let out = explain(dir.path(), &["GET", "/api/orders/../products//7"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for want in ["/api/products/7", "catalog", "canary", "30"] {
        assert!(
            out.stdout.contains(want),
            "explain text lacks {want:?}:\n{}",
            out.stdout
        );
    }

    let out = explain(
        dir.path(),
        &["GET", "/api/products/7", "-H", "x-user-id: alice"],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let bucket = explain_json(
        dir.path(),
        &["GET", "/api/products/7", "-H", "x-user-id: alice"],
    )["bucket"]
        .to_string();
    assert!(
        out.stdout.contains(&bucket),
        "explain text with a key lacks its bucket {bucket}:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("upstream") || out.stdout.contains("fallback"),
        "explain text with a key names its side:\n{}",
        out.stdout
    );

    let out = explain(dir.path(), &["GET", "/nothing/here"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("/nothing/here"), "{}", out.stdout);
    assert!(
        out.stdout.to_ascii_lowercase().contains("fallback") && out.stdout.contains("legacy"),
        "explain text for an unmatched path names the fallback:\n{}",
        out.stdout
    );
}

#[test]
fn check_validates_adapters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = r#"listen: 127.0.0.1:18080
admin: 127.0.0.1:19901
upstreams:
  legacy: http://127.0.0.1:18081
  catalog: http://127.0.0.1:18082
fallback: legacy
routes: []
adapters:
  catalog: remote
  billing: remote
  search: sometimes
"#;
    let out = check_file(dir.path(), "adapters.yaml", yaml);
    assert_eq!(out.code, Some(1), "{out:?}");
    let found = diagnostics(&out.stderr, "adapters.yaml");
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 10 && m.contains("billing")),
        "remote adapter without an upstream of that name; stderr:\n{}",
        out.stderr
    );
    assert!(
        found
            .iter()
            .any(|(l, _, m)| *l == 11 && m.contains("sometimes")),
        "adapter value other than local/remote; stderr:\n{}",
        out.stderr
    );
    assert!(
        !found
            .iter()
            .any(|(l, _, m)| *l == 9 && !m.starts_with("warning:")),
        "catalog: remote is valid; stderr:\n{}",
        out.stderr
    );
}
