//! The cluster's connection, DNS and load-balancing options -> [`ClusterOptions`]:
//! `max_requests_per_connection` (both places), the typed options' `idle_timeout`,
//! `upstream_connection_options`,
//! `per_connection_buffer_limit_bytes`, `respect_dns_ttl`, `dns_failure_refresh_rate`,
//! `ignore_health_on_host_removal`, `cleanup_interval` and `common_lb_config`, `upstream_bind_config` and `load_assignment.policy`.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{
    path::FieldPath,
    raw_cluster::{RawCluster, RawHttpProtocolOptions},
    raw_cluster_options::{RawBindConfig, RawCommonLbConfig, RawRefreshRate},
    ClusterOptions, ConfigError, DiscoveryType, TcpKeepalive, DEFAULT_HEALTHY_PANIC_THRESHOLD,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
};

/// `connection_keepalive` at `p`: `None` without an interval (Envoy sends no interval PING).
fn h2_keepalive(
    k: &super::raw_cluster::RawKeepaliveSettings,
    p: &FieldPath,
) -> Result<Option<(Duration, Duration)>, ConfigError> {
    let timeout = k
        .timeout
        .ok_or_else(|| p.field("timeout").err("required"))?
        .0;
    if timeout < Duration::from_millis(1) {
        return Err(p.field("timeout").err("must be at least 1ms"));
    }
    if k.connection_idle_interval.is_some() {
        return Err(p
            .field("connection_idle_interval")
            .unsupported("a PING before a stream on an idle connection"));
    }
    // `interval_jitter` (default 15 %) is accepted: PINGs go at the exact interval here.
    let _ = &k.interval_jitter;
    match k.interval.map(|d| d.0) {
        None => Ok(None),
        // Envoy 1.40 validates an explicit interval as at least 1 ms (0s included).
        Some(i) if i < Duration::from_millis(1) => {
            Err(p.field("interval").err("must be at least 1ms"))
        }
        Some(i) => Ok(Some((i, timeout))),
    }
}

/// `upstream_http_protocol_options` at `p`: `None` when neither flag is on (the header alone
/// does nothing, as in Envoy).
fn auto_sni(
    u: &super::raw_cluster_options::RawUpstreamHttpProtocolOptions,
    p: &FieldPath,
) -> Result<Option<super::AutoSni>, ConfigError> {
    let header = match u.override_auto_sni_header.as_deref() {
        None | Some("") => None,
        Some(h) if h.eq_ignore_ascii_case(":authority") => Some(http::header::HOST),
        Some(h) => Some(
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                p.field("override_auto_sni_header")
                    .err(format!("{h:?} is not a valid HTTP header name"))
            })?,
        ),
    };
    let (sni, san) = (
        u.auto_sni.unwrap_or(false),
        u.auto_san_validation.unwrap_or(false),
    );
    Ok((sni || san).then_some(super::AutoSni { sni, san, header }))
}

/// Envoy's bound on `dns_failure_refresh_rate.base_interval` (`gt: 1ms`).
const MIN_REFRESH_BASE: Duration = Duration::from_millis(1);

/// Reads the options of `raw` at `p`; `typed` is the cluster's typed HttpProtocolOptions, if
/// any.
pub(crate) fn options(
    raw: &RawCluster,
    typed: Option<&RawHttpProtocolOptions>,
    discovery: DiscoveryType,
    p: &FieldPath,
) -> Result<ClusterOptions, ConfigError> {
    let typed_max = typed.and_then(|t| {
        t.common_http_protocol_options
            .as_ref()
            .and_then(|c| c.max_requests_per_connection)
    });
    // Envoy refuses both; 0 means no limit.
    if typed_max.is_some() && raw.max_requests_per_connection.is_some() {
        return Err(p.field("max_requests_per_connection").err(
            "only one of this and typed_extension_protocol_options' \
             common_http_protocol_options.max_requests_per_connection",
        ));
    }
    let max_requests_per_connection = typed_max
        .or(raw.max_requests_per_connection)
        .filter(|n| *n > 0);
    let tcp_keepalive = raw
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
        .map(|k| TcpKeepalive {
            probes: k.keepalive_probes,
            time: k.keepalive_time,
            interval: k.keepalive_interval,
        });
    let dns = matches!(
        discovery,
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns
    );
    let dns_failure_refresh = match &raw.dns_failure_refresh_rate {
        None => None,
        Some(r) => Some(refresh_rate(r, &p.field("dns_failure_refresh_rate"))?),
    };
    if !dns && (dns_failure_refresh.is_some() || raw.respect_dns_ttl.is_some()) {
        let field = if dns_failure_refresh.is_some() {
            "dns_failure_refresh_rate"
        } else {
            "respect_dns_ttl"
        };
        return Err(p
            .field(field)
            .err("only valid with type STRICT_DNS or LOGICAL_DNS"));
    }
    let (source_address, extra_source_address) = match &raw.upstream_bind_config {
        None => (None, None),
        Some(b) => {
            let (s, e) = bind_source(b, &p.field("upstream_bind_config"))?;
            (Some(s), e)
        }
    };
    let common = typed.and_then(|t| t.common_http_protocol_options.as_ref());
    let idle = common.and_then(|c| c.idle_timeout);
    let max_response_headers_kb = match common.and_then(|c| c.max_response_headers_kb) {
        Some(kb) if !(1..=8192).contains(&kb) => {
            return Err(p
                .field("typed_extension_protocol_options")
                .field(super::validate_cluster::HTTP_PROTOCOL_OPTIONS_KEY)
                .field("common_http_protocol_options")
                .field("max_response_headers_kb")
                .err(format!("{kb} is not within 1..=8192")))
        }
        kb => kb,
    };
    let mut out = ClusterOptions {
        max_response_headers_kb,
        slow_start: slow_start(raw, p)?,
        // `0s` disables it, as Envoy.
        upstream_idle_timeout: idle.map_or(Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT), |d| {
            Some(d.0).filter(|d| !d.is_zero())
        }),
        upstream_max_connection_duration: common
            .and_then(|c| c.max_connection_duration)
            .map(|d| d.0)
            .filter(|d| !d.is_zero()),
        source_address,
        extra_source_address,
        max_requests_per_connection,
        tcp_keepalive,
        buffer_limit_bytes: raw.per_connection_buffer_limit_bytes,
        dns_failure_refresh,
        ignore_health_on_host_removal: raw.ignore_health_on_host_removal.unwrap_or(false),
        ..ClusterOptions::default()
    };
    // Envoy builds the resolver, and reads the jitter, only for DNS clusters.
    if let Some(r) = raw.typed_dns_resolver_config.as_ref().filter(|_| dns) {
        super::dns_resolver::check(r, &p.field("typed_dns_resolver_config"))?;
    }
    out.dns_jitter = raw.dns_jitter.map(|d| d.0).filter(|d| dns && !d.is_zero());
    if let Some(t) = typed {
        for (field, cfg) in [
            ("explicit_http_config", &t.explicit_http_config),
            (
                "use_downstream_protocol_config",
                &t.use_downstream_protocol_config,
            ),
        ] {
            if let Some(h1) = cfg.as_ref().and_then(|c| c.http_protocol_options.as_ref()) {
                out.header_key_format = super::header_key_format::parse(
                    h1.header_key_format.as_ref(),
                    &p.field("typed_extension_protocol_options")
                        .field(super::validate_cluster::HTTP_PROTOCOL_OPTIONS_KEY)
                        .field(field)
                        .field("http_protocol_options")
                        .field("header_key_format"),
                )?;
            }
            let h2 = cfg.as_ref().and_then(|c| c.http2_protocol_options.as_ref());
            let hp = p
                .field("typed_extension_protocol_options")
                .field(super::validate_cluster::HTTP_PROTOCOL_OPTIONS_KEY)
                .field(field)
                .field("http2_protocol_options");
            if let Some(k) = h2.and_then(|h| h.connection_keepalive.as_ref()) {
                out.h2_keepalive = h2_keepalive(k, &hp.field("connection_keepalive"))?;
            }
            if let Some(n) = h2.and_then(|h| h.max_concurrent_streams) {
                // Envoy's bounds; its default, the largest, is no limit here.
                if !(1..=2_147_483_647).contains(&n) {
                    return Err(hp
                        .field("max_concurrent_streams")
                        .err(format!("{n} is out of range (1 to 2147483647)")));
                }
                out.h2_max_concurrent_streams = (n < 2_147_483_647).then_some(n);
            }
        }
    }
    if let Some(u) = typed.and_then(|t| t.upstream_http_protocol_options.as_ref()) {
        let up = p
            .field("typed_extension_protocol_options")
            .field(super::validate_cluster::HTTP_PROTOCOL_OPTIONS_KEY)
            .field("upstream_http_protocol_options");
        out.auto_sni = auto_sni(u, &up)?;
    }
    out.istio_alpn = raw
        .metadata
        .as_ref()
        .and_then(|m| m.pointer("/filter_metadata/istio/alpn_override"))
        .and_then(|v| v.as_str())
        != Some("false");
    if let Some(d) = raw.cleanup_interval {
        let max = super::duration::MAX_MILLIS_SECONDS;
        if d.0.is_zero() {
            return Err(p.field("cleanup_interval").err("must be greater than 0s"));
        }
        if d.0.as_secs() > max {
            return Err(p
                .field("cleanup_interval")
                .err(format!("out of range (at most {max} seconds, as Envoy)")));
        }
        out.original_dst_cleanup = d.0;
    }
    if let Some(c) = &raw.common_lb_config {
        common_lb_config(c, &p.field("common_lb_config"), &mut out)?;
    }
    if let Some(policy) = raw
        .load_assignment
        .as_ref()
        .and_then(|la| la.policy.as_ref())
    {
        let pp = p.field("load_assignment").field("policy");
        match policy.overprovisioning_factor {
            Some(0) => {
                return Err(pp
                    .field("overprovisioning_factor")
                    .err("must be greater than 0"))
            }
            Some(f) => out.overprovisioning_factor = f,
            None => {}
        }
        out.weighted_priority_health = policy.weighted_priority_health.unwrap_or(false);
    }
    Ok(out)
}

/// `upstream_bind_config.source_address`: an IP literal and a port (0: any), both required as
/// in Envoy.
/// `upstream_bind_config` at `p`: the source address, and the extra one of the other IP
/// family (Envoy allows one, of a different family; istiod's `::6` beside `127.0.0.6` on a
/// dual-stack pod's inbound passthrough cluster).
fn bind_source(
    b: &RawBindConfig,
    p: &FieldPath,
) -> Result<(SocketAddr, Option<SocketAddr>), ConfigError> {
    let sp = p.field("source_address");
    let sa = b
        .source_address
        .as_ref()
        .ok_or_else(|| sp.err("required"))?;
    let source = socket_ip(sa, &sp)?;
    let ep = p.field("extra_source_addresses");
    if b.extra_source_addresses.len() > 1 {
        return Err(ep.err("at most one extra source address (of the other IP family), as Envoy"));
    }
    let extra = match b.extra_source_addresses.first() {
        None => None,
        Some(e) => {
            let e0 = ep.index(0);
            if e.socket_options.is_some() {
                return Err(e0.field("socket_options").unsupported(""));
            }
            let ap = e0.field("address");
            let a = e.address.as_ref().ok_or_else(|| ap.err("required"))?;
            let extra = socket_ip(a, &ap)?;
            if extra.is_ipv4() == source.is_ipv4() {
                return Err(ap.err(format!(
                    "{extra} is of the same IP family as source_address {source}; Envoy requires the other"
                )));
            }
            Some(extra)
        }
    };
    Ok((source, extra))
}

/// A `SocketAddress` at `p` whose address is an IP literal.
fn socket_ip(sa: &super::raw::RawSocketAddress, p: &FieldPath) -> Result<SocketAddr, ConfigError> {
    let (a, port) = super::validate::socket_address_fields(sa, p)?;
    let ip: IpAddr = a.parse().map_err(|_| {
        p.field("address")
            .err(format!("{a:?} is not an IP address"))
    })?;
    Ok(SocketAddr::new(ip, port))
}

fn refresh_rate(r: &RawRefreshRate, p: &FieldPath) -> Result<(Duration, Duration), ConfigError> {
    let base = r
        .base_interval
        .ok_or_else(|| p.field("base_interval").err("required"))?
        .0;
    if base <= MIN_REFRESH_BASE {
        return Err(p.field("base_interval").err("must be greater than 1ms"));
    }
    // Envoy's default max_interval: 10 times the base.
    let max = r.max_interval.map_or(base * 10, |d| d.0);
    if max <= base {
        return Err(p
            .field("max_interval")
            .err("must be greater than base_interval"));
    }
    Ok((base, max))
}

fn common_lb_config(
    c: &RawCommonLbConfig,
    p: &FieldPath,
    out: &mut ClusterOptions,
) -> Result<(), ConfigError> {
    if let Some(t) = &c.healthy_panic_threshold {
        let v = t.value.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&v) {
            return Err(p
                .field("healthy_panic_threshold")
                .field("value")
                .err(format!("{v} is out of range (0..=100)")));
        }
        out.healthy_panic_threshold = v;
    } else {
        out.healthy_panic_threshold = DEFAULT_HEALTHY_PANIC_THRESHOLD;
    }
    if let Some(z) = &c.zone_aware_lb_config {
        let zp = p.field("zone_aware_lb_config");
        if let Some(v) = z.routing_enabled.as_ref().and_then(|r| r.value) {
            if !(0.0..=100.0).contains(&v) {
                return Err(zp
                    .field("routing_enabled")
                    .field("value")
                    .err(format!("{v} is out of range (0..=100)")));
            }
        }
        // routing_enabled / min_cluster_size: no-ops (zone-aware routing needs the
        // cluster_manager's local_cluster_name, which sluice does not take; Envoy routes the
        // same without it). fail_traffic_on_panic applies to every cluster in panic.
        let _ = z.min_cluster_size;
        out.fail_traffic_on_panic = z.fail_traffic_on_panic.unwrap_or(false);
    }
    // update_merge_window: a no-op here (host updates apply at once; Envoy's window only batches
    // them).
    let _ = c.update_merge_window;
    out.locality_weighted_lb = c.locality_weighted_lb_config.is_some();
    Ok(())
}

#[cfg(test)]
#[path = "cluster_options_tests.rs"]
mod tests;

/// The balancer's `slow_start_config` (ROUND_ROBIN's or LEAST_REQUEST's; `lb_policy` checks
/// which goes with the policy). `None` without one or with a zero window (Envoy's "disabled").
fn slow_start(raw: &RawCluster, p: &FieldPath) -> Result<Option<super::SlowStart>, ConfigError> {
    let (field, cfg) = match (&raw.round_robin_lb_config, &raw.least_request_lb_config) {
        (Some(rr), _) => ("round_robin_lb_config", rr.slow_start_config.as_ref()),
        (None, Some(lr)) => ("least_request_lb_config", lr.slow_start_config.as_ref()),
        (None, None) => return Ok(None),
    };
    let Some(c) = cfg else {
        return Ok(None);
    };
    let sp = p.field(field).field("slow_start_config");
    let window = c.slow_start_window.map_or(Duration::ZERO, |d| d.0);
    let min_weight = match c.min_weight_percent.as_ref().and_then(|m| m.value) {
        None => 0.1,
        Some(v) if (0.0..=100.0).contains(&v) => v / 100.0,
        Some(v) => {
            return Err(sp
                .field("min_weight_percent")
                .field("value")
                .err(format!("{v} is not within 0..=100")))
        }
    };
    if window.is_zero() {
        return Ok(None);
    }
    if raw
        .common_lb_config
        .as_ref()
        .is_some_and(|c| c.locality_weighted_lb_config.is_some())
    {
        return Err(sp.unsupported(
            "slow start with common_lb_config.locality_weighted_lb_config (per-locality schedulers) is not implemented",
        ));
    }
    let aggression = c
        .aggression
        .as_ref()
        .and_then(|a| a.default_value)
        .filter(|a| *a > 0.0 && a.is_finite())
        .unwrap_or(1.0);
    Ok(Some(super::SlowStart {
        window,
        aggression,
        min_weight,
    }))
}
