//! The import a service runs to copy its data from the monolith: page by page through the
//! monolith's public API (never its database), each page written with the next offset in one
//! transaction.
//!
//! Resumable: an import that was stopped continues where it stopped. Safe to run twice: rows
//! are upserted, and a finished import starts over from the first page the next time
//! (picking up changes). Rows deleted from the source after an import are not deleted here.

use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;

use crate::wire::Page;
use crate::Db;

/// The import's bookkeeping.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS import_progress (
    source TEXT PRIMARY KEY,
    next_offset INTEGER NOT NULL
);";

const PAGE: i64 = 200;

/// What a service imports, and how.
pub struct Import<T> {
    /// What the rows are, plural (`products`), for messages.
    pub rows: &'static str,
    /// The source's listing, paged with `limit` and `offset` (`/api/products`).
    pub path: &'static str,
    /// Writes one page of rows, inside the page's transaction.
    pub save: fn(&Transaction<'_>, &[T]) -> rusqlite::Result<()>,
    /// Runs before anything is read: an error refuses the import.
    pub check: fn(&Connection) -> anyhow::Result<()>,
}

impl<T> std::fmt::Debug for Import<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("rows", &self.rows)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A [`Import::check`] that allows every import.
pub fn always(_: &Connection) -> anyhow::Result<()> {
    Ok(())
}

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

impl<T: DeserializeOwned + Send + 'static> Import<T> {
    /// Copies every row from the monolith at `from` into `db`.
    pub async fn run(&self, db: &Db, from: &str) -> anyhow::Result<Report> {
        let check = self.check;
        db.call(move |c| Ok(check(c))).await??;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .build()?;
        let base = from.trim_end_matches('/').to_string();
        let start = next_offset(db, base.clone()).await?;
        let mut offset = start;
        let mut copied = 0;
        loop {
            let url = format!("{base}{}?limit={PAGE}&offset={offset}", self.path);
            let page: Page<T> = fetch(&client, &url).await?;
            let n = page.items.len() as i64;
            let total = page.total;
            let done = n < PAGE || offset + n >= total;
            let next = if done { 0 } else { offset + n };
            self.save_page(db, base.clone(), page.items, next)
                .await
                .with_context(|| format!("cannot save the page at offset {offset}"))?;
            copied += n;
            tracing::info!(offset, rows = n, total, "imported a page");
            if done {
                return Ok(Report {
                    copied,
                    resumed_at: start,
                    total,
                });
            }
            offset = next;
        }
    }

    /// Writes `items` and where the next run from `source` starts, in one transaction.
    async fn save_page(
        &self,
        db: &Db,
        source: String,
        items: Vec<T>,
        next: i64,
    ) -> Result<(), crate::ApiError> {
        let save = self.save;
        db.call(move |c| {
            let tx = c.transaction()?;
            save(&tx, &items)?;
            tx.execute(
                "INSERT INTO import_progress (source, next_offset) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET next_offset = excluded.next_offset",
                params![source, next],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// Where the import from `source` resumes (0 for a new or finished one).
async fn next_offset(db: &Db, source: String) -> Result<i64, crate::ApiError> {
    db.call(move |c| {
        Ok(c.query_row(
            "SELECT next_offset FROM import_progress WHERE source = ?1",
            [&source],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
    })
    .await
}

/// GETs `url` as JSON, three attempts for transient failures.
async fn fetch<T: DeserializeOwned>(client: &reqwest::Client, url: &str) -> anyhow::Result<T> {
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
