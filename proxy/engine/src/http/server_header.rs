//! The `server` response header (`server_name` + `server_header_transformation`), set on every
//! response the HCM sends, proxied or local, as Envoy's `encodeHeaders` does.

use http::{header, HeaderMap};

use crate::config::{ServerHeader, ServerTransformation};

/// Sets `server` on `h` as `cfg` says (no allocation: the name is a shared `HeaderValue`).
pub(crate) fn apply(cfg: &ServerHeader, h: &mut HeaderMap) {
    let set = match cfg.transformation {
        ServerTransformation::Overwrite => true,
        ServerTransformation::AppendIfAbsent => !h.contains_key(header::SERVER),
        ServerTransformation::PassThrough => false,
    };
    if set {
        h.insert(header::SERVER, cfg.name.clone());
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn transformations() {
        let up = |v: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = v {
                h.insert(header::SERVER, HeaderValue::from_static(v));
            }
            h
        };
        let cfg = |t| ServerHeader {
            name: HeaderValue::from_static("edge"),
            transformation: t,
        };
        let server = |h: &HeaderMap| {
            h.get(header::SERVER)
                .map(|v| v.to_str().unwrap().to_string())
        };
        for (t, upstream, want) in [
            (ServerTransformation::Overwrite, Some("app"), Some("edge")),
            (ServerTransformation::Overwrite, None, Some("edge")),
            (
                ServerTransformation::AppendIfAbsent,
                Some("app"),
                Some("app"),
            ),
            (ServerTransformation::AppendIfAbsent, None, Some("edge")),
            (ServerTransformation::PassThrough, Some("app"), Some("app")),
            (ServerTransformation::PassThrough, None, None),
        ] {
            let mut h = up(upstream);
            apply(&cfg(t), &mut h);
            assert_eq!(server(&h).as_deref(), want, "{t:?} {upstream:?}");
        }
    }
}
