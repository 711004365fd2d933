//! `sluice explain TARGET URL` against a running `sluice proxy` (its admin's `/explain`): the
//! same text and JSON as `sluice explain -c` on the file it runs, the live config version after
//! a reload and after xDS updates (a config that exists in no file), and a 400 naming the
//! parameter for a bad query. (The agreement of `/explain` with
//! what the data path really does is checked on every conformance case: tests/conformance.rs.)

use std::time::{Duration, Instant};

use sluice_tests::{
    admin_run::{get, start},
    sluice_cli::sluice_ok,
    upstream::harness::{free_port, ProxyProcess},
    xds_script::{bootstrap, cla, eds_cluster, listener, rds, routes, static_cluster},
    xds_server::{Snapshot, XdsServer},
};

const URL: &str = "http://10.0.0.9:8080/notebook/default/sample-service/tree?x=1";

fn explain(args: &[&str]) -> String {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    sluice_ok(&all)
}

#[test]
fn explain_on_a_running_proxy_is_explain_on_its_config() {
    let p = start("kubeflow_gateway.yaml", false);
    let cfg = p.config();
    let cfg = cfg.to_str().expect("utf-8 path");
    let opts = ["-H", "x-user: u1", "-X", "POST"];
    for out in [["-o", "text"], ["-o", "json"]] {
        let live = explain(&[&[p.admin.as_str(), URL][..], &opts, &out].concat());
        let file = explain(&[&["-c", cfg, URL][..], &opts, &out].concat());
        assert_eq!(live, file, "{out:?}: live (left) and -c (right) differ");
    }
    let text = explain(&[p.admin.as_str(), URL]);
    for want in [
        "listener      0.0.0.0_8080",
        "* route   #0 prefix \"/notebook/default/sample-service/\": matched",
        "path        /notebook/default/sample-service/tree?x=1 -> /tree?x=1",
        "request     x-kubeflow-userid: user@example.com",
        "cluster       outbound|80||sample-service.default.svc.cluster.local",
        "endpoint    127.0.0.21:8888",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }

    // The live version: after a reload, /explain answers from the new config.
    let new = std::fs::read_to_string(p.config())
        .expect("read config")
        .replace("prefix_rewrite: /", "prefix_rewrite: /lab/");
    std::fs::write(p.config(), new).expect("write config");
    p.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = explain(&[p.admin.as_str(), URL]);
        if text.contains("-> /lab/tree?x=1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/explain still shows the old config 10 s after SIGHUP:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_explain_queries_are_400_naming_the_parameter() {
    let p = start("kubeflow_gateway.yaml", false);
    for (q, status, names) in [
        ("", 400, "url= is required"),
        ("url=http://h:8080/&seed=x", 400, "seed \"x\""),
        (
            "url=http://h:8080/&header=nocolon",
            400,
            "header \"nocolon\"",
        ),
        (
            "url=http://h:8080/&listener=nope",
            400,
            "no listener named nope",
        ),
        (
            "url=http://h:8080/&verb=GET",
            400,
            "unknown parameter \"verb\"",
        ),
        ("url=%2Fno-host", 400, "url \"/no-host\""),
        ("url=http://h:8080/&method=BAD%20X", 400, "method \"BAD X\""),
        ("url=http://h:8080/&header=a%20b:c", 400, "header \"a b:c\""),
        ("url=http://h:9/", 404, "no listener takes h:9"),
    ] {
        let (got, body) = get(&p.admin, "GET", &format!("/explain?{q}"));
        assert_eq!(got, status, "/explain?{q}: {body}");
        assert!(
            body.contains(names),
            "/explain?{q}: want {names:?} in {body:?}"
        );
    }
    let (got, body) = get(&p.admin, "GET", "/explain?url=http://h:8080/");
    assert_eq!(got, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["route"]["decision"]["action"], "no_route", "{body}");
}

/// Polls `sluice explain admin url -o json` until `ok` holds for the JSON (10 s).
fn explain_until(admin: &str, url: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = sluice_tests::sluice_cli::sluice(&["explain", admin, url, "-o", "json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if ok(&v) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen in 10 s; last answer:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_follows_xds_updates() {
    let (port, admin, ep1, ep2) = (free_port(), free_port(), free_port(), free_port());
    let server = XdsServer::start().await;
    server.set(Snapshot::from_json(
        "1",
        &[
            listener("web", port, rds("routes")),
            routes("routes", &[("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[ep1]),
        ],
    ));
    let _proxy = ProxyProcess::start(&bootstrap(admin, server.addr, "GRPC"), admin);
    let admin = format!("127.0.0.1:{admin}");
    let url = format!("http://127.0.0.1:{port}/b/x");
    let (a1, a2) = (admin.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        explain_until(&a1, &a2, "v1 over LDS/RDS/CDS/EDS", |v| {
            v["cluster"]["name"] == "backend"
                && v["cluster"]["endpoints"] == serde_json::json!([format!("127.0.0.1:{ep1}")])
        })
    })
    .await
    .expect("v1");
    server.set(Snapshot::from_json(
        "2",
        &[
            listener("web", port, rds("routes")),
            routes("routes", &[("/b", "other"), ("/", "backend")]),
            eds_cluster("backend"),
            cla("backend", &[ep1]),
            static_cluster("other", ep2),
        ],
    ));
    tokio::task::spawn_blocking(move || {
        explain_until(&admin, &url, "v2: the new route to the new cluster", |v| {
            v["route"]["routes"][0]["matched"] == true && v["cluster"]["name"] == "other"
        })
    })
    .await
    .expect("v2");
}

#[test]
fn explain_shows_rbac_verdicts_for_a_given_source() {
    let cfg = r#"admin: {address: {socket_address: {address: 127.0.0.1, port_value: ADMIN_PORT}}}
static_resources:
  listeners:
  - name: web
    address: {socket_address: {address: 127.0.0.1, port_value: LISTEN_AT}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          http_filters:
          - name: authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules: {policies: {from-ten: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}}
          - {name: envoy.filters.http.router}
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: a}}]}]}
  clusters:
  - {name: a, type: STATIC, load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 80}}}}]}]}}
"#
    .replace("LISTEN_AT", &free_port().to_string());
    let p = sluice_tests::admin_run::start_text("rbac-explain", &cfg, false);
    let path = p.config();
    let path = path.to_str().expect("utf-8 path");
    let port = cfg
        .split("port_value: ")
        .nth(2)
        .and_then(|s| s.split('}').next())
        .expect("listener port");
    let url = format!("http://127.0.0.1:{port}/x");
    for source in [None, Some("10.1.2.3")] {
        let src: Vec<&str> = source.map(|s| vec!["--source", s]).unwrap_or_default();
        let live = explain(&[&[p.admin.as_str(), url.as_str()][..], &src].concat());
        let file = explain(&[&["-c", path, url.as_str()][..], &src].concat());
        assert_eq!(live, file, "{source:?}: live (left) and -c (right) differ");
        let want = match source {
            None => "authz         http rbac authz (filter): ALLOW: no policy matches: denied",
            Some(_) => {
                "authz         http rbac authz (filter): ALLOW: policy \"from-ten\" matches: allowed"
            }
        };
        assert!(live.contains(want), "want {want:?} in:\n{live}");
    }
    let (status, body) = get(&p.admin, "GET", &format!("/explain?url={url}&source=nope"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("source \"nope\""), "{body}");
}
