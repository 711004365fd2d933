//! Which HTTP/1.1 upgrade requests may become tunnels, as Envoy's HTTP connection manager
//! decides: only an `Upgrade` type named in the HCM's `upgrade_configs` (and enabled) is
//! forwarded as an upgrade; `Upgrade: h2c` is stripped and the request served as plain HTTP/1.1
//! (Envoy's codec does the same); any other upgrade is refused with 403 before routing, so no
//! backend can switch a connection to a protocol the route table never sees.

use http::{header, HeaderMap, HeaderValue, Version};

use crate::config::UpgradeConfig;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not an upgrade (or an h2c upgrade, now stripped): serve it normally.
    Plain,
    /// An enabled upgrade: forward it and splice on 101.
    Tunnel,
    /// An upgrade the HCM does not enable: 403.
    Refuse,
}

/// Decides, and strips an h2c upgrade's headers from `h`.
pub(crate) fn decide(configs: &[UpgradeConfig], version: Version, h: &mut HeaderMap) -> Decision {
    if version != Version::HTTP_11 {
        return Decision::Plain;
    }
    let Some(kind) = h.get(header::UPGRADE).and_then(|v| v.to_str().ok()) else {
        return Decision::Plain;
    };
    let kind = kind.trim().to_ascii_lowercase();
    let nominated = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if kind == "h2c" || !nominated {
        // h2c (or an Upgrade header nobody nominated): drop the upgrade, keep the request.
        strip_upgrade(h);
        return Decision::Plain;
    }
    match configs.iter().find(|c| c.upgrade_type == kind) {
        Some(c) if c.enabled => Decision::Tunnel,
        _ => Decision::Refuse,
    }
}

/// Removes `Upgrade`, `HTTP2-Settings` and their nominations from `Connection`.
fn strip_upgrade(h: &mut HeaderMap) {
    h.remove(header::UPGRADE);
    h.remove("http2-settings");
    let kept: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("upgrade")
                && !t.eq_ignore_ascii_case("http2-settings")
        })
        .map(str::to_string)
        .collect();
    h.remove(header::CONNECTION);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
            h.insert(header::CONNECTION, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ws(enabled: bool) -> Vec<UpgradeConfig> {
        vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            enabled,
        }]
    }

    #[test]
    fn only_configured_and_enabled_upgrades_tunnel() {
        let up = || headers(&[("connection", "Upgrade"), ("upgrade", "WebSocket")]);
        assert_eq!(
            decide(&ws(true), Version::HTTP_11, &mut up()),
            Decision::Tunnel
        );
        assert_eq!(
            decide(&ws(false), Version::HTTP_11, &mut up()),
            Decision::Refuse
        );
        assert_eq!(decide(&[], Version::HTTP_11, &mut up()), Decision::Refuse);
        let mut other = headers(&[("connection", "upgrade"), ("upgrade", "tls/1.2")]);
        assert_eq!(
            decide(&ws(true), Version::HTTP_11, &mut other),
            Decision::Refuse
        );
    }

    #[test]
    fn h2c_is_stripped_and_served_plain() {
        let mut h = headers(&[
            ("connection", "Upgrade, HTTP2-Settings, keep-alive"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        assert_eq!(decide(&ws(true), Version::HTTP_11, &mut h), Decision::Plain);
        assert!(h.get("upgrade").is_none() && h.get("http2-settings").is_none());
        assert_eq!(h["connection"], "keep-alive");
    }

    #[test]
    fn not_an_upgrade_is_plain() {
        let mut h = headers(&[("upgrade", "websocket")]);
        assert_eq!(decide(&ws(true), Version::HTTP_11, &mut h), Decision::Plain);
        assert!(
            h.get("upgrade").is_none(),
            "an unnominated Upgrade header is dropped"
        );
        let mut h2 = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(decide(&ws(true), Version::HTTP_2, &mut h2), Decision::Plain);
    }
}
