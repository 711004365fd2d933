//! `rate_limits` (config.route.v3.RateLimit) of a route, a virtual host or a `local_ratelimit`
//! filter: the actions that turn a request into rate limit descriptors, as Envoy's
//! `RateLimitPolicyEntryImpl::populateDescriptors` does. The local rate limit filter
//! (`http/filters/local_ratelimit.rs`) looks the descriptors up among its configured ones.
//!
//! Every action of an entry must produce its entry, or the entry yields no descriptor
//! (`request_headers` with `skip_if_absent` just adds nothing). Supported actions:
//! `request_headers`, `remote_address`, `masked_remote_address`, `generic_key`,
//! `header_value_match` and `destination_cluster`.

use std::{borrow::Cow, net::IpAddr};

use serde::Deserialize;
use smallvec::SmallVec;

use super::{
    build_match::header_matcher,
    headers::HeaderLookup,
    matcher::HeaderMatcher,
    select::{header_matches, header_value, RequestView},
};
use crate::config::{raw_route::RawHeaderMatcher, ConfigError, FieldPath};

/// `config.route.v3.RateLimit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    stage: Option<u32>,
    disable_key: Option<String>,
    #[serde(default)]
    actions: Vec<RawAction>,
    limit: Option<serde_json::Value>,
    hits_addend: Option<serde_json::Value>,
    apply_on_stream_done: Option<bool>,
    x_ratelimit_option: Option<String>,
}

impl RawRateLimit {
    /// The fields only a route's or virtual host's entry may set.
    pub(crate) fn route_only_fields(&self) -> impl Iterator<Item = &'static str> {
        [
            ("stage", self.stage.is_some()),
            ("disable_key", self.disable_key.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
    }
}

/// `RateLimit.Action`: exactly one of its fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    source_cluster: Option<serde_json::Value>,
    destination_cluster: Option<serde_json::Value>,
    request_headers: Option<RawRequestHeaders>,
    remote_address: Option<serde_json::Value>,
    generic_key: Option<RawGenericKey>,
    header_value_match: Option<RawHeaderValueMatch>,
    dynamic_metadata: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
    extension: Option<serde_json::Value>,
    masked_remote_address: Option<RawMaskedRemoteAddress>,
    query_parameter_value_match: Option<serde_json::Value>,
    query_parameters: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestHeaders {
    header_name: Option<String>,
    descriptor_key: Option<String>,
    skip_if_absent: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenericKey {
    descriptor_value: Option<String>,
    descriptor_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderValueMatch {
    descriptor_key: Option<String>,
    descriptor_value: Option<String>,
    expect_match: Option<bool>,
    #[serde(default)]
    headers: Vec<RawHeaderMatcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaskedRemoteAddress {
    v4_prefix_mask_len: Option<u32>,
    v6_prefix_mask_len: Option<u32>,
}

/// A compiled `RateLimit` entry.
#[derive(Debug, Clone)]
pub struct RateLimitEntry {
    /// `stage` (0..=10): the filter stage this entry feeds.
    pub stage: u32,
    /// `disable_key` set: the local rate limit filter skips the entry.
    pub disabled: bool,
    actions: Vec<Action>,
}

#[derive(Debug, Clone)]
enum Action {
    RequestHeader {
        name: String,
        key: String,
        skip_if_absent: bool,
    },
    RemoteAddress,
    MaskedRemoteAddress {
        v4: u8,
        v6: u8,
    },
    GenericKey {
        key: String,
        value: String,
    },
    HeaderValueMatch {
        key: String,
        value: String,
        expect_match: bool,
        headers: Vec<HeaderMatcher>,
    },
    DestinationCluster,
}

/// One request descriptor: `(key, value)` entries in action order.
pub type Descriptor<'a> = SmallVec<[(&'a str, Cow<'a, str>); 2]>;

/// What the actions read from a request.
pub struct RequestFacts<'a, 'f, H: HeaderLookup + ?Sized> {
    /// The request line and headers.
    pub request: &'a RequestView<'a, H>,
    /// The downstream remote address (after `x-forwarded-for` processing), looked up only
    /// when an action needs it.
    pub remote: &'f dyn Fn() -> Option<IpAddr>,
    /// The cluster the route picked (for `destination_cluster`).
    pub cluster: Option<&'a str>,
}

/// Envoy's bound on `RateLimit.stage`.
pub const MAX_STAGE: u32 = 10;

/// Compiles `rate_limits[]` at `p`.
pub(crate) fn build(
    raw: &[RawRateLimit],
    p: &FieldPath,
) -> Result<Vec<RateLimitEntry>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, r)| entry(r, &p.index(i)))
        .collect()
}

/// A `stage` (a route entry's or the filter's) at `p`: 0 when unset, at most [`MAX_STAGE`].
pub(crate) fn stage(raw: Option<u32>, p: &FieldPath) -> Result<u32, ConfigError> {
    match raw.unwrap_or(0) {
        s if s > MAX_STAGE => Err(p.err(format!("{s} is above the maximum {MAX_STAGE}"))),
        s => Ok(s),
    }
}

fn entry(r: &RawRateLimit, p: &FieldPath) -> Result<RateLimitEntry, ConfigError> {
    let stage = stage(r.stage, &p.field("stage"))?;
    if r.limit.is_some() {
        return Err(p
            .field("limit")
            .unsupported("dynamic limit overrides need a rate limit service"));
    }
    if r.hits_addend.is_some() {
        return Err(p.field("hits_addend").unsupported("one hit per request"));
    }
    if r.apply_on_stream_done == Some(true) {
        return Err(p
            .field("apply_on_stream_done")
            .unsupported("limits apply on the request"));
    }
    if r.x_ratelimit_option.is_some() {
        return Err(p
            .field("x_ratelimit_option")
            .unsupported("the filter's enable_x_ratelimit_headers decides"));
    }
    if r.actions.is_empty() {
        return Err(p.field("actions").err("at least one action is required"));
    }
    let actions = r
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| action(a, &p.field("actions").index(i)))
        .collect::<Result<_, _>>()?;
    Ok(RateLimitEntry {
        stage,
        disabled: r.disable_key.as_deref().is_some_and(|k| !k.is_empty()),
        actions,
    })
}

fn action(a: &RawAction, p: &FieldPath) -> Result<Action, ConfigError> {
    let unsupported = [
        ("source_cluster", a.source_cluster.is_some()),
        ("dynamic_metadata", a.dynamic_metadata.is_some()),
        ("metadata", a.metadata.is_some()),
        ("extension", a.extension.is_some()),
        (
            "query_parameter_value_match",
            a.query_parameter_value_match.is_some(),
        ),
        ("query_parameters", a.query_parameters.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(p
            .field(name)
            .unsupported("rate limit action not implemented"));
    }
    let set = [
        a.destination_cluster.is_some(),
        a.request_headers.is_some(),
        a.remote_address.is_some(),
        a.generic_key.is_some(),
        a.header_value_match.is_some(),
        a.masked_remote_address.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err(p.err("exactly one action is required"));
    }
    let nonempty = |v: &Option<String>, f: &str, pp: &FieldPath| -> Result<String, ConfigError> {
        v.clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| pp.field(f).err("required"))
    };
    if let Some(r) = &a.request_headers {
        let rp = p.field("request_headers");
        return Ok(Action::RequestHeader {
            name: nonempty(&r.header_name, "header_name", &rp)?.to_ascii_lowercase(),
            key: nonempty(&r.descriptor_key, "descriptor_key", &rp)?,
            skip_if_absent: r.skip_if_absent.unwrap_or(false),
        });
    }
    if a.remote_address.is_some() {
        return Ok(Action::RemoteAddress);
    }
    if let Some(m) = &a.masked_remote_address {
        let mp = p.field("masked_remote_address");
        let v4 = m.v4_prefix_mask_len.unwrap_or(32);
        let v6 = m.v6_prefix_mask_len.unwrap_or(128);
        if v4 > 32 {
            return Err(mp.field("v4_prefix_mask_len").err("at most 32"));
        }
        if v6 > 128 {
            return Err(mp.field("v6_prefix_mask_len").err("at most 128"));
        }
        return Ok(Action::MaskedRemoteAddress {
            v4: v4 as u8,
            v6: v6 as u8,
        });
    }
    if let Some(g) = &a.generic_key {
        let gp = p.field("generic_key");
        return Ok(Action::GenericKey {
            key: g
                .descriptor_key
                .clone()
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "generic_key".into()),
            value: nonempty(&g.descriptor_value, "descriptor_value", &gp)?,
        });
    }
    if let Some(h) = &a.header_value_match {
        let hp = p.field("header_value_match");
        if h.headers.is_empty() {
            return Err(hp
                .field("headers")
                .err("at least one header matcher is required"));
        }
        return Ok(Action::HeaderValueMatch {
            key: h
                .descriptor_key
                .clone()
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "header_match".into()),
            value: nonempty(&h.descriptor_value, "descriptor_value", &hp)?,
            expect_match: h.expect_match.unwrap_or(true),
            headers: h
                .headers
                .iter()
                .enumerate()
                .map(|(i, m)| header_matcher(m, &hp.field("headers").index(i)))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Action::DestinationCluster)
}

impl RateLimitEntry {
    /// This entry's descriptor for a request, when every action produces its entry.
    pub fn descriptor<'a, H: HeaderLookup + ?Sized>(
        &'a self,
        req: &RequestFacts<'a, '_, H>,
    ) -> Option<Descriptor<'a>> {
        let mut d = Descriptor::new();
        for a in &self.actions {
            match a {
                Action::RequestHeader {
                    name,
                    key,
                    skip_if_absent,
                } => match header_value(req.request, name) {
                    Some(v) => d.push((key.as_str(), Cow::Borrowed(v))),
                    None if *skip_if_absent => {}
                    None => return None,
                },
                Action::RemoteAddress => {
                    d.push(("remote_address", Cow::Owned((req.remote)()?.to_string())))
                }
                Action::MaskedRemoteAddress { v4, v6 } => {
                    let ip = (req.remote)()?;
                    d.push(("masked_remote_address", Cow::Owned(masked(ip, *v4, *v6))));
                }
                Action::GenericKey { key, value } => d.push((key, Cow::Borrowed(value))),
                Action::HeaderValueMatch {
                    key,
                    value,
                    expect_match,
                    headers,
                } => {
                    let all = headers.iter().all(|m| header_matches(m, req.request));
                    if all != *expect_match {
                        return None;
                    }
                    d.push((key, Cow::Borrowed(value)));
                }
                Action::DestinationCluster => {
                    d.push(("destination_cluster", Cow::Borrowed(req.cluster?)))
                }
            }
        }
        Some(d)
    }
}

/// `ip` with its low bits cleared, as `address/len` (Envoy's `CidrRange::asString`).
fn masked(ip: IpAddr, v4: u8, v6: u8) -> String {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4)).unwrap_or(0);
            format!("{}/{v4}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(v6)).unwrap_or(0);
            format!("{}/{v6}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(yaml: &str) -> Result<Vec<RateLimitEntry>, ConfigError> {
        let raw: Vec<RawRateLimit> = serde_norway::from_str(yaml).unwrap();
        build(&raw, &FieldPath::root().field("rate_limits"))
    }

    fn facts<'a>(
        request: &'a RequestView<'a, [(&'a str, &'a str)]>,
    ) -> RequestFacts<'a, 'static, [(&'a str, &'a str)]> {
        RequestFacts {
            request,
            remote: &|| Some("10.1.2.3".parse().unwrap()),
            cluster: Some("backend"),
        }
    }

    fn view<'a>(headers: &'a [(&'a str, &'a str)]) -> RequestView<'a, [(&'a str, &'a str)]> {
        RequestView {
            authority: Some("web"),
            path: "/p",
            method: "GET",
            scheme: "http",
            headers,
            random: 0,
            peer: None,
            metadata: None,
        }
    }

    fn show(d: Option<Descriptor<'_>>) -> Option<Vec<String>> {
        d.map(|d| d.iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    #[test]
    fn actions_make_envoys_entries_in_order() {
        let e = entries(
            "- actions:\n  - request_headers: {header_name: X-User, descriptor_key: user}\n  - remote_address: {}\n  - masked_remote_address: {v4_prefix_mask_len: 16}\n  - generic_key: {descriptor_value: v}\n  - destination_cluster: {}\n  - header_value_match: {descriptor_value: get, headers: [{name: x-m, exact_match: a}]}\n",
        )
        .unwrap();
        let h = [("x-user", "ann"), ("x-m", "a")];
        assert_eq!(
            show(e[0].descriptor(&facts(&view(&h)))).unwrap(),
            [
                "user=ann",
                "remote_address=10.1.2.3",
                "masked_remote_address=10.1.0.0/16",
                "generic_key=v",
                "destination_cluster=backend",
                "header_match=get"
            ]
        );
        // A missing header or a failed match drops the whole descriptor.
        assert_eq!(show(e[0].descriptor(&facts(&view(&[("x-m", "a")])))), None);
        assert_eq!(
            show(e[0].descriptor(&facts(&view(&[("x-user", "ann")])))),
            None
        );
    }

    #[test]
    fn skip_if_absent_and_expect_match_false() {
        let e = entries(
            "- actions:\n  - request_headers: {header_name: x-user, descriptor_key: user, skip_if_absent: true}\n  - header_value_match: {descriptor_key: k, descriptor_value: not-admin, expect_match: false, headers: [{name: x-admin, present_match: true}]}\n",
        )
        .unwrap();
        assert_eq!(
            show(e[0].descriptor(&facts(&view(&[])))).unwrap(),
            ["k=not-admin"]
        );
        assert_eq!(
            show(e[0].descriptor(&facts(&view(&[("x-admin", "1")])))),
            None
        );
        // Pseudo-headers read the request line.
        let m = entries(
            "- actions:\n  - request_headers: {header_name: ':path', descriptor_key: p}\n  - header_value_match: {descriptor_value: g, headers: [{name: ':method', exact_match: GET}]}\n",
        )
        .unwrap();
        assert_eq!(
            show(m[0].descriptor(&facts(&view(&[])))).unwrap(),
            ["p=/p", "header_match=g"]
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let err = |y: &str| entries(y).unwrap_err().path().to_string();
        assert_eq!(
            err("- actions: [{source_cluster: {}}]"),
            "rate_limits[0].actions[0].source_cluster"
        );
        assert_eq!(
            err("- actions: [{generic_key: {}}]"),
            "rate_limits[0].actions[0].generic_key.descriptor_value"
        );
        assert_eq!(
            err("- {stage: 11, actions: [{remote_address: {}}]}"),
            "rate_limits[0].stage"
        );
        assert_eq!(err("- {actions: []}"), "rate_limits[0].actions");
        assert_eq!(
            err("- actions: [{remote_address: {}, generic_key: {descriptor_value: v}}]"),
            "rate_limits[0].actions[0]"
        );
    }
}
