//! A host's keyed pools ([`super::Host::pool_for`]): one per priority and transport options,
//! none for a plaintext host, and never more than [`MAX_KEYED_POOLS`].

use std::sync::Arc;

use crate::config::RoutingPriority;
use crate::upstream::{
    from_config::cluster_spec,
    transport_options::{AlpnList, OptionsRef, MAX_KEYED_POOLS},
    Cluster, LbContext, PoolRef,
};

/// A STATIC cluster of one host, over TLS when `tls`.
fn cluster(tls: bool) -> Arc<Cluster> {
    let socket = if tls {
        "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
    } else {
        ""
    };
    cluster_with(socket)
}

/// A STATIC cluster of one host with `socket` (YAML lines of the cluster).
fn cluster_with(socket: &str) -> Arc<Cluster> {
    let yaml = crate::testing::bootstrap_yaml(&[("/", "svc")], &[])
        + "  - name: svc\n    load_assignment: {cluster_name: svc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n"
        + socket;
    let b = crate::config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let spec = cluster_spec(b.cluster("svc").expect("svc"));
    Cluster::build(spec, &crate::server::stats::StatsStore::default()).expect("cluster")
}

fn keyed(p: PoolRef<'_>) -> Arc<super::pool::HostPool<super::RequestBody>> {
    match p {
        PoolRef::Keyed(k) => k,
        PoolRef::Own(_) => panic!("the host's own pool"),
    }
}

#[tokio::test]
async fn pools_are_keyed_by_options_on_tls_hosts_only() {
    let (d, h) = (RoutingPriority::Default, RoutingPriority::High);
    let plain = cluster(false);
    let host = plain.choose_host(&LbContext::default()).expect("host");
    let sni = OptionsRef {
        sni: Some("a.test"),
        ..OptionsRef::default()
    };
    assert!(matches!(host.pool_for(d, sni, &plain), PoolRef::Own(_)));

    let tls = cluster(true);
    let host = tls.choose_host(&LbContext::default()).expect("host");
    assert!(matches!(
        host.pool_for(d, OptionsRef::default(), &tls),
        PoolRef::Own(_)
    ));
    let a = keyed(host.pool_for(d, sni, &tls));
    assert!(Arc::ptr_eq(&a, &keyed(host.pool_for(d, sni, &tls))));
    assert!(!Arc::ptr_eq(&a, &keyed(host.pool_for(h, sni, &tls))));
    let alpn: AlpnList = Arc::from(vec![Box::from(&b"istio-h2"[..])]);
    let with_alpn = OptionsRef {
        alpn: Some(&alpn),
        ..sni
    };
    assert!(!Arc::ptr_eq(&a, &keyed(host.pool_for(d, with_alpn, &tls))));

    // Many host names (a client choosing the Host of an auto_sni cluster): the pools kept stay
    // bounded; pools without a connection make room.
    let names: Vec<String> = (0..3 * MAX_KEYED_POOLS)
        .map(|i| format!("n{i}.test"))
        .collect();
    for n in &names {
        let o = OptionsRef {
            sni: Some(n),
            ..OptionsRef::default()
        };
        let p = keyed(host.pool_for(d, o, &tls));
        assert!(p.is_for(d, &o));
    }
    let kept = host.keyed.load().as_deref().map_or(0, Vec::len);
    assert!((1..=MAX_KEYED_POOLS).contains(&kept), "{kept} keyed pools");
    // The latest name's pool is kept (the least recently used ones went).
    let last = OptionsRef {
        sni: names.last().map(String::as_str),
        ..OptionsRef::default()
    };
    let latest = keyed(host.pool_for(d, last, &tls));
    assert!(Arc::ptr_eq(&latest, &keyed(host.pool_for(d, last, &tls))));
    // The idle sweep lets go of the keyed pools left without a connection, not of one a
    // request still holds.
    let hour = Some(std::time::Duration::from_secs(3600));
    host.drop_idle(hour);
    let kept: Vec<_> = host.keyed.load().as_deref().cloned().unwrap_or_default();
    assert_eq!(kept.len(), 2, "the two pools held here");
    assert!(kept.iter().any(|p| Arc::ptr_eq(p, &a)));
    drop((a, latest, kept));
    host.drop_idle(hour);
    assert!(host.keyed.load().is_none());
}

/// A STATIC cluster of one plaintext host whose connections start with a PROXY header.
fn proxied_cluster() -> Arc<Cluster> {
    cluster_with("    transport_socket:\n      name: envoy.transport_sockets.upstream_proxy_protocol\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport\n        config: {version: V2}\n        transport_socket: {name: envoy.transport_sockets.raw_buffer, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}\n")
}

#[tokio::test]
async fn proxy_protocol_pools_are_one_per_client_pair_and_uncapped() {
    let d = RoutingPriority::Default;
    let c = proxied_cluster();
    let host = c.choose_host(&LbContext::default()).expect("host");
    let dst = "198.51.100.1:80".parse().unwrap();
    let client = |port: u16| OptionsRef {
        proxy: Some((std::net::SocketAddr::from(([203, 0, 113, 7], port)), dst)),
        ..OptionsRef::default()
    };
    // Without addresses (a health check's, or add_proxy_protocol_connection_state false):
    // the host's own pool.
    assert!(matches!(
        host.pool_for(d, OptionsRef::default(), &c),
        PoolRef::Own(_)
    ));
    // TLS options on this plaintext host are ignored: the pair alone keys the pool.
    let with_sni = OptionsRef {
        sni: Some("a.test"),
        ..client(1)
    };
    let a = keyed(host.pool_for(d, client(1), &c));
    assert!(Arc::ptr_eq(&a, &keyed(host.pool_for(d, with_sni, &c))));
    // Well past the SNI pools' cap, every client keeps its own pool.
    let held: Vec<_> = (2..(MAX_KEYED_POOLS as u16 + 40))
        .map(|port| keyed(host.pool_for(d, client(port), &c)))
        .collect();
    assert_eq!(host.proxied.pool_count(), MAX_KEYED_POOLS + 39);
    assert!(Arc::ptr_eq(&a, &keyed(host.pool_for(d, client(1), &c))));
    // Not in use and without a connection: gone at the idle sweep.
    drop((a, held));
    host.drop_idle(None);
    assert_eq!(host.proxied.pool_count(), 0);
}
