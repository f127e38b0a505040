//! What every extracted service is made of, written once: the command line (`serve`, the
//! default, or `import --from URL`; `--listen`, `--db`, `--log-format`), the database, the
//! health check, serving until SIGINT or SIGTERM, and the import. A service supplies a
//! [`Service`]: its name, address, tables, routes and what it imports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::import::Import;
use crate::Db;

/// An extracted service: what differs from one to the next.
#[derive(Debug)]
pub struct Service<T: 'static> {
    /// The program's name (`catalog-service`); its database is `NAME.db` by default.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The default `--listen` address.
    pub listen: &'static str,
    /// Its tables (idempotent `CREATE ... IF NOT EXISTS`).
    pub schema: &'static str,
    /// Its HTTP API over the database.
    pub routes: fn(Db) -> Router,
    /// What `import` copies from the monolith.
    pub import: Import<T>,
}

#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// SQLite file (created empty when missing). Default: `$DATABASE_URL` (a path, or
    /// `sqlite://PATH`), else `NAME.db`.
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
    /// Copy every row from the monolith's public API into this service's database.
    /// Resumable; safe to run again.
    Import {
        /// The monolith's base URL, e.g. http://127.0.0.1:8081.
        #[arg(long)]
        from: String,
    },
}

/// The database file: `flag`, else `$DATABASE_URL` (a path, or `sqlite://PATH`), else
/// `default`.
pub fn db_path(flag: Option<PathBuf>, default: &str) -> PathBuf {
    if let Some(path) = flag {
        return path;
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => PathBuf::from(
            url.strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(&url),
        ),
        _ => PathBuf::from(default),
    }
}

/// A shop program's serving life: listens on `listen`, logs that `name` serves (on the database
/// at `db`), serves `app` (with the common layers) until SIGINT or SIGTERM, and logs that it
/// stopped.
pub async fn listen_and_serve(
    name: &str,
    listen: SocketAddr,
    db: &Path,
    app: Router,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, db = %db.display(), "{name} serving");
    crate::http::serve(listener, app, crate::http::shutdown_signal()).await?;
    tracing::info!("{name} stopped");
    Ok(())
}

impl<T: DeserializeOwned + Send + 'static> Service<T> {
    /// Opens (creating and migrating) the service's database.
    pub fn open_db(&self, path: &Path) -> rusqlite::Result<Db> {
        Db::open(path, &[self.schema, crate::import::SCHEMA].concat())
    }

    /// The service's HTTP API: its routes and `GET /healthz`.
    pub fn app(&self, db: Db) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .merge((self.routes)(db))
    }

    /// The service's `main`: parses the command line, then serves or imports.
    pub async fn main(&self) -> anyhow::Result<()> {
        let args = self.args();
        crate::http::init_tracing(args.log_format == "json");
        let path = db_path(args.db, &format!("{}.db", self.name));
        let db = self
            .open_db(&path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        match args.command {
            Some(Command::Import { from }) => {
                let report = self.import.run(&db, &from).await?;
                println!(
                    "imported {} {} from {from} (started at offset {}; the source has {})",
                    report.copied, self.import.rows, report.resumed_at, report.total
                );
            }
            None => listen_and_serve(self.name, args.listen, &path, self.app(db)).await?,
        }
        Ok(())
    }

    /// The command line, with this service's name, help and default address.
    fn args(&self) -> Args {
        let command = Args::command()
            .name(self.name)
            .bin_name(self.name)
            .about(self.about)
            .mut_arg("listen", |a| a.default_value(self.listen).required(false))
            .mut_arg("db", |a| {
                a.help(format!(
                    "SQLite file (created empty when missing). Default: `$DATABASE_URL` (a path, \
                     or `sqlite://PATH`), else `{}.db`",
                    self.name
                ))
            })
            .mut_subcommand("import", |c| {
                c.about(format!(
                    "Copy all {} from the monolith's public API into this service's database. \
                     Resumable; safe to run again",
                    self.import.rows
                ))
            });
        Args::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
    }
}
