//! The engine's semantics (Envoy's `RoleBasedAccessControlEngineImpl`) and its validation.

use std::net::SocketAddr;

use super::{build, raw::RawRbac, Engine, Facts};
use crate::{
    config::FieldPath,
    downstream_tls::{PeerCert, TlsFacts},
    route::RequestView,
};

fn engine(yaml: &str) -> Engine {
    let raw: RawRbac = serde_norway::from_str(yaml).expect("RBAC yaml");
    build::engine(&raw, &FieldPath::root().field("rules")).expect("valid RBAC")
}

fn refused(yaml: &str) -> String {
    let raw: RawRbac = serde_norway::from_str(yaml).expect("RBAC yaml");
    let e = build::engine(&raw, &FieldPath::root().field("rules")).expect_err("refused");
    format!("{}: {}", e.path(), e.message())
}

struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
    peer: &'static str,
    /// The directly connected peer when a PROXY header stated `peer` (None: `peer`).
    direct: Option<&'static str>,
    remote: &'static str,
    local: &'static str,
    tls: Option<TlsFacts>,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            method: "GET",
            path: "/",
            headers: Vec::new(),
            peer: "10.0.0.1:4000",
            direct: None,
            remote: "10.0.0.1",
            local: "10.0.0.2:8080",
            tls: None,
        }
    }
}

/// (allowed, first matching policy) of `e` for `r`.
fn check(e: &Engine, r: &Req) -> (bool, Option<String>) {
    let view = RequestView {
        authority: Some("example.com"),
        path: r.path,
        method: r.method,
        scheme: "http",
        headers: &r.headers,
        random: 0,
        peer: None,
        metadata: None,
    };
    let facts = Facts {
        request: Some(&view),
        peer: r.peer.parse::<SocketAddr>().unwrap(),
        direct: r
            .direct
            .unwrap_or(r.peer)
            .parse::<SocketAddr>()
            .unwrap()
            .ip(),
        remote: r.remote.parse().unwrap(),
        local: r.local.parse::<SocketAddr>().unwrap(),
        sni: r.tls.as_ref().and_then(|t| t.sni.as_deref()).unwrap_or(""),
        tls: r.tls.as_ref(),
        metadata: None,
    };
    let v = e.check(&facts);
    (v.allowed, v.policy.map(str::to_string))
}

#[test]
fn allow_needs_a_policy_whose_permission_and_principal_both_match() {
    let e = engine(
        r#"
policies:
  get-from-ten:
    permissions: [{header: {name: ":method", string_match: {exact: GET}}}]
    principals: [{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]
"#,
    );
    assert_eq!(
        check(&e, &Req::default()),
        (true, Some("get-from-ten".into()))
    );
    let post = Req {
        method: "POST",
        ..Req::default()
    };
    assert_eq!(check(&e, &post), (false, None));
    let other = Req {
        peer: "192.168.0.1:4000",
        ..Req::default()
    };
    assert_eq!(check(&e, &other), (false, None));
}

#[test]
fn source_ip_is_the_stated_client_and_direct_remote_ip_the_load_balancer() {
    // Behind a PROXY protocol load balancer (192.168.0.9) stating client 10.0.0.1.
    let behind_lb = Req {
        direct: Some("192.168.0.9:5000"),
        ..Req::default()
    };
    let principal = |p: &str| {
        engine(&format!(
            "policies:\n  p:\n    permissions: [{{any: true}}]\n    principals: [{{{p}: {{address_prefix: 10.0.0.0, prefix_len: 8}}}}]\n"
        ))
    };
    assert!(check(&principal("source_ip"), &behind_lb).0);
    assert!(!check(&principal("direct_remote_ip"), &behind_lb).0);
    assert!(check(&principal("direct_remote_ip"), &Req::default()).0);
}

#[test]
fn deny_allows_what_no_policy_matches_and_log_allows_everything() {
    let rules = |action: &str| {
        format!(
            "action: {action}\npolicies:\n  admin:\n    permissions: [{{url_path: {{path: {{prefix: /admin}}}}}}]\n    principals: [{{any: true}}]\n"
        )
    };
    let admin = Req {
        path: "/admin/x?y=1",
        ..Req::default()
    };
    let deny = engine(&rules("DENY"));
    assert_eq!(check(&deny, &admin), (false, Some("admin".into())));
    assert_eq!(check(&deny, &Req::default()), (true, None));
    let log = engine(&rules("LOG"));
    assert_eq!(check(&log, &admin), (true, Some("admin".into())));
    // No policies: ALLOW denies everything, DENY allows everything.
    assert!(!check(&engine("action: ALLOW"), &Req::default()).0);
    assert!(check(&engine("action: DENY"), &Req::default()).0);
}

#[test]
fn the_first_matching_policy_by_name_is_reported() {
    let e = engine(
        r#"
policies:
  zeta: {permissions: [{any: true}], principals: [{any: true}]}
  alpha: {permissions: [{any: true}], principals: [{any: true}]}
"#,
    );
    assert_eq!(check(&e, &Req::default()).1.as_deref(), Some("alpha"));
}

#[test]
fn url_path_ignores_query_and_fragment_and_sets_combine() {
    let e = engine(
        r#"
policies:
  p:
    permissions:
    - and_rules:
        rules:
        - url_path: {path: {exact: /api}}
        - not_rule: {header: {name: x-block, present_match: true}}
        - or_rules: {rules: [{destination_port: 8080}, {destination_port_range: {start: 9000, end: 9001}}]}
        - destination_ip: {address_prefix: 10.0.0.0, prefix_len: 24}
    principals:
    - and_ids:
        ids:
        - remote_ip: {address_prefix: 10.0.0.1, prefix_len: 32}
        - not_id: {header: {name: x-user, string_match: {exact: mallory}}}
"#,
    );
    let ok = Req {
        path: "/api?x=1#f",
        ..Req::default()
    };
    assert!(check(&e, &ok).0);
    let blocked = Req {
        path: "/api",
        headers: vec![("x-block".into(), "1".into())],
        ..Req::default()
    };
    assert!(!check(&e, &blocked).0);
    let range = Req {
        path: "/api",
        local: "10.0.0.2:9000",
        ..Req::default()
    };
    assert!(check(&e, &range).0);
    let end_excluded = Req {
        path: "/api",
        local: "10.0.0.2:9001",
        ..Req::default()
    };
    assert!(!check(&e, &end_excluded).0);
    let mallory = Req {
        path: "/api",
        headers: vec![("x-user".into(), "mallory".into())],
        ..Req::default()
    };
    assert!(!check(&e, &mallory).0);
    // remote_ip is the address after x-forwarded-for processing, not the peer.
    let forwarded = Req {
        path: "/api",
        remote: "10.9.9.9",
        ..Req::default()
    };
    assert!(!check(&e, &forwarded).0);
}

#[test]
fn without_tls_authenticated_and_filter_state_never_match() {
    let e = engine(
        r#"
policies:
  mtls:
    permissions: [{any: true}]
    principals:
    - authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/sleep"}}
    - filter_state: {key: io.istio.peer_principal, string_match: {prefix: spiffe://}}
"#,
    );
    assert!(!check(&e, &Req::default()).0);
}

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let table = [
        (
            "policies: {p: {permissions: [], principals: [{any: true}]}}",
            "rules.policies.p.permissions: must have at least 1 item",
        ),
        (
            "policies: {p: {permissions: [{any: true}], principals: []}}",
            "rules.policies.p.principals: must have at least 1 item",
        ),
        (
            "policies: {p: {permissions: [{any: false}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0].any: must be true",
        ),
        (
            "policies: {p: {permissions: [{}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0]: one of and_rules",
        ),
        (
            "policies: {p: {permissions: [{any: true, destination_port: 80}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0]: only one of",
        ),
        (
            "policies: {p: {permissions: [{destination_port: 70000}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0].destination_port: 70000 is above 65535",
        ),
        (
            "policies: {p: {permissions: [{and_rules: {rules: []}}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0].and_rules.rules: must have at least 1 item",
        ),
        (
            "policies: {p: {permissions: [{any: true}], principals: [{metadata: {}}]}}",
            "rules.policies.p.principals[0].metadata",
        ),
        (
            "policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {}}}",
            "rules.policies.p.condition",
        ),
        (
            "policies: {p: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: nope}}]}}",
            "rules.policies.p.principals[0].remote_ip.address_prefix: \"nope\" is not an IP address",
        ),
        (
            "policies: {p: {permissions: [{url_path: {}}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0].url_path.path: required",
        ),
        ("action: MAYBE", "rules.action: unknown value \"MAYBE\""),
        (
            "policies: {p: {permissions: [{destination_port_range: {start: 90, end: 80}}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0].destination_port_range: start 90 must be below end 80",
        ),
        (
            "policies: {p: {permissions: [{destination_port_range: {start: 1, end: 70000}}], principals: [{any: true}]}}",
            "rules.policies.p.permissions[0].destination_port_range.end: 70000 is out of bounds",
        ),
    ];
    for (yaml, want) in table {
        let got = refused(yaml);
        assert!(
            got.starts_with(want),
            "{yaml}\n  got:  {got}\n  want: {want}"
        );
    }
}

#[test]
fn authenticated_reads_uri_sans_then_dns_sans_then_the_subject() {
    let e = engine(
        r#"
policies:
  sleep:
    permissions: [{any: true}]
    principals: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/sleep"}}}]
  any-tls:
    permissions: [{url_path: {path: {prefix: /tls}}}]
    principals: [{authenticated: {}}]
  by-dns:
    permissions: [{url_path: {path: {prefix: /dns}}}]
    principals: [{authenticated: {principal_name: {suffix: ".example"}}}]
  by-subject:
    permissions: [{url_path: {path: {prefix: /subject}}}]
    principals: [{authenticated: {principal_name: {exact: "CN=client,O=acme"}}}]
  sni:
    permissions: [{requested_server_name: {exact: api.example}}]
    principals: [{any: true}]
"#,
    );
    let peer = |uri: &[&str], dns: &[&str], subject: &str| TlsFacts {
        sni: None,
        peer: Some(PeerCert {
            uri_sans: uri.iter().map(|s| s.to_string()).collect(),
            dns_sans: dns.iter().map(|s| s.to_string()).collect(),
            subject: subject.into(),
            chain: Vec::new(),
            sha256: String::new(),
        }),
        ..TlsFacts::default()
    };
    let with = |path: &'static str, tls: Option<TlsFacts>| Req {
        path,
        tls,
        ..Req::default()
    };
    let sleep = peer(
        &[
            "spiffe://other",
            "spiffe://cluster.local/ns/default/sa/sleep",
        ],
        &[],
        "CN=x",
    );
    assert!(check(&e, &with("/", Some(sleep))).0, "any URI SAN matches");
    assert!(!check(&e, &with("/", Some(peer(&[], &[], "CN=x")))).0);
    // Plaintext never authenticates; TLS without a client certificate passes `authenticated: {}`.
    assert!(!check(&e, &with("/tls", None)).0);
    assert!(check(&e, &with("/tls", Some(TlsFacts::default()))).0);
    assert!(check(&e, &with("/dns", Some(peer(&[], &["svc.example"], "CN=x")))).0);
    assert!(
        check(
            &e,
            &with("/subject", Some(peer(&[], &[], "CN=client,O=acme")))
        )
        .0
    );
    let sni = TlsFacts {
        sni: Some("api.example".into()),
        ..TlsFacts::default()
    };
    assert!(check(&e, &with("/other", Some(sni))).0);
}

#[test]
fn istio_request_principals_match_the_jwt_payload_in_metadata() {
    use crate::http::filters::metadata::{DynamicMetadata, JWT_NAMESPACE};
    // istiod's requestPrincipals ["issuer.example/alice"] and request.auth.claims[groups].
    let raw: RawRbac = serde_norway::from_str(
        r#"{action: ALLOW, policies: {p: {permissions: [{any: true}], principals: [{and_ids: {ids: [
            {metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {string_match: {exact: issuer.example}}}},
            {metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {string_match: {exact: alice}}}},
            {metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: groups}], value: {or_match: {value_matchers: [
                {list_match: {one_of: {string_match: {exact: admins}}}}, {string_match: {exact: admins}}]}}}}
        ]}}]}}}"#,
    )
    .unwrap();
    let e = build::engine(&raw, &FieldPath::root()).unwrap();
    let view = crate::route::RequestView {
        authority: Some("h"),
        path: "/",
        method: "GET",
        scheme: "http",
        headers: &[] as &[(&str, &str)],
        random: 0,
        peer: None,
        metadata: None,
    };
    let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let check = |md: Option<&DynamicMetadata>| {
        e.check(&Facts {
            request: Some(&view),
            peer,
            direct: peer.ip(),
            remote: peer.ip(),
            local: peer,
            sni: "",
            tls: None,
            metadata: md,
        })
        .allowed
    };
    let mut md = DynamicMetadata::default();
    md.set_value(
        JWT_NAMESPACE,
        "payload".into(),
        serde_json::json!({"iss": "issuer.example", "sub": "alice", "groups": ["dev", "admins"]}),
    );
    assert!(check(Some(&md)));
    md.set_value(
        JWT_NAMESPACE,
        "payload".into(),
        serde_json::json!({"iss": "issuer.example", "sub": "alice", "groups": "admins"}),
    );
    assert!(check(Some(&md)), "a single string claim matches too");
    md.set_value(
        JWT_NAMESPACE,
        "payload".into(),
        serde_json::json!({"iss": "issuer.example", "sub": "bob", "groups": ["admins"]}),
    );
    assert!(!check(Some(&md)));
    assert!(!check(None), "no token: no metadata");
}
