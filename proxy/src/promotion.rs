//! Gated promotion and automatic rollback.
//!
//! A route with a `promote:` plan is walked by the proxy: shadow until enough compared
//! requests match, then each canary step, then extracted. Every evaluation window (the plan's
//! `interval`) the route's evidence is checked: the upstream's error rate, its p99 latency
//! against the fallback's, and the mismatch rate of the requests still shadowed. A step is
//! taken only after its dwell time and request count, within the limits; a breach sends the
//! route back to shadow at once, where it stays until a person acts (edits the route).
//!
//! The proxy never rewrites routes.yaml: the live state is in memory, shown by
//! `GET /promotions`, in metrics, and by `strangler status`. A reload that leaves a route's
//! definition unchanged keeps its plan state; a changed route starts its plan afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::config::{Mode, PromotePlan, Route};
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::shadow::Shadow;

/// Latency samples kept per side per window.
const SAMPLES: usize = 4096;
/// Samples needed on each side before the p99 ratio is judged.
const MIN_LATENCY_SAMPLES: usize = 20;
/// Compared copies needed in a window before its mismatch rate is judged.
const MIN_COMPARED: u64 = 10;
/// Decisions kept per route.
const HISTORY: usize = 50;

/// Where a plan is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// The route is in legacy mode: the plan waits for a person to start shadowing.
    Idle,
    /// Shadowing until the match rate holds.
    Shadow,
    /// At canary step `n` (index into the plan's steps).
    Canary(usize),
    /// Promoted all the way; still watched.
    Extracted,
    /// Rolled back to shadow after a breach; waits for a person.
    RolledBack,
}

/// One route's plan state; the effective mode is readable without a lock.
#[derive(Debug)]
pub struct RoutePromotion {
    /// The effective mode (`Mode` as u8) and share in basis points, for the request path.
    mode: AtomicU8,
    share_bp: AtomicU32,
    state: Mutex<State>,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct State {
    /// The route as it was when the plan (re)started, to tell a changed route on reload.
    route: Route,
    plan: PromotePlan,
    phase: Phase,
    since: Instant,
    since_wall: SystemTime,
    /// Upstream requests since the phase started.
    phase_requests: u64,
    /// Shadow counts (compared, matched) when the phase started / the window started.
    phase_shadow: (u64, u64),
    window_shadow: (u64, u64),
    last_eval: Instant,
    /// Set when the plan (re)starts: the first evaluation only records where the shadow
    /// counts stand, so the plan is judged on new evidence alone.
    needs_baseline: bool,
    rollback: Option<Value>,
    history: VecDeque<Value>,
}

#[derive(Debug, Default)]
struct Window {
    upstream_requests: u64,
    upstream_failures: u64,
    upstream_ms: Vec<f64>,
    fallback_ms: Vec<f64>,
}

fn mode_code(m: Mode) -> u8 {
    match m {
        Mode::Legacy => 1,
        Mode::Shadow => 2,
        Mode::Canary => 3,
        Mode::Extracted => 4,
    }
}

fn code_mode(c: u8) -> Mode {
    match c {
        2 => Mode::Shadow,
        3 => Mode::Canary,
        4 => Mode::Extracted,
        _ => Mode::Legacy,
    }
}

impl RoutePromotion {
    fn new(route: &Route, plan: &PromotePlan) -> Self {
        let phase = match route.mode {
            Mode::Legacy => Phase::Idle,
            Mode::Shadow => Phase::Shadow,
            Mode::Extracted => Phase::Extracted,
            // A canary in the file starts at the first plan step above its percent.
            Mode::Canary => {
                let p = route.percent.unwrap_or(0.0);
                match plan.steps.iter().position(|s| *s > p) {
                    Some(i) => Phase::Canary(i.saturating_sub(1)),
                    None => Phase::Canary(plan.steps.len() - 1),
                }
            }
        };
        let now = Instant::now();
        let p = RoutePromotion {
            mode: AtomicU8::new(0),
            share_bp: AtomicU32::new(0),
            state: Mutex::new(State {
                route: route.clone(),
                plan: plan.clone(),
                phase,
                since: now,
                since_wall: SystemTime::now(),
                phase_requests: 0,
                phase_shadow: (0, 0),
                window_shadow: (0, 0),
                last_eval: now,
                needs_baseline: true,
                rollback: None,
                history: VecDeque::new(),
            }),
            window: Mutex::new(Window::default()),
        };
        let (mode, share) = effective(phase, plan, route);
        p.set(mode, share);
        p
    }

    fn set(&self, mode: Mode, share_bp: u32) {
        self.share_bp.store(share_bp, Ordering::Relaxed);
        self.mode.store(mode_code(mode), Ordering::Relaxed);
    }

    /// The mode and canary share (basis points) requests get now.
    pub fn effective(&self) -> (Mode, u32) {
        (
            code_mode(self.mode.load(Ordering::Relaxed)),
            self.share_bp.load(Ordering::Relaxed),
        )
    }

    /// Records one request's outcome: served by the upstream or the fallback, failed or not
    /// (5xx or no answer), and its latency to the response headers.
    pub fn observe(&self, to_upstream: bool, failed: bool, latency: Duration) {
        let mut w = lock(&self.window);
        let ms = latency.as_secs_f64() * 1e3;
        if to_upstream {
            w.upstream_requests += 1;
            w.upstream_failures += u64::from(failed);
            if w.upstream_ms.len() < SAMPLES {
                w.upstream_ms.push(ms);
            }
        } else if w.fallback_ms.len() < SAMPLES {
            w.fallback_ms.push(ms);
        }
    }
}

/// The mode and share a phase gives a route.
fn effective(phase: Phase, plan: &PromotePlan, route: &Route) -> (Mode, u32) {
    match phase {
        Phase::Idle => (route.mode, route.share_bp()),
        Phase::Shadow | Phase::RolledBack => (Mode::Shadow, 0),
        Phase::Canary(i) => (Mode::Canary, (plan.steps[i] * 100.0).round() as u32),
        Phase::Extracted => (Mode::Extracted, 10_000),
    }
}

/// Every route's plan state, kept across reloads.
pub struct Promotions {
    routes: Mutex<HashMap<String, Arc<RoutePromotion>>>,
    metrics: Arc<Metrics>,
}

impl Promotions {
    /// No plans yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Promotions {
            routes: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The plan states for a new config's routes (`None` for routes without a plan): an
    /// unchanged route keeps its state, a new or changed one starts afresh.
    pub fn sync(&self, routes: &[Route]) -> Vec<Option<Arc<RoutePromotion>>> {
        let mut map = lock(&self.routes);
        let out = routes
            .iter()
            .map(|r| {
                let plan = r.promote.as_ref()?;
                let keep = map
                    .get(&r.name)
                    .filter(|p| same_route(&lock(&p.state).route, r))
                    .cloned();
                Some(keep.unwrap_or_else(|| {
                    let p = Arc::new(RoutePromotion::new(r, plan));
                    tracing::info!(route = %r.name, mode = r.mode.as_str(), "promotion plan (re)started");
                    map.insert(r.name.clone(), p.clone());
                    p
                }))
            })
            .collect();
        map.retain(|name, _| {
            routes
                .iter()
                .any(|r| &r.name == name && r.promote.is_some())
        });
        out
    }

    /// Evaluates every route whose window has elapsed. Call it often (every 100 ms or so).
    pub fn evaluate(&self, shadow: &Shadow) {
        let routes: Vec<(String, Arc<RoutePromotion>)> = lock(&self.routes)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, p) in routes {
            self.evaluate_route(&name, &p, shadow);
        }
    }

    fn evaluate_route(&self, name: &str, p: &RoutePromotion, shadow: &Shadow) {
        let mut s = lock(&p.state);
        if s.last_eval.elapsed() < s.plan.interval {
            return;
        }
        s.last_eval = Instant::now();
        let window = std::mem::take(&mut *lock(&p.window));
        let (compared, matched) = shadow.counts(name);
        if s.needs_baseline {
            s.needs_baseline = false;
            s.phase_shadow = (compared, matched);
            s.window_shadow = (compared, matched);
            return;
        }
        let w_compared = compared.saturating_sub(s.window_shadow.0);
        let w_matched = matched.saturating_sub(s.window_shadow.1);
        s.window_shadow = (compared, matched);
        s.phase_requests += window.upstream_requests;
        let plan = s.plan.clone();

        let error_rate = pct(window.upstream_failures, window.upstream_requests);
        let mismatch_rate = pct(w_compared - w_matched.min(w_compared), w_compared);
        let p99_up = p99(&window.upstream_ms);
        let p99_fb = p99(&window.fallback_ms);
        let p99_ratio = match (p99_up, p99_fb) {
            (Some(u), Some(f))
                if window.upstream_ms.len() >= MIN_LATENCY_SAMPLES
                    && window.fallback_ms.len() >= MIN_LATENCY_SAMPLES
                    && f > 0.0 =>
            {
                Some(u / f)
            }
            _ => None,
        };
        let phase_compared = compared.saturating_sub(s.phase_shadow.0);
        let phase_matched = matched.saturating_sub(s.phase_shadow.1);
        let evidence = json!({
            "window": humantime::format_duration(plan.interval).to_string(),
            "upstream_requests": window.upstream_requests,
            "upstream_failures": window.upstream_failures,
            "error_rate_percent": error_rate,
            "p99_ms": {"upstream": p99_up, "fallback": p99_fb},
            "p99_ratio": p99_ratio,
            "shadow_compared": w_compared,
            "shadow_matched": w_matched,
            "mismatch_rate_percent": mismatch_rate,
            "phase_requests": s.phase_requests,
            "phase_compared": phase_compared,
            "phase_matched": phase_matched,
            "in_phase_for": humantime::format_duration(Duration::from_secs(s.since.elapsed().as_secs())).to_string(),
        });

        // Breaches: only where the upstream serves (canary, extracted).
        let serving = matches!(s.phase, Phase::Canary(_) | Phase::Extracted);
        let breach = if !serving {
            None
        } else if window.upstream_requests > 0
            && error_rate.is_some_and(|e| e > plan.max_error_rate)
        {
            Some(format!(
                "error rate {:.2}% over the limit {}%",
                error_rate.unwrap_or(0.0),
                plan.max_error_rate
            ))
        } else if p99_ratio.is_some_and(|r| r > plan.max_p99_ratio) {
            Some(format!(
                "p99 {:.2}x the fallback's, over the limit {}x",
                p99_ratio.unwrap_or(0.0),
                plan.max_p99_ratio
            ))
        } else if w_compared >= MIN_COMPARED
            && mismatch_rate.is_some_and(|m| m > 100.0 - plan.min_match)
        {
            Some(format!(
                "mismatch rate {:.2}% over the limit {:.2}%",
                mismatch_rate.unwrap_or(0.0),
                100.0 - plan.min_match
            ))
        } else {
            None
        };
        if let Some(reason) = breach {
            let from = phase_name(s.phase, &plan);
            tracing::warn!(route = name, from = %from, reason = %reason, evidence = %evidence, "promotion: rolled back to shadow");
            let record = json!({"at": now_text(), "decision": "rollback", "from": from, "to": "shadow", "reason": reason, "evidence": evidence});
            s.rollback = Some(record.clone());
            push(&mut s.history, record);
            self.enter(name, p, &mut s, Phase::RolledBack, compared, matched);
            self.metrics.rollback(name);
            return;
        }

        let dwelled = s.since.elapsed() >= plan.dwell;
        let next = match s.phase {
            Phase::Shadow
                if phase_compared >= plan.min_compared
                    && pct(phase_matched, phase_compared).is_some_and(|m| m >= plan.min_match) =>
            {
                Some(Phase::Canary(0))
            }
            Phase::Canary(i) if dwelled && s.phase_requests >= plan.min_requests => {
                if i + 1 < plan.steps.len() {
                    Some(Phase::Canary(i + 1))
                } else {
                    Some(Phase::Extracted)
                }
            }
            _ => None,
        };
        if let Some(next) = next {
            let (from, to) = (phase_name(s.phase, &plan), phase_name(next, &plan));
            tracing::info!(route = name, from = %from, to = %to, evidence = %evidence, "promotion: step taken");
            push(
                &mut s.history,
                json!({"at": now_text(), "decision": "promote", "from": from, "to": to, "evidence": evidence}),
            );
            self.enter(name, p, &mut s, next, compared, matched);
        }
    }

    fn enter(
        &self,
        name: &str,
        p: &RoutePromotion,
        s: &mut State,
        phase: Phase,
        compared: u64,
        matched: u64,
    ) {
        s.phase = phase;
        s.since = Instant::now();
        s.since_wall = SystemTime::now();
        s.phase_requests = 0;
        s.phase_shadow = (compared, matched);
        let (mode, share) = effective(phase, &s.plan, &s.route);
        p.set(mode, share);
        self.metrics
            .promotion_percent(name, f64::from(share) / 100.0);
    }

    /// Restarts a route's plan from the file's mode (after a rollback, once the candidate
    /// is fixed). Returns false when the route has no plan.
    pub fn restart(&self, name: &str) -> bool {
        let Some(p) = lock(&self.routes).get(name).cloned() else {
            return false;
        };
        let fresh = {
            let s = lock(&p.state);
            RoutePromotion::new(&s.route, &s.plan)
        };
        let fresh_state = fresh.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let (mode, share) = effective(fresh_state.phase, &fresh_state.plan, &fresh_state.route);
        let mut s = lock(&p.state);
        let mut history = std::mem::take(&mut s.history);
        push(
            &mut history,
            json!({"at": now_text(), "decision": "restart", "from": phase_name(s.phase, &s.plan), "to": phase_name(fresh_state.phase, &fresh_state.plan), "evidence": "restarted by a person (POST /promotions/NAME/restart)"}),
        );
        *s = fresh_state;
        s.history = history;
        *lock(&p.window) = Window::default();
        p.set(mode, share);
        self.metrics
            .promotion_percent(name, f64::from(share) / 100.0);
        tracing::info!(route = name, "promotion plan restarted by a person");
        true
    }

    /// `GET /promotions`.
    pub fn report(&self) -> Value {
        let routes: Vec<(String, Arc<RoutePromotion>)> = lock(&self.routes)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = serde_json::Map::new();
        for (name, p) in routes {
            let s = lock(&p.state);
            let (mode, share) = p.effective();
            out.insert(
                name,
                json!({
                    "phase": phase_name(s.phase, &s.plan),
                    "mode": mode,
                    "percent": f64::from(share) / 100.0,
                    "file_mode": s.route.mode,
                    "since": humantime::format_rfc3339_millis(s.since_wall).to_string(),
                    "step": match s.phase { Phase::Canary(i) => Some(i + 1), _ => None },
                    "steps": s.plan.steps,
                    "plan": s.plan,
                    "rolled_back": s.rollback,
                    "history": s.history,
                }),
            );
        }
        json!({ "routes": out })
    }
}

/// Whether a reload left a route's definition unchanged (its line may move when other parts
/// of the file change).
fn same_route(a: &Route, b: &Route) -> bool {
    let strip = |r: &Route| Route {
        line: 0,
        ..r.clone()
    };
    strip(a) == strip(b)
}

fn push(history: &mut VecDeque<Value>, v: Value) {
    history.push_back(v);
    while history.len() > HISTORY {
        history.pop_front();
    }
}

fn phase_name(phase: Phase, plan: &PromotePlan) -> String {
    match phase {
        Phase::Idle => "idle".into(),
        Phase::Shadow => "shadow".into(),
        Phase::Canary(i) => format!("canary {}%", plan.steps[i]),
        Phase::Extracted => "extracted".into(),
        Phase::RolledBack => "rolled_back".into(),
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn p99(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// Runs the evaluator until the process ends.
pub async fn run(promotions: Arc<Promotions>, shadow: Arc<Shadow>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        promotions.evaluate(&shadow);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(mode: &str, extra: &str) -> Route {
        let yaml = format!(
            "upstreams:\n  legacy: http://127.0.0.1:1\n  new: http://127.0.0.1:2\nfallback: legacy\nroutes:\n  - name: r\n    match: {{prefix: /r}}\n    upstream: new\n    mode: {mode}\n{extra}    promote: {{min_compared: 10, min_match: 90, steps: [10, 50, 100], dwell: 1ms, min_requests: 2, interval: 1ms}}\n"
        );
        crate::config::parse(&yaml).unwrap().config.routes.remove(0)
    }

    #[test]
    fn starts_from_the_files_mode() {
        let p = RoutePromotion::new(
            &route("shadow", ""),
            route("shadow", "").promote.as_ref().unwrap(),
        );
        assert_eq!(p.effective(), (Mode::Shadow, 0));
        let r = route("canary", "    percent: 50\n");
        let p = RoutePromotion::new(&r, r.promote.as_ref().unwrap());
        assert_eq!(p.effective(), (Mode::Canary, 5000));
        let r = route("legacy", "");
        let p = RoutePromotion::new(&r, r.promote.as_ref().unwrap());
        assert_eq!(p.effective(), (Mode::Legacy, 0));
    }

    #[test]
    fn unchanged_routes_keep_their_state_on_sync() {
        let m = Arc::new(Metrics::new());
        let promos = Promotions::new(m);
        let r = route("shadow", "");
        let a = promos.sync(std::slice::from_ref(&r))[0].clone().unwrap();
        a.set(Mode::Canary, 1000);
        let b = promos.sync(std::slice::from_ref(&r))[0].clone().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let changed = route("shadow", "    percent: 5\n");
        let c = promos.sync(&[changed])[0].clone().unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn p99_and_pct() {
        assert_eq!(pct(1, 4), Some(25.0));
        assert_eq!(pct(1, 0), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p99(&v), Some(99.0));
    }
}
