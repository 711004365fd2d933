//! Adapter: validated `config::Cluster` -> runtime [`ClusterSpec`].

use super::spec::{Breakers, ClusterSpec, Discovery, EndpointSpec, HealthCheckSpec, LbKind};
use crate::config;

/// Converts one config cluster.
pub fn cluster_spec(c: &config::Cluster) -> ClusterSpec {
    let name = c.name.as_str().to_string();
    let dns = matches!(
        c.discovery,
        config::DiscoveryType::StrictDns | config::DiscoveryType::LogicalDns
    );
    let endpoints: Vec<EndpointSpec> = c
        .endpoints
        .iter()
        .map(|e| match &e.address {
            config::EndpointAddress::Ip(a) => EndpointSpec {
                host: a.ip().to_string(),
                port: a.port(),
                weight: e.weight,
                hostname: e
                    .hostname
                    .clone()
                    .or_else(|| dns.then(|| a.ip().to_string())),
                priority: e.priority,
                health: e.health,
                locality: e.locality,
                locality_weight: e.locality_weight,
                canary: e.canary,
                transport: e.transport,
                health_check: e.health_check.clone(),
            },
            config::EndpointAddress::Dns { host, port } => EndpointSpec {
                host: host.clone(),
                port: *port,
                weight: e.weight,
                hostname: e.hostname.clone().or_else(|| Some(host.clone())),
                priority: e.priority,
                health: e.health,
                locality: e.locality,
                locality_weight: e.locality_weight,
                canary: e.canary,
                transport: e.transport,
                health_check: e.health_check.clone(),
            },
        })
        .collect();
    let discovery = match c.discovery {
        config::DiscoveryType::Static | config::DiscoveryType::Eds => Discovery::Static(endpoints),
        config::DiscoveryType::StrictDns | config::DiscoveryType::LogicalDns => {
            Discovery::StrictDns {
                endpoints,
                refresh: c.dns_refresh_rate,
                family: c.dns_lookup_family,
                logical: c.discovery == config::DiscoveryType::LogicalDns,
            }
        }
        config::DiscoveryType::OriginalDst => Discovery::OriginalDst,
    };
    let lb = match c.lb_policy {
        config::LbPolicy::RoundRobin | config::LbPolicy::ClusterProvided => LbKind::RoundRobin,
        config::LbPolicy::LeastRequest { choice_count } => LbKind::LeastRequest { choice_count },
        config::LbPolicy::Random => LbKind::Random,
        config::LbPolicy::RingHash {
            minimum_ring_size,
            maximum_ring_size,
        } => LbKind::RingHash {
            min_ring_size: minimum_ring_size,
            max_ring_size: maximum_ring_size,
        },
        config::LbPolicy::Maglev { table_size } => LbKind::Maglev { table_size },
    };
    let health_check = c.health_checks.first().map(|h| {
        let ranges = |r: &[std::ops::Range<u16>]| r.iter().map(|r| (r.start, r.end)).collect();
        let mut spec = HealthCheckSpec {
            intervals: h.intervals,
            reuse_connection: h.reuse_connection,
            jitter: h.jitter,
            timeout: h.timeout,
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
            path: String::new(),
            host: name.clone(),
            expected: Vec::new(),
            retriable: Vec::new(),
            method: http::Method::GET,
            headers: Default::default(),
            tcp_only: true,
            tcp_send: Vec::new(),
            tcp_receive: Vec::new(),
            http_body: Default::default(),
            grpc: None,
            http2: false,
            event_log: h.event_log.clone(),
        };
        if let config::HealthCheckKind::Grpc {
            service_name,
            authority,
            metadata,
        } = &h.kind
        {
            spec.tcp_only = false;
            spec.host = authority.clone().unwrap_or_else(|| name.clone());
            spec.grpc = Some((service_name.clone(), metadata.clone()));
        }
        if let config::HealthCheckKind::Tcp { send, receive } = &h.kind {
            spec.tcp_send = send.clone();
            spec.tcp_receive = receive.clone();
        }
        if let config::HealthCheckKind::Http {
            path,
            host,
            expected_statuses,
            retriable_statuses,
            http2,
            method,
            headers,
            body,
        } = &h.kind
        {
            spec.http_body = body.clone();
            spec.http2 = *http2;
            spec.path = path.clone();
            spec.host = host.clone().unwrap_or_else(|| name.clone());
            spec.expected = ranges(expected_statuses);
            spec.retriable = ranges(retriable_statuses);
            spec.method = method.clone();
            spec.headers = headers.clone();
            spec.tcp_only = false;
        }
        spec
    });
    ClusterSpec {
        orig_dst_port: c.original_dst_port,
        orig_dst_header: c
            .original_dst_header
            .as_deref()
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        discovery,
        lb,
        connect_timeout: c.connect_timeout,
        http2: matches!(
            c.protocol,
            config::UpstreamProtocol::Http2 | config::UpstreamProtocol::Downstream
        ),
        follow_downstream: c.protocol == config::UpstreamProtocol::Downstream,
        tunnel_http2: c.h2_capable,
        tls: c.tls.clone(),
        tls_matches: c
            .transport_socket_matches
            .iter()
            .map(|m| m.tls.clone())
            .collect(),
        proxy_protocol: if c.proxy_protocol.is_none()
            && c.transport_socket_matches
                .iter()
                .all(|m| m.proxy_protocol.is_none())
        {
            Vec::new()
        } else {
            std::iter::once(c.proxy_protocol)
                .chain(c.transport_socket_matches.iter().map(|m| m.proxy_protocol))
                .collect()
        },
        bare_transport: c.bare_transport(),
        breakers: c.circuit_breakers.map(|cb| Breakers {
            max_connections: cb.max_connections as usize,
            max_pending_requests: cb.max_pending_requests as usize,
            max_requests: cb.max_requests as usize,
            max_retries: cb.max_retries as usize,
            track_remaining: cb.track_remaining,
            retry_budget: cb.retry_budget,
        }),
        outlier: c.outlier_detection,
        health_check,
        options: c.options.clone(),
        localities: c.localities.clone(),
        alt_stat_name: c.alt_stat_name.as_deref().map(std::sync::Arc::from),
        name,
    }
}
