//! A route's `max_body_bytes`: the request body is counted as it streams to the upstream.
//!
//! A `Content-Length` over the limit is refused before anything is forwarded. A body without
//! one (chunked, or an HTTP/2 stream) is counted frame by frame; at the first byte over the
//! limit the body stops yielding and [`Exceeded`] fires, and the forwarding path answers 413
//! and drops the upstream exchange, so the upstream never sees a complete request. (The body
//! cannot fail with an error of its own: the client's body type carries `hyper::Error`,
//! which only hyper can make; stalling and dropping the exchange has the same effect.)

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;

use crate::upstream::Body;

/// Fires once the body went over its limit.
#[derive(Debug, Clone, Default)]
pub struct Exceeded(Arc<Notify>);

impl Exceeded {
    /// Resolves when the limit is passed (never, if it is not).
    pub async fn wait(&self) {
        self.0.notified().await;
    }
}

/// A request body that stops at `limit` bytes and says so through [`Exceeded`].
pub struct LimitedBody {
    inner: Body,
    limit: u64,
    seen: u64,
    over: bool,
    exceeded: Exceeded,
}

impl LimitedBody {
    /// Wraps `inner`; the returned [`Exceeded`] fires when it passes `limit` bytes.
    pub fn new(inner: Body, limit: u64) -> (LimitedBody, Exceeded) {
        let exceeded = Exceeded::default();
        let body = LimitedBody {
            inner,
            limit,
            seen: 0,
            over: false,
            exceeded: exceeded.clone(),
        };
        (body, exceeded)
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::BoxError>>> {
        if self.over {
            return Poll::Pending;
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            self.seen = self.seen.saturating_add(data.len() as u64);
            if self.seen > self.limit {
                self.over = true;
                // `notify_one` stores a permit, so a waiter that starts later still wakes.
                self.exceeded.0.notify_one();
                return Poll::Pending;
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        !self.over && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(sizes: &[usize]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, crate::upstream::BoxError>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn under_the_limit_passes_whole() {
        let (body, _exceeded) = LimitedBody::new(chunks(&[4, 4]), 8);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 8);
    }

    #[tokio::test]
    async fn over_the_limit_stalls_and_fires() {
        let (mut body, exceeded) = LimitedBody::new(chunks(&[4, 4, 4]), 8);
        let mut passed = 0;
        let stalled = tokio::select! {
            _ = async {
                while let Some(Ok(f)) = body.frame().await {
                    passed += f.data_ref().map_or(0, |d| d.len());
                }
            } => false,
            _ = exceeded.wait() => true,
        };
        assert!(stalled);
        assert_eq!(passed, 8);
    }
}
