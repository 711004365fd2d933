//! Envoy's filter chain precedence, as a table of (chains, connection) -> chosen chain.

use super::*;

fn cidr(s: &str) -> Cidr {
    let (a, l) = s.split_once('/').unwrap();
    Cidr::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn facts<'a>(dst: &str, src: &str) -> ConnFacts<'a> {
    ConnFacts {
        dst: dst.parse().unwrap(),
        src: src.parse().unwrap(),
        direct_src: None,
        server_name: None,
        transport_protocol: "raw_buffer",
        application_protocols: AppProtocols::None,
    }
}

fn pick(chains: &[ChainMatch], f: &ConnFacts<'_>) -> Option<usize> {
    select(chains.iter(), f)
}

#[test]
fn destination_port_then_prefix_then_no_backtracking() {
    let chains = [
        ChainMatch::default(),
        ChainMatch {
            destination_port: Some(8080),
            ..Default::default()
        },
        ChainMatch {
            destination_port: Some(9090),
            prefix_ranges: vec![cidr("10.0.0.0/8")],
            ..Default::default()
        },
        ChainMatch {
            prefix_ranges: vec![cidr("10.1.0.0/16"), cidr("192.168.0.0/16")],
            ..Default::default()
        },
        ChainMatch {
            prefix_ranges: vec![cidr("10.0.0.0/8")],
            ..Default::default()
        },
    ];
    let table = [
        ("10.1.2.3:8080", Some(1)), // exact port beats every prefix
        ("10.1.2.3:80", Some(3)),   // longest prefix
        ("10.2.0.1:80", Some(4)),
        ("172.16.0.1:80", Some(0)),
        ("10.9.9.9:9090", Some(2)),
        // Port 9090 keeps only chain 2, whose prefix does not admit 172.16/12: no match.
        ("172.16.0.1:9090", None),
    ];
    for (dst, want) in table {
        assert_eq!(pick(&chains, &facts(dst, "10.0.0.9:5000")), want, "{dst}");
    }
}

#[test]
fn server_names_transport_and_application_protocols() {
    let chains = [
        ChainMatch {
            server_names: strings(&["api.example.com"]),
            ..Default::default()
        },
        ChainMatch {
            server_names: strings(&[".example.com"]),
            ..Default::default()
        },
        ChainMatch {
            server_names: strings(&[".b.example.com"]),
            ..Default::default()
        },
        ChainMatch {
            transport_protocol: Some("tls".into()),
            application_protocols: strings(&["istio-peer-exchange", "istio"]),
            ..Default::default()
        },
        ChainMatch {
            transport_protocol: Some("tls".into()),
            ..Default::default()
        },
        ChainMatch {
            transport_protocol: Some("raw_buffer".into()),
            application_protocols: strings(&["http/1.1", "http/1.0", "h2c"]),
            ..Default::default()
        },
        ChainMatch {
            transport_protocol: Some("raw_buffer".into()),
            ..Default::default()
        },
    ];
    let alpn_istio = strings(&["h2", "istio"]);
    let alpn_h2 = strings(&["h2", "http/1.1"]);
    let table: [(Option<&str>, &str, AppProtocols<'_>, Option<usize>); 9] = [
        (Some("api.example.com"), "tls", AppProtocols::None, Some(0)),
        (Some("x.example.com"), "tls", AppProtocols::None, Some(1)),
        (Some("x.b.example.com"), "tls", AppProtocols::None, Some(2)),
        // ".example.com" does not match "example.com" itself.
        (Some("example.com"), "tls", AppProtocols::None, Some(4)),
        (None, "tls", AppProtocols::List(&alpn_istio), Some(3)),
        (None, "tls", AppProtocols::List(&alpn_h2), Some(4)),
        (None, "raw_buffer", AppProtocols::One("http/1.1"), Some(5)),
        (None, "raw_buffer", AppProtocols::One("h2c"), Some(5)),
        (None, "raw_buffer", AppProtocols::None, Some(6)),
    ];
    for (sni, transport, alpn, want) in table {
        let f = ConnFacts {
            server_name: sni,
            transport_protocol: transport,
            application_protocols: alpn,
            ..facts("10.0.0.1:80", "10.0.0.2:1")
        };
        assert_eq!(pick(&chains, &f), want, "{sni:?} {transport} {alpn:?}");
    }
    // The server name is chosen first: a named chain without a TLS chain below it is final.
    let f = ConnFacts {
        server_name: Some("api.example.com"),
        transport_protocol: "raw_buffer",
        ..facts("10.0.0.1:80", "10.0.0.2:1")
    };
    assert_eq!(pick(&chains, &f), Some(0));
}

#[test]
fn first_requested_application_protocol_wins() {
    let chains = [
        ChainMatch {
            application_protocols: strings(&["b"]),
            ..Default::default()
        },
        ChainMatch {
            application_protocols: strings(&["a"]),
            ..Default::default()
        },
    ];
    let ab = strings(&["a", "b"]);
    let ba = strings(&["b", "a"]);
    let f = |l| ConnFacts {
        application_protocols: AppProtocols::List(l),
        ..facts("10.0.0.1:80", "10.0.0.2:1")
    };
    assert_eq!(pick(&chains, &f(&ab)), Some(1));
    assert_eq!(pick(&chains, &f(&ba)), Some(0));
    assert_eq!(pick(&chains, &facts("10.0.0.1:80", "10.0.0.2:1")), None);
}

#[test]
fn source_type_prefix_and_port() {
    let chains = [
        ChainMatch {
            source_type: SourceType::Local,
            ..Default::default()
        },
        ChainMatch {
            source_type: SourceType::External,
            source_prefix_ranges: vec![cidr("10.0.0.0/8")],
            ..Default::default()
        },
        ChainMatch {
            source_type: SourceType::External,
            source_prefix_ranges: vec![cidr("10.0.0.0/8")],
            source_ports: vec![4000],
            ..Default::default()
        },
        ChainMatch {
            source_ports: vec![5000],
            ..Default::default()
        },
    ];
    let table = [
        ("127.0.0.1:5000", Some(0)), // loopback peer: SAME_IP_OR_LOOPBACK
        ("10.0.0.1:5000", Some(0)),  // same IP as the destination
        ("10.0.0.7:4000", Some(2)),  // external, exact source port
        ("10.0.0.7:4001", Some(1)),  // external, any port
        ("192.168.1.1:5000", None),  // EXTERNAL kept; its prefix does not admit the peer
        ("192.168.1.1:4000", None),
    ];
    for (src, want) in table {
        assert_eq!(pick(&chains, &facts("10.0.0.1:80", src)), want, "{src}");
    }
    let any_only = [chains[3].clone()];
    assert_eq!(
        pick(&any_only, &facts("10.0.0.1:80", "192.168.1.1:5000")),
        Some(0)
    );
    assert_eq!(
        pick(&any_only, &facts("10.0.0.1:80", "192.168.1.1:5001")),
        None
    );
}

#[test]
fn overlap_is_a_shared_key_on_every_criterion() {
    let a = ChainMatch {
        destination_port: Some(80),
        application_protocols: strings(&["h2c", "http/1.1"]),
        ..Default::default()
    };
    let b = ChainMatch {
        destination_port: Some(80),
        application_protocols: strings(&["http/1.1"]),
        ..Default::default()
    };
    let c = ChainMatch {
        destination_port: Some(80),
        ..Default::default()
    };
    assert!(overlaps(&a, &b));
    assert!(!overlaps(&a, &c), "an empty list is its own key");
    assert!(overlaps(&c, &c.clone()));
    assert!(cidr("10.1.2.3/8") == cidr("10.0.0.0/8"));
    assert!(Cidr::new("10.0.0.0".parse().unwrap(), 33).is_none());
}
