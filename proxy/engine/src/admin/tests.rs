//! The dump's shape (static vs dynamic entries, Envoy's order of `configs[]`), `resource=`,
//! `mask=`, `name_regex=`, `include_eds`, secrets, and the /clusters and /listeners formats.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};

use super::{clusters, config_dump, listeners, ConfigOrigin, DynamicEntry};
use crate::{
    server::{stats::StatsStore, Runtime},
    upstream::connector::Connector,
};

const YAML: &str = r#"
node: {id: n1, cluster: c1}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  listeners:
  - name: web
    address: {socket_address: {address: 127.0.0.1, port_value: 8080}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            name: web-routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                metadata: {filter_metadata: {istio: {config: /apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/vs}}}
                route: {cluster: b}
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: b
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: b
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 80}}}}]}]
  - name: a
    type: STATIC
    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificates:
          - certificate_chain: {filename: /etc/c.pem}
            private_key: {inline_string: "-----BEGIN PRIVATE KEY-----"}
"#;

fn source() -> Value {
    serde_norway::from_str(YAML).expect("yaml")
}

async fn runtime(source: Value, origin: Option<ConfigOrigin>) -> Runtime {
    let yaml = serde_norway::to_string(&source).expect("yaml");
    let b = match crate::config::from_yaml_str(&yaml) {
        Ok(b) => b,
        // The TLS cluster needs its files; the dump tests only need the document.
        Err(e) => panic!("config: {e}"),
    };
    let mut rt = Runtime::build(
        b,
        source.into(),
        &StatsStore::default(),
        1,
        None,
        &Connector::default(),
    )
    .unwrap_or_else(|e| panic!("runtime: {e}"));
    if let Some(o) = origin {
        rt.origin = Arc::new(o);
    }
    rt
}

fn no_tls(mut s: Value) -> Value {
    s["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
        .retain(|c| c["name"] != "a");
    s
}

fn dump(rt: &Runtime, q: &str) -> Value {
    serde_json::from_str(&config_dump(rt, q).unwrap_or_else(|e| panic!("{q}: {e:?}")))
        .expect("json")
}

fn types(v: &Value) -> Vec<String> {
    v["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| {
            c["@type"]
                .as_str()
                .unwrap_or("")
                .rsplit('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn static_config_has_envoys_shape() {
    let rt = runtime(no_tls(source()), None).await;
    let d = dump(&rt, "");
    assert_eq!(
        types(&d),
        [
            "BootstrapConfigDump",
            "ClustersConfigDump",
            "ListenersConfigDump",
            "ScopedRoutesConfigDump",
            "RoutesConfigDump",
            "SecretsConfigDump"
        ]
    );
    let c = &d["configs"];
    assert_eq!(c[0]["bootstrap"]["node"]["id"], "n1");
    assert_eq!(c[0]["bootstrap"]["node"]["user_agent_name"], "sluice");
    assert_eq!(
        c[1]["static_clusters"][0]["cluster"]["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(c[1]["static_clusters"][0]["cluster"]["name"], "b");
    assert!(c[1]["static_clusters"][0]["last_updated"]
        .as_str()
        .expect("time")
        .ends_with('Z'));
    assert_eq!(c[2]["static_listeners"][0]["listener"]["name"], "web");
    assert_eq!(
        c[4]["static_route_configs"][0]["route_config"]["name"],
        "web-routes"
    );
    assert!(c[1].get("dynamic_active_clusters").is_none(), "{}", c[1]);
    let eds = dump(&rt, "include_eds");
    let e = &eds["configs"][2];
    assert_eq!(
        e["@type"],
        "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
    );
    let lb = &e["static_endpoint_configs"][0]["endpoint_config"]["endpoints"][0]["lb_endpoints"][0];
    assert_eq!(
        lb["endpoint"]["address"]["socket_address"]["address"],
        "127.0.0.2"
    );
    assert_eq!(lb["health_status"], "HEALTHY");
}

#[tokio::test]
async fn secrets_are_never_dumped() {
    // The TLS cluster is built only if its files exist: dump the document without building it.
    let rt = runtime(no_tls(source()), None).await;
    let mut rt = rt;
    rt.source = source().into();
    let text = config_dump(&rt, "").expect("dump");
    assert!(!text.contains("BEGIN PRIVATE KEY"), "{text}");
    assert!(text.contains("[redacted]") && text.contains("/etc/c.pem"));
}

#[tokio::test]
async fn xds_resources_are_dynamic_entries_with_versions() {
    let at = UNIX_EPOCH + Duration::from_millis(1_796_314_010_348);
    let mut s = no_tls(source());
    let dyn_cluster = json!({"name": "d", "type": "STATIC", "connect_timeout": "1s"});
    s["static_resources"]["clusters"]
        .as_array_mut()
        .expect("c")
        .push(dyn_cluster.clone());
    let mut o = ConfigOrigin::file(SystemTime::now());
    o.cds_version = Some("7".into());
    o.clusters.insert(
        "d".into(),
        DynamicEntry {
            version_info: "7".into(),
            last_updated: at,
            resource: dyn_cluster.to_string().into(),
        },
    );
    let rt = runtime(s, Some(o)).await;
    let d = dump(&rt, "");
    let c = &d["configs"][1];
    assert_eq!(c["version_info"], "7");
    assert_eq!(c["static_clusters"].as_array().expect("static").len(), 1);
    assert_eq!(c["dynamic_active_clusters"][0]["version_info"], "7");
    assert_eq!(
        c["dynamic_active_clusters"][0]["last_updated"],
        "2026-12-03T16:06:50.348Z"
    );
    assert_eq!(c["dynamic_active_clusters"][0]["cluster"]["name"], "d");
    // The bootstrap shows the file only.
    let names: Vec<&str> = d["configs"][0]["bootstrap"]["static_resources"]["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["b"]);
}

#[tokio::test]
async fn warming_listeners_and_clusters_are_dumped_as_warming() {
    let entry = |resource: serde_json::Value| DynamicEntry {
        version_info: "2".into(),
        last_updated: UNIX_EPOCH,
        resource: resource.to_string().into(),
    };
    let mut o = ConfigOrigin::file(SystemTime::now());
    o.warming_listeners
        .insert("new".into(), entry(json!({"name": "new"})));
    o.warming_clusters
        .insert("late".into(), entry(json!({"name": "late"})));
    let rt = runtime(no_tls(source()), Some(o)).await;
    let d = dump(&rt, "");
    let c = &d["configs"][1];
    assert_eq!(c["dynamic_warming_clusters"][0]["cluster"]["name"], "late");
    let l = d["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump")
        .expect("listeners");
    assert_eq!(l["dynamic_listeners"][0]["name"], "new");
    assert!(l["dynamic_listeners"][0].get("active_state").is_none());
    assert_eq!(
        l["dynamic_listeners"][0]["warming_state"]["listener"]["name"],
        "new"
    );
}

#[tokio::test]
async fn resource_mask_and_name_regex_as_envoy() {
    let rt = runtime(no_tls(source()), None).await;
    let d = dump(&rt, "resource=static_clusters&mask=cluster.name");
    assert_eq!(
        d,
        json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
            "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "b"}
        }]})
    );
    assert_eq!(dump(&rt, "resource=dynamic_active_clusters"), json!({}));
    let e = config_dump(&rt, "resource=bogus").expect_err("unknown resource");
    assert_eq!(
        (e.status, e.message.as_str()),
        (404, "bogus not found in config dump")
    );
    let e = config_dump(&rt, "resource=static_endpoint_configs").expect_err("needs include_eds");
    assert_eq!(e.status, 404);
    let m = dump(&rt, "mask=bootstrap.node.id");
    assert_eq!(
        m,
        json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {"node": {"id": "n1"}}}]})
    );
    assert_eq!(
        types(&dump(&rt, "mask=version_info")),
        [
            "ClustersConfigDump",
            "ListenersConfigDump",
            "SecretsConfigDump"
        ]
    );
    for bad in [
        "static_listeners.last_updated",
        "bootstrap.node.id,static_clusters",
    ] {
        let e = config_dump(&rt, &format!("mask={bad}")).expect_err(bad);
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            format!("FieldMask {bad} could not be successfully applied to any configs.")
        );
    }
    let r = dump(&rt, "resource=static_route_configs&name_regex=web-.*");
    assert_eq!(r["configs"][0]["route_config"]["name"], "web-routes");
    assert_eq!(
        dump(&rt, "resource=static_route_configs&name_regex=nomatch"),
        json!({})
    );
    assert_eq!(
        config_dump(&rt, "name_regex=(")
            .expect_err("bad regex")
            .status,
        400
    );
}

/// `alt_stat_name` names the cluster's stats scope and its admin observability name; the
/// /clusters lines keep the cluster's name, as Envoy's.
#[tokio::test]
async fn alt_stat_name_is_the_observability_name() {
    let mut src = no_tls(source());
    src["static_resources"]["clusters"][0]["alt_stat_name"] = json!("outbound|80||b.ns;");
    let yaml = serde_norway::to_string(&src).expect("yaml");
    let b = crate::config::from_yaml_str(&yaml).expect("config");
    let stats = StatsStore::default();
    let rt = Runtime::build(b, src.into(), &stats, 1, None, &Connector::default())
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let t = clusters::text(&rt);
    assert!(
        t.contains("b::observability_name::outbound|80||b.ns;\n"),
        "{t}"
    );
    assert!(t.contains("b::127.0.0.2:80::rq_total::0\n"), "{t}");
    assert_eq!(
        clusters::json(&rt)["cluster_statuses"][0]["observability_name"],
        "outbound|80||b.ns;"
    );
    let s = stats.render();
    assert!(
        s.contains("cluster.outbound|80||b.ns;.upstream_rq_total: 0\n"),
        "{s}"
    );
    assert!(!s.contains("cluster.b."), "{s}");
    let p = stats.render_prometheus();
    assert!(
        p.contains("envoy_cluster_ns__upstream_rq_total{envoy_cluster_name=\"outbound|80||b\"} 0"),
        "{p}"
    );
}

#[tokio::test]
async fn clusters_and_listeners_formats() {
    let rt = runtime(no_tls(source()), None).await;
    let t = clusters::text(&rt);
    for line in [
        "b::observability_name::b",
        "b::default_priority::max_connections::1024",
        "b::high_priority::max_retries::3",
        "b::added_via_api::false",
        "b::127.0.0.2:80::rq_total::0",
        "b::127.0.0.2:80::health_flags::healthy",
        "b::127.0.0.2:80::weight::1",
    ] {
        assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
    }
    let j = clusters::json(&rt);
    let s = &j["cluster_statuses"][0];
    assert_eq!(s["name"], "b");
    assert_eq!(
        s["host_statuses"][0]["health_status"]["eds_health_status"],
        "HEALTHY"
    );
    assert_eq!(s["circuit_breakers"]["thresholds"][1]["priority"], "HIGH");
    // Each priority's own thresholds (Envoy prints the HIGH entry as configured).
    // A canary endpoint in a locality (Envoy 1.40 prints both, in this order).
    let mut src = no_tls(source());
    src["static_resources"]["clusters"][0]["circuit_breakers"] =
        serde_json::json!({"thresholds": [{"priority": "HIGH", "max_retries": 9}]});
    src["static_resources"]["clusters"][0]["load_assignment"]["endpoints"] = serde_json::json!([{
        "locality": {"region": "r", "sub_zone": "s"},
        "lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": "127.0.0.2", "port_value": 80}}},
            "metadata": {"filter_metadata": {"envoy.lb": {"canary": true}}},
        }],
    }]);
    let t = clusters::text(&runtime(src, None).await);
    assert!(
        t.contains(concat!(
            "b::127.0.0.2:80::weight::1\n",
            "b::127.0.0.2:80::region::r\n",
            "b::127.0.0.2:80::zone::\n",
            "b::127.0.0.2:80::sub_zone::s\n",
            "b::127.0.0.2:80::canary::true\n",
            "b::127.0.0.2:80::priority::0\n",
            "b::127.0.0.2:80::success_rate::-1\n",
        )),
        "{t}"
    );
    for line in [
        "b::default_priority::max_retries::3",
        "b::high_priority::max_retries::9",
    ] {
        assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
    }
    assert_eq!(listeners::text(&rt), "web::127.0.0.1:8080\n");
    assert_eq!(
        listeners::json(&rt)["listener_statuses"][0]["local_address"]["socket_address"]
            ["port_value"],
        8080
    );
}
