//! `GET /`: the server-rendered product list. It stays on the monolith through the whole
//! migration and reads products through the [`Catalog`] adapter, so it shows whatever the
//! current owner of the catalog holds.

use axum::extract::State;
use axum::response::Html;
use serde::Deserialize;
use shop_api::wire::{Paging, DEFAULT_LIMIT};
use shop_api::{ApiError, ApiQuery, RequestId};
use strangler::adapter::Adapter;

use crate::ports::{Catalog, PortError};

/// `?offset=` of the page.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    offset: Option<i64>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders one page of products.
pub async fn index(
    State(catalog): State<Adapter<dyn Catalog>>,
    rid: RequestId,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Html<String>, ApiError> {
    let (limit, offset) = Paging {
        limit: Some(DEFAULT_LIMIT),
        offset: q.offset,
    }
    .resolve()?;
    let catalog = catalog.current();
    let page = catalog
        .list(limit, offset, &rid)
        .await
        .map_err(|e| match e {
            PortError::Unavailable(_) => ApiError::unavailable("catalog unavailable"),
            e => ApiError::internal(&e),
        })?;
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Sample shop</title></head>\n<body>\n<h1>Sample shop</h1>\n",
    );
    html.push_str(&format!(
        "<p>{} products; catalog served by {}.</p>\n<table>\n<tr><th>SKU</th><th>Name</th><th>Price</th></tr>\n",
        page.total,
        escape(&catalog.owner())
    ));
    for p in &page.items {
        html.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"/api/products/{}\">{}</a></td><td>{}.{:02} {}</td></tr>\n",
            escape(&p.sku),
            p.id,
            escape(&p.name),
            p.price_cents / 100,
            p.price_cents % 100,
            escape(&p.currency)
        ));
    }
    html.push_str("</table>\n");
    if offset + limit < page.total {
        html.push_str(&format!(
            "<p><a href=\"/?offset={}\">next</a></p>\n",
            offset + limit
        ));
    }
    html.push_str("</body>\n</html>\n");
    Ok(Html(html))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
