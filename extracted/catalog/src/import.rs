//! `catalog-service import --from URL`: copies every product from the monolith's public API
//! (`GET /api/products`, page by page in id order; never its database) into this service's
//! database, keeping ids and `updated_at` so both answer alike.
//!
//! Resumable: the next offset is saved with each page in the same transaction, so an import
//! that was stopped continues where it stopped. Safe to run twice: rows are upserted by id,
//! and a finished import starts over from the first page the next time (picking up changes).
//! Products deleted from the monolith after an import are not deleted here.

use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, OptionalExtension};
use shop_api::wire::{Page, Product};
use shop_api::Db;

/// The import's bookkeeping.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS import_progress (
    source TEXT PRIMARY KEY,
    next_offset INTEGER NOT NULL
);";

const PAGE: i64 = 200;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rows written in this run.
    pub copied: i64,
    /// Where this run started (non-zero when it resumed).
    pub resumed_at: i64,
    /// How many the source has.
    pub total: i64,
}

/// Copies all products from the monolith at `from` into `db`.
pub async fn import(db: &Db, from: &str) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .build()?;
    let base = from.trim_end_matches('/').to_string();
    let source = base.clone();
    let start: i64 = db
        .call(move |c| {
            Ok(c.query_row(
                "SELECT next_offset FROM import_progress WHERE source = ?1",
                [&source],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
        })
        .await?;
    let mut offset = start;
    let mut copied = 0;
    loop {
        let url = format!("{base}/api/products?limit={PAGE}&offset={offset}");
        let page: Page<Product> = fetch(&client, &url).await?;
        let n = page.items.len() as i64;
        let done = n < PAGE || offset + n >= page.total;
        let next = if done { 0 } else { offset + n };
        let source = base.clone();
        db.call(move |c| {
            let tx = c.transaction()?;
            shop_catalog::store::upsert(&tx, &page.items)?;
            tx.execute(
                "INSERT INTO import_progress (source, next_offset) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET next_offset = excluded.next_offset",
                params![source, next],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
        .with_context(|| format!("cannot save the page at offset {offset}"))?;
        copied += n;
        tracing::info!(offset, rows = n, total = page.total, "imported a page");
        if done {
            return Ok(Report {
                copied,
                resumed_at: start,
                total: page.total,
            });
        }
        offset = next;
    }
}

/// GETs `url` as JSON, three attempts for transient failures.
async fn fetch<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match client.get(url).send().await {
            Ok(resp) if resp.status().is_success() => {
                return resp
                    .json()
                    .await
                    .with_context(|| format!("{url}: unexpected body"))
            }
            Ok(resp) if resp.status().is_client_error() => {
                anyhow::bail!("{url}: answered {}", resp.status())
            }
            Ok(resp) => last = Some(anyhow::anyhow!("{url}: answered {}", resp.status())),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("GET {url}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{url}: no attempt made")))
}
