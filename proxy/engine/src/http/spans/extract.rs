//! A request's incoming trace context as Envoy 1.40's Zipkin tracer reads it
//! (`SpanContextExtractor`): the single `b3` header, else the `x-b3-*` headers, else (with
//! `USE_B3_WITH_W3C_PROPAGATION`) a valid `traceparent`. A malformed B3 context is an error:
//! the request then gets no span at all, and its headers go on untouched.

use http::HeaderMap;

/// A trace context taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Context {
    /// The trace id's high 64 bits (0: a 64-bit trace id).
    pub high: u64,
    /// The trace id's low 64 bits.
    pub trace: u64,
    /// The caller's span id.
    pub id: u64,
    /// The caller's parent span id (0: none).
    pub parent: u64,
    /// Whether the trace is sampled.
    pub sampled: bool,
}

/// Malformed B3 headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The sampling flag the request carries (None: none, the local decision stands). A `b3`
/// header decides alone (its flag only at the lengths that carry one); `x-b3-sampled` is
/// sampled only as `1` or `true`; `traceparent` (W3C fallback) by its flags' low bit.
pub(crate) fn sampled(h: &HeaderMap, w3c: bool) -> Option<bool> {
    if let Some(b3) = h.get("b3") {
        let b = b3.as_bytes();
        let at = match b.len() {
            1 => 0,
            35 | 52 => 34,
            51 | 68 => 50,
            _ => return None,
        };
        return match b[at] {
            b'0' => Some(false),
            b'1' | b'd' => Some(true),
            _ => None,
        };
    }
    if let Some(s) = h.get("x-b3-sampled") {
        return Some(matches!(s.as_bytes(), b"1" | b"true"));
    }
    if w3c {
        if let Some(tp) = h.get("traceparent").and_then(|v| traceparent(v.as_bytes())) {
            return Some(tp.sampled);
        }
    }
    None
}

/// The context the request carries, sampled as `sampled` (the flag the caller chose: the
/// request's own, else the local decision); Ok(None) when it carries none.
pub(crate) fn context(
    h: &HeaderMap,
    w3c: bool,
    sampled: bool,
) -> Result<Option<Context>, Malformed> {
    if let Some(b3) = h.get("b3") {
        return single(b3.as_bytes(), sampled);
    }
    if let (Some(t), Some(s)) = (h.get("x-b3-traceid"), h.get("x-b3-spanid")) {
        let t = t.as_bytes();
        let (high, trace) = if t.len() == 32 {
            (
                strtoull16(&t[..16]).ok_or(Malformed)?,
                strtoull16(&t[16..]).ok_or(Malformed)?,
            )
        } else {
            (0, strtoull16(t).ok_or(Malformed)?)
        };
        let id = strtoull16(s.as_bytes()).ok_or(Malformed)?;
        let parent = match h.get("x-b3-parentspanid").map(|v| v.as_bytes()) {
            Some(p) if !p.is_empty() => strtoull16(p).ok_or(Malformed)?,
            _ => 0,
        };
        return Ok(Some(Context {
            high,
            trace,
            id,
            parent,
            sampled,
        }));
    }
    if w3c {
        if let Some(tp) = h.get("traceparent").and_then(|v| traceparent(v.as_bytes())) {
            return Ok(Some(Context {
                sampled: tp.sampled || sampled,
                ..tp.context
            }));
        }
    }
    Ok(None)
}

/// The single `b3` header: `{trace}-{span}[-{flag}[-{parent}]]`, or a lone flag.
fn single(b: &[u8], sampled: bool) -> Result<Option<Context>, Malformed> {
    match b.len() {
        0 => return Err(Malformed),
        1 if matches!(b[0], b'0' | b'1' | b'd') => return Ok(None),
        1 => return Err(Malformed),
        2..=32 | 69.. => return Err(Malformed),
        _ => {}
    }
    let (high, trace, mut at) = if b[32] == b'-' {
        (hex16(&b[..16])?, hex16(&b[16..32])?, 32)
    } else {
        (0, hex16(&b[..16])?, 16)
    };
    if b.get(at) != Some(&b'-') {
        return Err(Malformed);
    }
    let id = hex16(b.get(at + 1..at + 17).ok_or(Malformed)?)?;
    at += 17;
    let mut parent = 0;
    if at < b.len() {
        // `-{flag}`, the flag last or followed by `-`.
        if b.len() == at + 1 || b[at] != b'-' {
            return Err(Malformed);
        }
        if b.get(at + 2).is_some_and(|c| *c != b'-') || !matches!(b[at + 1], b'0' | b'1' | b'd') {
            return Err(Malformed);
        }
        at += 2;
        if at < b.len() {
            if b.len() != at + 17 || b[at] != b'-' {
                return Err(Malformed);
            }
            parent = hex16(&b[at + 1..])?;
        }
    }
    Ok(Some(Context {
        high,
        trace,
        id,
        parent,
        sampled,
    }))
}

/// A `traceparent` that Envoy's W3C extractor accepts.
pub(crate) struct TraceParent {
    /// Its trace id and parent id (as `id`); `parent` 0, `sampled` false.
    pub context: Context,
    /// Its flags' low bit.
    pub sampled: bool,
}

/// `{version:2}-{trace:32}-{parent:16}-{flags:2}`, all hex (either case), neither id all
/// zeros, the version not checked (Envoy's W3C extractor, which the OpenTelemetry tracer
/// uses too).
pub(crate) fn traceparent(b: &[u8]) -> Option<TraceParent> {
    if b.len() != 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    if !hex(&b[..2]) || !hex(&b[53..]) {
        return None;
    }
    let (high, trace, id) = (
        hex16(&b[3..19]).ok()?,
        hex16(&b[19..35]).ok()?,
        hex16(&b[36..52]).ok()?,
    );
    if (high == 0 && trace == 0) || id == 0 {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(&b[53..]).ok()?, 16).ok()?;
    Some(TraceParent {
        context: Context {
            high,
            trace,
            id,
            parent: 0,
            sampled: false,
        },
        sampled: flags & 1 != 0,
    })
}

/// Exactly 16 hex digits.
fn hex16(s: &[u8]) -> Result<u64, Malformed> {
    if s.len() != 16 || !s.iter().all(u8::is_ascii_hexdigit) {
        return Err(Malformed);
    }
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or(Malformed)
}

/// C's `strtoull(s, 16)` that must read all of `s` (leading white space, a sign, a `0x`
/// prefix); None when empty, junk follows or it overflows. (The UUID request id extension
/// reads its id's integer so too.)
pub(crate) fn strtoull16(s: &[u8]) -> Option<u64> {
    let mut i = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))?;
    let negative = s[i] == b'-';
    if matches!(s[i], b'+' | b'-') {
        i += 1;
    }
    if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
    }
    let digits = &s[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let v = u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
    Some(if negative { v.wrapping_neg() } else { v })
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
