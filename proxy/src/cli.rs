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
    },
    /// Validate the config: exit 0 when usable, 1 when not.
    Check {
        /// The migration plan.
        #[arg(long, default_value = "routes.yaml")]
        config: PathBuf,
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
        } => {
            logging::init(log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("strangler: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = RunOptions {
                config,
                listen,
                admin,
                shutdown_timeout,
            };
            match runtime.block_on(run::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is::<InvalidConfig>() => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("strangler: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => check(&config),
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
