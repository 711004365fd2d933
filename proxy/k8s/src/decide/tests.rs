//! The decision over real API-server objects (tests/fixtures) with every label and annotation
//! and their combinations.

use super::*;

const POD: &str = include_str!("../../tests/fixtures/pod-running.json");
const HOST_POD: &str = include_str!("../../tests/fixtures/pod-host-network.json");
const NAMESPACE: &str = include_str!("../../tests/fixtures/namespace.json");

fn ns(labels: &[(&str, &str)]) -> Namespace {
    let mut n: Namespace = serde_json::from_str(NAMESPACE).expect("namespace fixture");
    let l = n.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    n
}

fn pod_from(json: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    let mut p: Pod = serde_json::from_str(json).expect("pod fixture");
    let l = p.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    let a = p.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in annotations {
        a.insert(k.to_string(), v.to_string());
    }
    p
}

fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    pod_from(POD, labels, annotations)
}

/// What a case expects: captured in a mode, skipped with a reason containing the text, or an
/// error containing the text.
#[derive(Debug)]
enum Want {
    Captured(Mode),
    Skip(&'static str),
    Err(&'static str),
}

fn check(case: &str, got: Result<Decision, DecideError>, want: &Want) {
    match (&got, want) {
        (Ok(Decision::Capture(c)), Want::Captured(m)) => {
            assert_eq!(c.mode, *m, "{case}: {got:?}");
            assert_eq!(c.spec.mode.as_deref(), Some(m.name()), "{case}");
        }
        (Ok(Decision::Skip(why)), Want::Skip(text)) => {
            assert!(why.contains(text), "{case}: reason {why:?} lacks {text:?}")
        }
        (Err(e), Want::Err(text)) => {
            let msg = e.to_string();
            assert!(msg.contains(text), "{case}: error {msg:?} lacks {text:?}");
            assert!(
                msg.contains("shop/reviews-v1-5b4c8d7f9c-x2k8q") || msg.contains("namespace shop"),
                "{case}: error names the object: {msg}"
            );
        }
        _ => panic!("{case}: got {got:?}, want {want:?}"),
    }
}

const ENABLED: (&str, &str) = ("istio-injection", "enabled");

#[test]
fn namespace_selection_and_pod_opt_out() {
    use Want::*;
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        Want,
    );
    let cases: &[Case] = &[
        ("plain namespace", &[], &[], &[], Skip("no istio-injection=enabled")),
        ("istio-injection=enabled", &[ENABLED], &[], &[], Captured(Mode::Node)),
        ("istio-injection=disabled", &[("istio-injection", "disabled")], &[], &[], Skip("istio-injection=disabled")),
        ("istio-injection=other", &[("istio-injection", "yes")], &[], &[], Skip("istio-injection=yes")),
        ("disabled ns, pod label true", &[("istio-injection", "disabled")], &[("sidecar.istio.io/inject", "true")], &[], Skip("istio-injection=disabled")),
        ("istio.io/rev", &[("istio.io/rev", "1-24")], &[], &[], Captured(Mode::Node)),
        ("istio-injection wins over rev", &[("istio-injection", "disabled"), ("istio.io/rev", "1-24")], &[], &[], Skip("istio-injection=disabled")),
        ("plain ns, pod label true", &[], &[("sidecar.istio.io/inject", "true")], &[], Captured(Mode::Node)),
        ("plain ns, pod annotation true (Istio: label only)", &[], &[], &[("sidecar.istio.io/inject", "true")], Skip("no istio-injection=enabled")),
        ("enabled, annotation false", &[ENABLED], &[], &[("sidecar.istio.io/inject", "false")], Skip("pod annotation sidecar.istio.io/inject=false")),
        ("enabled, label false", &[ENABLED], &[("sidecar.istio.io/inject", "false")], &[], Skip("pod label sidecar.istio.io/inject=false")),
        ("label true wins over annotation false", &[ENABLED], &[("sidecar.istio.io/inject", "true")], &[("sidecar.istio.io/inject", "false")], Captured(Mode::Node)),
        ("label false wins over annotation true", &[ENABLED], &[("sidecar.istio.io/inject", "false")], &[("sidecar.istio.io/inject", "true")], Skip("label sidecar.istio.io/inject=false")),
        ("annotation yes/ON", &[ENABLED], &[], &[("sidecar.istio.io/inject", "ON")], Captured(Mode::Node)),
        ("annotation empty = default", &[ENABLED], &[], &[("sidecar.istio.io/inject", "")], Captured(Mode::Node)),
        ("annotation unknown = false (Istio)", &[ENABLED], &[], &[("sidecar.istio.io/inject", "maybe")], Skip("inject=maybe")),
        ("dataplane-mode=node", &[("sluice.io/dataplane-mode", "node")], &[], &[], Captured(Mode::Node)),
        ("dataplane-mode=sidecar", &[("sluice.io/dataplane-mode", "sidecar")], &[], &[], Captured(Mode::Sidecar)),
        ("dataplane-mode=off beats istio-injection", &[("sluice.io/dataplane-mode", "off"), ENABLED], &[], &[], Skip("sluice.io/dataplane-mode=off")),
        ("dataplane-mode beats istio-injection=disabled", &[("sluice.io/dataplane-mode", "sidecar"), ("istio-injection", "disabled")], &[], &[], Captured(Mode::Sidecar)),
        ("dataplane-mode bad", &[("sluice.io/dataplane-mode", "ambient")], &[], &[], Err("namespace shop: sluice.io/dataplane-mode=\"ambient\": expected node, sidecar or off")),
        ("dataplane-mode, pod opts out", &[("sluice.io/dataplane-mode", "node")], &[], &[("sidecar.istio.io/inject", "false")], Skip("inject=false")),
        ("pod mode sidecar", &[ENABLED], &[], &[("sluice.io/mode", "sidecar")], Captured(Mode::Sidecar)),
        ("pod mode off", &[ENABLED], &[], &[("sluice.io/mode", "off")], Captured(Mode::Off)),
        ("pod mode beats namespace mode", &[("sluice.io/dataplane-mode", "sidecar")], &[], &[("sluice.io/mode", "node")], Captured(Mode::Node)),
        ("pod mode does not select", &[], &[], &[("sluice.io/mode", "node")], Skip("no istio-injection=enabled")),
        ("pod mode bad", &[ENABLED], &[], &[("sluice.io/mode", "turbo")], Err("pod shop/reviews-v1-5b4c8d7f9c-x2k8q: sluice.io/mode=\"turbo\": expected node, sidecar or off")),
        ("opted-out pod with a bad mode is just skipped", &[ENABLED], &[], &[("sidecar.istio.io/inject", "false"), ("sluice.io/mode", "turbo")], Skip("inject=false")),
    ];
    for (case, ns_labels, pod_labels, pod_annotations, want) in cases {
        let got = decide(
            &pod(pod_labels, pod_annotations),
            &ns(ns_labels),
            &Settings::default(),
        );
        check(case, got, want);
    }
}

#[test]
fn never_captured() {
    let enabled = ns(&[ENABLED]);
    let s = Settings::default();
    let host = pod_from(HOST_POD, &[("sidecar.istio.io/inject", "true")], &[]);
    check(
        "hostNetwork",
        decide(&host, &enabled, &s),
        &Want::Skip("hostNetwork"),
    );
    let own = Settings {
        own_namespace: Some("shop".into()),
        ..Settings::default()
    };
    check(
        "own namespace",
        decide(&pod(&[], &[]), &enabled, &own),
        &Want::Skip("agent's own"),
    );
    let mut system = ns(&[ENABLED]);
    system.metadata.name = Some("kube-system".into());
    check(
        "kube-system",
        decide(&pod(&[], &[]), &system, &s),
        &Want::Skip("never captured"),
    );
    for phase in ["Succeeded", "Failed"] {
        let mut done = pod(&[], &[]);
        done.status.as_mut().unwrap().phase = Some(phase.into());
        check(phase, decide(&done, &enabled, &s), &Want::Skip(phase));
    }
    let mut pending = pod(&[], &[]);
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    check(
        "Pending",
        decide(&pending, &enabled, &s),
        &Want::Captured(Mode::Node),
    );
}

#[test]
fn default_mode_comes_from_settings() {
    let s = Settings {
        default_mode: Mode::Sidecar,
        ..Settings::default()
    };
    check(
        "default",
        decide(&pod(&[], &[]), &ns(&[ENABLED]), &s),
        &Want::Captured(Mode::Sidecar),
    );
    let node_ns = ns(&[("sluice.io/dataplane-mode", "node")]);
    check(
        "ns mode wins",
        decide(&pod(&[], &[]), &node_ns, &s),
        &Want::Captured(Mode::Node),
    );
}

fn spec_of(annotations: &[(&str, &str)]) -> Result<EnrollSpec, DecideError> {
    match decide(
        &pod(&[], annotations),
        &ns(&[ENABLED]),
        &Settings::default(),
    )? {
        Decision::Capture(c) => Ok(c.spec),
        other => panic!("{annotations:?}: {other:?}"),
    }
}

#[test]
fn traffic_annotations_become_enrollment_options() {
    let spec = spec_of(&[
        ("traffic.sidecar.istio.io/excludeOutboundPorts", "22,3306"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "9090"),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "169.254.169.254/32,fd00::/8",
        ),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.96.0.0/12,10.244.0.0/16",
        ),
        ("traffic.sidecar.istio.io/includeInboundPorts", "*"),
    ])
    .unwrap();
    assert_eq!(spec.exclude_outbound_ports.as_deref(), Some("22,3306"));
    assert_eq!(spec.exclude_inbound_ports.as_deref(), Some("9090"));
    assert_eq!(
        spec.exclude_outbound_cidrs.as_deref(),
        Some("169.254.169.254/32,fd00::/8")
    );
    assert_eq!(
        spec.include_outbound_cidrs.as_deref(),
        Some("10.96.0.0/12,10.244.0.0/16")
    );
    // The agent accepts what the decision produced, with the inbound defaults replaced.
    let e = spec.validate().unwrap();
    assert_eq!(e.policy.n_exclude_outbound_ports, 2);
    assert_eq!(e.policy.n_include_outbound_cidrs, 2);
    assert_eq!(e.policy.n_exclude_inbound_ports, 1);

    // Wildcards mean "everything", the default.
    let all = spec_of(&[
        ("traffic.sidecar.istio.io/includeOutboundIPRanges", "*"),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "8080"),
    ])
    .unwrap();
    assert_eq!(all.include_outbound_cidrs, None);
    assert_eq!(all.include_outbound_ports, None);
    // No annotations: the agent's defaults (Istio's).
    assert_eq!(
        spec_of(&[]).unwrap(),
        spec_of(&[("other.io/x", "y")]).unwrap()
    );
}

#[test]
fn bad_or_inexpressible_annotations_are_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("excludeOutboundPorts", "22,ssh", "malformed port \"ssh\""),
        ("excludeInboundPorts", "70000", "\"70000\""),
        ("excludeOutboundIPRanges", "10.0.0.0/33", "malformed CIDR"),
        (
            "includeOutboundIPRanges",
            "10.0.0.0/8,nope",
            "malformed CIDR \"nope\"",
        ),
        (
            "includeOutboundIPRanges",
            "",
            "not supported: capturing no outbound destination",
        ),
        ("includeInboundPorts", "9080", "not supported"),
        ("includeInboundPorts", "", "not supported"),
        ("excludeInterfaces", "eth1", "does not honour"),
        (
            "excludeOutboundPorts",
            "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
            "17 entries, the agent's policy holds at most 16",
        ),
    ];
    for (name, value, text) in cases {
        let key = format!("traffic.sidecar.istio.io/{name}");
        let e = spec_of(&[(&key, value)]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(text), "{key}={value:?}: {msg}");
        assert!(msg.contains(&key), "names the annotation: {msg}");
        assert!(
            msg.contains("pod shop/reviews-v1-5b4c8d7f9c-x2k8q"),
            "names the pod: {msg}"
        );
    }
    // includeOutboundPorts adds ports outside narrowed ranges in Istio: not expressible.
    let e = spec_of(&[
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/8",
        ),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "5432"),
    ])
    .unwrap_err();
    assert!(matches!(e, DecideError::Unsupported { .. }), "{e}");
}

#[test]
fn fixtures_are_api_server_objects() {
    let p: Pod = serde_json::from_str(POD).unwrap();
    assert_eq!(
        p.metadata.uid.as_deref(),
        Some("6f1c2a9e-3b7d-4e21-9c55-0a8f4d2b7e13")
    );
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("worker-1"));
    let h: Pod = serde_json::from_str(HOST_POD).unwrap();
    assert_eq!(h.spec.unwrap().host_network, Some(true));
}

#[test]
fn the_engine_annotation_picks_l4_or_l7_and_a_bad_value_names_it() {
    assert_eq!(spec_of(&[]).unwrap().engine, None);
    for e in ["l4", "l7"] {
        let spec = spec_of(&[("sluice.io/engine", e)]).unwrap();
        assert_eq!(spec.engine.as_deref(), Some(e));
        assert_eq!(spec.validate().unwrap().l4_only(), e == "l4");
    }
    let err = spec_of(&[("sluice.io/engine", "l9")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "pod shop/reviews-v1-5b4c8d7f9c-x2k8q: sluice.io/engine=\"l9\": --engine: \"l9\" is not l4 or l7"
    );
}
