//! `catalog-service`: serves the extracted catalog, or imports it from the monolith.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    catalog_service::SERVICE.main().await
}
