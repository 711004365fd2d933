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

/// A sampled span whose response has not begun: if the request is dropped before (the client
/// gone while the upstream is awaited), it is reported as Envoy's is then — no status
/// (`http.status_code` 0, `error`), flag `DC` — with the request's tags. Disarmed once the
/// response is under way.
pub(crate) struct Unanswered {
    /// The span as started (its name set); None once disarmed.
    pub span: Option<Span>,
    /// Its tracer.
    pub tracer: Arc<Tracer>,
    /// The request as it came (the new request id in).
    pub headers: http::HeaderMap,
    /// Its path.
    pub path: String,
    /// Its Host.
    pub authority: String,
    /// Its method.
    pub method: http::Method,
    /// Its protocol.
    pub version: http::Version,
    /// The client's address.
    pub peer: std::net::IpAddr,
    /// The cluster the route chose, once known.
    pub cluster: Option<(String, String)>,
    /// The route's custom tags.
    pub route_tags: Arc<[crate::config::CustomTag]>,
    /// The request's dynamic metadata, once the HTTP filters ran.
    pub metadata: Option<crate::http::filters::metadata::DynamicMetadata>,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        let seen = super::tags::Seen {
            headers: &self.headers,
            path: &self.path,
            authority: &self.authority,
        };
        let p = &self.tracer.provider;
        super::tags::downstream_request(
            &mut span,
            &seen,
            &self.method,
            self.version,
            self.peer,
            p.max_path_tag_length,
        );
        span.tag("request_size", "0");
        span.tag("response_size", "0");
        let answered = super::tags::Answered {
            status: None,
            flags: crate::http::local_reply::Flag::DownstreamTermination.as_str(),
            cluster: self.cluster.take(),
        };
        let tags: [&[crate::config::CustomTag]; 2] = [&p.custom_tags, &self.route_tags];
        let md = self.metadata.as_ref();
        super::tags::common(&mut span, &answered, &tags, &seen, md);
        self.tracer.report(&span);
    }
}
