//! Issue 12, test 3: a real Prometheus scrapes the node agent's `--metrics-addr` endpoint (every
//! node-mode pod's Istio metrics, labelled `pod`) and a `sluice sidecar`'s 15090 during traffic,
//! and its query API returns exactly the number of requests each pod sent or received.
//!
//! Two node-mode client pods: `pa`'s client sends [`SVC_REQUESTS`] requests routed by the
//! `virtualOutbound` HCM to the `svc` cluster; `pb`'s client sends [`PASSTHROUGH_REQUESTS`]
//! through `PassthroughCluster` to the app of `pb`'s server pod, where a `sluice sidecar` (sidecar
//! mode) serves them on `virtualInbound`. The agent's Prometheus runs on the host's loopback, the
//! sidecar's inside the sidecar pod's netns (its 15090 lives there).

use std::{collections::BTreeMap, time::Duration};

use sluice_tests::{
    agent_node::Node, l7_pods::L7Pods, prometheus::Prometheus, sluice_cli::SluiceProcess,
    upstream::harness::free_port,
};

const SVC_REQUESTS: usize = 5;
const PASSTHROUGH_REQUESTS: usize = 3;
/// Scrapes every second; the first needs Prometheus up, so allow some.
const WAIT: Duration = Duration::from_secs(40);

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, f64> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), *v as f64))
        .collect()
}

#[test]
fn prometheus_counts_each_pods_requests_exactly() {
    let pa = L7Pods::new("pa");
    let pb = L7Pods::new("pb");
    let metrics = format!("127.0.0.1:{}", free_port());
    let node = Node::start_with("pm", &["--config", &pa.cfg, "--metrics-addr", &metrics]);
    node.enroll(&pa.client, &[]);
    node.enroll(&pb.client, &[]);
    node.enroll(&pb.server, &["--mode", "sidecar"]);
    let ctl = node.ctl();
    let mut sidecar = SluiceProcess::sidecar_with(
        &pb.server,
        1337,
        Some(&node.cgroup),
        &["--config", &pa.cfg, "--agent-control", &ctl],
    );
    sidecar.wait_for_log("inbound listeners registered", Duration::from_secs(5));
    sidecar.wait_for_log("metrics endpoint ready", Duration::from_secs(5));

    let agent_prom = Prometheus::start(
        "pm-agent",
        &metrics,
        &format!("127.0.0.1:{}", free_port()),
        None,
    );
    let sidecar_prom = Prometheus::start(
        "pm-sidecar",
        "127.0.0.1:15090",
        "127.0.0.1:9090",
        Some(&pb.server),
    );

    for _ in 0..SVC_REQUESTS {
        let body = pa.get_svc(&node);
        assert!(body.contains("routed=sluice-l7"), "{body}");
    }
    let url = format!("http://{}/direct", pb.app.addr);
    for _ in 0..PASSTHROUGH_REQUESTS {
        let out = pb.curl(&node, &[&url]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains("line=GET /direct HTTP/1.1"), "{body} {out:?}");
        assert!(
            body.contains("inbound=sluice-in"),
            "served by the sidecar: {body}"
        );
    }

    // The agent: one series set per node-mode pod, reporter=source for their outbound requests.
    let by_pod = r#"sum by (pod) (istio_requests_total{reporter="source",response_code="200"})"#;
    agent_prom.wait_for(
        by_pod,
        "pod",
        &expect(&[
            (pa.client.name(), SVC_REQUESTS),
            (pb.client.name(), PASSTHROUGH_REQUESTS),
        ]),
        WAIT,
    );
    // Nothing was received by a node-mode pod.
    assert_eq!(
        agent_prom.query(
            r#"sum(istio_requests_total{reporter="destination"})"#,
            "pod"
        ),
        BTreeMap::new()
    );
    // The duration histogram counted the same requests.
    agent_prom.wait_for(
        "sum by (pod) (istio_request_duration_milliseconds_count)",
        "pod",
        &expect(&[
            (pa.client.name(), SVC_REQUESTS),
            (pb.client.name(), PASSTHROUGH_REQUESTS),
        ]),
        WAIT,
    );
    // The sidecar: the requests its pod received, as the destination's reporter, on the app's port.
    let port = pb.app.addr.port().to_string();
    sidecar_prom.wait_for(
        r#"sum by (destination_port) (istio_requests_total{reporter="destination",response_code="200",request_protocol="http"})"#,
        "destination_port",
        &expect(&[(&port, PASSTHROUGH_REQUESTS)]),
        WAIT,
    );
}
