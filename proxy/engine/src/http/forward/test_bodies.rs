//! Request bodies for the unit tests of the body wrappers (`retained_body`, `shadow_body`).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;

use crate::http::{Body, BodyError};

/// A body fed frame by frame through the returned sender; it ends when the sender goes.
/// `exact`: the length it says it has (a `content-length`), whether or not its end comes.
pub(super) fn fed(exact: Option<u64>) -> (mpsc::Sender<Result<Frame<Bytes>, BodyError>>, Body) {
    let (tx, mut rx) = mpsc::channel(4);
    let frames = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (
        tx,
        Said {
            inner: frames,
            exact,
        }
        .boxed(),
    )
}

/// `inner` with the size hint `exact` says.
struct Said<B> {
    inner: B,
    exact: Option<u64>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Said<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn size_hint(&self) -> SizeHint {
        self.exact
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
