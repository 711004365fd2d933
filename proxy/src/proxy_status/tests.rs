//! The table and JSON views over hand-written `/xds_status` documents.

use serde_json::{json, Value};

use super::{render, Output};

fn ty(name: &str, answer: Option<&str>, nack: Option<&str>) -> Value {
    let ev = |v: &str| json!({"version_info": v, "nonce": "n", "ago_ms": 5});
    json!({
        "type": name,
        "subscribed": true,
        "last_response": ev("2"),
        "last_ack": ev("1"),
        "last_nack": nack.map(|e| { let mut n = ev("2"); n["error"] = json!(e); n }),
        "last_answer": answer,
        "pending": answer.is_none(),
    })
}

fn status(id: &str, connected: bool, types: Vec<Value>) -> Value {
    json!({
        "node": {"id": id, "cluster": "test", "metadata": {"NAMESPACE": "default"}},
        "proxy_version": "sluice/0.1.0",
        "control_plane": {"address": "127.0.0.1:15010", "connected": connected,
            "streams": 1, "since_ago_ms": 3_400},
        "types": types,
    })
}

#[test]
fn table_with_istioctl_columns_nacks_and_a_lost_control_plane() {
    let synced = status(
        "sidecar~10.0.0.2~b.default~default.svc.cluster.local",
        true,
        vec![
            ty("CDS", Some("ACK"), None),
            ty("EDS", Some("ACK"), None),
            ty("LDS", Some("NACK"), Some("Listener \"l\": port_value: bad")),
            ty("RDS", None, None),
        ],
    );
    let mut lost = status(
        "sidecar~10.0.0.1~a.default~default.svc.cluster.local",
        false,
        vec![
            ty("CDS", Some("ACK"), None),
            ty("EDS", Some("ACK"), None),
            ty("LDS", Some("ACK"), None),
        ],
    );
    lost["node"]["metadata"]["CLUSTER_ID"] = json!("Kubernetes");
    lost["node"]["metadata"]["ISTIO_VERSION"] = json!("1.24.0");
    let fixed = json!({"static": true, "proxy_version": "sluice/0.1.0", "node": {"id": "static-1", "cluster": "c"}});
    let out = render(
        &[
            ("127.0.0.1:1".into(), synced),
            ("127.0.0.1:2".into(), lost),
            ("127.0.0.1:3".into(), fixed),
        ],
        Output::Short,
    );
    let want = "\
NAME                                                     CLUSTER        CDS          LDS          EDS          RDS          ECDS         ISTIOD                                    VERSION
sidecar~10.0.0.1~a.default~default.svc.cluster.local     Kubernetes     STALE        STALE        STALE        NOT SENT     NOT SENT     127.0.0.1:15010 (disconnected 3s ago)     1.24.0
sidecar~10.0.0.2~b.default~default.svc.cluster.local     test           SYNCED       NACK         SYNCED       STALE        NOT SENT     127.0.0.1:15010                           sluice/0.1.0
static-1                                                 c              NOT SENT     NOT SENT     NOT SENT     NOT SENT     NOT SENT     (static config)                           sluice/0.1.0

sidecar~10.0.0.2~b.default~default.svc.cluster.local LDS NACK of version \"2\": Listener \"l\": port_value: bad
";
    assert_eq!(out, want, "\n{out}");
}

#[test]
fn json_carries_the_words_the_nacks_and_the_raw_status() {
    let s = status(
        "n1",
        true,
        vec![ty("LDS", Some("NACK"), Some("Listener \"l\": x: bad"))],
    );
    let out = render(&[("127.0.0.1:1".into(), s.clone())], Output::Json);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["LDS"], "NACK");
    assert_eq!(v[0]["CDS"], "NOT SENT");
    assert_eq!(v[0]["nacks"][0]["error"], "Listener \"l\": x: bad");
    assert_eq!(v[0]["xds_status"], s);
    assert_eq!(v[0]["target"], "127.0.0.1:1");
}

#[test]
fn a_proxy_without_node_id_is_named_by_its_target() {
    let s = json!({"static": true, "proxy_version": "sluice/0.1.0", "node": {}});
    let out = render(&[("default/notebook".into(), s)], Output::Json);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "default/notebook");
    assert_eq!(v[0]["control_plane"], "(static config)");
}

#[test]
fn ages_as_kubectl_prints_them() {
    let age = |ms| super::age(std::time::Duration::from_millis(ms));
    assert_eq!(
        [age(850), age(12_400), age(184_000), age(7_500_000)],
        ["850ms", "12s", "3m4s", "2h5m"]
    );
}
