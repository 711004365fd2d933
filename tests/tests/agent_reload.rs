//! SIGHUP reload of the agent's L7 config (`sluice agent --config`, proxy/node/src/agent/reload.rs):
//! a node-mode pod served by the L7 engine takes a changed route on its next request and
//! `sluice status` shows its engine's new version; a broken file is refused with an error that
//! names the file while the pod keeps the running route; a pod enrolled after the reloads starts
//! with the last config the agent accepted.

use std::time::{Duration, Instant};

use sluice_tests::{
    agent_node::Node,
    l7_pods::{config, L7Pods, REWRITE},
    Netns, Veth,
};

/// The pod's outbound engine version in `sluice status`.
fn engine_version(node: &Node, pod: &Netns) -> u64 {
    let st = node.pod(pod);
    st.engine_versions
        .and_then(|(out, _)| out)
        .unwrap_or_else(|| panic!("no engine version in status: {st:?}"))
}

/// Writes the config file the way an operator's tooling does: a temp file renamed over it.
fn write_config(path: &str, text: &str) {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

fn sighup(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP the agent");
}

#[test]
fn sighup_reloads_the_l7_config_of_node_mode_pods() {
    let p = L7Pods::new("rl");
    let mut node = Node::start_with("rl", &["--config", &p.cfg]);
    node.enroll(&p.client, &[]);
    let body = p.get_svc(&node);
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");
    assert_eq!(REWRITE, "/v2/api");
    let v0 = engine_version(&node, &p.client);

    // A changed route: applied to the running pod, visible in its next request and in status.
    write_config(&p.cfg, &config(p.app.addr, "/v3/api"));
    sighup(node.pid());
    let t = Instant::now();
    while engine_version(&node, &p.client) == v0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "reload not applied after 5 s; agent log:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let v1 = engine_version(&node, &p.client);
    assert!(v1 > v0, "version {v0} -> {v1}");
    let body = p.get_svc(&node);
    assert!(
        body.contains("line=GET /v3/api/items HTTP/1.1"),
        "the new route: {body}"
    );
    assert!(body.contains("routed=sluice-l7"), "{body}");

    // A broken (half-written) file: refused, the error names the file, the pod keeps v1.
    let good = config(p.app.addr, "/v4/api");
    write_config(&p.cfg, &good[..good.len() / 2]);
    sighup(node.pid());
    node.wait_for_log("config rejected");
    let log = node.agent_log();
    let line = log
        .lines()
        .find(|l| l.contains("config rejected"))
        .expect("the rejection line");
    assert!(
        line.contains(&format!("error={}:", p.cfg)),
        "the error must name the file: {line}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        engine_version(&node, &p.client),
        v1,
        "a refused file is not applied"
    );
    let body = p.get_svc(&node);
    assert!(
        body.contains("line=GET /v3/api/items HTTP/1.1"),
        "the running route stays: {body}"
    );

    // A pod enrolled after the reloads starts with the last accepted config (/v3/api), not the
    // first one and not the broken file on disk. It reaches the app through its own link.
    let late = Netns::new("rlx");
    let veth = Veth::new("r2", &late, &p.server);
    let app_net = format!("{}/32", p.app.addr.ip());
    late.ip(&["route", "add", &app_net, "via", &veth.b_v4.to_string()]);
    node.enroll(&late, &[]);
    let body = p.get_svc_in(&late, &node);
    assert!(
        body.contains("line=GET /v3/api/items HTTP/1.1"),
        "a pod enrolled after the reload: {body}"
    );
    assert!(
        body.contains(&format!("peer={}:", veth.a_v4)),
        "from the new pod: {body}"
    );
    node.unenroll(&late);
}
