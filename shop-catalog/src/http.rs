//! The catalog's HTTP API, `/api/products`, over a [`CatalogStore`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use shop_api::error::parse_id;
use shop_api::wire::{Page, Paging, Product, ProductInput};
use shop_api::{ApiError, ApiJson, ApiQuery};

use crate::CatalogStore;

/// `/api/products` and below.
pub fn routes(store: CatalogStore) -> Router {
    Router::new()
        .route("/api/products", get(list).post(create))
        .route("/api/products/{id}", get(read).put(update).delete(remove))
        .with_state(store)
}

async fn list(
    State(s): State<CatalogStore>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<axum::Json<Page<Product>>, ApiError> {
    let (limit, offset) = paging.resolve()?;
    Ok(axum::Json(s.list(limit, offset).await?))
}

async fn read(
    State(s): State<CatalogStore>,
    Path(id): Path<String>,
) -> Result<axum::Json<Product>, ApiError> {
    let id = parse_id(&id, |t| ApiError::product_not_found(t))?;
    Ok(axum::Json(s.get(id).await?))
}

async fn create(
    State(s): State<CatalogStore>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<(StatusCode, axum::Json<Product>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(s.create(input).await?)))
}

async fn update(
    State(s): State<CatalogStore>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<axum::Json<Product>, ApiError> {
    let id = parse_id(&id, |t| ApiError::product_not_found(t))?;
    Ok(axum::Json(s.update(id, input).await?))
}

async fn remove(
    State(s): State<CatalogStore>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, |t| ApiError::product_not_found(t))?;
    s.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
