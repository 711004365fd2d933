//! Secrets over ADS (SDS, `sds_config: {ads: {}}`): a cluster naming one subscribes it and
//! warms until it arrives (the rest of the configuration goes on); before the first complete
//! configuration `/ready` waits for it; a bad secret is NACKed naming it; a secret nothing
//! names any more is unsubscribed.

use std::time::Instant;

use serde_json::{json, Value};

use crate::{
    convert::{json_to_any, Any, ResourceType},
    core::{Core, Update},
    fixtures::*,
};

use ResourceType::{Cluster, Listener, Secret};

const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// A STATIC cluster `name` whose TLS transport socket takes its client certificate from the
/// ADS secret `secret`.
fn tls_cluster(name: &str, secret: &str) -> Any {
    json_to_any(
        CDS,
        &json!({
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [
                    {"name": secret, "sds_config": {"ads": {}, "resource_api_version": "V3"}}]}}},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}
        }),
    )
    .unwrap()
}

/// A plaintext STATIC cluster.
fn plain_cluster(name: &str) -> Any {
    json_to_any(
        CDS,
        &json!({"name": name, "type": "STATIC", "connect_timeout": "1s"}),
    )
    .unwrap()
}

/// A secret holding a (self-signed) certificate and key as a control plane sends them
/// (`inline_bytes`).
fn secret(name: &str) -> Any {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["w.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    json_to_any(
        SDS,
        &json!({"name": name, "tls_certificate": {
            "certificate_chain": {"inline_bytes": b64(&cert.pem())},
            "private_key": {"inline_bytes": b64(&key.serialize_pem())}}}),
    )
    .unwrap()
}

fn step(c: &mut Core, ty: ResourceType, items: Vec<Any>) -> Result<Value, String> {
    let t = Instant::now();
    let cand = c.check(ty, Update::Sotw(items), t)?;
    c.commit(cand, t);
    Ok(c.serving_doc())
}

fn cluster_names(doc: &Value) -> Vec<&str> {
    doc["static_resources"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[test]
fn a_cluster_waits_for_its_secret_and_ready_waits_with_it() {
    let mut c = core();
    step(
        &mut c,
        Cluster,
        vec![tls_cluster("mtls", "default"), plain_cluster("p")],
    )
    .unwrap();
    step(&mut c, Listener, Vec::new()).unwrap();
    assert_eq!(names(&c, Secret), ["default"], "the secret is subscribed");
    assert!(
        !c.is_ready(),
        "the first configuration waits for the secret"
    );
    let doc = step(&mut c, Secret, vec![secret("default")]).unwrap();
    assert!(c.is_ready() && !c.warming());
    assert_eq!(cluster_names(&doc), ["xds", "mtls", "p"]);
    let s = &doc["static_resources"]["secrets"][0];
    assert_eq!(s["name"], "default");
    assert!(s.get("@pending").is_none());

    // A new cluster naming a secret not there yet warms alone; the other change goes on.
    let doc = step(
        &mut c,
        Cluster,
        vec![
            tls_cluster("mtls", "default"),
            tls_cluster("new", "other"),
            plain_cluster("q"),
        ],
    )
    .unwrap();
    assert_eq!(
        cluster_names(&doc),
        ["xds", "mtls", "q"],
        "new warms, left out"
    );
    assert!(c.warming());
    assert_eq!(names(&c, Secret), ["default", "other"]);
    let doc = step(&mut c, Secret, vec![secret("other")]).unwrap();
    assert_eq!(cluster_names(&doc), ["xds", "mtls", "new", "q"]);
    assert!(!c.warming());

    // Nothing names `default` any more: unsubscribed and dropped.
    step(&mut c, Cluster, vec![tls_cluster("new", "other")]).unwrap();
    assert_eq!(names(&c, Secret), ["other"]);
    assert!(c
        .accepted(Secret)
        .is_some_and(|m| !m.contains_key("default")));
}

#[test]
fn a_bad_secret_is_nacked_naming_it_and_an_unasked_one_is_ignored() {
    let mut c = core();
    step(&mut c, Cluster, vec![tls_cluster("mtls", "default")]).unwrap();
    let bad = json_to_any(
        SDS,
        &json!({"name": "default", "tls_certificate": {
            "certificate_chain": {"inline_string": "C"}, "private_key": {"inline_string": "K"}}}),
    )
    .unwrap();
    let e = step(&mut c, Secret, vec![bad]).unwrap_err();
    assert_eq!(
        e,
        "Secret \"default\": tls_certificate.certificate_chain: no PEM certificate in it"
    );
    assert!(!c.is_ready());
    // Not asked for: ignored, as Envoy ignores resources it did not subscribe to.
    step(&mut c, Secret, vec![secret("stray")]).unwrap();
    assert!(c.accepted(Secret).is_none_or(|m| m.is_empty()));
}

#[test]
fn what_does_not_depend_on_a_pending_secret_is_checked_at_once() {
    let mut c = core();
    let bad = json_to_any(
        CDS,
        &json!({"name": "bad", "type": "STATIC", "connect_timeout": "1s",
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "tls_params": {"cipher_suites": ["NOPE"]},
                    "tls_certificate_sds_secret_configs": [
                        {"name": "default", "sds_config": {"ads": {}}}]}}}}),
    )
    .unwrap();
    let e = step(&mut c, Cluster, vec![bad]).unwrap_err();
    assert!(
        e.contains("Cluster \"bad\"") && e.contains("cipher_suites[0]: unknown cipher suite"),
        "{e}"
    );
    // So a good cluster naming the same secret is not held back by it.
    step(&mut c, Cluster, vec![tls_cluster("good", "default")]).unwrap();
    step(&mut c, Listener, Vec::new()).unwrap();
    step(&mut c, Secret, vec![secret("default")]).unwrap();
    assert!(c.is_ready());
}

#[test]
fn an_endpoint_move_of_a_cluster_naming_a_secret_is_applied_in_place() {
    let mut c = core();
    let eds_tls = json_to_any(
        CDS,
        &json!({"name": "e", "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": {"ads": {}}},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [
                    {"name": "default", "sds_config": {"ads": {}}}]}}}}),
    )
    .unwrap();
    step(&mut c, Cluster, vec![eds_tls]).unwrap();
    step(&mut c, Listener, Vec::new()).unwrap();
    step(&mut c, Secret, vec![secret("default")]).unwrap();
    step(&mut c, ResourceType::Endpoint, vec![any(EDS, &cla("e"))]).unwrap();
    assert!(c.is_ready());
    let mut moved = cla("e");
    moved.endpoints[0].lb_endpoints.truncate(1);
    let cand = check_eds(&c, &moved);
    assert!(
        matches!(cand.apply, Some(crate::core::Apply::Endpoints(_))),
        "{:?}",
        cand.apply
    );
}
