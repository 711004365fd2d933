//! `Server::apply` and file reload: a good config bumps the version and serves its routes, a bad
//! one is refused whole with the field named while the old version serves, a request in flight
//! finishes on the version it started with, and an empty or listener-less file is refused.

use std::{sync::atomic::Ordering, time::Duration};

use crate::testing::{bootstrap, bootstrap_yaml, get, serve, upstream};

#[tokio::test]
async fn apply_good_config_bumps_version_and_serves_new_routes() {
    let a = upstream("a", Duration::ZERO).await;
    let b = upstream("b", Duration::ZERO).await;
    let (server, front) = serve(bootstrap(&[("/", "a")], &[("a", a)]), None).await;
    assert_eq!(get(front, "/x").await, (200, "a".into()));
    let v = server
        .apply(
            bootstrap(&[("/new", "b"), ("/", "a")], &[("a", a), ("b", b)]),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    assert_eq!(v, 2);
    assert_eq!(server.runtime().version, 2);
    assert_eq!(get(front, "/new").await, (200, "b".into()));
    assert_eq!(get(front, "/x").await, (200, "a".into()));
}

#[tokio::test]
async fn apply_bad_config_is_rejected_whole_and_old_version_serves() {
    let a = upstream("a", Duration::ZERO).await;
    let b = upstream("b", Duration::ZERO).await;
    let (server, front) = serve(bootstrap(&[("/", "a")], &[("a", a)]), None).await;
    // A route to a cluster the bootstrap does not have (a source that edits a Bootstrap).
    let mut bad = bootstrap(&[("/", "b")], &[("b", b)]);
    bad.clusters.clear();
    let err = server
        .apply(bad, serde_json::Value::Null)
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster")
            && msg.contains("unknown cluster \"b\""),
        "{msg}"
    );
    assert_eq!(server.runtime().version, 1);
    assert_eq!(server.stats.server.reload_failures.get(), 1);
    assert_eq!(get(front, "/x").await, (200, "a".into()));
}

#[tokio::test]
async fn request_in_flight_finishes_on_the_old_version() {
    let slow = upstream("old", Duration::from_millis(300)).await;
    let b = upstream("new", Duration::ZERO).await;
    let (server, front) = serve(bootstrap(&[("/", "a")], &[("a", slow)]), None).await;
    let in_flight = tokio::spawn(get(front, "/x"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .apply(
            bootstrap(&[("/", "b")], &[("b", b)]),
            serde_json::Value::Null,
        )
        .await
        .expect("applied");
    assert_eq!(get(front, "/x").await, (200, "new".into()));
    assert_eq!(in_flight.await.expect("joined"), (200, "old".into()));
}

/// A config file unique to this test process.
fn temp_config(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "sluice-engine-{}-{tag}-{n}.yaml",
        std::process::id()
    ))
}

#[tokio::test]
async fn reload_refuses_empty_and_listenerless_files_while_old_config_serves() {
    let a = upstream("a", Duration::ZERO).await;
    let b = upstream("b", Duration::ZERO).await;
    let path = temp_config("reload");
    std::fs::write(&path, bootstrap_yaml(&[("/", "a")], &[("a", a)])).expect("write");
    let (initial, _) = crate::config::load_serving_file(&path).expect("loads");
    let (server, front) = serve(initial, Some(path.clone())).await;

    std::fs::write(&path, "").expect("write");
    let err = server.reload().await.expect_err("empty file refused");
    assert!(
        err.to_string().contains("static_resources.listeners") && err.to_string().contains("empty"),
        "{err}"
    );
    std::fs::write(
        &path,
        "static_resources:\n  clusters: []\n  listeners: []\n",
    )
    .expect("write");
    let err = server.reload().await.expect_err("no listeners refused");
    assert!(err.to_string().contains("no listeners"), "{err}");
    assert_eq!(server.runtime().version, 1);
    assert_eq!(get(front, "/x").await, (200, "a".into()));

    std::fs::write(&path, bootstrap_yaml(&[("/", "b")], &[("b", b)])).expect("write");
    assert_eq!(server.reload().await.expect("reloaded"), Some(2));
    assert_eq!(get(front, "/x").await, (200, "b".into()));
    assert_eq!(server.stats.server.reload_failures.get(), 2);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn initial_load_refuses_an_empty_file_too() {
    let path = temp_config("initial");
    std::fs::write(&path, "\n").expect("write");
    let err = crate::config::load_serving_file(&path).expect_err("refused");
    assert_eq!(err.path(), "static_resources.listeners");
    let _ = std::fs::remove_file(&path);
}

/// A keep-alive connection does not keep the version it was accepted under: after a reload that
/// turns its filter chain into tcp_proxy, the old HTTP connection manager (and its route tables)
/// is freed while
/// the connection stays open, and its next request gets a 503 with the connection closed.
#[tokio::test]
async fn keep_alive_connection_does_not_pin_a_replaced_version() {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    let a = upstream("a", Duration::ZERO).await;
    let (server, front) = serve(bootstrap(&[("/", "a")], &[("a", a)]), None).await;
    let io = TokioIo::new(
        tokio::net::TcpStream::connect(front)
            .await
            .expect("connect"),
    );
    let (mut conn, driver) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(driver);
    let req = || {
        hyper::Request::get("/x")
            .header(http::header::HOST, "test")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    let resp = conn.send_request(req()).await.expect("response");
    assert_eq!(resp.status(), 200);
    drop(resp);
    let old = match &server.runtime().listeners[crate::testing::FRONT].chains[0] {
        super::ChainRt::Http(h) => std::sync::Arc::downgrade(h),
        super::ChainRt::Tcp(_) => unreachable!("an HTTP chain"),
    };

    let clusters = bootstrap_yaml(&[], &[("a", a)]);
    let clusters = &clusters[clusters.find("  clusters:").expect("clusters")..];
    let tcp = format!(
        "static_resources:\n  listeners:\n  - name: {}\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          stat_prefix: tcp\n          cluster: a\n{clusters}",
        crate::testing::FRONT
    );
    let tcp = crate::config::from_yaml_str(&tcp).expect("valid tcp_proxy config");
    server
        .apply(tcp, serde_json::Value::Null)
        .await
        .expect("applied");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while old.upgrade().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replaced HCM is still alive while a keep-alive connection is open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = conn.send_request(req()).await.expect("response");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()[http::header::CONNECTION], "close");
}
