//! Shadow results per route: counts, latencies, the fields that differ most, the noise
//! learned, and the last mismatches. What `GET /shadow`, `strangler shadow-report` and
//! `strangler compare` print.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use super::compare::{generalize, Difference};

/// Latency samples kept per side, for percentiles.
const SAMPLES: usize = 2048;
/// Fields listed under `top_differences`.
const TOP_FIELDS: usize = 10;

/// One mismatch, kept for people to read.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// When it was compared.
    pub at: String,
    /// `METHOD path?query`.
    pub request: String,
    /// The request id the client saw.
    pub request_id: String,
    /// What differed (fallback on the left, candidate on the right).
    pub differences: Vec<Difference>,
}

/// Results of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Copies sent to the candidate.
    pub copied: u64,
    /// Copies where both answers arrived.
    pub compared: u64,
    /// Compared and equal (noise aside).
    pub matched: u64,
    /// Compared and different.
    pub mismatched: u64,
    /// The copy failed (connect error, timeout...).
    pub errors: u64,
    /// Not copied or not compared, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Not copied: too many copies in flight.
    pub dropped: u64,
    /// Matched once noise was set aside, with some noise present.
    pub matched_with_noise: u64,
    primary_latency: Samples,
    candidate_latency: Samples,
    /// Differences by generalized path.
    fields: HashMap<String, u64>,
    /// Fields seen differing between two fallback answers, with counts.
    pub noise_fields: HashMap<String, u64>,
    last: VecDeque<Mismatch>,
}

/// The latest latency samples, for percentiles.
#[derive(Debug, Default)]
struct Samples {
    ring: Vec<f64>,
    next: usize,
}

impl Samples {
    fn push(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        if self.ring.len() < SAMPLES {
            self.ring.push(ms);
        } else {
            self.ring[self.next] = ms;
        }
        self.next = (self.next + 1) % SAMPLES;
    }

    fn percentiles(&self) -> Value {
        if self.ring.is_empty() {
            return json!({"p50": null, "p99": null, "samples": 0});
        }
        let mut v = self.ring.clone();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            (v[i] * 1000.0).round() / 1000.0
        };
        json!({"p50": at(0.50), "p99": at(0.99), "samples": v.len()})
    }
}

impl RouteStats {
    /// Records a comparison.
    pub fn compared(
        &mut self,
        primary: Duration,
        candidate: Duration,
        real: Vec<Difference>,
        noise: &[Difference],
        mismatch: impl FnOnce(Vec<Difference>) -> Mismatch,
        keep: usize,
    ) {
        self.compared += 1;
        self.primary_latency.push(primary);
        self.candidate_latency.push(candidate);
        if real.is_empty() {
            self.matched += 1;
            if !noise.is_empty() {
                self.matched_with_noise += 1;
            }
            return;
        }
        self.mismatched += 1;
        for d in &real {
            *self.fields.entry(generalize(&d.path)).or_default() += 1;
        }
        self.last.push_back(mismatch(real));
        while self.last.len() > keep.max(1) {
            self.last.pop_front();
        }
    }

    /// Learns the fields that differed between two fallback answers (`between_fallbacks`,
    /// when noise learning is on), then splits `diffs` into real differences and noise.
    pub fn separate_noise(
        &mut self,
        diffs: Vec<Difference>,
        between_fallbacks: Option<Vec<Difference>>,
    ) -> (Vec<Difference>, Vec<Difference>) {
        for d in between_fallbacks.unwrap_or_default() {
            *self.noise_fields.entry(generalize(&d.path)).or_default() += 1;
        }
        diffs
            .into_iter()
            .partition(|d| !self.noise_fields.contains_key(&generalize(&d.path)))
    }

    /// Counts a skipped copy.
    pub fn skip(&mut self, reason: &'static str) {
        *self.skipped.entry(reason).or_default() += 1;
    }

    /// The fields seen differing between two fallback answers, as ignore rules.
    pub fn suggested_ignore(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .noise_fields
            .keys()
            .filter(|p| p.starts_with('/'))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The route's report as JSON.
    pub fn to_json(&self, route: &str) -> Value {
        let skipped: u64 = self.skipped.values().sum();
        let mut top: Vec<(&String, &u64)> = self.fields.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<Value> = top
            .into_iter()
            .take(TOP_FIELDS)
            .map(|(path, count)| json!({"path": path, "count": count}))
            .collect();
        let mut noise: Vec<(&String, &u64)> = self.noise_fields.iter().collect();
        noise.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let suggested = self.suggested_ignore();
        json!({
            "copied": self.copied,
            "compared": self.compared,
            "matched": self.matched,
            "mismatched": self.mismatched,
            "errors": self.errors,
            "skipped": skipped,
            "skipped_by_reason": self.skipped,
            "dropped": self.dropped,
            "match_rate": self.match_rate(),
            "matched_with_noise": self.matched_with_noise,
            "latency_ms": {
                "fallback": self.primary_latency.percentiles(),
                "candidate": self.candidate_latency.percentiles(),
            },
            "top_differences": top,
            "noise": noise.into_iter().map(|(p, c)| json!({"path": p, "count": c})).collect::<Vec<_>>(),
            "suggested_ignore": suggested,
            "suggested_config": suggestion_yaml(route, &suggested),
            "last_mismatches": self.last,
        })
    }

    /// Share of compared requests that matched, `None` before any comparison.
    pub fn match_rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.matched as f64 / self.compared as f64)
    }
}

/// A routes.yaml snippet with ignore rules for the noisy fields, or null when there are none.
fn suggestion_yaml(route: &str, paths: &[String]) -> Option<String> {
    if paths.is_empty() {
        return None;
    }
    let list = paths.join(", ");
    Some(format!(
        "# noise learned for route `{route}`: paste under the route in routes.yaml\n    shadow:\n      ignore: [{list}]\n"
    ))
}

/// An RFC 3339 timestamp for now.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Renders a `GET /shadow` document as a table for a person.
pub fn render_table(doc: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(routes) = doc["routes"].as_object().filter(|r| !r.is_empty()) else {
        return "no shadow results yet: no route in shadow mode has copied a request\n".into();
    };
    let header = [
        "ROUTE",
        "COPIED",
        "COMPARED",
        "MATCHED",
        "MISMATCHED",
        "ERRORS",
        "SKIPPED",
        "DROPPED",
        "MATCH%",
        "P50 ms (fb/cand)",
        "P99 ms (fb/cand)",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let num = |v: &Value| v.as_u64().unwrap_or(0).to_string();
    let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |f| format!("{f:.1}"));
    for (name, r) in routes {
        let lat = &r["latency_ms"];
        rows.push(vec![
            name.clone(),
            num(&r["copied"]),
            num(&r["compared"]),
            num(&r["matched"]),
            num(&r["mismatched"]),
            num(&r["errors"]),
            num(&r["skipped"]),
            num(&r["dropped"]),
            r["match_rate"]
                .as_f64()
                .map_or("-".into(), |m| format!("{:.2}", m * 100.0)),
            format!(
                "{}/{}",
                ms(&lat["fallback"]["p50"]),
                ms(&lat["candidate"]["p50"])
            ),
            format!(
                "{}/{}",
                ms(&lat["fallback"]["p99"]),
                ms(&lat["candidate"]["p99"])
            ),
        ]);
    }
    out.push_str(&crate::table::columns(&rows));
    for (name, r) in routes {
        if let Some(reasons) = r["skipped_by_reason"].as_object().filter(|m| !m.is_empty()) {
            let list: Vec<String> = reasons.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(out, "\n{name}: skipped: {}", list.join(", "));
        }
        if let Some(top) = r["top_differences"].as_array().filter(|t| !t.is_empty()) {
            let _ = writeln!(out, "\n{name}: fields that differ most:");
            for t in top {
                let _ = writeln!(
                    out,
                    "  {:>6}  {}",
                    num(&t["count"]),
                    t["path"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(noise) = r["noise"].as_array().filter(|t| !t.is_empty()) {
            let _ = writeln!(out, "\n{name}: noise (differs between two fallback answers, not counted as mismatches):");
            for t in noise {
                let _ = writeln!(
                    out,
                    "  {:>6}  {}",
                    num(&t["count"]),
                    t["path"].as_str().unwrap_or("")
                );
            }
        }
        if let Some(snippet) = r["suggested_config"].as_str() {
            let _ = writeln!(out, "\n{snippet}");
        }
        if let Some(last) = r["last_mismatches"].as_array().filter(|t| !t.is_empty()) {
            let _ = writeln!(out, "\n{name}: last mismatches (- fallback, + candidate):");
            for m in last {
                let _ = writeln!(
                    out,
                    "  {} {} (request id {})",
                    m["at"].as_str().unwrap_or(""),
                    m["request"].as_str().unwrap_or(""),
                    m["request_id"].as_str().unwrap_or("")
                );
                for d in m["differences"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let _ = writeln!(out, "    {}", d["path"].as_str().unwrap_or(""));
                    let _ = writeln!(out, "      - {}", d["left"].as_str().unwrap_or(""));
                    let _ = writeln!(out, "      + {}", d["right"].as_str().unwrap_or(""));
                }
            }
        }
    }
    out
}
