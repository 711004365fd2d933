//! The router's part of a traced request. Each upstream attempt notes the request headers it
//! sent (the Host it set, the route's header changes), which the connection manager's span
//! reads for its tags when the request ends, as Envoy's tags read the downstream headers its
//! router changed in place. With `spawn_upstream_span` each attempt also gets its own client
//! span (Envoy's `UpstreamRequest` child span, `router <cluster> egress`, `retry.count` on a
//! retry): its context is what goes upstream, and it is finished with the upstream's answer
//! when that response is dropped or its body ends (`finalizeUpstreamSpan`).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use http::{HeaderMap, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{tags, Span, Tracer};
use crate::{
    config::CustomTag,
    http::{local_reply::Flag, Body, BodyError},
};

/// What the attempts of one traced request share.
#[derive(Debug)]
pub(crate) struct UpstreamTrace {
    /// The last attempt's request headers and path (a sampled span's tags read them).
    seen: Option<Mutex<Option<(HeaderMap, String)>>>,
    /// The connection manager's span (as started): its context goes on each attempt's
    /// request, or is the parent of each attempt's own span.
    parent: Span,
    tracer: Arc<Tracer>,
    /// With upstream spans (`spawn_upstream_span`): how attempts' spans are made.
    children: Option<Children>,
}

/// How attempts' spans are made.
#[derive(Debug)]
struct Children {
    /// The cluster's name and observability name.
    cluster: (String, String),
    /// The route's custom tags (the HCM's are the tracer's).
    route_tags: Arc<[CustomTag]>,
    /// Attempts started (`retry.count`).
    started: AtomicU32,
}

impl UpstreamTrace {
    /// For the connection manager's span `parent`: `record` the attempts' requests (it is
    /// sampled); with the tracer's upstream spans, each attempt on `cluster` gets one.
    pub(crate) fn new(
        parent: &Span,
        record: bool,
        tracer: &Arc<Tracer>,
        cluster: (String, String),
        route_tags: Arc<[CustomTag]>,
    ) -> Self {
        Self {
            seen: record.then(|| Mutex::new(None)),
            parent: parent.clone(),
            tracer: tracer.clone(),
            children: tracer.provider.upstream_spans.then(|| Children {
                cluster,
                route_tags,
                started: AtomicU32::new(0),
            }),
        }
    }

    /// An attempt on `host` sends `headers` to `path`: noted, and its context set on
    /// `headers` after the route's header changes (Envoy's router sets it there) — with
    /// upstream spans its own span's, started here (the returned guard finishes it).
    pub(crate) fn attempt(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
        path: &str,
        host: SocketAddr,
    ) -> Option<Arc<ChildSpan>> {
        self.inject_own(headers);
        let child = self.children.as_ref().map(|c| {
            let n = c.started.fetch_add(1, Ordering::Relaxed);
            let mut span = self.parent.child(format!("router {} egress", c.cluster.1));
            if n > 0 {
                span.tag("retry.count", n.to_string());
            }
            self.tracer.inject(&span, headers);
            // Until an answer comes, the attempt counts as given up on `host` (a route
            // timeout, a hedge, the client gone).
            let sampled = span.ids.sampled;
            Arc::new(ChildSpan {
                pending: Mutex::new(Some(Pending {
                    span,
                    request: if sampled {
                        headers.clone()
                    } else {
                        HeaderMap::new()
                    },
                    answer: Some(Answer {
                        host,
                        head: None,
                        flag: Flag::None,
                    }),
                    grpc: None,
                    canceled: true,
                })),
                trace: self.clone(),
            })
        });
        if let Some(seen) = &self.seen {
            *seen.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((headers.clone(), path.to_string()));
        }
        child
    }

    /// Without upstream spans, sets the connection manager span's context on `headers`.
    pub(crate) fn inject_own(&self, headers: &mut HeaderMap) {
        if self.children.is_none() {
            self.tracer.inject(&self.parent, headers);
        }
    }

    /// The last attempt's headers and path, if one was sent.
    pub(crate) fn take(&self) -> Option<(HeaderMap, String)> {
        self.seen
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// What an attempt's span waits for.
#[derive(Debug)]
struct Pending {
    span: Span,
    /// The attempt's request headers (its custom tags read them).
    request: HeaderMap,
    /// The upstream's answer.
    answer: Option<Answer>,
    /// The response's `grpc-status` / `grpc-message` headers or trailers.
    grpc: Option<HeaderMap>,
    /// The router gave the attempt up (a retried response, a per-try timeout, the client
    /// gone): `canceled`, as Envoy's reset upstream request. Cleared when the body ends.
    canceled: bool,
}

/// How an attempt ended: on which host, with which protocol and status, or the flag of its
/// failure.
#[derive(Debug, Clone, Copy)]
struct Answer {
    host: SocketAddr,
    head: Option<(Version, u16)>,
    flag: Flag,
}

/// An attempt's client span, finished (and reported when sampled) when the last holder lets
/// it go: the attempt's error, or the upstream response (its body's end).
#[derive(Debug)]
pub(crate) struct ChildSpan {
    pending: Mutex<Option<Pending>>,
    /// The request's attempts (the tracer, the cluster, the route's tags).
    trace: Arc<UpstreamTrace>,
}

impl ChildSpan {
    /// Sets this attempt's context on `h` again (the request replayed on a fresh connection).
    pub(crate) fn inject(&self, h: &mut HeaderMap) {
        let g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g.as_ref() {
            self.trace.tracer.inject(&p.span, h);
        }
    }

    /// The upstream on `host` answered with `version` and `status`.
    pub(crate) fn answered(&self, host: SocketAddr, version: Version, status: u16, h: &HeaderMap) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g.as_mut() {
            p.answer = Some(Answer {
                host,
                head: Some((version, status)),
                flag: Flag::None,
            });
            // Given up unless its body is read to the end.
            p.canceled = true;
            if h.contains_key("grpc-status") {
                p.grpc = Some(h.clone());
            }
        }
    }

    /// The attempt on `host` failed with `flag` (a timeout: the router gave it up).
    pub(crate) fn failed(&self, host: SocketAddr, flag: Flag) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g.as_mut() {
            p.answer = Some(Answer {
                host,
                head: None,
                flag,
            });
            // A per-try timeout is the router's reset; a failure is the upstream's.
            p.canceled = flag == Flag::Timeout;
        }
    }

    /// The response's body ended.
    fn ended(&self) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g.as_mut() {
            p.canceled = false;
        }
    }

    /// The response's trailers came.
    pub(crate) fn trailers(&self, t: &HeaderMap) {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g.as_mut().filter(|p| p.grpc.is_none()) {
            if t.contains_key("grpc-status") {
                p.grpc = Some(t.clone());
            }
        }
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        let Some(mut p) = self
            .pending
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        if !p.span.ids.sampled {
            return;
        }
        let children = self.trace.children.as_ref();
        let Answer { host, head, flag } = p.answer.unwrap_or(Answer {
            host: SocketAddr::from(([0, 0, 0, 0], 0)),
            head: None,
            flag: Flag::None,
        });
        if let Some((version, _)) = head {
            p.span.tag("http.protocol", tags::protocol(version));
        }
        if host.port() != 0 {
            p.span.tag("upstream_address", host.to_string());
            p.span.tag("peer.address", host.to_string());
        }
        let answered = tags::Answered {
            status: head.map(|(_, s)| s),
            flags: flag.as_str(),
            cluster: children.map(|c| c.cluster.clone()),
        };
        let seen = tags::Seen {
            headers: &p.request,
            path: "",
            authority: "",
        };
        // The gRPC status is tagged when the response comes, before the common tags (the
        // OpenTelemetry status takes the last one).
        if let Some(g) = &p.grpc {
            tags::grpc_response(&mut p.span, g);
        }
        let provider = &self.trace.tracer.provider;
        let route: &[CustomTag] = children.map_or(&[], |c| &c.route_tags);
        tags::common(
            &mut p.span,
            &answered,
            &[&provider.custom_tags, route],
            &seen,
            None,
        );
        if p.canceled {
            p.span.tag("canceled", "true");
        }
        self.trace.tracer.report(&p.span);
    }
}

/// The final upstream response's body: its trailers go to the attempt's span, which is let go
/// when the body ends.
pub(crate) struct ChildBody {
    inner: Body,
    child: Option<Arc<ChildSpan>>,
}

impl ChildBody {
    /// Wraps `inner` (a body already at its end, which hyper never polls, ends the
    /// attempt at once).
    pub(crate) fn wrap(inner: Body, child: Arc<ChildSpan>) -> Body {
        if inner.is_end_stream() {
            child.ended();
            return inner;
        }
        Self {
            inner,
            child: Some(child),
        }
        .boxed()
    }
}

impl HttpBody for ChildBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(t), Some(c)) = (f.trailers_ref(), &this.child) {
                    c.trailers(t);
                }
                if this.inner.is_end_stream() {
                    if let Some(c) = this.child.take() {
                        c.ended();
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(c) = this.child.take() {
                    c.ended();
                }
            }
            Poll::Ready(Some(Err(_))) => this.child = None,
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
