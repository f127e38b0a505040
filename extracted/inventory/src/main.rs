//! `inventory-service`: serves the extracted inventory, or imports it from the monolith.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    inventory_service::SERVICE.main().await
}
