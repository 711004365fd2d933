//! An ADS bootstrap whose own `static_resources` hold a `type: EDS` cluster (`eds_config:
//! {ads: {}}`): Envoy subscribes its assignment on the ADS stream, waits for it before it is
//! ready and follows its changes. The same bootstrap and server script run under Envoy 1.40 and
//! under sluice; both route to the assignment's endpoints and then to the changed ones.

use std::time::{Duration, Instant};

use sluice_tests::{
    upstream::{harness::free_port, TestUpstream},
    xds_run::{get, start_serving_a, Kind},
    xds_script::{bootstrap, cla, listener, rds, routes},
    xds_server::{Snapshot, XdsServer},
};

/// `bootstrap` plus the static EDS cluster `static-backend` (EDS name `static-eds`).
fn with_static_eds(admin: u16, server: std::net::SocketAddr) -> String {
    bootstrap(admin, server, "GRPC")
        + r#"  - name: static-backend
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      service_name: static-eds
      eds_config: { ads: {}, resource_api_version: V3 }
"#
}

fn snapshot(version: &str, port: u16, upstreams: &[u16]) -> Snapshot {
    Snapshot::from_json(
        version,
        &[
            listener("web", port, rds("r")),
            routes("r", &[("/", "static-backend")]),
            cla("static-eds", upstreams),
        ],
    )
}

async fn follows_its_assignment(kind: Kind) {
    let (a, b) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    );
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    server.set(snapshot("1", port, &[a.port()]));
    let proxy = start_serving_a(
        kind,
        with_static_eds(admin, server.addr),
        admin,
        &server,
        port,
    )
    .await;
    server.set(snapshot("2", port, &[b.port()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(port, "/").await != Some((200, "b".to_string())) {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: never moved to the new endpoints: {:?}",
            get(port, "/").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_eds_cluster_gets_its_endpoints_over_ads_as_under_envoy() {
    follows_its_assignment(Kind::Envoy).await;
    follows_its_assignment(Kind::Sluice).await;
}
