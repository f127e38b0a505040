//! The JSON on the wire. Field order here is the field order in every answer, which is what
//! makes the monolith and an extracted service answer byte for byte alike.

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// Most items one page may hold.
pub const MAX_LIMIT: i64 = 500;
/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest quantity one reservation or order line may ask for.
pub const MAX_QTY: i64 = 1_000_000;

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stable id, the same in every owner's database.
    pub id: i64,
    /// Stock keeping unit: the key inventory uses.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Price in the currency's minor unit.
    pub price_cents: i64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

/// A page of a listing: `{"items": [...], "total": N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items there are in all.
    pub total: i64,
}

/// `?limit=&offset=` of a listing.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Paging {
    /// Page size, 1..=[`MAX_LIMIT`]; default [`DEFAULT_LIMIT`].
    pub limit: Option<i64>,
    /// Items to skip, 0 or more.
    pub offset: Option<i64>,
}

impl Paging {
    /// `(limit, offset)` checked and defaulted.
    pub fn resolve(self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = self.offset.unwrap_or(0);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        if offset < 0 {
            return Err(ApiError::invalid("offset must not be negative"));
        }
        Ok((limit, offset))
    }
}

/// Body of `POST /api/products` and `PUT /api/products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductInput {
    /// Stock keeping unit, 1-64 characters.
    pub sku: String,
    /// Display name, 1-200 characters.
    pub name: String,
    /// Free text; empty when absent.
    #[serde(default)]
    pub description: String,
    /// Price in minor units, 0 or more.
    pub price_cents: i64,
    /// Three upper-case letters; `USD` when absent.
    #[serde(default = "usd")]
    pub currency: String,
}

fn usd() -> String {
    "USD".to_string()
}

impl ProductInput {
    /// Checks every field; the first problem is the error.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.sku.trim().is_empty() || self.sku.len() > 64 {
            return Err(ApiError::invalid("sku must be 1 to 64 characters"));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(ApiError::invalid("name must be 1 to 200 characters"));
        }
        if self.description.len() > 4000 {
            return Err(ApiError::invalid("description must be at most 4000 bytes"));
        }
        if self.price_cents < 0 {
            return Err(ApiError::invalid("price_cents must not be negative"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ApiError::invalid(
                "currency must be three upper-case letters",
            ));
        }
        Ok(())
    }
}

/// Stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units that can still be reserved.
    pub available: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

/// Body of `POST /api/inventory/{sku}/reserve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// Units to hold, 1..=[`MAX_QTY`].
    pub qty: i64,
    /// The order the units are for; releasing by it releases them all.
    pub order_ref: String,
}

impl ReserveRequest {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_qty(self.qty)?;
        check_order_ref(&self.order_ref)
    }
}

/// An order reference must be 1 to 100 bytes.
pub fn check_order_ref(order_ref: &str) -> Result<(), ApiError> {
    if order_ref.is_empty() || order_ref.len() > 100 {
        return Err(ApiError::invalid("order_ref must be 1 to 100 characters"));
    }
    Ok(())
}

/// A quantity must be positive and bounded.
pub fn check_qty(qty: i64) -> Result<(), ApiError> {
    if qty <= 0 {
        return Err(ApiError::invalid("qty must be positive"));
    }
    if qty > MAX_QTY {
        return Err(ApiError::invalid(format!("qty must be at most {MAX_QTY}")));
    }
    Ok(())
}

/// Units held for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Id in the owner's database.
    pub reservation_id: i64,
    /// The SKU held.
    pub sku: String,
    /// Units held.
    pub qty: i64,
}

/// Answer to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// Reservations released by this call (0 when they already were).
    pub released: i64,
}

/// Body of `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Who orders.
    pub customer_id: i64,
    /// At least one line.
    pub items: Vec<OrderItem>,
}

/// One line of an order request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// The product.
    pub product_id: i64,
    /// Units, positive.
    pub qty: i64,
}

impl OrderRequest {
    /// Most lines one order may have.
    pub const MAX_LINES: usize = 100;

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.customer_id <= 0 {
            return Err(ApiError::invalid("customer_id must be positive"));
        }
        if self.items.is_empty() {
            return Err(ApiError::invalid("items must not be empty"));
        }
        if self.items.len() > Self::MAX_LINES {
            return Err(ApiError::invalid(format!(
                "an order has at most {} items",
                Self::MAX_LINES
            )));
        }
        for item in &self.items {
            check_qty(item.qty)?;
        }
        Ok(())
    }
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Id in the monolith's database.
    pub id: i64,
    /// The reference its reservations carry.
    pub order_ref: String,
    /// Who ordered.
    pub customer_id: i64,
    /// What was ordered, at the prices of the time.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines.
    pub total_cents: i64,
    /// Currency of every line.
    pub currency: String,
    /// When, RFC 3339 UTC.
    pub created_at: String,
}

/// One line of a placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub product_id: i64,
    /// Its SKU.
    pub sku: String,
    /// Its name at the time.
    pub name: String,
    /// Units.
    pub qty: i64,
    /// Price of one unit at the time.
    pub unit_price_cents: i64,
    /// `qty * unit_price_cents`.
    pub line_total_cents: i64,
    /// The reservation holding the units, in the inventory owner's database.
    pub reservation_id: i64,
}

/// `{"error": "..."}`: every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// Now, as RFC 3339 UTC with seconds (what `updated_at` and `created_at` hold).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn product_serializes_in_field_order() {
        let p = Product {
            id: 1,
            sku: "SKU-1".into(),
            name: "n".into(),
            description: "d".into(),
            price_cents: 5,
            currency: "USD".into(),
            updated_at: "2024-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"id":1,"sku":"SKU-1","name":"n","description":"d","price_cents":5,"currency":"USD","updated_at":"2024-01-01T00:00:00Z"}"#
        );
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn paging_bounds() {
        assert_eq!(Paging::default().resolve().unwrap(), (50, 0));
        let bad = |limit, offset| Paging { limit, offset }.resolve().is_err();
        assert!(bad(Some(0), None));
        assert!(bad(Some(MAX_LIMIT + 1), None));
        assert!(bad(None, Some(-1)));
    }

    #[test]
    fn validation_rejects_bad_input() {
        assert!(ReserveRequest {
            qty: -1,
            order_ref: "o".into()
        }
        .validate()
        .is_err());
        assert!(ReserveRequest {
            qty: 0,
            order_ref: "o".into()
        }
        .validate()
        .is_err());
        assert!(ReserveRequest {
            qty: 1,
            order_ref: "".into()
        }
        .validate()
        .is_err());
        assert!(ReserveRequest {
            qty: 1,
            order_ref: "o".into()
        }
        .validate()
        .is_ok());
        let order = |qty| OrderRequest {
            customer_id: 1,
            items: vec![OrderItem { product_id: 1, qty }],
        };
        assert!(order(-3).validate().is_err());
        assert!(order(2).validate().is_ok());
        let input: ProductInput =
            serde_json::from_str(r#"{"sku":"A","name":"B","price_cents":-1}"#).unwrap();
        assert!(input.validate().is_err());
        let input: ProductInput =
            serde_json::from_str(r#"{"sku":"A","name":"B","price_cents":1}"#).unwrap();
        assert!(input.validate().is_ok());
        assert_eq!(input.currency, "USD");
    }
}
