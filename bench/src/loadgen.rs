//! The load generators: `wrk` for closed-loop throughput, `oha` for latency at a fixed rate.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::procs;

/// One closed-loop `wrk` run.
#[derive(Debug, Clone)]
pub struct WrkRun {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second, as wrk reports it.
    pub rps: f64,
    /// Non-2xx/3xx responses plus socket errors (connect, read, write, timeout).
    pub errors: u64,
}

/// Closed-loop settings.
#[derive(Debug, Clone)]
pub struct WrkOptions {
    /// wrk threads.
    pub threads: u32,
    /// Open connections.
    pub connections: u32,
    /// Length of the run.
    pub duration: Duration,
}

/// Runs `wrk` against `url`, with an optional Lua script.
pub fn wrk(url: &str, opts: &WrkOptions, script: Option<&Path>) -> anyhow::Result<WrkRun> {
    let mut cmd = wrk_command(url, opts, script);
    let out = procs::output_registered(&mut cmd).context("running wrk (is it installed?)")?;
    wrk_output(out)
}

/// A `wrk` running in the background until [`BackgroundWrk::finish`].
#[derive(Debug)]
pub struct BackgroundWrk {
    child: Option<std::process::Child>,
}

impl BackgroundWrk {
    /// Starts wrk for up to `opts.duration`; stop it earlier with [`BackgroundWrk::finish`].
    pub fn start(url: &str, opts: &WrkOptions) -> anyhow::Result<BackgroundWrk> {
        let child = wrk_command(url, opts, None)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting wrk")?;
        procs::register(child.id());
        Ok(BackgroundWrk { child: Some(child) })
    }

    /// Interrupts wrk (SIGINT: it stops and prints its report) and reads the report.
    pub fn finish(mut self) -> anyhow::Result<WrkRun> {
        let child = self.child.take().context("wrk already finished")?;
        let pid = child.id();
        procs::signal(pid, Signal::SIGINT);
        let out = child.wait_with_output().context("waiting for wrk")?;
        procs::unregister(pid);
        wrk_output(out)
    }
}

impl Drop for BackgroundWrk {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            procs::unregister(child.id());
        }
    }
}

fn wrk_output(out: std::process::Output) -> anyhow::Result<WrkRun> {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() && !text.contains("Requests/sec") {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn wrk_command(url: &str, opts: &WrkOptions, script: Option<&Path>) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t")
        .arg(opts.threads.to_string())
        .arg("-c")
        .arg(opts.connections.max(opts.threads).to_string())
        .arg("-d")
        .arg(format!("{}s", opts.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("5s");
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    cmd
}

/// Parses wrk's text report.
pub fn parse_wrk(text: &str) -> anyhow::Result<WrkRun> {
    let mut requests = None;
    let mut rps = None;
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(r) = line.strip_prefix("Requests/sec:") {
            rps = r.trim().parse().ok();
        } else if let Some(r) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += r.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(r) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in r.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok(WrkRun {
        requests: requests.context("no request count")?,
        rps: rps.context("no Requests/sec")?,
        errors,
    })
}

/// Version string of wrk (`wrk 4.1.0 ...` on its first line).
pub fn wrk_version() -> Option<String> {
    let out = Command::new("wrk").arg("-v").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .next()
        .map(|l| l.split(" Copyright").next().unwrap_or(l).trim().to_string())
}

/// One open-loop `oha` run at a fixed rate.
#[derive(Debug, Clone)]
pub struct OhaRun {
    /// Responses received.
    pub requests: u64,
    /// Non-2xx responses plus errors.
    pub errors: u64,
    /// Latency percentiles in milliseconds (with latency correction).
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
}

/// How this oha wants its options (they changed between versions).
#[derive(Debug, Clone)]
pub struct Oha {
    json_flag: Vec<&'static str>,
    wait_ongoing: bool,
    /// `oha --version`.
    pub version: String,
}

impl Oha {
    /// Looks at `oha --help` and `oha --version`.
    pub fn detect() -> anyhow::Result<Oha> {
        let help = Command::new("oha")
            .arg("--help")
            .output()
            .context("running oha (is it installed? cargo install oha --locked)")?;
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        let json_flag = if help.contains("--output-format") {
            vec!["--output-format", "json"]
        } else if help.contains("--json") {
            vec!["--json"]
        } else {
            vec!["-j"]
        };
        let version = Command::new("oha")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Oha {
            json_flag,
            wait_ongoing: help.contains("--wait-ongoing-requests-after-deadline"),
            version,
        })
    }

    /// Runs oha at `rate` requests/s for `duration` with `connections` connections.
    pub fn run(
        &self,
        url: &str,
        rate: u32,
        duration: Duration,
        connections: u32,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<OhaRun> {
        let mut cmd = Command::new("oha");
        cmd.arg("-q")
            .arg(rate.to_string())
            .arg("-z")
            .arg(format!("{}s", duration.as_secs().max(1)))
            .arg("-c")
            .arg(connections.to_string())
            .arg("--latency-correction")
            .arg("--no-tui")
            .args(&self.json_flag);
        if self.wait_ongoing {
            cmd.arg("--wait-ongoing-requests-after-deadline");
        }
        for (k, v) in headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        cmd.arg(url);
        let out = procs::output_registered(&mut cmd).context("running oha")?;
        if !out.status.success() {
            bail!(
                "oha failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let json: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "oha's JSON output: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        parse_oha(&json)
    }
}

/// Reads oha's JSON report.
pub fn parse_oha(json: &Value) -> anyhow::Result<OhaRun> {
    let pct = &json["latencyPercentiles"];
    let ms = |key: &str| -> anyhow::Result<f64> {
        pct[key]
            .as_f64()
            .map(|s| s * 1000.0)
            .with_context(|| format!("no latencyPercentiles.{key} in oha's JSON"))
    };
    let mut requests = 0;
    let mut errors = 0;
    if let Some(codes) = json["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            requests += n;
            if !code.starts_with('2') {
                errors += n;
            }
        }
    }
    if let Some(errs) = json["errorDistribution"].as_object() {
        for (what, n) in errs {
            // Requests cut off by the end of the run are not failures of the proxy.
            if !what.contains("deadline") {
                errors += n.as_u64().unwrap_or(0);
            }
        }
    }
    Ok(OhaRun {
        requests,
        errors,
        p50_ms: ms("p50")?,
        p99_ms: ms("p99")?,
        p999_ms: ms("p99.9")?,
    })
}
