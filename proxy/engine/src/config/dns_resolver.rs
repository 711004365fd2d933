//! A DNS cluster's resolver options: `typed_dns_resolver_config` and `dns_jitter`, which
//! istiod (1.26+) sets on every STRICT_DNS / LOGICAL_DNS cluster (c-ares with
//! `udp_max_queries: 100`, a 100 ms jitter).
//!
//! sluice resolves with the system resolver (getaddrinfo), so the c-ares knobs that only tune
//! how c-ares talks to the name servers of `/etc/resolv.conf` (queries per UDP port, rotation,
//! EDNS0 size, channel lifetime, its query cache, per-query timeout and tries) are accepted as
//! no-ops: the system resolver applies its own (resolv.conf's `timeout`, `attempts`,
//! `rotate`). What would change which names resolve to what — other name servers
//! (`resolvers`), TCP, no search domains, dropping unroutable families — is rejected.

use serde::Deserialize;
use serde_norway::Value;

use super::{
    duration::PbDuration,
    path::FieldPath,
    raw::{type_url, typed_config},
    ConfigError,
};

const CARES: &str =
    "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";
const GETADDRINFO: &str = "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig";

/// `core.v3.TypedExtensionConfig` of `typed_dns_resolver_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsResolver {
    #[allow(dead_code)]
    name: Option<String>,
    typed_config: Option<Value>,
}

/// `CaresDnsResolverConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCares {
    #[serde(default)]
    resolvers: Vec<Value>,
    use_resolvers_as_fallback: Option<bool>,
    filter_unroutable_families: Option<bool>,
    dns_resolver_options: Option<RawResolverOptions>,
    // The c-ares tuning knobs: no-ops here (module docs).
    #[allow(dead_code)]
    udp_max_queries: Option<u32>,
    query_timeout_seconds: Option<u64>,
    query_tries: Option<u32>,
    #[allow(dead_code)]
    rotate_nameservers: Option<bool>,
    #[allow(dead_code)]
    edns0_max_payload_size: Option<u32>,
    #[allow(dead_code)]
    max_udp_channel_duration: Option<PbDuration>,
    #[allow(dead_code)]
    reinit_channel_on_timeout: Option<bool>,
    #[allow(dead_code)]
    qcache_max_ttl: Option<u32>,
}

/// `core.v3.DnsResolverOptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolverOptions {
    use_tcp_for_dns_lookups: Option<bool>,
    no_default_search_domain: Option<bool>,
}

/// `GetAddrInfoDnsResolverConfig`: sluice's own resolver; both fields are no-ops (a failed
/// lookup is retried at the next refresh, and lookups run on the runtime's blocking pool).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGetAddrInfo {
    #[allow(dead_code)]
    num_retries: Option<u32>,
    #[allow(dead_code)]
    num_resolver_threads: Option<u32>,
}

/// Checks `typed_dns_resolver_config` at `p`: accepted when the system resolver does what it
/// asks for.
pub(crate) fn check(raw: &RawDnsResolver, p: &FieldPath) -> Result<(), ConfigError> {
    let tp = p.field("typed_config");
    let Some(tc) = &raw.typed_config else {
        return Err(tp.err("required"));
    };
    match type_url(tc) {
        Some(CARES) => {
            let c: RawCares = typed_config(tc, &tp, CARES)?;
            if !c.resolvers.is_empty() {
                return Err(tp.field("resolvers").unsupported(
                    "sluice resolves with the system resolver (the name servers of /etc/resolv.conf)",
                ));
            }
            let on = |b: Option<bool>| b == Some(true);
            if on(c.filter_unroutable_families) {
                return Err(tp
                    .field("filter_unroutable_families")
                    .unsupported("true: the system resolver's answers are used as they are"));
            }
            if c.query_timeout_seconds == Some(0) {
                return Err(tp.field("query_timeout_seconds").err("must be at least 1"));
            }
            if c.query_tries == Some(0) {
                return Err(tp.field("query_tries").err("must be at least 1"));
            }
            let _ = c.use_resolvers_as_fallback; // meaningful only with `resolvers`
            if let Some(o) = &c.dns_resolver_options {
                let op = tp.field("dns_resolver_options");
                if on(o.use_tcp_for_dns_lookups) {
                    return Err(op
                        .field("use_tcp_for_dns_lookups")
                        .unsupported("true: the system resolver chooses its transport"));
                }
                if on(o.no_default_search_domain) {
                    return Err(op.field("no_default_search_domain").unsupported(
                        "true: the system resolver applies resolv.conf's search list",
                    ));
                }
            }
            Ok(())
        }
        Some(GETADDRINFO) => {
            let _: RawGetAddrInfo = typed_config(tc, &tp, GETADDRINFO)?;
            Ok(())
        }
        Some(other) => Err(tp.field("@type").unsupported(&format!(
            "resolver {other:?}; supported: c-ares (its tuning options as no-ops) and getaddrinfo"
        ))),
        None => Err(tp.field("@type").err("missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<(), ConfigError> {
        let raw: RawDnsResolver = serde_norway::from_str(yaml).unwrap();
        check(&raw, &FieldPath::root().field("typed_dns_resolver_config"))
    }

    #[test]
    fn istiods_cares_config_loads_and_what_the_system_resolver_cannot_do_is_named() {
        run("{name: envoy.network.dns_resolver.cares, typed_config: {'@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig, udp_max_queries: 100}}").unwrap();
        run("{typed_config: {'@type': type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig, num_retries: 3}}").unwrap();
        for (yaml, field) in [
            (
                "resolvers: [{socket_address: {address: 8.8.8.8, port_value: 53}}]",
                "typed_config.resolvers",
            ),
            (
                "dns_resolver_options: {use_tcp_for_dns_lookups: true}",
                "dns_resolver_options.use_tcp_for_dns_lookups",
            ),
            (
                "dns_resolver_options: {no_default_search_domain: true}",
                "dns_resolver_options.no_default_search_domain",
            ),
            (
                "filter_unroutable_families: true",
                "filter_unroutable_families",
            ),
            ("query_tries: 0", "query_tries"),
        ] {
            let e = run(&format!("{{typed_config: {{'@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig, {yaml}}}}}")).unwrap_err().to_string();
            assert!(e.contains(field), "{yaml}: {e}");
        }
        let e = run("{typed_config: {'@type': type.googleapis.com/acme.Resolver}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("acme.Resolver"), "{e}");
    }
}
