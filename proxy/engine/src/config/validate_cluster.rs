//! Raw cluster -> typed [`Cluster`]: discovery type, lb policy, endpoints, circuit breakers,
//! outlier detection, health checks, protocol options and upstream TLS.

use std::net::{IpAddr, SocketAddr};

use super::{
    istio_filters::{is_telemetry_noop, Place},
    path::FieldPath,
    raw::typed_config,
    raw_cluster::{RawCluster, RawHealthCheck, RawHttpProtocolOptions},
    secrets::Secrets,
    upstream_transport,
    validate::socket_address,
    ByPriority, CircuitBreakers, Cluster, ClusterRef, ConfigError, DiscoveryType, DnsLookupFamily,
    Endpoint, EndpointAddress, HealthCheck, HealthCheckKind, LbPolicy, Locality, RoutingPriority,
    UpstreamProtocol, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DNS_REFRESH_RATE, DEFAULT_ENDPOINT_WEIGHT,
    DEFAULT_LEAST_REQUEST_CHOICE_COUNT, DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_NO_TRAFFIC_INTERVAL,
    DEFAULT_ORIGINAL_DST_HEADER, DEFAULT_RING_HASH_MAX_SIZE, DEFAULT_RING_HASH_MIN_SIZE,
};

/// `retry_budget` at `p` (Envoy's defaults: 20 %, at least 3).
fn retry_budget(
    b: &super::raw_cluster::RawRetryBudget,
    p: &FieldPath,
) -> Result<super::RetryBudget, ConfigError> {
    let percent = match &b.budget_percent {
        None => 20.0,
        Some(v) => v.value.unwrap_or(0.0),
    };
    if !(0.0..=100.0).contains(&percent) {
        return Err(p
            .field("budget_percent")
            .field("value")
            .err(format!("{percent} is not within 0..=100")));
    }
    if b.budget_interval.is_some_and(|d| !d.0.is_zero()) {
        return Err(p.field("budget_interval").unsupported(
            "only 0s: the budget counts the requests active now, not those of an interval",
        ));
    }
    Ok(super::RetryBudget::new(
        percent,
        b.min_retry_concurrency.unwrap_or(3),
    ))
}

pub(crate) const HTTP_PROTOCOL_OPTIONS_KEY: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HTTP_PROTOCOL_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Validates one `static_resources.clusters[]` entry at `p`.
pub(crate) fn cluster(
    raw: RawCluster,
    p: &FieldPath,
    secrets: &Secrets,
) -> Result<Cluster, ConfigError> {
    let name = raw
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.field("name").err("required"))?;
    let discovery = match raw.discovery_type.as_deref() {
        None | Some("STATIC") => DiscoveryType::Static,
        Some("STRICT_DNS") => DiscoveryType::StrictDns,
        Some("ORIGINAL_DST") => DiscoveryType::OriginalDst,
        Some("EDS") => DiscoveryType::Eds,
        Some("LOGICAL_DNS") => DiscoveryType::LogicalDns,
        Some(other) => return Err(p.field("type").err(format!("unknown value {other:?}"))),
    };
    let lb_policy = lb_policy(&raw, p, discovery)?;
    super::dynamic::eds_cluster_config(&raw, discovery, p)?;
    let socket_matches = upstream_transport::matches(
        raw.transport_socket_matches.as_ref(),
        &p.field("transport_socket_matches"),
        secrets,
    )?;

    let mut endpoints = Vec::new();
    let mut localities: Vec<Locality> = Vec::new();
    if let Some(la) = &raw.load_assignment {
        let lp = p.field("load_assignment");
        if let Some(cn) = &la.cluster_name {
            if cn != &name {
                return Err(lp
                    .field("cluster_name")
                    .err(format!("{cn:?} differs from the cluster name {name:?}")));
            }
        }
        // Per priority level, as the hashing balancers sum a level's weights.
        let hashing = matches!(
            lb_policy,
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. }
        );
        let mut level_weights: std::collections::BTreeMap<u32, u64> = Default::default();
        // Envoy's locality order (region, zone, sub_zone; no `locality` = the empty one) and,
        // per (priority, locality), the weight of the last entry with both `locality` and
        // `load_balancing_weight` (Envoy's PriorityStateManager::initializePriorityFor).
        let mut keys: Vec<(&str, &str, &str)> = Vec::new();
        let mut locality_weights: std::collections::HashMap<(u32, (&str, &str, &str)), u32> =
            Default::default();
        for (i, loc) in la.endpoints.iter().enumerate() {
            let ep = lp.field("endpoints").index(i);
            let priority = loc.priority.unwrap_or(0);
            let key = loc.locality.as_ref().map_or(("", "", ""), |l| {
                (l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str())
            });
            keys.push(key);
            match (loc.locality.is_some(), loc.load_balancing_weight) {
                (_, Some(0)) => {
                    return Err(ep.field("load_balancing_weight").err("must be at least 1"))
                }
                (true, Some(w)) => {
                    locality_weights.insert((priority, key), w);
                }
                _ => {}
            }
            for (j, lbe) in loc.lb_endpoints.iter().enumerate() {
                let bp = ep.field("lb_endpoints").index(j);
                let health = super::dynamic::endpoint_health(
                    lbe.health_status.as_deref(),
                    &bp.field("health_status"),
                )?;
                let addr = lbe
                    .endpoint
                    .as_ref()
                    .and_then(|e| e.address.as_ref())
                    .ok_or_else(|| bp.field("endpoint").field("address").err("required"))?;
                let ap = bp.field("endpoint").field("address");
                let (host, port) = socket_address(addr, &ap)?;
                let address = match (host.parse::<IpAddr>(), discovery) {
                    (Ok(ip), _) => EndpointAddress::Ip(SocketAddr::new(ip, port)),
                    (Err(_), DiscoveryType::StrictDns | DiscoveryType::LogicalDns) => EndpointAddress::Dns {
                        host: host.to_string(),
                        port,
                    },
                    (Err(_), _) => {
                        return Err(ap.field("socket_address").field("address").err(format!(
                            "{host:?} is not an IP address (host names need type STRICT_DNS or LOGICAL_DNS)"
                        )))
                    }
                };
                let weight = match lbe.load_balancing_weight {
                    None => DEFAULT_ENDPOINT_WEIGHT,
                    Some(0) => {
                        return Err(bp.field("load_balancing_weight").err("must be at least 1"))
                    }
                    Some(w) => w,
                };
                // Envoy's ring hash and maglev reject a level whose weights sum past u32.
                let total_weight = level_weights.entry(priority).or_default();
                *total_weight += u64::from(weight);
                if hashing && *total_weight > u64::from(u32::MAX) {
                    return Err(bp.field("load_balancing_weight").err(format!(
                        "the sum of the endpoint weights of priority {priority} exceeds {}",
                        u32::MAX
                    )));
                }
                let health_check = match lbe
                    .endpoint
                    .as_ref()
                    .and_then(|e| e.health_check_config.as_ref())
                {
                    None => None,
                    Some(h) => endpoint_health_check(
                        h,
                        &bp.field("endpoint").field("health_check_config"),
                    )?,
                };
                endpoints.push(Endpoint {
                    health_check,
                    address,
                    weight,
                    hostname: lbe.endpoint.as_ref().and_then(|e| e.hostname.clone()),
                    priority,
                    health,
                    locality: i as u32,
                    locality_weight: 0,
                    canary: is_canary(lbe.metadata.as_ref()),
                    transport: upstream_transport::select(
                        &socket_matches,
                        lbe.metadata.as_ref(),
                        loc.metadata.as_ref(),
                    ),
                });
            }
        }
        // Envoy's ring hash and maglev also reject a level whose locality weights sum past u32.
        if hashing {
            let mut sums: std::collections::BTreeMap<u32, u64> = Default::default();
            for ((priority, _), w) in &locality_weights {
                *sums.entry(*priority).or_default() += u64::from(*w);
            }
            if let Some((priority, _)) = sums.iter().find(|(_, s)| **s > u64::from(u32::MAX)) {
                return Err(lp.field("endpoints").err(format!(
                    "the sum of the locality weights of priority {priority} exceeds {}",
                    u32::MAX
                )));
            }
        }
        // `locality` held the entry index so far: now its locality's rank and weight.
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        for e in &mut endpoints {
            let key = keys[e.locality as usize];
            e.locality_weight = locality_weights
                .get(&(e.priority, key))
                .copied()
                .unwrap_or(0);
            e.locality = sorted.binary_search(&key).unwrap_or(0) as u32;
        }
        localities = sorted
            .into_iter()
            .map(|(region, zone, sub_zone)| Locality {
                region: region.into(),
                zone: zone.into(),
                sub_zone: sub_zone.into(),
            })
            .collect();
    }
    if discovery == DiscoveryType::LogicalDns && endpoints.len() != 1 {
        return Err(p
            .field("load_assignment")
            .err("LOGICAL_DNS clusters need exactly one endpoint"));
    }
    if discovery == DiscoveryType::OriginalDst && !endpoints.is_empty() {
        return Err(p
            .field("load_assignment")
            .err("ORIGINAL_DST clusters must not have endpoints"));
    }

    let mut circuit_breakers = ByPriority::<CircuitBreakers>::default();
    if let Some(cb) = &raw.circuit_breakers {
        // Envoy's `ResourceManagers::load`: the first entry of a priority applies, later ones
        // of the same priority are ignored.
        let mut seen = ByPriority([false; 2]);
        for (i, t) in cb.thresholds.iter().enumerate() {
            let tp = p.field("circuit_breakers").field("thresholds").index(i);
            let prio = match t.priority.as_deref() {
                None => RoutingPriority::Default,
                Some(name) => RoutingPriority::parse(name)
                    .ok_or_else(|| tp.field("priority").err(format!("unknown value {name:?}")))?,
            };
            if std::mem::replace(&mut seen[prio], true) {
                continue;
            }
            let d = CircuitBreakers::default();
            circuit_breakers[prio] = CircuitBreakers {
                max_connections: t.max_connections.unwrap_or(d.max_connections),
                max_pending_requests: t.max_pending_requests.unwrap_or(d.max_pending_requests),
                max_requests: t.max_requests.unwrap_or(d.max_requests),
                max_retries: t.max_retries.unwrap_or(d.max_retries),
                track_remaining: t.track_remaining.unwrap_or(false),
                retry_budget: match &t.retry_budget {
                    None => None,
                    Some(b) => Some(retry_budget(b, &tp.field("retry_budget"))?),
                },
            };
        }
    }

    let outlier_detection = match &raw.outlier_detection {
        None => None,
        Some(o) => Some(super::outlier::parse(o, &p.field("outlier_detection"))?),
    };

    let mut health_checks = Vec::new();
    for (i, hc) in raw.health_checks.iter().enumerate() {
        health_checks.push(health_check(hc, &p.field("health_checks").index(i))?);
    }

    let mut protocol = UpstreamProtocol::Http1;
    let mut typed_opts = None;
    if let Some(h2) = &raw.http2_protocol_options {
        if !matches!(h2, serde_norway::Value::Mapping(m) if m.is_empty()) {
            return Err(p
                .field("http2_protocol_options")
                .unsupported("only the empty form {}"));
        }
        protocol = UpstreamProtocol::Http2;
    }
    if let Some(opts) = &raw.typed_extension_protocol_options {
        let op = p.field("typed_extension_protocol_options");
        for (k, v) in opts {
            let key = k.as_str().unwrap_or("");
            let kp = op.field(key);
            if key != HTTP_PROTOCOL_OPTIONS_KEY {
                return Err(kp.unsupported("protocol options other than HttpProtocolOptions"));
            }
            let hpo: RawHttpProtocolOptions = typed_config(v, &kp, HTTP_PROTOCOL_OPTIONS_TYPE)?;
            protocol =
                match (
                    &hpo.explicit_http_config,
                    &hpo.use_downstream_protocol_config,
                ) {
                    (Some(e), None) => {
                        let ep = kp.field("explicit_http_config");
                        match (&e.http_protocol_options, &e.http2_protocol_options) {
                            (Some(_), None) => UpstreamProtocol::Http1,
                            (None, Some(_)) => UpstreamProtocol::Http2,
                            _ => return Err(ep.err(
                                "exactly one of http_protocol_options and http2_protocol_options",
                            )),
                        }
                    }
                    // Either options message may be absent: the protocol's defaults then apply.
                    (None, Some(_)) => UpstreamProtocol::Downstream,
                    _ => return Err(kp.err(
                        "exactly one of explicit_http_config and use_downstream_protocol_config",
                    )),
                };
            typed_opts = Some(hpo);
        }
    }
    // Envoy: "cluster must support HTTP/2 for gRPC healthchecking".
    let h2_capable = protocol == UpstreamProtocol::Http2
        || typed_opts.as_ref().is_some_and(|t| {
            t.use_downstream_protocol_config
                .as_ref()
                .is_some_and(|d| d.http2_protocol_options.is_some())
        });
    // An HTTP/2 check's `:authority` (the check's, else the cluster's name) must be one the
    // HTTP/2 library can write (Istio's `outbound|80||...` names are not).
    for (i, hc) in health_checks.iter().enumerate() {
        let (field, given) = match &hc.kind {
            HealthCheckKind::Grpc { authority, .. } => ("grpc_health_check.authority", authority),
            HealthCheckKind::Http {
                http2: true, host, ..
            } => ("http_health_check.host", host),
            _ => continue,
        };
        // Every endpoint naming its own (`health_check_config.hostname`, checked where it is
        // read) leaves the default unused: only the endpoints of the config are known here
        // (EDS ones come later).
        let all_named = discovery != DiscoveryType::Eds
            && !endpoints.is_empty()
            && endpoints.iter().all(|e| {
                e.health_check
                    .as_ref()
                    .is_some_and(|h| h.hostname.is_some())
            });
        let authority = given.as_deref().unwrap_or(name.as_str());
        if !all_named && http::uri::Authority::try_from(authority).is_err() {
            let mut fp = p.field("health_checks").index(i);
            for f in field.split('.') {
                fp = fp.field(f);
            }
            return Err(fp.err(format!(
                "{authority:?} is not a valid HTTP/2 :authority{}",
                if given.is_none() {
                    " (the cluster's name, the default): set one"
                } else {
                    ""
                }
            )));
        }
    }
    if let Some(i) = health_checks
        .iter()
        .position(|h| matches!(h.kind, HealthCheckKind::Grpc { .. }))
        .filter(|_| !h2_capable)
    {
        return Err(p
            .field("health_checks")
            .index(i)
            .field("grpc_health_check")
            .err(
                "the cluster must support HTTP/2 for gRPC health checking (http2_protocol_options)",
            ));
    }
    let options = super::cluster_options::options(&raw, typed_opts.as_ref(), discovery, p)?;

    for (i, f) in raw.filters.iter().enumerate() {
        let (name, tc) = (f.name.as_deref(), f.typed_config.as_ref());
        if !is_telemetry_noop(Place::Network, name, tc) {
            return Err(p
                .field("filters")
                .index(i)
                .unsupported("upstream network filters other than Istio's telemetry filters"));
        }
    }
    let (tls, proxy_protocol) = match &raw.transport_socket {
        None => (None, None),
        Some(ts) => {
            upstream_transport::transport_socket(ts, &p.field("transport_socket"), secrets)?
        }
    };
    // A TCP check's payload goes over the raw connection (sluice's TLS lives in the pools).
    let any_tls = tls.is_some() || socket_matches.iter().any(|m| m.tls.is_some());
    for (i, hc) in health_checks.iter().enumerate() {
        if matches!(&hc.kind, HealthCheckKind::Tcp { receive, .. } if !receive.is_empty())
            && any_tls
        {
            return Err(p
                .field("health_checks")
                .index(i)
                .field("tcp_health_check")
                .field("receive")
                .unsupported("on a cluster whose transport socket is TLS (TCP check payloads go over plain TCP here)"));
        }
    }

    let dns_lookup_family = match raw.dns_lookup_family.as_deref() {
        None | Some("AUTO") => DnsLookupFamily::Auto,
        Some("V4_ONLY") => DnsLookupFamily::V4Only,
        Some("V6_ONLY") => DnsLookupFamily::V6Only,
        Some("V4_PREFERRED") => DnsLookupFamily::V4Preferred,
        Some("ALL") => DnsLookupFamily::All,
        Some(other) => {
            return Err(p.field("dns_lookup_family").err(format!(
                "unknown value {other:?} (expected AUTO, V4_ONLY, V6_ONLY, V4_PREFERRED or ALL)"
            )))
        }
    };
    let original_dst_header = match &raw.original_dst_lb_config {
        None => None,
        Some(_) if discovery != DiscoveryType::OriginalDst => {
            return Err(p
                .field("original_dst_lb_config")
                .err("only valid with type ORIGINAL_DST"))
        }
        Some(o) if o.use_http_header == Some(true) => {
            let name = o
                .http_header_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(DEFAULT_ORIGINAL_DST_HEADER)
                .to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(p
                    .field("original_dst_lb_config")
                    .field("http_header_name")
                    .err(format!("{name:?} is not a valid header name")));
            }
            Some(name)
        }
        Some(_) => None,
    };
    let original_dst_port = match raw
        .original_dst_lb_config
        .as_ref()
        .and_then(|o| o.upstream_port_override)
    {
        None => None,
        Some(port) => Some(u16::try_from(port).map_err(|_| {
            p.field("original_dst_lb_config")
                .field("upstream_port_override")
                .err(format!("{port} is not a port (at most 65535)"))
        })?),
    };
    let connect_timeout = raw.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0);
    if connect_timeout.is_zero() {
        return Err(p.field("connect_timeout").err("must be greater than 0s"));
    }
    Ok(Cluster {
        h2_capable,
        name: ClusterRef::new(&name),
        discovery,
        lb_policy,
        connect_timeout,
        dns_refresh_rate: raw
            .dns_refresh_rate
            .map_or(DEFAULT_DNS_REFRESH_RATE, |d| d.0),
        endpoints,
        localities: localities.into(),
        circuit_breakers,
        outlier_detection,
        health_checks,
        protocol,
        tls,
        proxy_protocol,
        transport_socket_matches: socket_matches,
        dns_lookup_family,
        original_dst_header,
        original_dst_port,
        options,
        alt_stat_name: raw.alt_stat_name.clone().filter(|n| !n.is_empty()),
    })
}

/// Envoy's canary flag: `metadata.filter_metadata["envoy.lb"].canary` is `true`.
fn is_canary(metadata: Option<&serde_json::Value>) -> bool {
    metadata.and_then(|m| m["filter_metadata"]["envoy.lb"]["canary"].as_bool()) == Some(true)
}

fn lb_policy(
    raw: &RawCluster,
    p: &FieldPath,
    discovery: DiscoveryType,
) -> Result<LbPolicy, ConfigError> {
    let lp = p.field("lb_policy");
    let policy = raw.lb_policy.as_deref().unwrap_or("ROUND_ROBIN");
    // A *_lb_config must go with its policy.
    let configs = [
        (
            "ring_hash_lb_config",
            raw.ring_hash_lb_config.is_some(),
            "RING_HASH",
        ),
        ("maglev_lb_config", raw.maglev_lb_config.is_some(), "MAGLEV"),
        (
            "least_request_lb_config",
            raw.least_request_lb_config.is_some(),
            "LEAST_REQUEST",
        ),
        (
            "round_robin_lb_config",
            raw.round_robin_lb_config.is_some(),
            "ROUND_ROBIN",
        ),
    ];
    for (field, set, wants) in configs {
        if set && policy != wants {
            return Err(p
                .field(field)
                .err(format!("requires lb_policy {wants}, not {policy}")));
        }
    }
    let out = match policy {
        "ROUND_ROBIN" => LbPolicy::RoundRobin,
        "RANDOM" => LbPolicy::Random,
        "LEAST_REQUEST" => {
            let choice_count = raw
                .least_request_lb_config
                .as_ref()
                .and_then(|c| c.choice_count)
                .unwrap_or(DEFAULT_LEAST_REQUEST_CHOICE_COUNT);
            if choice_count < 2 {
                return Err(p
                    .field("least_request_lb_config")
                    .field("choice_count")
                    .err("must be at least 2"));
            }
            LbPolicy::LeastRequest { choice_count }
        }
        "RING_HASH" => {
            let c = raw.ring_hash_lb_config.as_ref();
            let minimum_ring_size = c
                .and_then(|c| c.minimum_ring_size)
                .unwrap_or(DEFAULT_RING_HASH_MIN_SIZE);
            let maximum_ring_size = c
                .and_then(|c| c.maximum_ring_size)
                .unwrap_or(DEFAULT_RING_HASH_MAX_SIZE);
            // Envoy's proto bounds both at 8M entries (`lte: 8388608`), also its default max.
            if maximum_ring_size > DEFAULT_RING_HASH_MAX_SIZE {
                return Err(p
                    .field("ring_hash_lb_config")
                    .field("maximum_ring_size")
                    .err(format!("must be at most {DEFAULT_RING_HASH_MAX_SIZE}")));
            }
            if minimum_ring_size == 0 || minimum_ring_size > maximum_ring_size {
                return Err(p
                    .field("ring_hash_lb_config")
                    .err("minimum_ring_size must be in 1..=maximum_ring_size"));
            }
            LbPolicy::RingHash {
                minimum_ring_size,
                maximum_ring_size,
            }
        }
        "MAGLEV" => {
            let table_size = raw
                .maglev_lb_config
                .as_ref()
                .and_then(|c| c.table_size)
                .unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE);
            // The bound first: the primality check's cost grows with the value.
            if table_size > MAX_MAGLEV_TABLE_SIZE || !is_prime(table_size) {
                return Err(p
                    .field("maglev_lb_config")
                    .field("table_size")
                    .err(format!("{table_size} must be a prime number <= 5000011")));
            }
            LbPolicy::Maglev { table_size }
        }
        "CLUSTER_PROVIDED" => LbPolicy::ClusterProvided,
        "LOAD_BALANCING_POLICY_CONFIG" => return Err(lp.unsupported(policy)),
        other => return Err(lp.err(format!("unknown value {other:?}"))),
    };
    match (discovery, out) {
        (DiscoveryType::OriginalDst, LbPolicy::ClusterProvided) => Ok(out),
        (DiscoveryType::OriginalDst, _) => Err(lp.err(format!(
            "cluster type ORIGINAL_DST requires lb_policy CLUSTER_PROVIDED, not {policy}"
        ))),
        (_, LbPolicy::ClusterProvided) => {
            Err(lp.err("CLUSTER_PROVIDED is only valid for cluster type ORIGINAL_DST"))
        }
        _ => Ok(out),
    }
}

/// Envoy's `maglev_lb_config.table_size` bound (`lte: 5000011`).
const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// Trial division; callers bound `n` first (at most ~2236 steps for the maglev bound).
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2u64;
    while i.saturating_mul(i) <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}

fn health_check(raw: &RawHealthCheck, p: &FieldPath) -> Result<HealthCheck, ConfigError> {
    let timeout = raw
        .timeout
        .ok_or_else(|| p.field("timeout").err("required"))?
        .0;
    let interval = raw
        .interval
        .ok_or_else(|| p.field("interval").err("required"))?
        .0;
    if timeout.is_zero() {
        return Err(p.field("timeout").err("must be greater than 0s"));
    }
    if interval.is_zero() {
        return Err(p.field("interval").err("must be greater than 0s"));
    }
    // Each optional interval must be above 0s where set, as Envoy's validation.
    let optional = |v: Option<super::duration::PbDuration>,
                    field: &str,
                    default: std::time::Duration| match v {
        None => Ok(default),
        Some(d) if d.0.is_zero() => Err(p.field(field).err("must be greater than 0s")),
        Some(d) => Ok(d.0),
    };
    let no_traffic = optional(
        raw.no_traffic_interval,
        "no_traffic_interval",
        DEFAULT_NO_TRAFFIC_INTERVAL,
    )?;
    let unhealthy = optional(raw.unhealthy_interval, "unhealthy_interval", interval)?;
    let intervals = super::HealthCheckIntervals {
        interval,
        unhealthy,
        unhealthy_edge: optional(
            raw.unhealthy_edge_interval,
            "unhealthy_edge_interval",
            unhealthy,
        )?,
        healthy_edge: optional(raw.healthy_edge_interval, "healthy_edge_interval", interval)?,
        no_traffic,
        no_traffic_healthy: optional(
            raw.no_traffic_healthy_interval,
            "no_traffic_healthy_interval",
            no_traffic,
        )?,
    };
    let unhealthy_threshold = raw
        .unhealthy_threshold
        .ok_or_else(|| p.field("unhealthy_threshold").err("required"))?;
    let healthy_threshold = raw
        .healthy_threshold
        .ok_or_else(|| p.field("healthy_threshold").err("required"))?;
    let kind = match (
        &raw.http_health_check,
        &raw.tcp_health_check,
        &raw.grpc_health_check,
    ) {
        (None, None, Some(g)) => {
            let gp = p.field("grpc_health_check");
            HealthCheckKind::Grpc {
                service_name: g.service_name.clone().unwrap_or_default(),
                authority: g.authority.clone().filter(|a| !a.is_empty()),
                metadata: literal_headers(
                    &g.initial_metadata,
                    &[],
                    &gp.field("initial_metadata"),
                    &gp,
                )?,
            }
        }
        (Some(h), None, None) => {
            let hp = p.field("http_health_check");
            let path = h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| hp.field("path").err("required"))?;
            let mut expected_statuses =
                status_ranges(&h.expected_statuses, &hp.field("expected_statuses"))?;
            if expected_statuses.is_empty() {
                expected_statuses.push(200..201);
            }
            HealthCheckKind::Http {
                path,
                host: h.host.clone().filter(|h| !h.is_empty()),
                expected_statuses,
                retriable_statuses: status_ranges(
                    &h.retriable_statuses,
                    &hp.field("retriable_statuses"),
                )?,
                http2: match h.codec_client_type.as_deref() {
                    None | Some("HTTP1") => false,
                    Some("HTTP2") => true,
                    Some("HTTP3") => {
                        return Err(hp
                            .field("codec_client_type")
                            .unsupported("HTTP1 or HTTP2 only"))
                    }
                    Some(o) => {
                        return Err(hp.field("codec_client_type").err(format!(
                            "unknown value {o:?} (expected HTTP1, HTTP2 or HTTP3)"
                        )))
                    }
                },
                method: health_check_method(h.method.as_deref(), &hp.field("method"))?,
                headers: health_check_headers(h, &hp)?,
                body: http_check_body(h, &hp)?,
            }
        }
        (None, Some(t), None) => {
            let tp = p.field("tcp_health_check");
            // As Envoy: empty `receive` blocks are skipped (none left: connect only), and
            // `send` is written only when given as `text` (a `binary` one is read, not sent).
            let mut receive = Vec::with_capacity(t.receive.len());
            for (i, r) in t.receive.iter().enumerate() {
                receive.push(payload(r, &tp.field("receive").index(i))?);
            }
            receive.retain(|r| !r.is_empty());
            let send = match &t.send {
                Some(s) => Some(payload(s, &tp.field("send"))?).filter(|_| s.text.is_some()),
                None => None,
            };
            HealthCheckKind::Tcp {
                send: send.unwrap_or_default(),
                receive,
            }
        }
        _ => return Err(p.err(
            "exactly one of http_health_check, tcp_health_check and grpc_health_check is required",
        )),
    };
    let jitter = super::HealthCheckJitter {
        initial: raw
            .initial_jitter
            .map_or(std::time::Duration::ZERO, |d| d.0),
        interval: raw
            .interval_jitter
            .map_or(std::time::Duration::ZERO, |d| d.0),
        percent: raw.interval_jitter_percent.unwrap_or(0),
    };
    Ok(HealthCheck {
        timeout,
        intervals,
        reuse_connection: raw.reuse_connection.unwrap_or(true),
        event_log: health_event_log(raw, p)?,
        unhealthy_threshold,
        healthy_threshold,
        jitter,
        kind,
    })
}

/// `event_log_path`, `event_logger` (file sinks) and the `always_log_*` switches.
fn health_event_log(
    raw: &RawHealthCheck,
    p: &FieldPath,
) -> Result<Option<super::HealthEventLog>, ConfigError> {
    const FILE_SINK: &str = "type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink";
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawFileSink {
        event_log_path: Option<String>,
    }
    let mut paths: Vec<std::path::PathBuf> = raw
        .event_log_path
        .iter()
        .filter(|p| !p.is_empty())
        .map(Into::into)
        .collect();
    for (i, l) in raw.event_logger.iter().enumerate() {
        let tp = p.field("event_logger").index(i).field("typed_config");
        let tc = l.typed_config.as_ref().ok_or_else(|| tp.err("missing"))?;
        let sink: RawFileSink = super::raw::typed_config(tc, &tp, FILE_SINK)?;
        match sink.event_log_path.filter(|p| !p.is_empty()) {
            Some(path) => paths.push(path.into()),
            None => return Err(tp.field("event_log_path").err("required")),
        }
    }
    Ok((!paths.is_empty()).then(|| super::HealthEventLog {
        paths,
        failures: raw.always_log_health_check_failures.unwrap_or(false),
        successes: raw.always_log_health_check_success.unwrap_or(false),
    }))
}

/// A `HealthCheck.Payload`'s bytes: `text` in hex (not empty), or `binary` in base64.
fn payload(raw: &super::raw_cluster::RawPayload, p: &FieldPath) -> Result<Vec<u8>, ConfigError> {
    match (&raw.text, &raw.binary) {
        (Some(t), None) => {
            let hex = t.as_bytes();
            let digit = |c: u8| (c as char).to_digit(16);
            if hex.is_empty() || hex.len() % 2 != 0 {
                return Err(p.field("text").err(format!("{t:?} is not a hex string")));
            }
            hex.chunks(2)
                .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| p.field("text").err(format!("{t:?} is not a hex string")))
        }
        (None, Some(b)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| p.field("binary").err("must be base64"))
        }
        _ => Err(p.err("exactly one of text and binary is required")),
    }
}

/// Half-open HTTP status ranges (`type.v3.Int64Range`), each within [100, 600].
fn status_ranges(
    raw: &[super::raw_cluster::RawInt64Range],
    p: &FieldPath,
) -> Result<Vec<std::ops::Range<u16>>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let (start, end) = (r.start.unwrap_or(0), r.end.unwrap_or(0));
        if !(100..=600).contains(&start) || !(100..=600).contains(&end) || start >= end {
            return Err(p.index(i).err(format!(
                "invalid range [{start}, {end}): need 100 <= start < end <= 600"
            )));
        }
        out.push(start as u16..end as u16);
    }
    Ok(out)
}

/// `HttpHealthCheck.method`: any `RequestMethod` but CONNECT (and the unspecified value), as
/// Envoy's validation; unset is GET.
fn health_check_method(m: Option<&str>, p: &FieldPath) -> Result<http::Method, ConfigError> {
    Ok(match m {
        None | Some("GET") => http::Method::GET,
        Some("HEAD") => http::Method::HEAD,
        Some("POST") => http::Method::POST,
        Some("PUT") => http::Method::PUT,
        Some("OPTIONS") => http::Method::OPTIONS,
        Some("TRACE") => http::Method::TRACE,
        Some("PATCH") => http::Method::PATCH,
        Some("DELETE") => http::Method::DELETE,
        Some(o @ ("CONNECT" | "METHOD_UNSPECIFIED")) => {
            return Err(p.err(format!("{o} is not allowed for a health check")))
        }
        Some(o) => return Err(p.err(format!("unknown value {o:?}"))),
    })
}

/// `HttpHealthCheck.request_headers_to_remove` / `_to_add`: literal values (command operators
/// such as `%UPSTREAM_METADATA(...)%` are not supported in a health check request).
fn health_check_headers(
    h: &super::raw_cluster::RawHttpHealthCheck,
    p: &FieldPath,
) -> Result<crate::route::HeaderMutations, ConfigError> {
    let ap = p.field("request_headers_to_add");
    literal_headers(
        &h.request_headers_to_add,
        &h.request_headers_to_remove,
        &ap,
        p,
    )
}

/// Header mutations with literal values only (`add` at `ap`, removals under `p`).
fn literal_headers(
    add: &[super::raw_route::RawHeaderValueOption],
    remove: &[String],
    ap: &FieldPath,
    p: &FieldPath,
) -> Result<crate::route::HeaderMutations, ConfigError> {
    let rp = p.field("request_headers_to_remove");
    let m = crate::route::build_headers::mutations_at(add, remove, ap, &rp)?;
    if let Some(i) = m.add.iter().position(|a| a.format.is_some()) {
        return Err(ap
            .index(i)
            .field("header")
            .field("value")
            .unsupported("command operators in a health check header"));
    }
    Ok(m)
}

/// An endpoint's `health_check_config` (at `p`): None when it changes nothing.
fn endpoint_health_check(
    raw: &super::raw_cluster::RawEndpointHealthCheck,
    p: &FieldPath,
) -> Result<Option<std::sync::Arc<super::EndpointHealthCheck>>, ConfigError> {
    let port_value = match raw.port_value.unwrap_or(0) {
        0 => None,
        v => Some(u16::try_from(v).map_err(|_| {
            p.field("port_value")
                .err(format!("{v} is not a valid port"))
        })?),
    };
    let (ip, port) = match &raw.address {
        None => (None, port_value),
        Some(a) => {
            let ap = p.field("address");
            let (host, port) = socket_address(a, &ap)?;
            let ip = host.parse::<IpAddr>().map_err(|_| {
                ap.field("socket_address")
                    .field("address")
                    .err(format!("{host:?} is not an IP address"))
            })?;
            (Some(ip), Some(port_value.unwrap_or(port)))
        }
    };
    let hostname = raw.hostname.clone().filter(|h| !h.is_empty());
    // The checks' Host / `:authority`: one that an HTTP request cannot carry would fail every
    // check without a word.
    if let Some(h) = &hostname {
        if http::uri::Authority::try_from(h.as_str()).is_err() {
            return Err(p.field("hostname").err(format!(
                "{h:?} is not a valid host name for a health check's Host"
            )));
        }
    }
    let hc = super::EndpointHealthCheck {
        ip,
        port,
        hostname,
        disabled: raw.disable_active_health_check.unwrap_or(false),
    };
    Ok((hc != super::EndpointHealthCheck::default()).then(|| std::sync::Arc::new(hc)))
}

/// An HTTP health check's `send`, `receive`, `response_buffer_size` and
/// `service_name_matcher` (at `p`), refused where Envoy refuses them.
fn http_check_body(
    h: &super::raw_cluster::RawHttpHealthCheck,
    p: &FieldPath,
) -> Result<super::HttpCheckBody, ConfigError> {
    let mut body = super::HttpCheckBody::default();
    if let Some(s) = &h.send {
        let method = h.method.as_deref().unwrap_or("GET");
        if matches!(method, "GET" | "HEAD" | "DELETE" | "TRACE") {
            return Err(p.field("send").err(format!(
                "a request payload cannot go with method {method} (only POST, PUT, PATCH or OPTIONS)"
            )));
        }
        body.send = payload(s, &p.field("send"))?;
    }
    for (i, r) in h.receive.iter().enumerate() {
        body.receive.push(payload(r, &p.field("receive").index(i))?);
    }
    body.receive.retain(|r| !r.is_empty());
    if let Some(n) = h.response_buffer_size {
        body.response_buffer_size = n;
    }
    let total: u64 = body.receive.iter().map(|r| r.len() as u64).sum();
    if body.response_buffer_size != 0 && total > body.response_buffer_size {
        return Err(p.field("response_buffer_size").err(format!(
            "the expected response length {total} is over the response buffer size {}",
            body.response_buffer_size
        )));
    }
    if let Some(m) = &h.service_name_matcher {
        let m = crate::route::build_match::string_matcher(m, &p.field("service_name_matcher"))?;
        body.service_name = Some(super::ServiceNameMatcher::new(m));
    }
    Ok(body)
}
