//! Unit tests of the harness's observation, comparison, relabelling and rendering.
use super::*;

#[test]
fn only_a_generated_cookies_value_is_masked() {
    assert_eq!(
        mask_generated_cookie("s=\"0cc0f7dab9951cfd\"; Max-Age=1; HttpOnly"),
        "s=\"<generated>\"; Max-Age=1; HttpOnly"
    );
    for kept in [
        "s=0cc0f7dab9951cfd",
        "s=\"alice\"; Path=/",
        "s=\"0cc0f7dab9951cfz\"",
    ] {
        assert_eq!(mask_generated_cookie(kept), kept);
    }
}

fn case(yaml: &str) -> Case {
    let mut c: Case = serde_norway::from_str(yaml).expect("case yaml");
    c.name = "t".into();
    c
}

fn obs(pairs: &[(&str, &str)]) -> Observation {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn compare_splits_undeclared_declared_and_stale() {
    let c = case(
        "description: d\nroute_config: {}\ndiverge: {\"resp.header.x-*\": r1, never: r2}\n\
         requests:\n- {path: /, diverge: {status: r3}}\n- {path: /b}\n",
    );
    let e = [
        obs(&[("status", "200"), ("resp.header.x-a", "1")]),
        obs(&[("up.path", "/b")]),
    ];
    let s = [obs(&[("status", "404")]), obs(&[("up.path", "/c")])];
    let d = compare(&c, &e, &s);
    assert_eq!(
        d.undeclared,
        vec![r#"  req[1] GET /b up.path: envoy="/b" sluice="/c""#]
    );
    assert_eq!(d.declared.len(), 2, "{:?}", d.declared);
    assert_eq!(d.stale.len(), 1, "{:?}", d.stale);
    assert!(d.stale[0].contains("\"never\""));
}

#[test]
fn observe_reduces_varying_values_only() {
    let resp = Response {
        status: 200,
        headers: vec![
            ("date".into(), "Tue".into()),
            ("x-request-id".into(), "client-id".into()),
            ("x-m".into(), "1".into()),
            ("x-m".into(), "2".into()),
        ],
        body: b"ok".to_vec(),
        interim: Vec::new(),
        reason: "OK".into(),
        cased: Vec::new(),
    };
    let rec = |h: Vec<(&str, &str)>| Recorded {
        upstream: "a".into(),
        method: "GET".into(),
        path: "/p".into(),
        headers: h.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        body: Vec::new(),
        conn: 1,
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
        peer_port: 40000,
        health_check: false,
        tls: None,
        protocol: None,
        proxy_header: None,
        cased: Vec::new(),
    };
    let uuid = "0b7c9a52-3f3e-4d2a-9c1e-6a1b2c3d4e5f";
    let o = observe(
        Ok(resp),
        vec![
            rec(vec![]),
            rec(vec![
                ("host", "h"),
                ("x-request-id", uuid),
                ("x-envoy-expected-rq-timeout-ms", "14990"),
            ]),
        ],
    );
    assert_eq!(o["resp.header.date"], PRESENT);
    assert_eq!(o["resp.header.x-request-id"], "client-id");
    assert_eq!(o["resp.header.x-m"], "1\n2");
    assert_eq!(o["upstream"], "a,a");
    assert_eq!(o["attempts"], "2");
    assert_eq!(o["up.host"], "h");
    assert_eq!(o["up.header.x-request-id"], "<uuid:4>");
    assert_eq!(o["up.header.x-envoy-expected-rq-timeout-ms"], PRESENT);
    assert!(!o.contains_key("up.header.host"));
}

#[test]
fn undocumented_divergences_need_case_and_key_on_one_line() {
    let c = case(
        "description: d\nroute_config: {}\ndiverge: {sluice-start: r}\n\
         requests:\n- {path: /, diverge: {status: r}}\n",
    );
    let section = "\n- `t` `status`: reason\n- `t`\n`sluice-start` on another line\n";
    assert_eq!(
        undocumented_divergences(&[c], section),
        vec!["  t: sluice-start"]
    );
}

#[test]
fn rotate_round_makes_every_start_of_a_round_equal() {
    let labelled = |names: &[&str]| {
        let mut o: Vec<Observation> = names.iter().map(|n| obs(&[("upstream", n)])).collect();
        rotate_round(&mut o, 4);
        relabel(&mut o);
        o.iter().map(|o| o["upstream"].clone()).collect::<Vec<_>>()
    };
    let a = labelled(&["x", "x", "y", "x", "x", "x", "y", "x"]);
    assert_eq!(a, ["#1", "#1", "#1", "#2", "#1", "#1", "#1", "#2"]);
    assert_eq!(a, labelled(&["y", "x", "x", "x", "y", "x", "x", "x"]));
    assert_eq!(a, labelled(&["x", "y", "x", "x", "x", "y", "x", "x"]));
    // Not a repeated round: stays different.
    assert_ne!(a, labelled(&["x", "x", "x", "y", "y", "x", "x", "x"]));
}

#[test]
fn relabel_follows_first_appearance() {
    let mut o = vec![
        obs(&[("upstream", "e2")]),
        obs(&[("upstream", "e1,e2")]),
        obs(&[("upstream", "none")]),
    ];
    relabel(&mut o);
    let got: Vec<&str> = o.iter().map(|o| o["upstream"].as_str()).collect();
    assert_eq!(got, ["#1", "#2,#1", "none"]);
}

#[test]
fn render_wraps_route_config_and_fills_ports() {
    let c = case(
        "description: d\nroute_config: {virtual_hosts: []}\nhcm: {use_remote_address: true}\n\
         clusters: {a: {}, dead: {closed: true}}\nrequests: []\n",
    );
    let text = c.render(&case::Ports {
        listener: 1001,
        closed: 1002,
        unanswered: 1004,
        redirected: 1005,
        access_log: "/tmp/a.log",
        ca_file: "/tmp/ca.pem",
        pki_dir: "/tmp",
        upstream: &|_| 1003,
    });
    let v: serde_json::Value = serde_norway::from_str(&text).expect("rendered YAML parses");
    let l = &v["static_resources"]["listeners"][0];
    assert_eq!(l["address"]["socket_address"]["port_value"], 1001);
    assert_eq!(
        l["filter_chains"][0]["filters"][0]["typed_config"]["use_remote_address"],
        true
    );
    let port = |i: usize| {
        v["static_resources"]["clusters"][i]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
            ["endpoint"]["address"]["socket_address"]["port_value"]
            .clone()
    };
    assert_eq!((port(0), port(1)), (1003.into(), 1002.into()));
}

#[test]
fn a_uuid_request_id_keeps_its_trace_reason_and_present_holds_for_it() {
    assert_eq!(
        reduce(
            PRESENCE_ONLY_UPSTREAM,
            "x-request-id",
            "00000001-0000-9000-8000-000000000001"
        ),
        "<uuid:9>"
    );
    assert_eq!(
        reduce(PRESENCE_ONLY_UPSTREAM, "x-request-id", "my-id"),
        "my-id"
    );
    let c = case(
        "description: d\nroute_config: {}\n\
         requests:\n- {path: /, expect: {up.header.x-request-id: <present>}}\n",
    );
    let seen = obs(&[("up.header.x-request-id", "<uuid:4>")]);
    assert!(check_expectations(&c, &[seen]).is_empty());
    assert_eq!(check_expectations(&c, &[obs(&[])]).len(), 1);
}
