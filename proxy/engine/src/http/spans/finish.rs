//! The response body of a sampled request: counts the bytes sent and reads a gRPC status from
//! the trailers; when the stream ends (or is dropped) the connection manager's span gets its
//! sizes, is finished and goes to the reporter.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{Span, Tracer};
use crate::http::{request_body_tap::BodyTally, Body, BodyError};

/// A span waiting for its response to end.
pub(crate) struct Pending {
    /// The span, its tags but the sizes set.
    pub span: Span,
    /// The request body's tally (`request_size`).
    pub request: Option<Arc<BodyTally>>,
    /// Read `grpc-status` from the trailers (a gRPC request whose response head had none).
    pub grpc_trailers: bool,
    /// Where it is reported.
    pub tracer: Arc<Tracer>,
}

/// The traced response body.
pub(crate) struct TracedBody {
    inner: Body,
    sent: u64,
    pending: Option<Box<Pending>>,
}

impl TracedBody {
    /// Wraps `inner`.
    pub(crate) fn wrap(inner: Body, pending: Pending) -> Body {
        Self {
            inner,
            sent: 0,
            pending: Some(Box::new(pending)),
        }
        .boxed()
    }

    fn finish(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let Pending {
            mut span,
            request,
            tracer,
            ..
        } = *p;
        span.tag("request_size", request.map_or(0, |t| t.bytes()).to_string());
        span.tag("response_size", self.sent.to_string());
        tracer.report(&span);
    }
}

impl HttpBody for TracedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.sent += d.len() as u64;
                }
                if let (Some(t), Some(p)) = (f.trailers_ref(), this.pending.as_mut()) {
                    if p.grpc_trailers {
                        super::tags::grpc_response(&mut p.span, t);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_)) | None) => this.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
