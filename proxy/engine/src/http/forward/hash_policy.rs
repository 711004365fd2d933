//! The request properties a route's `hash_policy` hashes that need more than a lookup: every
//! value of a repeated header, a query parameter, a cookie (read, or made when a `ttl` policy
//! finds none).

use std::borrow::Cow;

use http::{uri::PathAndQuery, HeaderMap, HeaderValue};

use crate::{
    http::ConnInfo,
    route::{CookieGen, RegexRewrite},
    upstream::{lb::hash_bytes, xxhash::xxh64},
};

/// Envoy's header hash: every value of `name`, each rewritten by `rewrite` when set, sorted
/// (so the order the values came in does not matter) and hashed in turn, each hash seeding the
/// next. None when the header is absent. One value and no rewrite hash without a copy.
pub(super) fn header<'h>(
    headers: &'h HeaderMap,
    name: &str,
    rewrite: Option<&RegexRewrite>,
) -> Option<u64> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let rewritten = |v: &'h http::HeaderValue| -> Cow<'h, [u8]> {
        match (rewrite, v.to_str()) {
            (Some(r), Ok(s)) => match r.apply(s) {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            },
            // A value that is not text is hashed as sent (the regex reads text).
            _ => Cow::Borrowed(v.as_bytes()),
        }
    };
    let Some(second) = all.next() else {
        return Some(hash_bytes(&rewritten(first)));
    };
    let mut values: Vec<Cow<'h, [u8]>> = [first, second]
        .into_iter()
        .chain(all)
        .map(rewritten)
        .collect();
    values.sort();
    // Each value hashed with the previous hash as the seed (Envoy's `HashUtil::xxHash64` of a
    // list).
    Some(values.iter().fold(0, |seed, v| xxh64(v, seed)))
}

/// The value of cookie `name` in the request's `Cookie` headers, as Envoy reads it
/// ([`crate::route::cookies::find`]: the first pair with that name, quotes dropped); an empty
/// value counts as no cookie here (`parseCookieValue`).
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let first = headers.get_all(http::header::COOKIE).iter().find_map(|v| {
        crate::route::cookies::find(v.as_bytes(), name.as_bytes()).map(|r| &v.as_bytes()[r])
    })?;
    (!first.is_empty()).then_some(first)
}

/// The cookie a `ttl` cookie policy makes for a request without one: Envoy's value, the hex of
/// XXH64 over the downstream peer and local (original destination) addresses, so every request
/// of one connection gets the same; and its `Set-Cookie` header.
pub(super) fn new_cookie(
    name: &str,
    generate: &CookieGen,
    conn: &ConnInfo,
) -> (String, HeaderValue) {
    let value = format!(
        "{:016x}",
        xxh64(format!("{}{}", conn.peer, conn.orig_dst).as_bytes(), 0)
    );
    let set = format!("{name}=\"{value}\"{}", generate.suffix);
    // The name and every piece of the suffix were checked at load as header values
    // (`route/build_hash.rs`), and the value is hex.
    let set = HeaderValue::try_from(set).expect("a Set-Cookie checked at load");
    (value, set)
}

/// The first value of query parameter `name` in `path`, as sent (Envoy does not decode it for
/// hashing); a parameter without `=` has the empty value.
pub(super) fn query_parameter<'p>(path: &'p PathAndQuery, name: &str) -> Option<&'p str> {
    path.query()?.split('&').find_map(|param| {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn rewrite(pattern: &str, substitution: &str) -> RegexRewrite {
        RegexRewrite {
            pattern: regex::Regex::new(pattern).unwrap(),
            substitution: substitution.into(),
        }
    }

    #[test]
    fn a_repeated_header_hashes_the_same_in_any_order() {
        let ab = header(
            &headers(&[("x-user", "a"), ("x-user", "b")]),
            "x-user",
            None,
        );
        let ba = header(
            &headers(&[("x-user", "b"), ("x-user", "a")]),
            "x-user",
            None,
        );
        assert_eq!(ab, ba);
        assert_eq!(
            ab,
            Some(xxh64(b"b", xxh64(b"a", 0))),
            "sorted, then chained"
        );
        assert_ne!(ab, header(&headers(&[("x-user", "a")]), "x-user", None));
        assert_eq!(
            header(&headers(&[("x-user", "a")]), "x-user", None),
            Some(hash_bytes(b"a"))
        );
        assert_eq!(header(&headers(&[]), "x-user", None), None);
    }

    #[test]
    fn the_rewrite_applies_to_each_value_before_the_sort() {
        let r = rewrite(r"^(\w+)-\d+$", "${1}");
        let one = header(&headers(&[("x-user", "alice-7")]), "x-user", Some(&r));
        assert_eq!(one, Some(hash_bytes(b"alice")));
        let two = header(
            &headers(&[("x-user", "bob-2"), ("x-user", "alice-1")]),
            "x-user",
            Some(&r),
        );
        assert_eq!(two, Some(xxh64(b"bob", xxh64(b"alice", 0))));
    }

    #[test]
    fn a_generated_cookie_is_envoys_for_the_same_addresses() {
        // Envoy 1.40 answered a request from 127.0.0.1:40001 to a listener on 127.0.0.1:19900
        // with `session="0cc0f7dab9951cfd"` (`curl --local-port 40001`, checked by hand).
        let conn = ConnInfo {
            peer: "127.0.0.1:40001".parse().unwrap(),
            local: "127.0.0.1:19900".parse().unwrap(),
            orig_dst: "127.0.0.1:19900".parse().unwrap(),
            tls: false,
        };
        let generate = CookieGen {
            suffix: "; Max-Age=3600; Path=/app; HttpOnly".into(),
        };
        let (value, set) = new_cookie("session", &generate, &conn);
        assert_eq!(value, "0cc0f7dab9951cfd");
        assert_eq!(
            set,
            "session=\"0cc0f7dab9951cfd\"; Max-Age=3600; Path=/app; HttpOnly"
        );
    }

    #[test]
    fn a_cookie_is_read_as_envoy_reads_it() {
        let h = headers(&[("cookie", "a=1; s=\"v1\""), ("cookie", "t=x ;u=2")]);
        let c =
            |h: &HeaderMap, n: &str| cookie(h, n).map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(c(&h, "s").as_deref(), Some("v1"), "quotes dropped");
        assert_eq!(c(&h, "t").as_deref(), Some("x "), "the value as sent");
        assert_eq!(c(&h, "a").as_deref(), Some("1"));
        assert_eq!(c(&h, "u").as_deref(), Some("2"));
        assert_eq!(
            c(&headers(&[("cookie", "s=\"")]), "s").as_deref(),
            Some("\"")
        );
        assert_eq!(c(&h, "v"), None);
        // The first pair wins, and an empty value is no cookie.
        assert_eq!(c(&headers(&[("cookie", "s=; s=x")]), "s"), None);
        assert_eq!(c(&headers(&[("cookie", "s=\"\"")]), "s"), None);
        assert_eq!(
            c(&headers(&[("cookie", "s=1; s=2")]), "s").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn the_first_value_of_the_query_parameter_as_sent() {
        let q = |p: &'static str, n: &str| {
            query_parameter(&PathAndQuery::from_static(p), n).map(str::to_owned)
        };
        assert_eq!(q("/a?user=alice", "user").as_deref(), Some("alice"));
        assert_eq!(
            q("/a?x=1&user=bob&user=carol", "user").as_deref(),
            Some("bob")
        );
        assert_eq!(q("/a?user", "user").as_deref(), Some(""));
        assert_eq!(q("/a?user=al%69ce", "user").as_deref(), Some("al%69ce"));
        assert_eq!(q("/a?users=x", "user"), None);
        assert_eq!(q("/a", "user"), None);
    }
}
