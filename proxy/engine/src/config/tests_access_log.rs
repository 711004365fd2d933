//! Access logs where istiod puts them when `meshConfig.accessLogFile` is set: the listener's
//! (with a `response_flag_filter: NR`), the tcp_proxy's and the HCM's, each with Istio's text
//! format as `log_format.text_format_source`; with the `transport_socket_connect_timeout: 15s`
//! istiod puts on its outbound filter chains.

use super::tests::expect_err;
use super::*;

/// Istio's `EnvoyTextLogFormat`.
const ISTIO_FORMAT: &str = r#"[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"#;

fn logger(format: &str, filter: &str) -> String {
    format!(
        r#"
      - name: envoy.access_loggers.file{filter}
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
          path: /dev/stdout
          log_format: {{ text_format_source: {{ inline_string: "{format}" }} }}"#
    )
}

fn config(format: &str) -> String {
    let nr = "\n        filter: { response_flag_filter: { flags: [NR] } }";
    format!(
        r#"static_resources:
  listeners:
  - name: virtualOutbound
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: 15001 }} }}
    use_original_dst: true
    access_log:{listener}
    filter_chains:
    - transport_socket_connect_timeout: 15s
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
          access_log:{tcp}
  - name: 0.0.0.0_8080
    address: {{ socket_address: {{ address: 0.0.0.0, port_value: 8080 }} }}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_0.0.0.0_8080
          access_log:{hcm}
          http_filters: [{{ name: envoy.filters.http.router }}]
          route_config: {{ virtual_hosts: [] }}
  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
"#,
        listener = logger(format, nr).replace("\n      ", "\n    "),
        tcp = logger(format, "").replace("\n      ", "\n          "),
        hcm = logger(format, "").replace("\n      ", "\n          "),
    )
}

#[test]
fn istios_access_logs_load() {
    let b = from_yaml_str(&config(ISTIO_FORMAT)).expect("istiod's access logs load");
    let outbound = &b.listeners[0];
    let [listener_log] = outbound.access_log.as_slice() else {
        panic!("one listener logger: {:?}", outbound.access_log)
    };
    assert!(listener_log.filter.is_some() && listener_log.format.is_some());
    let NetworkFilter::Tcp(tcp) = &outbound.filter_chains[0].filter else {
        panic!("expected tcp_proxy")
    };
    assert_eq!(tcp.access_log.len(), 1);
    let NetworkFilter::Http(hcm) = &b.listeners[1].filter_chains[0].filter else {
        panic!("expected HCM")
    };
    assert!(hcm.access_log[0].format.is_some());
}

#[test]
fn an_unknown_operator_names_the_logger() {
    expect_err(
        &config("%DYNAMIC_METADATA(istio.mixer:status)%"),
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].typed_config.log_format.text_format_source.inline_string",
        "command operator %DYNAMIC_METADATA%",
    );
}
