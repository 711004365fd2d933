//! `Cluster.ignore_health_on_host_removal` under Envoy 1.40 and under sluice, on the same ADS
//! script: an EDS cluster with active health checking drops an endpoint that still passes its
//! checks. Unset, both keep it (`/clusters` flags it `pending_dynamic_removal`) and route to it
//! until a check fails, then drop it for good; set, both drop it at once.

use std::{
    collections::BTreeSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use sluice_tests::{
    upstream::{harness::free_port, TestUpstream},
    xds_run::{admin_get, get, start_proxy, Kind},
    xds_script::{bootstrap, cla, listener, rds, routes},
    xds_server::{Snapshot, XdsServer, EDS, LDS},
};

/// `bootstrap` plus the EDS cluster `backend` (EDS name `backend-eds`), health checked every
/// 200 ms on `/healthz`, one result deciding either way.
fn with_checked_eds(admin: u16, server: std::net::SocketAddr, ignore: bool) -> String {
    let ignore = if ignore {
        "    ignore_health_on_host_removal: true\n"
    } else {
        ""
    };
    bootstrap(admin, server, "GRPC")
        + r#"  - name: backend
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      service_name: backend-eds
      eds_config: { ads: {}, resource_api_version: V3 }
    health_checks:
    - timeout: 1s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 1
      healthy_threshold: 1
      http_health_check: { path: /healthz }
"# + ignore
}

fn snapshot(version: &str, port: u16, upstreams: &[u16]) -> Snapshot {
    Snapshot::from_json(
        version,
        &[
            listener("web", port, rds("r")),
            routes("r", &[("/", "backend")]),
            cla("backend-eds", upstreams),
        ],
    )
}

/// The upstream names that answer 200 to `n` requests.
async fn answering(port: u16, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Some((200, body)) = get(port, "/").await {
            seen.insert(body);
        }
    }
    seen
}

/// Waits until `n` requests in a row are answered by `want` alone.
async fn settles_on(kind: Kind, port: u16, want: &[&str], what: &str) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let seen = answering(port, 8).await;
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: {what}: answered by {seen:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `health_flags` `/clusters` shows for `backend`'s endpoint on `upstream`.
async fn health_flags(admin: u16, upstream: u16) -> String {
    let (_, body) = admin_get(admin, "/clusters")
        .await
        .expect("admin /clusters");
    let prefix = format!("backend::127.0.0.1:{upstream}::health_flags::");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("(absent)")
        .to_string()
}

/// Runs the script under `kind`; returns what it saw right after the drop: the upstreams
/// answering and the dropped endpoint's health flags.
async fn drop_a_passing_host(kind: Kind, ignore: bool) -> (BTreeSet<String>, String) {
    let (a, b) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    );
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    server.set(snapshot("1", port, &[a.port(), b.port()]));
    let yaml = with_checked_eds(admin, server.addr, ignore);
    let proxy = tokio::task::spawn_blocking(move || start_proxy(kind, &yaml, admin))
        .await
        .unwrap();
    let ack = server.wait_for(LDS, "1").await;
    assert_eq!(ack.error, None, "{kind:?}: LDS 1 NACKed");
    settles_on(kind, port, &["a", "b"], "both endpoints, both passing").await;

    server.set(snapshot("2", port, &[a.port()]));
    let ack = server.wait_for(EDS, "2").await;
    assert_eq!(ack.error, None, "{kind:?}: EDS 2 NACKed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_drop = answering(port, 12).await;
    let flags = health_flags(admin, b.port()).await;

    if !ignore {
        // The kept host fails a check: it goes, and passing again does not bring it back.
        b.state.status.store(503, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut failed = health_flags(admin, b.port()).await;
        while failed == "/pending_dynamic_removal" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            failed = health_flags(admin, b.port()).await;
        }
        b.state.status.store(200, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let back = answering(port, 12).await;
        let again = health_flags(admin, b.port()).await;
        assert_eq!(
            (failed.as_str(), back, again.as_str()),
            ("(absent)", BTreeSet::from(["a".to_string()]), "(absent)"),
            "{kind:?}: the kept host after a failed check, then passing again"
        );
    }
    drop(proxy);
    (after_drop, flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_host_that_passes_its_checks_stays_until_one_fails_as_under_envoy() {
    let envoy = drop_a_passing_host(Kind::Envoy, false).await;
    assert_eq!(
        envoy,
        (
            BTreeSet::from(["a".to_string(), "b".to_string()]),
            "/pending_dynamic_removal".to_string()
        ),
        "Envoy: what the test expects of it"
    );
    let sluice = drop_a_passing_host(Kind::Sluice, false).await;
    assert_eq!(sluice, envoy, "sluice vs Envoy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_health_on_host_removal_drops_it_at_once_as_under_envoy() {
    let envoy = drop_a_passing_host(Kind::Envoy, true).await;
    assert_eq!(
        envoy,
        (BTreeSet::from(["a".to_string()]), "(absent)".to_string()),
        "Envoy: what the test expects of it"
    );
    let sluice = drop_a_passing_host(Kind::Sluice, true).await;
    assert_eq!(sluice, envoy, "sluice vs Envoy");
}
