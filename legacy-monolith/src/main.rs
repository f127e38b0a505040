//! `legacy-monolith`: the sample shop being strangled.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The sample legacy shop: catalog, inventory and orders on one SQLite database.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// SQLite file; created, migrated and seeded on first start. Default: `$DATABASE_URL`
    /// (a path, or `sqlite://PATH`), else `legacy-monolith.db`.
    #[arg(long)]
    db: Option<PathBuf>,
    /// routes.yaml whose `adapters:` section says which catalog and inventory to use;
    /// followed live. Without it both are local.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Products to create on first start.
    #[arg(long, default_value_t = 300)]
    seed_products: usize,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shop_api::http::init_tracing(args.log_format == "json");
    let options = legacy_monolith::Options {
        db: shop_api::service::db_path(args.db, "legacy-monolith.db"),
        config: args.config,
        seed_products: args.seed_products,
    };
    let monolith = legacy_monolith::open(&options).await?;
    shop_api::service::listen_and_serve(
        "legacy-monolith",
        args.listen,
        &options.db,
        monolith.router.clone(),
    )
    .await
}
