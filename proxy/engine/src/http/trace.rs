//! What a client or upstream sees of Envoy 1.40's tracing whatever the tracer (with a provider,
//! `http::spans` adds the spans): the per-request trace decision packed into the
//! `x-request-id` (`ConnectionManagerUtility::mutateTracingRequestHeader` over the UUID request
//! id extension), and the route decorator's `x-envoy-decorator-operation` (Envoy's
//! `traceRequest` and `encodeHeaders`, which run with a null span for every request, sampled or
//! not). [`decide`] reads the request once and allocates only when the id's trace reason
//! changes; [`Decision::apply_request`] / [`Decision::apply_response`] write the headers.

use http::{HeaderMap, HeaderValue};

use crate::{
    config::{RequestIdExtension, Sampling, Tracing},
    route::Route,
};

/// The request header carrying the decorator's operation.
pub const DECORATOR_OPERATION: &str = "x-envoy-decorator-operation";

/// A UUID's length; only such an id carries a trace reason.
const UUID_LEN: usize = 36;
/// Where the reason is packed: the UUID's version character.
const REASON_AT: usize = 14;

/// Why a request is traced, as the UUID extension packs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    NotTraceable,
    Sampling,
    ServiceForced,
    ClientForced,
}

impl Reason {
    fn byte(self) -> u8 {
        match self {
            Reason::NotTraceable => b'4',
            Reason::Sampling => b'9',
            Reason::ServiceForced => b'a',
            Reason::ClientForced => b'b',
        }
    }
}

/// What tracing does to one request and its response.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    /// The request's `x-request-id` with its trace reason rewritten, when that changed it.
    pub new_id: Option<HeaderValue>,
    /// The decorator's operation to send (egress: upstream; ingress: in the response).
    decorator: Option<HeaderValue>,
    /// The listener is OUTBOUND: the decorator goes upstream and an
    /// `x-envoy-decorator-operation` is removed from the response.
    pub egress: bool,
    /// Ingress: the client's `x-envoy-decorator-operation` is removed from the request.
    strip_request_decorator: bool,
    /// The request is traced (Envoy's `Tracing::Decision::traced`): its trace reason, as the
    /// id now carries it, is sampling or forced.
    pub traced: bool,
    /// The span's name, when not its Host: the route decorator's operation, or on ingress a
    /// non-empty `x-envoy-decorator-operation` from the client.
    pub operation: Option<HeaderValue>,
}

/// The decision for a request with `headers` (after sanitation and id generation) that took
/// `route` (None: no route), under the HCM's `tracing` (None: nothing happens). `random` draws
/// the client sampling value (Envoy draws it at random, not from the id).
pub(crate) fn decide(
    tracing: Option<&Tracing>,
    rid: RequestIdExtension,
    route: Option<&Route>,
    headers: &HeaderMap,
    random: impl FnOnce() -> u64,
) -> Decision {
    let Some(tracing) = tracing else {
        return Decision::default();
    };
    let sampling = route
        .and_then(|r| r.tracing.as_ref())
        .map_or(&tracing.sampling, |t| &t.sampling);
    let (new_id, reason) = new_request_id(sampling, rid, headers, random);
    let mut d = Decision {
        new_id,
        traced: reason != Reason::NotTraceable,
        operation: route
            .and_then(|r| r.decorator.as_ref())
            .map(|dec| dec.operation.clone())
            .filter(|op| !op.is_empty()),
        ..Decision::default()
    };
    let decorator = route
        .and_then(|r| r.decorator.as_ref())
        .filter(|dec| dec.propagate)
        .map(|dec| dec.operation.clone());
    d.egress = tracing.egress;
    if tracing.egress {
        d.decorator = decorator;
    } else {
        // An incoming operation (non-empty) overrides the span name, so the route's is not
        // sent back; present at all, it is removed before the request goes on.
        match headers.get(DECORATOR_OPERATION) {
            Some(v) => {
                d.strip_request_decorator = true;
                if v.is_empty() {
                    d.decorator = decorator;
                } else {
                    d.operation = Some(v.clone());
                }
            }
            None => d.decorator = decorator,
        }
    }
    d
}

impl Decision {
    /// On the request as it goes upstream (before the HTTP filters' changes, as Envoy).
    pub(crate) fn apply_request(&self, h: &mut HeaderMap) {
        if let Some(id) = &self.new_id {
            h.insert("x-request-id", id.clone());
        }
        if self.egress {
            if let Some(op) = &self.decorator {
                h.insert(DECORATOR_OPERATION, op.clone());
            }
        } else if self.strip_request_decorator {
            h.remove(DECORATOR_OPERATION);
        }
    }

    /// On every response (proxied or local) of a request that had a decision.
    pub(crate) fn apply_response(&self, h: &mut HeaderMap) {
        if self.egress {
            h.remove(DECORATOR_OPERATION);
        } else if let Some(op) = &self.decorator {
            h.insert(DECORATOR_OPERATION, op.clone());
        }
    }
}

/// `mutateTracingRequestHeader`: the id with its new trace reason (None when unchanged), and
/// that reason (without sampling by the id, every request is traced, as Envoy's).
fn new_request_id(
    s: &Sampling,
    rid: RequestIdExtension,
    headers: &HeaderMap,
    random: impl FnOnce() -> u64,
) -> (Option<HeaderValue>, Reason) {
    if !rid.use_request_id_for_trace_sampling {
        return (None, Reason::Sampling);
    }
    let Some(id) = headers.get("x-request-id").map(HeaderValue::as_bytes) else {
        return (None, Reason::NotTraceable);
    };
    let Some(result) = id_integer(id).map(|v| v % 10_000) else {
        return (None, Reason::NotTraceable);
    };
    let current = if rid.pack_trace_reason {
        reason_of(id)
    } else {
        Reason::NotTraceable
    };
    let mut reason = current;
    if reason == Reason::NotTraceable {
        if headers.contains_key("x-client-trace-id") && s.client.holds(random()) {
            reason = Reason::ClientForced;
        } else if headers.contains_key("x-envoy-force-trace") {
            // Never here: sanitation strips it from every request, none being internal.
            reason = Reason::ServiceForced;
        } else if s.random.holds(result) {
            reason = Reason::Sampling;
        }
    }
    if reason != Reason::NotTraceable && !s.overall.holds(result) {
        reason = Reason::NotTraceable;
    }
    if reason == current || !rid.pack_trace_reason {
        return (None, reason);
    }
    (with_reason(id, reason), reason)
}

/// The trace reason packed in `id` (a 36-character id's 15th character; anything else: none).
fn reason_of(id: &[u8]) -> Reason {
    if id.len() != UUID_LEN {
        return Reason::NotTraceable;
    }
    match id[REASON_AT] {
        b'9' => Reason::Sampling,
        b'a' => Reason::ServiceForced,
        b'b' => Reason::ClientForced,
        _ => Reason::NotTraceable,
    }
}

/// `id` with `reason` packed, or None when it is no 36-character id or nothing changes.
fn with_reason(id: &[u8], reason: Reason) -> Option<HeaderValue> {
    if id.len() != UUID_LEN || id[REASON_AT] == reason.byte() {
        return None;
    }
    let mut buf = [0u8; UUID_LEN];
    buf.copy_from_slice(id);
    buf[REASON_AT] = reason.byte();
    HeaderValue::from_bytes(&buf).ok()
}

/// The UUID extension's `set` on an external request whose id is kept
/// (`preserve_external_request_id` under `use_remote_address`): its trace reason is cleared
/// (the 15th character of a 36-character id becomes `4`, whatever it was).
pub(crate) fn clear_external_reason(rid: RequestIdExtension, h: &mut HeaderMap) {
    if !rid.pack_trace_reason {
        return;
    }
    let new = h
        .get("x-request-id")
        .and_then(|v| with_reason(v.as_bytes(), Reason::NotTraceable));
    if let Some(v) = new {
        h.insert("x-request-id", v);
    }
}

/// `UUIDRequestIDExtension::getInteger`: the id's first 8 characters as base-16 `strtoull`
/// reads them (leading white space, a sign, a `0x` prefix; all 8 must be consumed); None for
/// a shorter id or one that does not parse.
fn id_integer(id: &[u8]) -> Option<u64> {
    super::spans::extract::strtoull16(id.get(..8)?)
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;
