//! `RouteMatch.cookies` (`CookieMatcher`): the request's `Cookie` headers read as Envoy's
//! `Http::Utility::parseCookies` reads them, each matcher tested on its cookie's value.

use super::{build_match::string_matcher, HeaderLookup, StringMatcher};
use crate::config::{raw_route::RawCookieMatcher, ConfigError, FieldPath};

/// Envoy's bound on `CookieMatcher.name` (`max_bytes`).
const MAX_COOKIE_NAME_BYTES: usize = 1024;

/// One compiled `cookies[]` entry.
#[derive(Debug, Clone)]
pub struct CookieMatcher {
    /// `name` (case-sensitive, as Envoy).
    pub name: String,
    /// `string_match`, tested on the cookie's value.
    pub string_match: StringMatcher,
    /// `invert_match`: negates the result, so a missing cookie then matches.
    pub invert_match: bool,
}

impl CookieMatcher {
    /// Compiles `raw` (at `p`): `name` of 1 to 1024 bytes and `string_match` are required;
    /// `ignore_case` with `safe_regex` is refused, as Envoy's `StringMatcherImpl` refuses it.
    pub(crate) fn build(raw: &RawCookieMatcher, p: &FieldPath) -> Result<Self, ConfigError> {
        let name = raw.name.clone();
        if name.is_empty() {
            return Err(p.field("name").err("required"));
        }
        if name.len() > MAX_COOKIE_NAME_BYTES {
            return Err(p
                .field("name")
                .err(format!("longer than {MAX_COOKIE_NAME_BYTES} bytes")));
        }
        let sm = raw
            .string_match
            .as_ref()
            .ok_or_else(|| p.field("string_match").err("required"))?;
        if sm.safe_regex.is_some() && sm.ignore_case == Some(true) {
            return Err(p
                .field("string_match")
                .field("ignore_case")
                .err("has no effect for safe_regex (Envoy refuses it)"));
        }
        Ok(Self {
            name,
            string_match: string_matcher(sm, &p.field("string_match"))?,
            invert_match: raw.invert_match.unwrap_or(false),
        })
    }

    /// Whether the request's cookies match: the first cookie of that name (over every
    /// `Cookie` header, in order) has a matching value; `invert_match` negates it, absent
    /// included. Allocation-free.
    #[inline]
    pub fn matches<H: HeaderLookup + ?Sized>(&self, headers: &H) -> bool {
        let found = cookie_value(headers, &self.name);
        found.is_some_and(|v| self.string_match.matches(v)) != self.invert_match
    }
}

/// The value of the first cookie called `name` in the request's `Cookie` headers.
pub(crate) fn cookie_value<'h, H: HeaderLookup + ?Sized>(
    headers: &'h H,
    name: &str,
) -> Option<&'h str> {
    let mut found = None;
    headers.for_each_value("cookie", &mut |v| {
        if found.is_none() {
            found = find(v.as_bytes(), name.as_bytes()).map(|r| &v[r]);
        }
    });
    found
}

/// Where the value of the first `name=value` pair of one `Cookie` header is, as Envoy's
/// `forEachCookie` reads it: pairs split at `;` (empty ones skipped), spaces before the name
/// skipped, a pair without `=` skipped, the name compared exactly (case and trailing spaces
/// count), the value as sent after the `=` but for the double quotes that may wrap it (RFC 6265
/// 4.1.1). The bounds are at ASCII bytes, so they slice a `str` too.
pub fn find(header: &[u8], name: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for pair in header.split(|b| *b == b';') {
        let at = start;
        start += pair.len() + 1;
        let Some(first) = pair.iter().position(|b| *b != b' ') else {
            continue;
        };
        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
            continue;
        };
        if pair.get(first..eq) != Some(name) {
            continue;
        }
        let (mut from, mut to) = (at + eq + 1, at + pair.len());
        if to - from >= 2 && header[from] == b'"' && header[to - 1] == b'"' {
            from += 1;
            to -= 1;
        }
        return Some(from..to);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'h>(headers: &'h [(&'h str, &'h str)], name: &str) -> Option<&'h str> {
        cookie_value(headers, name)
    }

    #[test]
    fn cookies_are_read_as_envoy_reads_them() {
        let two = [("cookie", "a=1; s=\"v1\""), ("cookie", "t=x ;u=2;;w=a=b")];
        for (name, want) in [
            ("s", Some("v1")),
            ("t", Some("x ")),
            ("a", Some("1")),
            ("u", Some("2")),
            ("w", Some("a=b")),
            ("v", None),
        ] {
            assert_eq!(value(&two, name), want, "{name}");
        }
        // First pair wins, also over a later header; empty and `""` values are empty cookies.
        for (header, want) in [
            ("s=1; s=2", Some("1")),
            ("s=; s=x", Some("")),
            ("s=\"\"", Some("")),
            ("s=\"", Some("\"")),
            ("s", None),
            ("x; s=1", Some("1")),
            ("s =1", None),
            ("S=1", None),
            ("  s= 1", Some(" 1")),
            ("t=2, s=1", None),
        ] {
            assert_eq!(value(&[("cookie", header)], "s"), want, "{header}");
        }
        assert_eq!(
            value(&[("cookie", "s=2"), ("cookie", "s=1")], "s"),
            Some("2")
        );
    }
}
