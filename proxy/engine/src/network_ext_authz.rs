//! `envoy.filters.network.ext_authz` (extensions.filters.network.ext_authz.v3.ExtAuthz): a
//! connection is checked against a gRPC authorization service before its bytes go on — what
//! istiod puts on every TCP filter chain of a workload a CUSTOM AuthorizationPolicy with a gRPC
//! provider selects (its `filter_enabled_metadata` reads the shadow network RBAC filter's
//! policy id). The check carries the source and destination address and principal; OK lets the
//! connection through, a denial or (without `failure_mode_allow`) a failed call closes it.
//!
//! Envoy checks on the client's first bytes; here the check runs once the connection is
//! accepted (and its TLS terminated), before the chain's terminal filter connects upstream, so
//! a server that speaks first is reached only after an allowing check. The connection's facts
//! are the same either way.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

use crate::{
    config::{ConfigError, FieldPath},
    http::filters::{
        ext_authz::{grpc, grpc_service, transport_api_version, RawGrpcService, Verdict},
        metadata::{self, DynamicMetadata, MetadataMatcher, RawMetadataMatcher},
    },
    rbac::{network::NetworkRbac, Facts},
    server::stats::{Counter, StatsStore},
    upstream::Cluster,
};

/// `@type` of the filter's config.
pub const TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";

/// The namespace the network RBAC filter writes its verdicts under.
pub const NETWORK_RBAC_NAMESPACE: &str = "envoy.filters.network.rbac";

/// `extensions.filters.network.ext_authz.v3.ExtAuthz`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetworkExtAuthz {
    stat_prefix: Option<String>,
    grpc_service: Option<RawGrpcService>,
    failure_mode_allow: Option<bool>,
    include_peer_certificate: Option<bool>,
    transport_api_version: Option<String>,
    filter_enabled_metadata: Option<RawMetadataMatcher>,
    bootstrap_metadata_labels_key: Option<String>,
    include_tls_session: Option<bool>,
    send_tls_alert_on_denial: Option<bool>,
    #[serde(default)]
    metadata_context_namespaces: Vec<String>,
    #[serde(default)]
    typed_metadata_context_namespaces: Vec<String>,
    shadow_mode: Option<bool>,
}

/// The filter's config.
#[derive(Debug)]
pub struct NetworkExtAuthz {
    service: grpc::GrpcService,
    failure_mode_allow: bool,
    enabled_metadata: Option<MetadataMatcher>,
    /// `stat_prefix`, ending in `.`.
    stat_prefix: String,
    /// How many of the chain's network RBAC filters stand before it (their verdicts are the
    /// metadata it reads).
    rbac_before: usize,
}

/// Compiles the filter config at `p`; `rbac_before`: the chain's network RBAC filters so far.
pub(crate) fn build(
    raw: RawNetworkExtAuthz,
    p: &FieldPath,
    rbac_before: usize,
) -> Result<NetworkExtAuthz, ConfigError> {
    let stat_prefix = raw
        .stat_prefix
        .filter(|s| !s.is_empty())
        .ok_or_else(|| p.field("stat_prefix").err("required"))?;
    transport_api_version(raw.transport_api_version.as_deref(), p)?;
    let refused = [
        (
            "include_peer_certificate",
            raw.include_peer_certificate == Some(true),
        ),
        ("include_tls_session", raw.include_tls_session == Some(true)),
        (
            "send_tls_alert_on_denial",
            raw.send_tls_alert_on_denial == Some(true),
        ),
        (
            "metadata_context_namespaces",
            !raw.metadata_context_namespaces.is_empty(),
        ),
        (
            "typed_metadata_context_namespaces",
            !raw.typed_metadata_context_namespaces.is_empty(),
        ),
        ("shadow_mode", raw.shadow_mode == Some(true)),
        (
            "bootstrap_metadata_labels_key",
            raw.bootstrap_metadata_labels_key
                .as_deref()
                .is_some_and(|k| !k.is_empty()),
        ),
    ];
    for (f, set) in refused {
        if set {
            return Err(p
                .field(f)
                .unsupported("(the check carries the addresses and principals only)"));
        }
    }
    let gp = p.field("grpc_service");
    let gs = raw.grpc_service.ok_or_else(|| gp.err("required"))?;
    let service = grpc_service(gs, &gp, None, Default::default())?;
    let enabled_metadata = match &raw.filter_enabled_metadata {
        Some(m) => Some(metadata::build(m, &p.field("filter_enabled_metadata"))?),
        None => None,
    };
    let stat_prefix = match stat_prefix.ends_with('.') {
        true => stat_prefix,
        false => format!("{stat_prefix}."),
    };
    Ok(NetworkExtAuthz {
        service,
        failure_mode_allow: raw.failure_mode_allow == Some(true),
        enabled_metadata,
        stat_prefix,
        rbac_before,
    })
}

/// One filter's counters: `ext_authz.<stat_prefix>{total,ok,denied,error,disabled,
/// failure_mode_allowed,cx_closed}`.
#[derive(Debug)]
struct Stats {
    total: Arc<Counter>,
    ok: Arc<Counter>,
    denied: Arc<Counter>,
    error: Arc<Counter>,
    disabled: Arc<Counter>,
    failure_mode_allowed: Arc<Counter>,
    cx_closed: Arc<Counter>,
}

/// A chain's network ext_authz filters at run time.
#[derive(Debug)]
pub struct AuthzGate {
    filters: Vec<(Arc<NetworkExtAuthz>, Stats)>,
    /// The chain's network RBAC filters (their shadow verdicts are the metadata).
    rbac: Vec<Arc<NetworkRbac>>,
    /// The services' clusters.
    clusters: HashMap<String, Arc<Cluster>>,
}

impl AuthzGate {
    /// The gate of a chain with `filters` and `rbac`, its counters in `store`.
    pub fn new(
        filters: &[Arc<NetworkExtAuthz>],
        rbac: &[Arc<NetworkRbac>],
        clusters: &HashMap<String, Arc<Cluster>>,
        store: &StatsStore,
    ) -> Self {
        let filters: Vec<(Arc<NetworkExtAuthz>, Stats)> = filters
            .iter()
            .map(|f| {
                let c = |n: &str| {
                    store.named_counter(&format!("ext_authz.{}{n}", f.stat_prefix), false)
                };
                let stats = Stats {
                    total: c("total"),
                    ok: c("ok"),
                    denied: c("denied"),
                    error: c("error"),
                    disabled: c("disabled"),
                    failure_mode_allowed: c("failure_mode_allowed"),
                    cx_closed: c("cx_closed"),
                };
                (f.clone(), stats)
            })
            .collect();
        // The services' clusters as this config version has them.
        let clusters = filters
            .iter()
            .filter_map(|(f, _)| clusters.get_key_value(&f.service.cluster))
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        Self {
            filters,
            rbac: rbac.to_vec(),
            clusters,
        }
    }

    /// Checks a connection: true when it may go on.
    pub async fn allows(
        &self,
        peer: std::net::SocketAddr,
        direct: std::net::IpAddr,
        local: std::net::SocketAddr,
        sni: Option<&str>,
        tls: Option<&crate::downstream_tls::TlsFacts>,
    ) -> bool {
        let mut md = DynamicMetadata::default();
        let mut rbac_done = 0;
        let facts = Facts::<[(&str, &str)]> {
            request: None,
            peer,
            direct,
            remote: peer.ip(),
            local,
            sni: sni.unwrap_or(""),
            tls,
            metadata: None,
        };
        for (f, stats) in &self.filters {
            // The RBAC filters before this one, as they decide: their verdicts are its
            // metadata, and one that denies ends the checks (the RBAC gate then closes the
            // connection with its own counters, and Envoy would not have called the service).
            let upto = f.rbac_before.min(self.rbac.len());
            for r in &self.rbac[rbac_done.min(upto)..upto] {
                let d = r.rules.decide(&facts, None);
                if d.denied.is_some() {
                    return true;
                }
                d.write_metadata(&r.rules, |k, v| md.set(NETWORK_RBAC_NAMESPACE, k, v));
            }
            rbac_done = rbac_done.max(upto);
            if let Some(m) = &f.enabled_metadata {
                if !m.matches(&md) {
                    stats.disabled.inc();
                    continue;
                }
            }
            stats.total.inc();
            let v = grpc::check_connection(&f.service, peer, local, tls, &self.clusters).await;
            match v {
                Verdict::Ok { .. } => stats.ok.inc(),
                Verdict::Denied { .. } => {
                    stats.denied.inc();
                    stats.cx_closed.inc();
                    tracing::debug!(%peer, "network ext_authz: connection denied");
                    return false;
                }
                Verdict::Error if f.failure_mode_allow => {
                    stats.error.inc();
                    stats.failure_mode_allowed.inc();
                }
                Verdict::Error => {
                    stats.error.inc();
                    stats.cx_closed.inc();
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        let raw: RawNetworkExtAuthz = serde_norway::from_str(yaml).unwrap();
        build(raw, &FieldPath::root().field("f"), 0)
            .map(|_| ())
            .unwrap_err()
            .path()
            .to_string()
    }

    #[test]
    fn bad_configs_name_the_field() {
        let ok = "{stat_prefix: tcp., grpc_service: {envoy_grpc: {cluster_name: c}}}";
        let raw: RawNetworkExtAuthz = serde_norway::from_str(ok).unwrap();
        let f = build(raw, &FieldPath::root(), 1).unwrap();
        assert_eq!((f.stat_prefix.as_str(), f.rbac_before), ("tcp.", 1));
        assert_eq!(
            err("{grpc_service: {envoy_grpc: {cluster_name: c}}}"),
            "f.stat_prefix"
        );
        assert_eq!(err("{stat_prefix: t}"), "f.grpc_service");
        assert_eq!(
            err("{stat_prefix: t, grpc_service: {envoy_grpc: {cluster_name: c}}, include_peer_certificate: true}"),
            "f.include_peer_certificate"
        );
        assert_eq!(
            err("{stat_prefix: t, grpc_service: {google_grpc: {}}}"),
            "f.grpc_service.google_grpc"
        );
    }
}
