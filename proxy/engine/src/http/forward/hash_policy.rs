//! The cookie a route's `ttl` cookie hash policy makes for a request without one (the hash
//! itself is `route::request_hash`, shared with the weighted cluster pick).

use http::HeaderValue;

use crate::{http::ConnInfo, route::CookieGen, upstream::xxhash::xxh64};

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

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::{
        route::{
            request_hash::{cookie, header, query_parameter},
            RegexRewrite,
        },
        upstream::lb::hash_bytes,
    };

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
            proxy_direct: None,
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
        let q = |p: &'static str, n: &str| query_parameter(p, n).map(str::to_owned);
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
