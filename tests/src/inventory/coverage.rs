//! The conformance coverage report (docs/conformance-coverage.md): for every supported field of
//! the inventory, the cases whose `covers:` name it; supported fields no case names are gaps.

use std::{collections::BTreeMap, fmt::Write};

use super::{probe, render, Inventory, Status};
use crate::conformance::Case;

/// A differential test outside the conformance suite that covers fields the suite cannot reach
/// (its harness has no ADS server): it runs one config under Envoy 1.40 and under sluice and
/// asserts the same observable effect of each field under both, Envoy first.
pub struct OtherTest {
    /// The test file, from the workspace root.
    pub file: &'static str,
    /// The `#[test]` function.
    pub test: &'static str,
    /// The inventory fields it covers.
    pub covers: &'static [&'static str],
}

/// The differential tests outside the suite, and what each covers (kept short and explicit).
pub const OTHER_TESTS: &[OtherTest] = &[OtherTest {
    // Secrets over ADS: the suite has no management server.
    file: "tests/tests/xds_sds.rs",
    test: "secrets_over_ads_give_envoys_answers",
    covers: &[
        "extensions.transport_sockets.tls.v3.SdsSecretConfig.sds_config",
        "extensions.transport_sockets.tls.v3.SdsSecretConfig.name",
    ],
},
OtherTest {
    // Secrets on Istio's sds-grpc stream (a unix socket): the suite has no SDS server.
    file: "tests/tests/xds_sds.rs",
    test: "secrets_from_sds_grpc_give_envoys_answers",
    covers: &[
        "extensions.transport_sockets.tls.v3.SdsSecretConfig.sds_config",
        "extensions.transport_sockets.tls.v3.SdsSecretConfig.name",
        "extensions.transport_sockets.tls.v3.Secret.name",
        "extensions.transport_sockets.tls.v3.Secret.tls_certificate",
        "extensions.transport_sockets.tls.v3.Secret.validation_context",
    ],
},
OtherTest {
    // Downstream TLS (a listener chain's DownstreamTlsContext) from static secrets, SAN matchers
    // on the client certificate and tls_params, with curl against both proxies: the suite's
    // client speaks plaintext to the listener.
    file: "tests/tests/downstream_tls_secrets.rs",
    test: "istio_inbound_mtls_from_static_secrets_matches_envoy",
    covers: &[
        "extensions.transport_sockets.tls.v3.CommonTlsContext.tls_certificate_sds_secret_configs",
        "extensions.transport_sockets.tls.v3.CommonTlsContext.combined_validation_context",
        "extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext.default_validation_context",
        "extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext.validation_context_sds_secret_config",
        "extensions.transport_sockets.tls.v3.CertificateValidationContext.match_subject_alt_names",
        "extensions.transport_sockets.tls.v3.CertificateValidationContext.match_typed_subject_alt_names",
        "extensions.transport_sockets.tls.v3.CommonTlsContext.tls_params",
        "extensions.transport_sockets.tls.v3.TlsParameters.tls_minimum_protocol_version",
        "extensions.transport_sockets.tls.v3.TlsParameters.tls_maximum_protocol_version",
        "extensions.transport_sockets.tls.v3.TlsParameters.cipher_suites",
        "extensions.transport_sockets.tls.v3.Secret.tls_certificate",
        "extensions.transport_sockets.tls.v3.Secret.validation_context",
        "config.bootstrap.v3.Bootstrap.StaticResources.secrets",
        "extensions.transport_sockets.tls.v3.TlsParameters.ecdh_curves",
    ],
},
OtherTest {
    // Downstream TLS termination with the certificate, CA and ALPN given as files.
    file: "tests/tests/downstream_tls.rs",
    test: "tls_termination_and_peer_identity_match_envoy",
    covers: &[
        "extensions.transport_sockets.tls.v3.CommonTlsContext.tls_certificates",
        "extensions.transport_sockets.tls.v3.CommonTlsContext.validation_context",
        "extensions.transport_sockets.tls.v3.CommonTlsContext.alpn_protocols",
        "extensions.transport_sockets.tls.v3.TlsCertificate.certificate_chain",
        "extensions.transport_sockets.tls.v3.TlsCertificate.private_key",
        "extensions.transport_sockets.tls.v3.CertificateValidationContext.trusted_ca",
    ],
},
OtherTest {
    // A static `type: EDS` cluster whose `service_name` differs from its name: both proxies
    // serve the ADS assignment of that name, and then its change.
    file: "tests/tests/xds_static_eds.rs",
    test: "a_bootstrap_eds_cluster_gets_its_endpoints_over_ads_as_under_envoy",
    covers: &[
        "config.cluster.v3.Cluster.eds_cluster_config",
        "config.cluster.v3.Cluster.EdsClusterConfig.eds_config",
        "config.cluster.v3.Cluster.EdsClusterConfig.service_name",
    ],
},
OtherTest {
    // The SETTINGS and connection window of a downstream HTTP/2 connection: the suite's client
    // speaks HTTP/1.1 only.
    file: "tests/tests/hcm_http2_options.rs",
    test: "settings_and_connection_window_are_envoys",
    covers: &["extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http2_protocol_options"],
},
OtherTest {
    // An EDS update that drops a host which passes its active health checks: kept until a
    // check fails (unset), or dropped at once (set). The suite has no EDS updates.
    file: "tests/tests/xds_host_removal.rs",
    test: "ignore_health_on_host_removal_drops_it_at_once_as_under_envoy",
    covers: &["config.cluster.v3.Cluster.ignore_health_on_host_removal"],
},
OtherTest {
    // A head that stops short: the suite's client always sends whole requests.
    file: "tests/tests/request_headers_timeout.rs",
    test: "a_slow_head_gets_envoys_408_and_idle_keep_alive_survives",
    covers: &["extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.request_headers_timeout"],
},
OtherTest {
    // When an idle connection is closed: the suite's client does not time closes.
    file: "tests/tests/connection_close_timing.rs",
    test: "idle_drain_and_delayed_close_time_the_close_as_envoy",
    covers: &[
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.drain_timeout",
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.delayed_close_timeout",
    ],
},
OtherTest {
    // Success-rate ejection needs two endpoints sharing the traffic, which round robin starts
    // at a random one of: the suite's per-request expectations cannot hold.
    file: "tests/tests/outlier_success_rate.rs",
    test: "success_rate_and_failure_percentage_eject_as_under_envoy",
    covers: &[
        "config.cluster.v3.OutlierDetection.enforcing_success_rate",
        "config.cluster.v3.OutlierDetection.success_rate_minimum_hosts",
        "config.cluster.v3.OutlierDetection.success_rate_request_volume",
        "config.cluster.v3.OutlierDetection.success_rate_stdev_factor",
        "config.cluster.v3.OutlierDetection.enforcing_local_origin_success_rate",
        "config.cluster.v3.OutlierDetection.enforcing_failure_percentage_local_origin",
    ],
},
OtherTest {
    // A paced response body: the suite does not time responses.
    file: "tests/tests/fault_response_rate_limit.rs",
    test: "response_bodies_are_paced_as_envoy_paces_them",
    covers: &[
        "extensions.filters.http.fault.v3.HTTPFault.response_rate_limit",
        "extensions.filters.common.fault.v3.FaultRateLimit.fixed_limit",
        "extensions.filters.common.fault.v3.FaultRateLimit.header_limit",
        "extensions.filters.common.fault.v3.FaultRateLimit.percentage",
        "extensions.filters.common.fault.v3.FaultRateLimit.FixedLimit.limit_kbps",
    ],
},
OtherTest {
    // istiod's default thresholds with track_remaining: the remaining_* gauges in /stats.
    file: "tests/tests/admin.rs",
    test: "circuit_breaker_gauges_are_envoys",
    covers: &["config.cluster.v3.CircuitBreakers.Thresholds.track_remaining"],
},
OtherTest {
    // The health check request's method and headers, as the upstream records them: the
    // suite's expectations are per client request.
    file: "tests/tests/health_check_request.rs",
    test: "health_check_method_and_headers_are_envoys",
    covers: &[
        "config.core.v3.HealthCheck.HttpHealthCheck.method",
        "config.core.v3.HealthCheck.HttpHealthCheck.request_headers_to_add",
        "config.core.v3.HealthCheck.HttpHealthCheck.request_headers_to_remove",
    ],
},
OtherTest {
    // The RBAC filter's counters in /stats: the suite does not read stats.
    file: "tests/tests/rbac_stats.rs",
    test: "rbac_counters_are_named_and_counted_as_envoys",
    covers: &[
        "extensions.filters.http.rbac.v3.RBAC.rules_stat_prefix",
        "extensions.filters.http.rbac.v3.RBAC.shadow_rules_stat_prefix",
        "extensions.filters.http.rbac.v3.RBAC.track_per_rule_stats",
        "extensions.filters.http.rbac.v3.RBAC.shadow_rules",
    ],
},
OtherTest {
    // The network RBAC filter over raw TCP (greeting, first bytes, close, delay) and its
    // counters: the suite's client speaks HTTP only.
    file: "tests/tests/network_rbac.rs",
    test: "network_rbac_decides_on_the_first_bytes_as_envoy_does",
    covers: &[
        "config.listener.v3.Listener.filter_chains",
        "extensions.filters.network.rbac.v3.RBAC.rules",
        "extensions.filters.network.rbac.v3.RBAC.shadow_rules",
        "extensions.filters.network.rbac.v3.RBAC.shadow_rules_stat_prefix",
        "extensions.filters.network.rbac.v3.RBAC.stat_prefix",
        "extensions.filters.network.rbac.v3.RBAC.enforcement_type",
    ],
},
OtherTest {
    // delay_deny: how long a denied connection stays open.
    file: "tests/tests/network_rbac.rs",
    test: "delay_deny_holds_a_denied_connection_open_first",
    covers: &["extensions.filters.network.rbac.v3.RBAC.delay_deny"],
},
OtherTest {
    // TLS termination and the peer identity RBAC reads: the suite's client speaks plaintext
    // HTTP (or TLS passed through).
    file: "tests/tests/downstream_tls.rs",
    test: "tls_termination_and_peer_identity_match_envoy",
    covers: &[
        "config.listener.v3.Listener.filter_chains",
        "config.rbac.v3.Principal.authenticated",
        "config.rbac.v3.Principal.Authenticated.principal_name",
        "config.rbac.v3.Permission.requested_server_name",
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.forward_client_cert_details",
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.set_current_client_cert_details",
    ],
}];

/// Problems with [`OTHER_TESTS`]: a field that is not a supported inventory field, or a test
/// function its file does not define. `root` is the workspace root.
pub fn other_tests_problems(inv: &Inventory, root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for t in OTHER_TESTS {
        let text = std::fs::read_to_string(root.join(t.file)).unwrap_or_default();
        if !text.contains(&format!("fn {}(", t.test)) {
            out.push(format!("{}: no test function {}", t.file, t.test));
        }
        for name in t.covers {
            if inv.get(name).is_none_or(|f| f.status != Status::Supported) {
                out.push(format!(
                    "{}::{} covers {name}, which is not a supported field of docs/config-fields.txt",
                    t.file, t.test
                ));
            }
        }
    }
    out
}

/// Problems with the cases' `covers:` lists: an entry that is not an inventory field, or names a
/// field that is not `supported` (a no-op or rejected field has no effect a case can observe).
pub fn covers_problems(inv: &Inventory, cases: &[Case]) -> Vec<String> {
    let mut out = Vec::new();
    for case in cases {
        for name in &case.covers {
            match inv.get(name) {
                None => out.push(format!(
                    "tests/conformance/{}.yaml: covers {name:?}, which is not in docs/config-fields.txt \
                     (want <message without envoy.>.<field>, e.g. config.route.v3.Route.match)",
                    case.name
                )),
                Some(f) if f.status != Status::Supported => out.push(format!(
                    "tests/conformance/{}.yaml: covers {name}, which docs/config-fields.txt line {} says is {}",
                    case.name, f.line, f.status
                )),
                Some(_) => {}
            }
        }
    }
    out
}

/// The whole of docs/conformance-coverage.md.
pub fn report(inv: &Inventory, cases: &[Case]) -> String {
    let mut by_field: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for case in cases {
        for name in &case.covers {
            by_field
                .entry(name)
                .or_default()
                .push(format!("`{}`", case.name));
        }
    }
    for t in OTHER_TESTS {
        let file = t.file.rsplit('/').next().unwrap_or(t.file);
        let stem = file.strip_suffix(".rs").unwrap_or(file);
        for name in t.covers {
            by_field
                .entry(name)
                .or_default()
                .push(format!("test `{stem}::{}`", t.test));
        }
    }
    let supported: Vec<_> = inv
        .fields
        .iter()
        .filter(|f| f.status == Status::Supported)
        .collect();
    let covered = supported
        .iter()
        .filter(|f| by_field.contains_key(f.name.as_str()))
        .count();
    let mut out = String::new();
    let _ = write!(
        out,
        "# Conformance coverage: Envoy fields -> cases\n\n\
         <!-- Generated by `cargo xtask conformance-coverage` from docs/config-fields.txt and the\n\
         `covers:` lists of tests/conformance/*.yaml and `OTHER_TESTS` in\n\
         tests/src/inventory/coverage.rs; do not edit. -->\n\n\
         Each conformance case (docs/conformance.md) names in `covers:` the Envoy fields whose\n\
         observable effect it checks against a real Envoy 1.40. Of the {} fields the inventory\n\
         ([config-fields.md](config-fields.md)) marks supported, {covered} are covered by at least\n\
         one of the {} cases or of the {} differential test(s) outside the suite (named `test\n\
         file::function`: they run one config under Envoy 1.40 and under sluice and assert the\n\
         same effect under both, where the suite's harness cannot reach, e.g. over ADS) and {} are\n\
         gaps.\n",
        supported.len(),
        cases.len(),
        OTHER_TESTS.len(),
        supported.len() - covered
    );
    out.push_str("\n| message | supported | covered |\n|---|---|---|\n");
    for m in inv.messages() {
        let fields: Vec<_> = inv
            .fields_of(m)
            .filter(|f| f.status == Status::Supported)
            .collect();
        if fields.is_empty() {
            continue;
        }
        let hit = fields
            .iter()
            .filter(|f| by_field.contains_key(f.name.as_str()))
            .count();
        let _ = writeln!(out, "| `{m}` | {} | {hit} |", fields.len());
    }
    out.push_str("\n## Gaps: supported fields no case covers\n\n");
    let gaps: Vec<_> = supported
        .iter()
        .filter(|f| !by_field.contains_key(f.name.as_str()))
        .collect();
    if gaps.is_empty() {
        out.push_str("None.\n");
    }
    for f in gaps {
        let _ = writeln!(out, "- `{}`", f.name);
    }
    out.push_str("\n## Covered fields\n");
    for m in inv.messages() {
        let rows: Vec<_> = inv
            .fields_of(m)
            .filter(|f| f.status == Status::Supported)
            .filter_map(|f| by_field.get(f.name.as_str()).map(|c| (f, c)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(out, "\n### {m}\n\n| field | cases |\n|---|---|\n");
        for (f, cases) in rows {
            let _ = writeln!(
                out,
                "| `{}` | {} |",
                render::cell(f.field()),
                cases.join(", ")
            );
        }
    }
    let bare: Vec<_> = cases.iter().filter(|c| c.covers.is_empty()).collect();
    if !bare.is_empty() {
        out.push_str(
            "\n## Cases that name no field\n\nThey check behaviour no single inventoried field \
             controls (defaults, framing, connection handling).\n\n",
        );
        for c in bare {
            let about: Vec<&str> = c.description.split_whitespace().collect();
            let _ = writeln!(out, "- `{}`: {}", c.name, about.join(" "));
        }
    }
    out
}

/// Every generated doc: (file name under docs/, content).
pub fn generate(inv: &Inventory, cases: &[Case]) -> [(&'static str, String); 2] {
    [
        (
            super::GENERATED[0],
            render::config_fields(inv, &probe::deprecated(inv)),
        ),
        (super::GENERATED[1], report(inv, cases)),
    ]
}
