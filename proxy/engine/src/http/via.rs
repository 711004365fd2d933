//! The HCM's `via`: appended to every request sent upstream and every response sent downstream
//! (proxied or local), as Envoy's `ConnectionManagerUtility::mutateRequestHeaders` /
//! `mutateResponseHeaders` do with `Utility::appendVia`.

use http::{HeaderMap, HeaderValue};

/// Appends `via` to `h`'s `via` header: Envoy keeps it as one inline header whose repeated
/// lines its codec joined with `,`, then adds `, <via>`. Without a `via` already there the
/// configured value is shared (no allocation).
pub(crate) fn append(via: &HeaderValue, h: &mut HeaderMap) {
    let mut joined: Vec<u8> = Vec::new();
    for v in h.get_all(http::header::VIA) {
        if !v.is_empty() {
            if !joined.is_empty() {
                joined.push(b',');
            }
            joined.extend_from_slice(v.as_bytes());
        }
    }
    let value = if joined.is_empty() {
        via.clone()
    } else {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(via.as_bytes());
        match HeaderValue::from_bytes(&joined) {
            Ok(v) => v,
            Err(_) => return,
        }
    };
    h.insert(http::header::VIA, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_as_envoy() {
        let via = HeaderValue::from_static("1.1 p");
        for (existing, want) in [
            (&[][..], "1.1 p"),
            (&["1.0 a"][..], "1.0 a, 1.1 p"),
            (&["1.0 a", "1.1 b"][..], "1.0 a,1.1 b, 1.1 p"),
        ] {
            let mut h = HeaderMap::new();
            for v in existing {
                h.append(http::header::VIA, HeaderValue::from_static(v));
            }
            append(&via, &mut h);
            let all: Vec<_> = h.get_all(http::header::VIA).iter().collect();
            assert_eq!(all, [want], "{existing:?}");
        }
    }
}
