//! The inventory's HTTP API, `/api/inventory`, over an [`InventoryStore`].

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use shop_api::error::parse_id;
use shop_api::wire::{Page, Paging, Released, Reservation, ReserveRequest, StockLevel};
use shop_api::{ApiError, ApiJson, ApiQuery};

use crate::InventoryStore;

/// The header that makes a reservation request safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `/api/inventory` and below.
pub fn routes(store: InventoryStore) -> Router {
    Router::new()
        .route("/api/inventory", get(list))
        .route("/api/inventory/{sku}", get(read))
        .route("/api/inventory/{sku}/reserve", post(reserve))
        .route("/api/inventory/reservations/{id}/release", post(release))
        .route(
            "/api/inventory/orders/{order_ref}/release",
            post(release_order),
        )
        .with_state(store)
}

async fn list(
    State(s): State<InventoryStore>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<axum::Json<Page<StockLevel>>, ApiError> {
    let (limit, offset) = paging.resolve()?;
    Ok(axum::Json(s.list(limit, offset).await?))
}

async fn read(
    State(s): State<InventoryStore>,
    Path(sku): Path<String>,
) -> Result<axum::Json<StockLevel>, ApiError> {
    Ok(axum::Json(s.get(sku).await?))
}

async fn reserve(
    State(s): State<InventoryStore>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<axum::Json<Reservation>, ApiError> {
    let key = idempotency_key(&headers)?;
    Ok(axum::Json(s.reserve(sku, req, key).await?))
}

/// The request's [`IDEMPOTENCY_KEY`], if it has one; 400 when it is empty, too long or not
/// visible ASCII.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 200 => Ok(Some(k.to_string())),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key must be 1 to 200 visible ASCII characters",
        )),
    }
}

async fn release(
    State(s): State<InventoryStore>,
    Path(id): Path<String>,
) -> Result<axum::Json<Released>, ApiError> {
    let id = parse_id(&id, |t| ApiError::reservation_not_found(t))?;
    Ok(axum::Json(s.release(id).await?))
}

async fn release_order(
    State(s): State<InventoryStore>,
    Path(order_ref): Path<String>,
) -> Result<axum::Json<Released>, ApiError> {
    Ok(axum::Json(s.release_order(order_ref).await?))
}
