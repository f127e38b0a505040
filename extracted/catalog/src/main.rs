//! `catalog-service`: serves the extracted catalog, or imports it from the monolith.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The catalog service extracted from the sample monolith.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// SQLite file (created empty when missing). Default: `$DATABASE_URL` (a path, or
    /// `sqlite://PATH`), else `catalog-service.db`.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy every product from the monolith's public API into this service's database.
    /// Resumable; safe to run again.
    Import {
        /// The monolith's base URL, e.g. http://127.0.0.1:8081.
        #[arg(long)]
        from: String,
    },
}

fn db_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(path) = flag {
        return path;
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => PathBuf::from(
            url.strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(&url),
        ),
        _ => PathBuf::from("catalog-service.db"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shop_api::http::init_tracing(args.log_format == "json");
    let path = db_path(args.db);
    let db = catalog_service::open_db(&path)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    match args.command {
        Some(Command::Import { from }) => {
            let report = catalog_service::import::import(&db, &from).await?;
            println!(
                "imported {} products from {from} (started at offset {}; the source has {})",
                report.copied, report.resumed_at, report.total
            );
        }
        None => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            tracing::info!(listen = %listener.local_addr()?, db = %path.display(), "catalog-service serving");
            shop_api::http::serve(
                listener,
                catalog_service::app(db),
                shop_api::http::shutdown_signal(),
            )
            .await?;
            tracing::info!("catalog-service stopped");
        }
    }
    Ok(())
}
