//! The request properties a route's `hash_policy` hashes that need more than a lookup: every
//! value of a repeated header, and a query parameter.

use std::borrow::Cow;

use http::{uri::PathAndQuery, HeaderMap};

use crate::{
    route::RegexRewrite,
    upstream::{lb::hash_bytes, xxhash::xxh64},
};

/// Envoy's header hash: every value of `name`, each rewritten by `rewrite` when set, sorted
/// (so the order the values came in does not matter) and hashed in turn, each hash seeding the
/// next. None when the header is absent. One value and no rewrite hash without a copy.
pub(super) fn header(
    headers: &HeaderMap,
    name: &str,
    rewrite: Option<&RegexRewrite>,
) -> Option<u64> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let rewritten = |v: &'_ http::HeaderValue| -> Vec<u8> {
        match (rewrite, v.to_str()) {
            (Some(r), Ok(s)) => r.apply(s).into_owned().into_bytes(),
            // A value that is not text is hashed as sent (the regex reads text).
            _ => v.as_bytes().to_vec(),
        }
    };
    let Some(second) = all.next() else {
        return Some(match rewrite {
            None => hash_bytes(first.as_bytes()),
            Some(_) => hash_bytes(&rewritten(first)),
        });
    };
    let mut values: Vec<Vec<u8>> = [first, second]
        .into_iter()
        .chain(all)
        .map(rewritten)
        .collect();
    values.sort();
    // Each value hashed with the previous hash as the seed (Envoy's `HashUtil::xxHash64` of a
    // list).
    Some(values.iter().fold(0, |seed, v| xxh64(v, seed)))
}

/// The first value of query parameter `name` in `path`, as sent (Envoy does not decode it for
/// hashing); a parameter without `=` has the empty value.
pub(super) fn query_parameter<'p>(path: &'p PathAndQuery, name: &str) -> Option<Cow<'p, str>> {
    path.query()?.split('&').find_map(|param| {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        (key == name).then_some(Cow::Borrowed(value))
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
    fn the_first_value_of_the_query_parameter_as_sent() {
        let q = |p: &'static str, n: &str| {
            query_parameter(&PathAndQuery::from_static(p), n).map(|v| v.into_owned())
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
