//! The gRPC-Web filter (`envoy.filters.http.grpc_web`, Istio adds it for a `grpc-web` service
//! port): a browser's gRPC-Web call goes upstream as gRPC, and the gRPC answer comes back as
//! gRPC-Web, as Envoy's `GrpcWebFilter` translates them.
//!
//! Request: a `content-type` of exactly `application/grpc-web`, `application/grpc-web+proto`,
//! `application/grpc-web-text` or `application/grpc-web-text+proto` makes a call: upstream it
//! has `content-type: application/grpc`, `te: trailers`, `grpc-accept-encoding: identity`
//! unless the client sent one, and no `content-length`; a `-text` body is base64 decoded as it
//! streams (invalid base64: 400). Response: `content-type` is `application/grpc-web+proto`
//! (`application/grpc-web-text+proto` when `accept` asked for text), the trailers become a
//! trailers frame at the end of the body (flag `0x80`, `name:value\r\n` lines), and a text
//! answer's frames are base64 encoded one by one. An answer that is neither gRPC nor
//! proto-encoded gRPC-Web (an HTML error page, a local reply) becomes headers only: its body
//! (up to 16 KiB) as `grpc-message`, its HTTP status mapped to `grpc-status`.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
};

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};

use super::AuthzChange;
use crate::http::{access_log::ResponseDetails, local_reply, Body, BodyError};

/// The filter's `@type` (an empty message).
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb";

const GRPC_WEB: &str = "application/grpc-web";
const GRPC_WEB_PROTO: &str = "application/grpc-web+proto";
const GRPC_WEB_TEXT: &str = "application/grpc-web-text";
const GRPC_WEB_TEXT_PROTO: &str = "application/grpc-web-text+proto";

/// The flag of a gRPC-Web trailers frame.
const TRAILERS_FLAG: u8 = 0x80;

/// How much of a non-gRPC answer's body becomes `grpc-message` (Envoy's
/// `MAX_BUFFERED_PLAINTEXT_LENGTH`).
const MAX_MESSAGE: usize = 16_384;

/// The body the client sent could not be decoded: Envoy's 400 and its response code details.
const BAD_BODY: &str = "Bad gRPC-web request, invalid base64 data.";
const NO_ERROR: u8 = 0;
const BAD_SIZE: u8 = 1;
const BAD_DATA: u8 = 2;

/// One gRPC-Web call, as the filter saw its request.
#[derive(Debug, Clone)]
pub struct GrpcWebCall {
    /// The body is base64 (`application/grpc-web-text[+proto]`).
    text_request: bool,
    /// The client asked for a base64 answer (`accept: application/grpc-web-text[+proto]`).
    text_response: bool,
    /// Set by the request body when it is not valid base64 ([`BAD_SIZE`], [`BAD_DATA`]).
    bad_body: Arc<AtomicU8>,
}

/// The filter's decodeHeaders: a gRPC-Web call and the request header changes that make it a
/// gRPC one, or None for any other request (left alone).
pub(super) fn decode(headers: &HeaderMap, changes: &mut Vec<AuthzChange>) -> Option<GrpcWebCall> {
    let ct = headers.get(header::CONTENT_TYPE)?.as_bytes();
    if ![GRPC_WEB, GRPC_WEB_PROTO, GRPC_WEB_TEXT, GRPC_WEB_TEXT_PROTO]
        .iter()
        .any(|t| t.as_bytes() == ct)
    {
        return None;
    }
    let is_text = |v: &[u8]| v == GRPC_WEB_TEXT.as_bytes() || v == GRPC_WEB_TEXT_PROTO.as_bytes();
    let call = GrpcWebCall {
        text_request: is_text(ct),
        text_response: headers
            .get(header::ACCEPT)
            .is_some_and(|a| is_text(a.as_bytes())),
        bad_body: Arc::default(),
    };
    changes.push(AuthzChange::Remove(header::CONTENT_LENGTH));
    changes.push(AuthzChange::Set(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    ));
    changes.push(AuthzChange::Set(
        header::TE,
        HeaderValue::from_static("trailers"),
    ));
    if !headers.contains_key("grpc-accept-encoding") {
        changes.push(AuthzChange::Set(
            header::HeaderName::from_static("grpc-accept-encoding"),
            HeaderValue::from_static("identity"),
        ));
    }
    Some(call)
}

impl GrpcWebCall {
    /// The request body as it goes upstream: a text call's decoded from base64; without a
    /// length either way (the client's `content-length` was taken out, as Envoy's).
    pub fn request_body(&self, body: Body) -> Body {
        http_body_util::BodyExt::boxed(RequestBody {
            inner: body,
            text: self.text_request.then(BytesMut::new),
            bad: self.bad_body.clone(),
            done: false,
        })
    }

    /// Raised (not 0) once the request body turned out not to be valid base64: the forward
    /// path then neither blames the host nor retries.
    pub fn refused_body(&self) -> Arc<AtomicU8> {
        self.bad_body.clone()
    }

    /// The filter's 400 when the request body was not valid base64 (checked once the request
    /// is over: Envoy answers it instead of whatever the upstream did).
    pub fn bad_request(&self) -> Option<Response<Body>> {
        let details = match self.bad_body.load(Ordering::Acquire) {
            NO_ERROR => return None,
            BAD_SIZE => "grpc_base_64_decode_failed_bad_size",
            _ => "grpc_base_64_decode_failed",
        };
        let mut r = local_reply::reply(400, BAD_BODY);
        r.extensions_mut().insert(ResponseDetails::Named(details));
        Some(r)
    }

    /// The filter's encode side: the answer as the gRPC-Web client gets it.
    pub async fn encode(&self, resp: Response<Body>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let end_stream = body.is_end_stream();
        let h = &mut parts.headers;
        let passed_on = is_grpc_response(parts.status, h, end_stream)
            || (parts.status == StatusCode::OK && is_proto_grpc_web(h));
        h.remove(header::CONTENT_LENGTH);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(match self.text_response {
                true => GRPC_WEB_TEXT_PROTO,
                false => GRPC_WEB_PROTO,
            }),
        );
        if end_stream {
            return Response::from_parts(parts, body);
        }
        if !passed_on {
            // A local reply comes as one piece, all of which Envoy takes; an upstream's body
            // is cut at 16 KiB.
            let whole = parts.extensions.get::<local_reply::LocalReply>().is_some();
            let limit = if whole { usize::MAX } else { MAX_MESSAGE };
            let (message, trailers) = match crate::http::body_prefix::read(body, limit).await {
                Ok(read) => read,
                // The answer broke off while held here: Envoy resets the client's stream.
                Err(e) => return Response::from_parts(parts, broken(e)),
            };
            let h = &mut parts.headers;
            if let Ok(v) = HeaderValue::from_bytes(&local_reply::grpc_message(&message)) {
                h.insert("grpc-message", v);
            }
            h.insert(
                "grpc-status",
                HeaderValue::from(local_reply::grpc_status_of(parts.status.as_u16())),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            // The upstream's trailers go on (to an HTTP/2 client), as Envoy's encodeTrailers
            // leaves them.
            let body = match trailers {
                None => local_reply::empty(),
                Some(t) => {
                    let frame: Result<Frame<Bytes>, BodyError> = Ok(Frame::trailers(t));
                    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(
                        futures_util::stream::iter([frame]),
                    ))
                }
            };
            return Response::from_parts(parts, body);
        }
        let body = ResponseBody {
            inner: body,
            text: self.text_response.then(BytesMut::new),
            done: false,
        };
        Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }
}

/// Envoy's `Grpc::Common::isGrpcResponseHeaders`: trailers-only (`grpc-status` on a response
/// without a body), or 200 with a gRPC `content-type` (`application/grpc`, `application/grpc+…`).
fn is_grpc_response(status: StatusCode, h: &HeaderMap, end_stream: bool) -> bool {
    if end_stream {
        return h.contains_key("grpc-status");
    }
    if status != StatusCode::OK {
        return false;
    }
    let ct = h
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    ct.strip_prefix(b"application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+')
}

/// A proto-encoded gRPC-Web `content-type` (`application/grpc-web` or `+proto`, parameters
/// ignored, any case).
fn is_proto_grpc_web(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let media = ct.split(|&b| b == b';').next().unwrap_or_default();
    let media = media.trim_ascii_end();
    media.eq_ignore_ascii_case(GRPC_WEB_PROTO.as_bytes())
        || media.eq_ignore_ascii_case(GRPC_WEB.as_bytes())
}

/// A body that fails at once with `e` (the client's stream is reset).
fn broken(e: BodyError) -> Body {
    let frame: Result<Frame<Bytes>, BodyError> = Err(e);
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        [frame],
    )))
}

/// A gRPC-Web trailers frame: the flag, the length, `name:value\r\n` per trailer.
fn trailers_frame(trailers: &HeaderMap) -> BytesMut {
    let mut lines = BytesMut::new();
    for (n, v) in trailers {
        lines.put_slice(n.as_str().as_bytes());
        lines.put_u8(b':');
        lines.put_slice(v.as_bytes());
        lines.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + lines.len());
    frame.put_u8(TRAILERS_FLAG);
    frame.put_u32(lines.len() as u32);
    frame.put_slice(&lines);
    frame
}

fn base64(data: &[u8]) -> Bytes {
    base64::engine::general_purpose::STANDARD
        .encode(data)
        .into_bytes()
        .into()
}

/// The request body upstream: passed through, or (`text`: the base64 not yet decoded, under 4
/// bytes) decoded in blocks of 4 characters, as Envoy's `decodeData`. No size hint: the
/// request goes without a length.
struct RequestBody {
    inner: Body,
    text: Option<BytesMut>,
    bad: Arc<AtomicU8>,
    done: bool,
}

impl RequestBody {
    fn fail(&mut self, why: u8) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.bad.store(why, Ordering::Release);
        self.done = true;
        Poll::Ready(Some(Err(BAD_BODY.into())))
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
            let Some(pending) = this.text.as_mut() else {
                return Poll::Ready(frame);
            };
            let end = match frame {
                None => true,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => {
                        pending.extend_from_slice(&d);
                        this.inner.is_end_stream()
                    }
                    // Trailers on a gRPC-Web request: passed on (the end of the body); what is
                    // left of the base64 is dropped, as Envoy checks the size only at a data
                    // frame that ends the stream.
                    Err(f) => {
                        pending.clear();
                        this.done = true;
                        return Poll::Ready(Some(Ok(f)));
                    }
                },
            };
            if end {
                this.done = true;
                if pending.is_empty() {
                    return Poll::Ready(None);
                }
                if pending.len() % 4 != 0 {
                    return this.fail(BAD_SIZE);
                }
            } else if pending.len() < 4 {
                continue;
            }
            let whole = pending.len() / 4 * 4;
            let chunk = pending.split_to(whole);
            match base64::engine::general_purpose::STANDARD.decode(&chunk) {
                Ok(d) if !d.is_empty() => return Poll::Ready(Some(Ok(Frame::data(d.into())))),
                _ => return this.fail(BAD_DATA),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && self.text.as_ref().is_none_or(|p| p.is_empty()))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The answer to the client: data passed on (`text`: cut into gRPC frames, each base64
/// encoded; what is not yet a whole frame), the trailers as a trailers frame at the end.
struct ResponseBody {
    inner: Body,
    text: Option<BytesMut>,
    done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(f)) => f,
            };
            let data = match frame.into_data() {
                Ok(d) => d,
                Err(f) => {
                    this.done = true;
                    let Ok(trailers) = f.into_trailers() else {
                        continue;
                    };
                    let frame = trailers_frame(&trailers);
                    let out = match this.text {
                        Some(_) => base64(&frame),
                        None => frame.freeze(),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            };
            let Some(pending) = this.text.as_mut() else {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            };
            pending.extend_from_slice(&data);
            let mut out = BytesMut::new();
            while pending.len() >= 5 {
                let len = u64::from((&pending[1..5]).get_u32()) + 5;
                if (pending.len() as u64) < len {
                    break;
                }
                let frame = pending.split_to(len as usize);
                out.extend_from_slice(&base64(&frame));
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn call(ct: &str, accept: Option<&str>) -> (Option<GrpcWebCall>, Vec<AuthzChange>) {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        if let Some(a) = accept {
            h.insert(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("7"));
        let mut changes = Vec::new();
        (decode(&h, &mut changes), changes)
    }

    fn run(b: Body) -> Vec<Frame<Bytes>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut b = b;
            let mut out = Vec::new();
            while let Some(f) = b.frame().await {
                match f {
                    Ok(f) => out.push(f),
                    Err(_) => break,
                }
            }
            out
        })
    }

    fn chunks(parts: &[&[u8]], trailers: Option<HeaderMap>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, BodyError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    fn data(frames: &[Frame<Bytes>]) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| f.data_ref())
            .flat_map(|d| d.to_vec())
            .collect()
    }

    #[test]
    fn only_the_four_content_types_make_a_call() {
        for ct in [GRPC_WEB, GRPC_WEB_PROTO, GRPC_WEB_TEXT, GRPC_WEB_TEXT_PROTO] {
            let (c, changes) = call(ct, None);
            assert!(c.is_some(), "{ct}");
            assert_eq!(changes.len(), 4, "{ct}");
        }
        for ct in [
            "application/grpc",
            "application/grpc-web+json",
            "application/grpc-web; charset=utf-8",
            "Application/grpc-web",
        ] {
            assert!(call(ct, None).0.is_none(), "{ct}");
        }
        let (c, _) = call(GRPC_WEB_TEXT, Some(GRPC_WEB_TEXT_PROTO));
        let c = c.unwrap();
        assert!(c.text_request && c.text_response);
        let (c, _) = call(GRPC_WEB, Some("application/grpc-web-text, */*"));
        let c = c.unwrap();
        assert!(!c.text_request && !c.text_response);
    }

    #[test]
    fn a_text_body_is_decoded_across_chunk_boundaries() {
        let (c, _) = call(GRPC_WEB_TEXT, None);
        let c = c.unwrap();
        let msg = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
        let enc = base64(&msg);
        let (a, b) = enc.split_at(3);
        let (b, d) = b.split_at(6);
        let out = run(c.request_body(chunks(&[a, b, d], None)));
        assert_eq!(data(&out), msg);
        assert!(c.bad_request().is_none());
    }

    #[test]
    fn bad_base64_is_the_filters_400() {
        let (c, _) = call(GRPC_WEB_TEXT, None);
        let c = c.unwrap();
        run(c.request_body(chunks(&[b"AAAAA"], None)));
        let r = c.bad_request().expect("bad size");
        assert_eq!(r.status(), 400);
        assert!(matches!(
            r.extensions().get::<ResponseDetails>(),
            Some(ResponseDetails::Named(
                "grpc_base_64_decode_failed_bad_size"
            ))
        ));
        let (c, _) = call(GRPC_WEB_TEXT, None);
        let c = c.unwrap();
        run(c.request_body(chunks(&[b"!!!!"], None)));
        assert!(matches!(
            c.bad_request()
                .unwrap()
                .extensions()
                .get::<ResponseDetails>(),
            Some(ResponseDetails::Named("grpc_base_64_decode_failed"))
        ));
    }

    #[test]
    fn request_trailers_end_a_text_body_and_drop_its_leftover() {
        let (c, _) = call(GRPC_WEB_TEXT, None);
        let c = c.unwrap();
        let mut t = HeaderMap::new();
        t.insert("x-t", HeaderValue::from_static("1"));
        let out = run(c.request_body(chunks(&[b"AAAAAA"], Some(t))));
        assert_eq!(data(&out), [0, 0, 0]);
        assert!(out.last().is_some_and(|f| f.is_trailers()));
        assert!(c.bad_request().is_none());
    }

    #[test]
    fn a_non_grpc_answer_that_breaks_off_resets_the_client() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (c, _) = call(GRPC_WEB, None);
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"half"))),
            Err("upstream reset".into()),
        ];
        let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(
            futures_util::stream::iter(frames),
        ));
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        let r = rt.block_on(c.unwrap().encode(r));
        assert!(!r.headers().contains_key("grpc-status"));
        let mut b = r.into_body();
        let first = rt.block_on(b.frame());
        assert!(matches!(first, Some(Err(_))));
    }

    #[test]
    fn trailers_become_the_last_frame_and_text_frames_are_encoded_one_by_one() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("grpc-message", HeaderValue::from_static("ok"));
        let frames: &[u8] = &[0, 0, 0, 0, 1, b'x', 0, 0, 0, 0, 1, b'y'];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let resp = |body| {
            let mut r = Response::new(body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            r
        };
        let (bin, _) = call(GRPC_WEB, None);
        let r = rt.block_on(
            bin.unwrap()
                .encode(resp(chunks(&[frames], Some(t.clone())))),
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], GRPC_WEB_PROTO);
        let got = data(&run(r.into_body()));
        let tf = b"grpc-status:0\r\ngrpc-message:ok\r\n";
        let mut want = frames.to_vec();
        want.push(0x80);
        want.extend_from_slice(&(tf.len() as u32).to_be_bytes());
        want.extend_from_slice(tf);
        assert_eq!(got, want);

        let (text, _) = call(GRPC_WEB_TEXT, Some(GRPC_WEB_TEXT));
        // The second frame split across two chunks.
        let r = rt.block_on(
            text.unwrap()
                .encode(resp(chunks(&[&frames[..8], &frames[8..]], Some(t.clone())))),
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], GRPC_WEB_TEXT_PROTO);
        let got = run(r.into_body());
        let pieces: Vec<Vec<u8>> = got
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.to_vec())
            .collect();
        let mut want = vec![base64(&frames[..6]).to_vec(), base64(&frames[6..]).to_vec()];
        want.push(base64(&want_trailers(tf)).to_vec());
        assert_eq!(pieces, want);
    }

    fn want_trailers(lines: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80];
        f.extend_from_slice(&(lines.len() as u32).to_be_bytes());
        f.extend_from_slice(lines);
        f
    }

    #[test]
    fn a_non_grpc_answer_becomes_its_status_and_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (c, _) = call(GRPC_WEB, None);
        let c = c.unwrap();
        let mut r = Response::new(chunks(&[b"no ~ luck\n"], None));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let r = rt.block_on(c.encode(r));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no %7E luck%0A");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "0");
        assert!(data(&run(r.into_body())).is_empty());
        // A big body: its first 16 KiB.
        let big = vec![b'a'; 40_000];
        let mut r = Response::new(chunks(&[&big[..20_000], &big[20_000..]], None));
        *r.status_mut() = StatusCode::OK;
        let r = rt.block_on(c.encode(r));
        assert_eq!(r.headers()["grpc-status"], "2");
        assert_eq!(r.headers()["grpc-message"].len(), MAX_MESSAGE);
        // Already proto-encoded gRPC-Web: passed on.
        let mut r = Response::new(chunks(&[b"\0\0\0\0\0"], None));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/GRPC-Web+Proto; x=y"),
        );
        let r = rt.block_on(c.encode(r));
        assert!(!r.headers().contains_key("grpc-status"));
        assert_eq!(data(&run(r.into_body())), b"\0\0\0\0\0");
    }
}
