//! `strangler status`: each route, its mode, its share and its request counts, read from a
//! running proxy's admin API.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Counts of one route's requests, from `strangler_requests_total`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Requests served by the route's own upstream.
    pub to_upstream: u64,
    /// Requests served by the fallback.
    pub to_fallback: u64,
    /// Responses with a 5xx status.
    pub errors: u64,
}

/// Fetches `/routes` and `/metrics` from the admin API at `admin` and renders the table.
pub async fn status(admin: &str) -> anyhow::Result<String> {
    let mut routes: serde_json::Value = serde_json::from_slice(&get(admin, "/routes").await?)
        .context("the admin API's /routes is not JSON")?;
    let metrics = String::from_utf8_lossy(&get(admin, "/metrics").await?).into_owned();
    let promotions: serde_json::Value = serde_json::from_slice(&get(admin, "/promotions").await?)
        .context("the admin API's /promotions is not JSON")?;
    // A route walked by a promotion plan shows its live mode and share, marked with `*`.
    if let Some(list) = routes["routes"].as_array_mut() {
        for r in list {
            let name = r["name"].as_str().unwrap_or_default().to_string();
            if let Some(p) = promotions["routes"].get(&name) {
                r["mode"] = p["mode"].clone();
                r["percent"] = p["percent"].clone();
                r["display_name"] = serde_json::json!(format!("{name}*"));
            }
        }
    }
    let mut out = render(&routes, &metrics);
    out.push_str(&render_promotions(&promotions));
    Ok(out)
}

/// `GET /healthz` on the admin API at `admin`: Ok when it answers 200 (a probe for
/// container runtimes without curl, such as Docker's HEALTHCHECK on a distroless image).
pub async fn health(admin: &str) -> anyhow::Result<()> {
    get(admin, "/healthz").await.map(|_| ())
}

/// Fetches `GET /shadow` from the admin API at `admin`.
pub async fn shadow_report(admin: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(&get(admin, "/shadow").await?)
        .context("the admin API's /shadow is not JSON")
}

async fn get(admin: &str, path: &str) -> anyhow::Result<Bytes> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{admin}{path}")
        .parse()
        .context("admin address")?;
    let mut req = http::Request::get(uri);
    // Off loopback the admin API wants the token; take it from where `run` does.
    if let Ok(token) = std::env::var(crate::config::ADMIN_TOKEN_ENV) {
        if !token.trim().is_empty() {
            req = req.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
    }
    let req = req.body(Empty::new()).context("request")?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
        .await
        .with_context(|| format!("no answer from the admin API at {admin} within 5s"))?
        .with_context(|| format!("cannot reach the admin API at {admin}: is strangler running?"))?;
    if !resp.status().is_success() {
        bail!("GET {path} answered {}", resp.status());
    }
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// Sums `strangler_requests_total` per route.
pub fn request_counts(metrics: &str, routes: &serde_json::Value) -> BTreeMap<String, Counts> {
    let fallback = routes["fallback"].as_str().unwrap_or_default();
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("strangler_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let value: u64 = value.trim().parse::<f64>().map_or(0, |v| v as u64);
        let label = |name: &str| {
            labels.split("\",").find_map(|kv| {
                let (k, v) = kv.split_once("=\"")?;
                (k == name).then(|| v.trim_end_matches('"').to_string())
            })
        };
        let (Some(route), Some(upstream)) = (label("route"), label("upstream")) else {
            continue;
        };
        let counts = out.entry(route.clone()).or_default();
        // A request no route covers, or one a route sent to the fallback.
        if upstream == fallback && route_upstream(routes, &route).as_deref() != Some(fallback) {
            counts.to_fallback += value;
        } else {
            counts.to_upstream += value;
        }
        if label("status").as_deref() == Some("5xx") {
            counts.errors += value;
        }
    }
    out
}

fn route_upstream(routes: &serde_json::Value, name: &str) -> Option<String> {
    routes["routes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["upstream"].as_str().map(String::from))
}

/// The promotion plans' live state, for a person.
pub fn render_promotions(doc: &serde_json::Value) -> String {
    let Some(routes) = doc["routes"].as_object().filter(|r| !r.is_empty()) else {
        return String::new();
    };
    let mut out = String::from("\npromotion plans (live state; routes.yaml is not rewritten):\n");
    for (name, p) in routes {
        let _ = writeln!(
            out,
            "  {name}: {} (file says {}), since {}",
            p["phase"].as_str().unwrap_or("?"),
            p["file_mode"].as_str().unwrap_or("?"),
            p["since"].as_str().unwrap_or("?")
        );
        if let Some(rb) = p["rolled_back"].as_object() {
            let _ = writeln!(
                out,
                "    ROLLED BACK at {} from {}: {}\n    evidence: {}\n    stays in shadow until a person acts: edit the route, or POST /promotions/{name}/restart once the candidate is fixed",
                rb.get("at").and_then(|v| v.as_str()).unwrap_or("?"),
                rb.get("from").and_then(|v| v.as_str()).unwrap_or("?"),
                rb.get("reason").and_then(|v| v.as_str()).unwrap_or("?"),
                rb.get("evidence").map(|v| v.to_string()).unwrap_or_default()
            );
        }
        if let Some(last) = p["history"].as_array().and_then(|h| h.last()) {
            let _ = writeln!(
                out,
                "    last decision: {} {} -> {} at {}",
                last["decision"].as_str().unwrap_or("?"),
                last["from"].as_str().unwrap_or("?"),
                last["to"].as_str().unwrap_or("?"),
                last["at"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

/// The status table.
pub fn render(routes: &serde_json::Value, metrics: &str) -> String {
    let counts = request_counts(metrics, routes);
    let mut rows = vec![vec![
        "ROUTE".to_string(),
        "MODE".into(),
        "SHARE".into(),
        "UPSTREAM".into(),
        "TO UPSTREAM".into(),
        "TO FALLBACK".into(),
        "5XX".into(),
    ]];
    for r in routes["routes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = r["name"].as_str().unwrap_or_default();
        let mode = r["mode"].as_str().unwrap_or_default();
        let share = match mode {
            "canary" => format!("{}%", r["percent"]),
            "extracted" => "100%".into(),
            _ => "0%".into(),
        };
        let c = counts.get(name).cloned().unwrap_or_default();
        rows.push(vec![
            r["display_name"].as_str().unwrap_or(name).into(),
            mode.into(),
            share,
            r["upstream"].as_str().unwrap_or_default().into(),
            c.to_upstream.to_string(),
            c.to_fallback.to_string(),
            c.errors.to_string(),
        ]);
    }
    let c = counts
        .get(crate::metrics::FALLBACK_ROUTE)
        .cloned()
        .unwrap_or_default();
    rows.push(vec![
        "(no route)".into(),
        "-".into(),
        "-".into(),
        routes["fallback"].as_str().unwrap_or_default().into(),
        "-".into(),
        c.to_fallback.to_string(),
        c.errors.to_string(),
    ]);
    let mut out = crate::table::columns(&rows);
    let version = routes["version"].as_str().unwrap_or_default();
    let _ = writeln!(
        out,
        "\nconfig {} loaded {} from {}",
        version.get(..12).unwrap_or(version),
        routes["loaded_at"].as_str().unwrap_or("?"),
        routes["source"].as_str().unwrap_or("?")
    );
    match &routes["last_error"] {
        serde_json::Value::Null => {}
        e => {
            let _ = writeln!(
                out,
                "last reload FAILED at {} (the config above is still serving):\n{}",
                e["at"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_split_by_side() {
        let routes = serde_json::json!({
            "fallback": "legacy",
            "routes": [{"name": "catalog", "upstream": "catalog", "mode": "canary", "percent": 10}],
        });
        let metrics = "\
strangler_requests_total{route=\"catalog\",upstream=\"catalog\",method=\"GET\",status=\"2xx\"} 7
strangler_requests_total{route=\"catalog\",upstream=\"legacy\",method=\"GET\",status=\"2xx\"} 90
strangler_requests_total{route=\"catalog\",upstream=\"catalog\",method=\"GET\",status=\"5xx\"} 3
strangler_requests_total{route=\"_fallback\",upstream=\"legacy\",method=\"GET\",status=\"2xx\"} 5
";
        let c = request_counts(metrics, &routes);
        assert_eq!(
            c["catalog"],
            Counts {
                to_upstream: 10,
                to_fallback: 90,
                errors: 3
            }
        );
        assert_eq!(c["_fallback"].to_fallback, 5);
        let table = render(&routes, metrics);
        assert!(table.contains("catalog"));
        assert!(table.contains("10%"));
    }
}
