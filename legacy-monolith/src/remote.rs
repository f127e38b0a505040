//! The remote implementations of [`Catalog`] and [`Inventory`]: HTTP clients for the
//! extracted services.
//!
//! Every call has a connect timeout and a request timeout (the upstream's `connect_timeout`
//! and `timeout` in `routes.yaml`), carries the caller's `x-request-id`, and goes through a
//! circuit breaker. A failed call is retried a bounded number of times, and only because
//! every call made here is idempotent: reads, releases (harmless to repeat), and reservations,
//! which carry an idempotency key.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shop_api::http::REQUEST_ID;
use shop_api::wire::{ErrorBody, Page, Product, Released, Reservation, ReserveRequest};
use shop_api::RequestId;
use strangler::config::Upstream;

use crate::breaker::{BreakerSettings, CircuitBreaker};
use crate::inventory::IDEMPOTENCY_KEY;
use crate::ports::{from_status, Catalog, Hold, Inventory, PortError};

/// How a remote client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// Base URL of the service.
    pub base: String,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole call.
    pub timeout: Duration,
    /// Extra attempts after a failure that may be transient (idempotent calls only).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// The circuit breaker's tuning.
    pub breaker: BreakerSettings,
}

impl RemoteSettings {
    /// Settings for a `routes.yaml` upstream: its URL and timeouts, two retries.
    pub fn for_upstream(up: &Upstream) -> Self {
        Self::new(&up.url, up.connect_timeout, up.timeout)
    }

    /// Settings for `base` with these timeouts and the default retries and breaker.
    pub fn new(base: &str, connect_timeout: Duration, timeout: Duration) -> Self {
        RemoteSettings {
            base: base.to_string(),
            connect_timeout,
            timeout,
            retries: 2,
            backoff: Duration::from_millis(50),
            breaker: BreakerSettings::default(),
        }
    }
}

/// One extracted service: a pooled client, its base URL and its breaker.
#[derive(Debug)]
pub struct RemoteService {
    name: &'static str,
    base: Url,
    client: reqwest::Client,
    settings: RemoteSettings,
    breaker: CircuitBreaker,
}

impl RemoteService {
    /// A client for the service `name` (used in messages).
    pub fn new(name: &'static str, settings: RemoteSettings) -> Result<Self, PortError> {
        let mut base = Url::parse(&settings.base)
            .map_err(|e| PortError::Invalid(format!("bad URL {}: {e}", settings.base)))?;
        // Treat the base as a directory, so segments are appended below its path.
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PortError::Invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(RemoteService {
            name,
            base,
            client,
            breaker: CircuitBreaker::new(settings.breaker),
            settings,
        })
    }

    /// `remote URL`: the owner the ports report for this service.
    pub fn owner(&self) -> String {
        format!("remote {}", self.settings.base)
    }

    /// The breaker, for tests and status.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Calls the service and decodes a 2xx answer as `T`; error answers are classified by
    /// status, failures to get one are [`PortError::Unavailable`]. A failure is retried up to
    /// [`RemoteSettings::retries`] times, so only idempotent requests may go through here.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + Sync)>,
        headers: &[(&str, &str)],
        rid: &RequestId,
    ) -> Result<T, PortError> {
        let attempts = 1 + self.settings.retries;
        let mut last = PortError::Unavailable(format!("{} not called", self.name));
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.settings.backoff * 2u32.pow(attempt - 1)).await;
            }
            if !self.breaker.allow() {
                return Err(PortError::Unavailable(format!(
                    "{} is failing; circuit open, not calling it for now",
                    self.name
                )));
            }
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .header(REQUEST_ID, &rid.0);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            match self.attempt(req).await {
                Ok(value) => {
                    self.breaker.success();
                    return Ok(value);
                }
                Err(Outcome::Answered(e)) => {
                    // The service is up and said no: not a failure of the service.
                    self.breaker.success();
                    return Err(e);
                }
                Err(Outcome::Failed(why)) => {
                    self.breaker.failure();
                    tracing::warn!(service = self.name, %url, attempt = attempt + 1, "call failed: {why}");
                    last = PortError::Unavailable(format!("{}: {why}", self.name));
                }
            }
        }
        Err(last)
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, Outcome> {
        let resp = req
            .send()
            .await
            .map_err(|e| Outcome::Failed(describe(&e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Outcome::Failed(describe(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Outcome::Failed(format!(
                    "answered {status} with a body that is not the expected JSON: {e}"
                ))
            });
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("answered {status}"));
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Outcome::Failed(format!("answered {status}: {message}")));
        }
        Err(Outcome::Answered(from_status(status.as_u16(), message)))
    }
}

enum Outcome {
    /// The service answered with an error of its own (4xx).
    Answered(PortError),
    /// No usable answer: connect error, timeout, 5xx.
    Failed(String),
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

const NO_BODY: Option<&()> = None;

/// The remote [`Catalog`]: `catalog-service`.
#[derive(Debug)]
pub struct RemoteCatalog(pub RemoteService);

impl RemoteCatalog {
    /// A client for the catalog service.
    pub fn new(settings: RemoteSettings) -> Result<Self, PortError> {
        Ok(RemoteCatalog(RemoteService::new("catalog", settings)?))
    }
}

#[async_trait]
impl Catalog for RemoteCatalog {
    fn owner(&self) -> String {
        self.0.owner()
    }

    async fn product(&self, id: i64, rid: &RequestId) -> Result<Product, PortError> {
        let url = self.0.url(&["api", "products", &id.to_string()], &[]);
        self.0.call(Method::GET, url, NO_BODY, &[], rid).await
    }

    async fn list(
        &self,
        limit: i64,
        offset: i64,
        rid: &RequestId,
    ) -> Result<Page<Product>, PortError> {
        let query = [("limit", limit.to_string()), ("offset", offset.to_string())];
        let url = self.0.url(&["api", "products"], &query);
        self.0.call(Method::GET, url, NO_BODY, &[], rid).await
    }
}

/// The remote [`Inventory`]: `inventory-service`.
#[derive(Debug)]
pub struct RemoteInventory(pub RemoteService);

impl RemoteInventory {
    /// A client for the inventory service.
    pub fn new(settings: RemoteSettings) -> Result<Self, PortError> {
        Ok(RemoteInventory(RemoteService::new("inventory", settings)?))
    }
}

#[async_trait]
impl Inventory for RemoteInventory {
    fn owner(&self) -> String {
        self.0.owner()
    }

    async fn reserve(&self, hold: Hold<'_>, rid: &RequestId) -> Result<Reservation, PortError> {
        let url = self.0.url(&["api", "inventory", hold.sku, "reserve"], &[]);
        let body = ReserveRequest {
            qty: hold.qty,
            order_ref: hold.order_ref.to_string(),
        };
        // Idempotent because of the key: a retry after a lost answer returns the reservation
        // the first attempt made instead of holding the stock twice.
        self.0
            .call(
                Method::POST,
                url,
                Some(&body),
                &[(IDEMPOTENCY_KEY, hold.idempotency_key)],
                rid,
            )
            .await
    }

    async fn release_order(&self, order_ref: &str, rid: &RequestId) -> Result<i64, PortError> {
        let url = self
            .0
            .url(&["api", "inventory", "orders", order_ref, "release"], &[]);
        let released: Released = self.0.call(Method::POST, url, NO_BODY, &[], rid).await?;
        Ok(released.released)
    }
}
