//! A body that streams through untouched while keeping a bounded copy of what passed.
//!
//! The client's request and the fallback's response flow at their own pace; the copy is
//! handed over (through a oneshot channel) only once the body has ended. Past the limit the
//! copy is dropped and only the fact that it overflowed is reported, so memory stays bounded.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::upstream::Body;

/// What the tee saw of a body.
#[derive(Debug)]
pub enum Captured {
    /// The whole body.
    Complete(Bytes),
    /// The body was larger than the limit.
    TooLarge,
}

/// A body that keeps a copy of up to `limit` bytes.
pub struct TeeBody {
    inner: Body,
    copy: Option<BytesMut>,
    limit: usize,
    done: Option<oneshot::Sender<Captured>>,
}

impl TeeBody {
    /// Wraps `inner`; the receiver gets the copy when the body ends, or an error when the
    /// body is dropped before its end (the client went away).
    pub fn new(inner: Body, limit: usize) -> (TeeBody, oneshot::Receiver<Captured>) {
        let (tx, rx) = oneshot::channel();
        let mut tee = TeeBody {
            inner,
            copy: Some(BytesMut::new()),
            limit,
            done: Some(tx),
        };
        // An empty body may never be polled (a GET): it is complete already.
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        (tee, rx)
    }

    fn finish(&mut self) {
        if let Some(tx) = self.done.take() {
            let captured = match self.copy.take() {
                Some(buf) => Captured::Complete(buf.freeze()),
                None => Captured::TooLarge,
            };
            let _ = tx.send(captured);
        }
    }
}

impl hyper::body::Body for TeeBody {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(buf) = &mut this.copy {
                        if buf.len() + data.len() > this.limit {
                            this.copy = None;
                        } else {
                            buf.extend_from_slice(data);
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            // A body that failed is not compared: dropping the sender says so.
            Poll::Ready(Some(Err(_))) => this.done = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
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

    fn body(chunks: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, crate::upstream::BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn copies_what_passes() {
        let (tee, rx) = TeeBody::new(body(&["ab", "cd"]), 10);
        let all = tee.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcd");
        assert!(matches!(rx.await.unwrap(), Captured::Complete(b) if &b[..] == b"abcd"));
    }

    #[tokio::test]
    async fn over_the_limit_streams_but_is_not_kept() {
        let (tee, rx) = TeeBody::new(body(&["abc", "def"]), 4);
        let all = tee.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
        assert!(matches!(rx.await.unwrap(), Captured::TooLarge));
    }

    #[tokio::test]
    async fn dropped_early_reports_nothing() {
        let (tee, rx) = TeeBody::new(body(&["abc"]), 10);
        drop(tee);
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn empty_bodies_are_complete_at_once() {
        let empty = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed();
        let (_tee, rx) = TeeBody::new(empty, 10);
        assert!(matches!(rx.await.unwrap(), Captured::Complete(b) if b.is_empty()));
    }
}
