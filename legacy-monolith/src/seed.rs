//! First-start seeding: a few hundred products with stock, so the shop has something to sell.

use rusqlite::{params, OptionalExtension};
use shop_api::wire::now_rfc3339;
use shop_api::{ApiError, Db};

const ADJECTIVES: &[&str] = &[
    "Sturdy",
    "Compact",
    "Vintage",
    "Ergonomic",
    "Rustic",
    "Sleek",
    "Handmade",
    "Foldable",
    "Waterproof",
    "Lightweight",
    "Classic",
    "Modular",
];
const NOUNS: &[&str] = &[
    "Lamp",
    "Chair",
    "Kettle",
    "Backpack",
    "Notebook",
    "Mug",
    "Desk",
    "Umbrella",
    "Blanket",
    "Headphones",
    "Planter",
    "Clock",
    "Toolbox",
    "Skillet",
    "Bicycle Bell",
    "Teapot",
    "Bookend",
    "Candle",
    "Scarf",
    "Wallet",
    "Pen",
    "Rug",
    "Mirror",
    "Basket",
    "Lantern",
];

/// Seeds `count` products and their stock unless the database was seeded before (a shop whose
/// products were all deleted stays empty). Returns how many products it created.
pub fn seed(db: &Db, count: usize) -> Result<usize, ApiError> {
    db.call_blocking(|c| {
        let tx = c.transaction()?;
        let done: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'seeded_at'", [], |r| r.get(0))
            .optional()?;
        if done.is_some() {
            return Ok(0);
        }
        let now = now_rfc3339();
        for i in 1..=count {
            let adjective = ADJECTIVES[i % ADJECTIVES.len()];
            let noun = NOUNS[(i / ADJECTIVES.len()) % NOUNS.len()];
            let sku = format!("SKU-{i:05}");
            let price = 199 + (i as i64 * 7919) % 20_000;
            tx.execute(
                "INSERT INTO products (id, sku, name, description, price_cents, currency, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'USD', ?6)",
                params![
                    i as i64,
                    sku,
                    format!("{adjective} {noun}"),
                    format!("A {} {} from the sample shop (#{i}).", adjective.to_lowercase(), noun.to_lowercase()),
                    price,
                    now
                ],
            )?;
            tx.execute(
                "INSERT INTO stock (sku, available, reserved) VALUES (?1, ?2, 0)",
                params![sku, 1000 + (i as i64 * 37) % 500],
            )?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('seeded_at', ?1)",
            [&now],
        )?;
        tx.commit()?;
        Ok(count)
    })
}
