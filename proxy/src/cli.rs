//! The command line: `strangler run | check | explain`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config;
use crate::logging::{self, LogFormat};
use crate::run::{self, InvalidConfig, RunOptions};

/// Strangler: a hot-reloadable reverse proxy for strangler-fig migrations.
#[derive(Debug, Parser)]
#[command(name = "strangler", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve, hot-reloading the config file.
    Run {
        /// The migration plan.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Address clients connect to (overrides the file's `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Address of the admin API (overrides the file's `admin`).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// How long in-flight requests get to finish on SIGTERM/SIGINT.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        shutdown_timeout: Duration,
        /// Worker threads serving traffic (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Zero-downtime binary upgrades: listen on this Unix socket; a new process started
        /// with the same flag takes over the listening sockets and this one drains and exits.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<PathBuf>,
    },
    /// Validate the config: exit 0 when usable, 1 when not.
    Check {
        /// The migration plan.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
    },
    /// Set a route's mode (and canary percent) in the config file, keeping its comments
    /// and layout. A running proxy picks the change up.
    SetMode {
        /// The migration plan.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// The route's name.
        route: String,
        /// legacy, shadow, canary or extracted.
        #[arg(value_parser = parse_mode)]
        mode: config::Mode,
        /// The canary's share, 0-100.
        #[arg(long)]
        percent: Option<f64>,
    },
    /// Set an adapter to local or remote in the config file, keeping its comments and layout.
    SetAdapter {
        /// The migration plan.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// The capability (catalog, inventory...).
        name: String,
        /// local or remote.
        #[arg(value_parser = parse_adapter)]
        to: config::AdapterMode,
    },
    /// Print each route's mode, share and request counts from a running proxy.
    Status {
        /// The admin API's address.
        #[arg(long, default_value = crate::config::DEFAULT_ADMIN)]
        admin: String,
    },
    /// Exit 0 when a running proxy's admin API answers `GET /healthz` with 200, else 1 (a
    /// container health check).
    Health {
        /// The admin API's address.
        #[arg(long, default_value = crate::config::DEFAULT_ADMIN)]
        admin: String,
    },
    /// Print a running proxy's shadow comparison report.
    ShadowReport {
        /// The admin API's address.
        #[arg(long, default_value = crate::config::DEFAULT_ADMIN)]
        admin: String,
        /// Print the JSON of `GET /shadow` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replay a recorded request file against a legacy and a candidate base URL, compare
    /// the answers, and exit 1 when the match rate is under --min-match.
    Compare {
        /// The recorded requests, one JSON object a line (see the README).
        #[arg(long)]
        requests: PathBuf,
        /// Base URL of the legacy side, e.g. http://127.0.0.1:8081.
        #[arg(long)]
        legacy: String,
        /// Base URL of the candidate, e.g. http://127.0.0.1:8082.
        #[arg(long)]
        candidate: String,
        /// Minimum match rate in percent (candidate errors count as mismatches).
        #[arg(long, default_value_t = 100.0)]
        min_match: f64,
        /// A JSON path never compared, like /items/*/updated_at; repeatable.
        #[arg(long = "ignore")]
        ignore: Vec<String>,
        /// A response header never compared; repeatable.
        #[arg(long = "ignore-header")]
        ignore_headers: Vec<String>,
        /// Response headers compared (default: content-type); repeatable.
        #[arg(long = "compare-header")]
        compare_headers: Vec<String>,
        /// Ask legacy twice and set aside the fields that differ between its two answers.
        #[arg(long)]
        noise: bool,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Timeout for each answer.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show which route, mode and upstream would serve a request.
    Explain {
        /// The migration plan.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// A request header, `Name: value`; repeatable.
        #[arg(short = 'H', long = "header", value_parser = parse_header)]
        headers: Vec<(HeaderName, HeaderValue)>,
        /// The request method.
        #[arg(value_parser = parse_method)]
        method: Method,
        /// The request path (a query is allowed and ignored).
        path: String,
    },
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            listen,
            admin,
            log_format,
            shutdown_timeout,
            workers,
            upgrade_socket,
        } => {
            logging::init(log_format);
            let opts = RunOptions {
                config,
                listen,
                admin,
                shutdown_timeout,
                workers,
                upgrade_socket,
            };
            match run::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is::<InvalidConfig>() => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("strangler: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Health { admin } => match block_on(crate::status::health(&admin)) {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("strangler: {e:#}");
                ExitCode::FAILURE
            }
            Err(code) => code,
        },
        Command::ShadowReport { admin, json } => {
            match block_on(crate::status::shadow_report(&admin)) {
                Ok(Ok(doc)) if json => {
                    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(Ok(doc)) => {
                    print!("{}", crate::shadow::report::render_table(&doc));
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) => {
                    eprintln!("strangler: {e:#}");
                    ExitCode::FAILURE
                }
                Err(code) => code,
            }
        }
        Command::Compare {
            requests,
            legacy,
            candidate,
            min_match,
            ignore,
            ignore_headers,
            compare_headers,
            noise,
            concurrency,
            timeout,
            json,
        } => {
            let headers = if compare_headers.is_empty() {
                vec!["content-type".to_string()]
            } else {
                compare_headers
            };
            let rules = match (
                crate::shadow::replay::header_names(&headers),
                crate::shadow::replay::header_names(&ignore_headers),
            ) {
                (Ok(headers), Ok(ignore_headers)) => crate::shadow::compare::Rules {
                    headers,
                    ignore_headers,
                    ignore_paths: ignore,
                },
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("strangler: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = crate::shadow::replay::ReplayOptions {
                requests,
                legacy,
                candidate,
                min_match,
                concurrency,
                timeout,
                rules,
                noise,
                max_body_bytes: 16 * 1024 * 1024,
                keep_mismatches: 20,
            };
            match block_on(crate::shadow::replay::replay(&opts)) {
                Ok(Ok(result)) => {
                    if json {
                        let mut doc = result.report.clone();
                        doc["match_percent"] = serde_json::json!(result.match_percent);
                        doc["min_match"] = serde_json::json!(min_match);
                        doc["passed"] = serde_json::json!(result.passed);
                        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                    } else {
                        print!("{}", crate::shadow::report::render_table(&result.report));
                        let rate = result
                            .match_percent
                            .map_or("n/a".to_string(), |m| format!("{m:.2}%"));
                        let verdict = if result.passed { "PASS" } else { "FAIL" };
                        println!("\nmatch rate {rate}, minimum {min_match:.2}%: {verdict}");
                    }
                    if result.passed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Ok(Err(e)) => {
                    eprintln!("strangler: {e}");
                    ExitCode::from(2)
                }
                Err(code) => code,
            }
        }
        Command::Status { admin } => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("strangler: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::status::status(&admin)) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strangler: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::SetMode {
            config,
            route,
            mode,
            percent,
        } => edit(&config, |text| {
            config::edit::set_route_mode(text, &route, mode, percent)
        }),
        Command::SetAdapter { config, name, to } => {
            edit(&config, |text| config::edit::set_adapter(text, &name, to))
        }
        Command::Explain {
            config,
            json,
            headers,
            method,
            path,
        } => explain(&config, json, headers, &method, &path),
    }
}

fn load(path: &std::path::Path) -> Result<config::Checked, ExitCode> {
    let display = path.display().to_string();
    match config::load(path) {
        Ok(checked) => {
            for w in &checked.warnings {
                eprintln!("{}", w.display(&display));
            }
            Ok(checked)
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{}", d.display(&display));
            }
            Err(ExitCode::FAILURE)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load(path) {
        Ok(checked) => {
            let c = &checked.config;
            println!(
                "{}: ok: {} routes, {} upstreams, version {}",
                path.display(),
                c.routes.len(),
                c.upstreams.len(),
                &c.version[..12]
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn explain(
    path: &std::path::Path,
    json: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
    method: &Method,
    target: &str,
) -> ExitCode {
    let checked = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(k, v);
    }
    match crate::explain::explain(&checked.config, method, target, &map) {
        Ok(e) if json => {
            println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(e) => {
            print!("{}", e.to_text(&checked.config));
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("strangler: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Applies an edit to the file: the result is validated whole and written atomically
/// (temporary file, then rename), or nothing is written.
fn edit(path: &std::path::Path, change: impl FnOnce(&str) -> Result<String, String>) -> ExitCode {
    let display = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{display}: cannot read file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let new = match change(&text) {
        Ok(new) => new,
        Err(msg) => {
            eprintln!("{display}: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(diags) = config::parse_at(&new, &config::config_dir(path)) {
        eprintln!("{display}: not changed: the edit would make the file invalid:");
        for d in diags
            .iter()
            .filter(|d| d.severity == config::Severity::Error)
        {
            eprintln!("{}", d.display(&display));
        }
        return ExitCode::FAILURE;
    }
    if new == text {
        println!("{display}: unchanged");
        return ExitCode::SUCCESS;
    }
    match write_atomically(path, new.as_bytes()) {
        Ok(()) => {
            println!(
                "{display}: updated, version {}",
                &config::version_of(new.as_bytes())[..12]
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{display}: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes through a temporary file in the same directory and a rename, so a watcher never
/// reads half a file. A symlinked config is written at its target.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(std::path::Path::new("."));
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("routes.yaml");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(&target) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn parse_mode(s: &str) -> Result<config::Mode, String> {
    config::Mode::parse(s).ok_or_else(|| "expected legacy, shadow, canary or extracted".to_string())
}

fn parse_adapter(s: &str) -> Result<config::AdapterMode, String> {
    match s {
        "local" => Ok(config::AdapterMode::Local),
        "remote" => Ok(config::AdapterMode::Remote),
        _ => Err("expected local or remote".into()),
    }
}

/// Runs a future on a small runtime, for the one-shot commands.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => {
            eprintln!("strangler: cannot start the runtime: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes())
        .map_err(|e| format!("invalid method: {e}"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or("expected `Name: value`")?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("invalid header name: {e}"))?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|e| format!("invalid header value: {e}"))?;
    Ok((name, value))
}
