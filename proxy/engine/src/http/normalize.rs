//! The HCM's request normalisation before routing, as Envoy 1.40's
//! `ConnectionManagerUtility::maybeNormalizePath` / `maybeNormalizeHost` (each outcome observed
//! against a real Envoy: the `hcm_*` conformance cases):
//! - `path_with_escaped_slashes_action`: `%2F` `%2f` -> `/`, `%5C` `%5c` -> `\` in the path (never
//!   the query); then 400, a 307 to the resulting path, or forwarding it;
//! - `normalize_path`: Envoy's copy of Chromium's path canonicaliser (dot segments, `\` -> `/`,
//!   `%XX` of unreserved characters decoded, other escapes kept as written, characters outside
//!   the path set escaped, `%00` rejected);
//! - `merge_slashes`: runs of `/` collapsed (a leading and a trailing `/` kept);
//! - `strip_matching_host_port` / `strip_any_host_port` on the Host (or `:authority`).
//!
//! Nothing is allocated unless the path or Host actually changes.

use crate::config::{EscapedSlashes, PathNormalization, StripPort};

/// What the path options decided for a request's path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathVerdict {
    /// Route and forward the path as it is.
    Keep,
    /// Route and forward this path (query kept) instead.
    Rewrite(String),
    /// Answer 307 with this `location` (`UNESCAPE_AND_REDIRECT`).
    Redirect(String),
    /// Answer 400 (`REJECT_REQUEST` with an escaped slash, or a path `normalize_path` refuses).
    Reject,
}

/// Applies `cfg` to `path_and_query` (origin form).
pub(crate) fn path(cfg: &PathNormalization, path_and_query: &str) -> PathVerdict {
    if cfg.is_noop() {
        return PathVerdict::Keep;
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let mut cur: Option<String> = None;
    let mut redirect = false;
    if cfg.escaped_slashes != EscapedSlashes::Keep && has_escaped_slash(path) {
        match cfg.escaped_slashes {
            EscapedSlashes::Reject => return PathVerdict::Reject,
            EscapedSlashes::Redirect => redirect = true,
            EscapedSlashes::Forward | EscapedSlashes::Keep => {}
        }
        cur = Some(unescape_slashes(path));
    }
    if cfg.normalize_path {
        let p = cur.as_deref().unwrap_or(path);
        if needs_canonical(p) {
            match canonical(p) {
                Some(c) => cur = Some(c),
                None => return PathVerdict::Reject,
            }
        }
    }
    if cfg.merge_slashes {
        let p = cur.as_deref().unwrap_or(path);
        if p.contains("//") {
            cur = Some(merge_slashes(p));
        }
    }
    match cur {
        None => PathVerdict::Keep,
        Some(mut p) => {
            p.push_str(query);
            if redirect {
                PathVerdict::Redirect(p)
            } else if p == path_and_query {
                PathVerdict::Keep
            } else {
                PathVerdict::Rewrite(p)
            }
        }
    }
}

/// The host without its port when `mode` strips it: `local_port` is the connection's local
/// (original destination) port. `None`: keep the host as it is.
pub(crate) fn strip_port(mode: StripPort, host: &str, local_port: u16) -> Option<&str> {
    if mode == StripPort::Keep {
        return None;
    }
    let colon = host.rfind(':')?;
    // A `:` inside `[...]` belongs to an IPv6 literal, not a port.
    if host.rfind(']').is_some_and(|b| b > colon) {
        return None;
    }
    let port = parse_port(&host[colon + 1..])?;
    if mode == StripPort::Matching && port != u32::from(local_port) {
        return None;
    }
    Some(&host[..colon])
}

/// Envoy's `stripTrailingHostDot`: the host with the one dot that ends its name (before a port,
/// if any) removed; `None` when there is none.
pub(crate) fn strip_trailing_dot(host: &str) -> Option<String> {
    // Envoy's `getPortStart`: the last `:` unless it is inside an IPv6 literal's `[...]`.
    let port_start = host
        .rfind(':')
        .filter(|c| host.rfind(']').is_none_or(|b| b < *c));
    let dot = port_start.unwrap_or(host.len()).checked_sub(1)?;
    (host.as_bytes()[dot] == b'.').then(|| [&host[..dot], &host[dot + 1..]].concat())
}

/// absl's `SimpleAtoi` into a `uint32_t`: surrounding whitespace and a `+` allowed.
fn parse_port(s: &str) -> Option<u32> {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
        .parse()
        .ok()
}

fn has_escaped_slash(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && is_slash_escape(w[1], w[2]))
}

fn is_slash_escape(a: u8, b: u8) -> bool {
    matches!((a, b), (b'2', b'F' | b'f') | (b'5', b'C' | b'c'))
}

/// `%2F` `%2f` -> `/` and `%5C` `%5c` -> `\` (Envoy's four replace-alls; a replacement cannot
/// form a new escape, so one pass is the same).
fn unescape_slashes(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && is_slash_escape(b[i + 1], b[i + 2]) {
            out.push(if b[i + 1] == b'2' { b'/' } else { b'\\' });
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    String::from_utf8(out).unwrap_or_default()
}

/// Envoy's `mergeSlashes`: the non-empty segments joined by `/`, with a leading and a trailing
/// `/` kept when the path had them (so `//` stays `//`).
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push('/');
    }
    for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg);
    }
    if path.ends_with('/') {
        out.push('/');
    }
    out
}

/// How the canonicaliser treats a byte written as is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied.
    Pass,
    /// Written as `%XX` (upper-case hex).
    Escape,
    /// Refused (NUL).
    Invalid,
}

fn class(b: u8) -> Class {
    match b {
        0 => Class::Invalid,
        0x01..=0x20 | b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' | 0x7f..=0xff => {
            Class::Escape
        }
        _ => Class::Pass,
    }
}

/// Characters whose `%XX` form is decoded (RFC 3986 unreserved).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether [`canonical`] could change `path` (cheap scan, so a clean path costs no allocation).
fn needs_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    !b.starts_with(b"/")
        || b.iter().enumerate().any(|(i, &c)| {
            matches!(c, b'%' | b'\\')
                || class(c) != Class::Pass
                || (c == b'.' && i > 0 && b[i - 1] == b'/')
        })
}

/// `.` or `%2e`/`%2E` at `i`: its length, else 0 (Chromium's `IsDot`).
fn dot_len(b: &[u8], i: usize) -> usize {
    match b.get(i..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

fn is_slash(c: u8) -> bool {
    c == b'/' || c == b'\\'
}

/// A dot segment's kind and the input bytes it consumes after the first dot.
enum AfterDot {
    /// `.` followed by something else: an ordinary character.
    NotDirectory,
    /// `.` or `./`: dropped.
    Current(usize),
    /// `..` or `../`: drops the previous segment.
    Up(usize),
}

fn classify_after_dot(b: &[u8], after: usize) -> AfterDot {
    if after == b.len() {
        return AfterDot::Current(0);
    }
    if is_slash(b[after]) {
        return AfterDot::Current(1);
    }
    let second = dot_len(b, after);
    if second > 0 {
        let end = after + second;
        if end == b.len() {
            return AfterDot::Up(second);
        }
        if is_slash(b[end]) {
            return AfterDot::Up(second + 1);
        }
    }
    AfterDot::NotDirectory
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn push_escaped(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 0xf)]]);
}

/// Envoy's `PathTransformer::rfcNormalize` on the path part (Chromium's `CanonicalizePath`);
/// `None` when the path holds a NUL (raw or `%00`).
fn canonical(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 1);
    if b.first().is_none_or(|&c| !is_slash(c)) {
        out.push(b'/');
    }
    let mut ok = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let dot = dot_len(b, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify_after_dot(b, i + dot) {
                    AfterDot::NotDirectory => out.push(b'.'),
                    AfterDot::Current(n) => i += n,
                    AfterDot::Up(n) => {
                        back_up_to_previous_slash(&mut out);
                        i += n;
                    }
                }
            } else {
                out.push(b'.');
            }
            i += dot;
            continue;
        }
        match c {
            b'\\' => out.push(b'/'),
            b'%' => match (
                b.get(i + 1).and_then(|&h| hex(h)),
                b.get(i + 2).and_then(|&l| hex(l)),
            ) {
                (Some(h), Some(l)) => {
                    let v = h << 4 | l;
                    if is_unreserved(v) {
                        out.push(v);
                    } else {
                        ok &= v != 0;
                        out.extend_from_slice(&b[i..i + 3]);
                    }
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => match class(c) {
                Class::Pass => out.push(c),
                Class::Escape => push_escaped(&mut out, c),
                Class::Invalid => {
                    ok = false;
                    push_escaped(&mut out, c);
                }
            },
        }
        i += 1;
    }
    // Only ASCII is ever written (bytes >= 0x80 are escaped).
    ok.then(|| String::from_utf8(out).unwrap_or_default())
}

/// Chromium's `BackUpToPreviousSlash`: `out` ends with `/`; drop the last segment before it.
fn back_up_to_previous_slash(out: &mut Vec<u8>) {
    let Some(mut i) = out.len().checked_sub(1) else {
        return;
    };
    if i == 0 {
        return;
    }
    i -= 1;
    while out[i] != b'/' && i > 0 {
        i -= 1;
    }
    out.truncate(i + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(normalize_path: bool, merge_slashes: bool, e: EscapedSlashes) -> PathNormalization {
        PathNormalization {
            normalize_path,
            merge_slashes,
            escaped_slashes: e,
        }
    }

    fn rewritten(v: PathVerdict, input: &str) -> String {
        match v {
            PathVerdict::Keep => input.to_string(),
            PathVerdict::Rewrite(p) => p,
            other => panic!("{input}: {other:?}"),
        }
    }

    /// (input, output) pairs observed from Envoy 1.40 with `normalize_path: true`.
    #[test]
    fn normalize_path_as_envoy() {
        let c = cfg(true, false, EscapedSlashes::Keep);
        for (input, want) in [
            ("/a/../b", "/b"),
            ("/a/./b", "/a/b"),
            ("/..", "/"),
            ("/a/..", "/"),
            ("/a/b/.", "/a/b/"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2E%2e/b", "/b"),
            ("/a%2eb", "/a.b"),
            ("/%41%7e%2d%5f%30", "/A~-_0"),
            ("/%7E%2a%3A%25", "/~%2a%3A%25"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a\\b", "/a/b"),
            ("/a//b///c", "/a//b///c"),
            ("/a%zzb", "/a%zzb"),
            ("/a%4", "/a%4"),
            (
                "/!$&'()*+,;=:@[]^_|~\"{}",
                "/!$&'()*+,;=:@[]%5E_%7C~%22%7B%7D",
            ),
            ("/x?q=/../%2F", "/x?q=/../%2F"),
            ("/a/.../b", "/a/.../b"),
            ("/%2e%2e/x", "/x"),
            ("/a/..%2fb", "/a/..%2fb"),
            ("/%01%1f%20%7f%80%ff%2F%5c", "/%01%1f%20%7f%80%ff%2F%5c"),
            ("/a/%2e", "/a/"),
            ("/a/b/%2E%2E", "/a/"),
            ("/./a", "/a"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/%2e%2", "/a/.%2"),
            ("/plain", "/plain"),
        ] {
            assert_eq!(rewritten(path(&c, input), input), want, "{input}");
        }
        assert_eq!(path(&c, "/a%00b"), PathVerdict::Reject);
    }

    #[test]
    fn merge_slashes_as_envoy() {
        let c = cfg(false, true, EscapedSlashes::Keep);
        for (input, want) in [
            ("/a//b///c", "/a/b/c"),
            ("//", "//"),
            ("///a//", "/a/"),
            ("/a/../b", "/a/../b"),
            ("/x//y?q=//", "/x/y?q=//"),
        ] {
            assert_eq!(rewritten(path(&c, input), input), want, "{input}");
        }
    }

    #[test]
    fn escaped_slashes_actions() {
        let fwd = cfg(false, false, EscapedSlashes::Forward);
        assert_eq!(rewritten(path(&fwd, "/a%2Fb?x=%2F"), ""), "/a/b?x=%2F");
        assert_eq!(rewritten(path(&fwd, "/a%5c..%5Cb"), ""), "/a\\..\\b");
        assert_eq!(path(&fwd, "/plain%20x"), PathVerdict::Keep);
        let rej = cfg(false, false, EscapedSlashes::Reject);
        assert_eq!(path(&rej, "/a%2fb"), PathVerdict::Reject);
        assert_eq!(path(&rej, "/a?x=%2f"), PathVerdict::Keep);
        let all = cfg(true, true, EscapedSlashes::Redirect);
        assert_eq!(
            path(&all, "/a%2F%2F/b/../c"),
            PathVerdict::Redirect("/a/c".into())
        );
        assert_eq!(
            path(&all, "/a%5c..%5Cb"),
            PathVerdict::Redirect("/b".into())
        );
        // Only an escaped slash redirects; other normalisation is forwarded.
        assert_eq!(path(&all, "/a//b"), PathVerdict::Rewrite("/a/b".into()));
    }

    #[test]
    fn trailing_host_dots() {
        assert_eq!(
            strip_trailing_dot("a.example.").as_deref(),
            Some("a.example")
        );
        assert_eq!(
            strip_trailing_dot("a.example.:80").as_deref(),
            Some("a.example:80")
        );
        assert_eq!(
            strip_trailing_dot("a.example..").as_deref(),
            Some("a.example.")
        );
        assert_eq!(strip_trailing_dot(".").as_deref(), Some(""));
        assert_eq!(strip_trailing_dot("[::1]:80"), None);
        assert_eq!(strip_trailing_dot("a.example"), None);
        assert_eq!(strip_trailing_dot(""), None);
        assert_eq!(strip_trailing_dot(":80"), None);
    }

    #[test]
    fn strip_port_modes() {
        use StripPort::*;
        assert_eq!(
            strip_port(Matching, "example.com:8080", 8080),
            Some("example.com")
        );
        assert_eq!(strip_port(Matching, "example.com:1", 8080), None);
        assert_eq!(strip_port(Matching, "example.com:", 8080), None);
        assert_eq!(
            strip_port(Matching, "example.com:+8080", 8080),
            Some("example.com")
        );
        assert_eq!(
            strip_port(Matching, "example.com:08080", 8080),
            Some("example.com")
        );
        assert_eq!(strip_port(Matching, "[::1]:8080", 8080), Some("[::1]"));
        assert_eq!(strip_port(Any, "[::1]", 8080), None);
        assert_eq!(strip_port(Any, "a:b:1", 8080), Some("a:b"));
        assert_eq!(strip_port(Any, "a:b", 8080), None);
        assert_eq!(strip_port(Keep, "a:1", 1), None);
    }
}
