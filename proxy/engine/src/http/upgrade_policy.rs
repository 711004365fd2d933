//! Which HTTP/1.1 upgrade requests may become tunnels, as Envoy's HTTP connection manager
//! decides: only an `Upgrade` type named in the HCM's `upgrade_configs` (and enabled) is
//! forwarded as an upgrade; `Upgrade: h2c` is stripped and the request served as plain HTTP/1.1
//! (Envoy's codec does the same); any other upgrade is refused with 403 once the route is
//! selected (a request without a route goes on to its 404), so no backend can switch a
//! connection to a protocol the configuration does not enable. A route's own `upgrade_configs`
//! override the HCM's for its requests (Envoy's
//! `HttpConnectionManagerConfig::createUpgradeFilterChain`, [`for_route`]).

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

/// What a request asks for.
enum Requested {
    /// No upgrade.
    Nothing,
    /// An upgrade to drop, keeping the request (h2c, or an `Upgrade` nobody nominated).
    Strip,
    /// An upgrade of this type (lower-cased).
    Kind(String),
}

fn requested(version: Version, h: &HeaderMap) -> Requested {
    if version != Version::HTTP_11 {
        return Requested::Nothing;
    }
    let Some(kind) = h.get(header::UPGRADE).and_then(|v| v.to_str().ok()) else {
        return Requested::Nothing;
    };
    let kind = kind.trim().to_ascii_lowercase();
    let nominated = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if kind == "h2c" || !nominated {
        Requested::Strip
    } else {
        Requested::Kind(kind)
    }
}

/// Envoy's `createUpgradeFilterChain`: the route's entry for the type decides when it has one
/// (disabled: refused even when the HCM enables it; enabled: allowed even when the HCM does not
/// list it), else the HCM's `upgrade_configs`.
fn allowed(configs: &[UpgradeConfig], route: &[(String, bool)], kind: &str) -> Decision {
    if let Some((_, enabled)) = route.iter().find(|(t, _)| t == kind) {
        return if *enabled {
            Decision::Tunnel
        } else {
            Decision::Refuse
        };
    }
    match configs.iter().find(|c| c.upgrade_type == kind) {
        Some(c) if c.enabled => Decision::Tunnel,
        _ => Decision::Refuse,
    }
}

/// Strips an h2c upgrade's headers (and an `Upgrade` that `Connection` does not nominate) from
/// `h`: such a request is served as plain HTTP/1.1.
pub(crate) fn strip_h2c(version: Version, h: &mut HeaderMap) {
    if matches!(requested(version, h), Requested::Strip) {
        strip_upgrade(h);
    }
}

/// Whether the request asks for an upgrade ([`strip_h2c`] done).
pub(crate) fn is_upgrade(version: Version, h: &HeaderMap) -> bool {
    matches!(requested(version, h), Requested::Kind(_))
}

/// Decides by the HCM's `upgrade_configs` alone, and strips an h2c upgrade's headers from `h`.
#[cfg(test)]
fn decide(configs: &[UpgradeConfig], version: Version, h: &mut HeaderMap) -> Decision {
    strip_h2c(version, h);
    for_route(configs, &[], version, h)
}

/// Decides once the route is known, with its `upgrade_configs` (`route`; empty for a route
/// without them or a request with no forwarding route). h2c was stripped by [`strip_h2c`].
pub(crate) fn for_route(
    configs: &[UpgradeConfig],
    route: &[(String, bool)],
    version: Version,
    h: &HeaderMap,
) -> Decision {
    match requested(version, h) {
        Requested::Nothing | Requested::Strip => Decision::Plain,
        Requested::Kind(kind) => allowed(configs, route, &kind),
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

    #[test]
    fn a_routes_entry_overrides_the_hcm_for_its_type() {
        let up = |t: &'static str| headers(&[("connection", "upgrade"), ("upgrade", t)]);
        let route = [("websocket".to_string(), false), ("foo".to_string(), true)];
        let decide = |hcm: &[UpgradeConfig], t| for_route(hcm, &route, Version::HTTP_11, &up(t));
        // Envoy's table: HCM on + route off = off; HCM off or absent + route on = on.
        assert_eq!(decide(&ws(true), "WebSocket"), Decision::Refuse);
        assert_eq!(decide(&ws(true), "Foo"), Decision::Tunnel);
        assert_eq!(decide(&[], "foo"), Decision::Tunnel);
        // Types the route does not list follow the HCM.
        assert_eq!(decide(&ws(true), "bar"), Decision::Refuse);
        let no_route = for_route(&ws(true), &[], Version::HTTP_11, &up("websocket"));
        assert_eq!(no_route, Decision::Tunnel);
        assert!(is_upgrade(Version::HTTP_11, &up("foo")));
        assert!(!is_upgrade(
            Version::HTTP_11,
            &headers(&[("upgrade", "foo")])
        ));
    }
}
