//! Compiles `weighted_clusters` (a route's, and tcp_proxy's plain form): names or
//! `cluster_header`, weights, per-cluster header mutations and host rewrite, `total_weight`,
//! `header_name`.

use super::{
    build::{header_name, host_value, KnownClusters},
    build_headers::mutations,
    HeaderMutations, WeightedCluster, WeightedClusters,
};
use crate::config::{raw_route::RawWeightedClusters, ClusterRef, ConfigError, FieldPath};

/// One weighted cluster before validation (shared by routes and tcp_proxy).
pub(crate) struct WeightedInput {
    pub(crate) name: Option<String>,
    pub(crate) cluster_header: Option<String>,
    pub(crate) weight: Option<u32>,
    pub(crate) host_rewrite: Option<String>,
    pub(crate) request_headers: HeaderMutations,
    pub(crate) response_headers: HeaderMutations,
}

impl WeightedInput {
    /// A cluster with a name and weight only (tcp_proxy).
    pub(crate) fn plain(name: Option<String>, weight: Option<u32>) -> Self {
        Self {
            name,
            cluster_header: None,
            weight,
            host_rewrite: None,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
        }
    }
}

/// A route's `weighted_clusters` at `wp`.
pub(super) fn route_weighted(
    w: RawWeightedClusters,
    wp: &FieldPath,
    clusters: &KnownClusters<'_>,
) -> Result<WeightedClusters, ConfigError> {
    let mut inputs = Vec::with_capacity(w.clusters.len());
    let mut per_filter = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.into_iter().enumerate() {
        let cp = wp.field("clusters").index(i);
        per_filter.push(crate::http::filters::per_filter_configs(
            c.typed_per_filter_config.as_ref(),
            &cp.field("typed_per_filter_config"),
            None,
        )?);
        let cluster_header = match c.cluster_header {
            Some(h) if !h.is_empty() => Some(header_name(&h, &cp.field("cluster_header"))?),
            _ => None,
        };
        let host_rewrite = match c.host_rewrite_literal {
            Some(h) if !h.is_empty() => Some(host_value(h, &cp.field("host_rewrite_literal"))?),
            _ => None,
        };
        inputs.push(WeightedInput {
            name: c.name,
            cluster_header,
            weight: c.weight,
            host_rewrite,
            request_headers: mutations(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &cp,
                "request",
            )?,
            response_headers: mutations(
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
                &cp,
                "response",
            )?,
        });
    }
    let mut weighted = build_weighted(inputs, wp, clusters)?;
    for (c, pf) in weighted.clusters.iter_mut().zip(per_filter) {
        c.per_filter = pf;
    }
    // Envoy checks the deprecated total_weight only when it is greater than 0.
    if let Some(total) = w.total_weight.filter(|t| *t > 0) {
        if u64::from(total) != weighted.total_weight {
            return Err(wp.field("total_weight").err(format!(
                "{total} differs from the sum of the weights ({})",
                weighted.total_weight
            )));
        }
    }
    // `header_name` and `use_hash_policy` are Envoy's `random_value_specifier` oneof.
    if w.header_name.is_some() && w.use_hash_policy.is_some() {
        return Err(wp
            .field("use_hash_policy")
            .err("only one of header_name and use_hash_policy may be set"));
    }
    weighted.random_header = match w.header_name {
        Some(h) if !h.is_empty() => Some(header_name(&h, &wp.field("header_name"))?),
        _ => None,
    };
    weighted.use_hash_policy = w.use_hash_policy.unwrap_or(false);
    Ok(weighted)
}

/// Validates weighted clusters: exactly one of name (a known cluster) and cluster_header,
/// total weight > 0.
pub(crate) fn build_weighted(
    inputs: Vec<WeightedInput>,
    p: &FieldPath,
    clusters: &KnownClusters<'_>,
) -> Result<WeightedClusters, ConfigError> {
    if inputs.is_empty() {
        return Err(p.field("clusters").err("at least one cluster is required"));
    }
    let mut out = Vec::with_capacity(inputs.len());
    let mut total: u64 = 0;
    for (i, c) in inputs.into_iter().enumerate() {
        let cp = p.field("clusters").index(i);
        let name = c.name.filter(|n| !n.is_empty());
        let name = match (name, &c.cluster_header) {
            (Some(_), Some(_)) => {
                return Err(cp.err("only one of name and cluster_header may be set"));
            }
            (None, None) => return Err(cp.err("one of name and cluster_header is required")),
            (None, Some(_)) => ClusterRef::new(""),
            (Some(name), None) => {
                if !clusters.contains(&name) {
                    return Err(cp.field("name").err(format!("unknown cluster {name:?}")));
                }
                ClusterRef::new(&name)
            }
        };
        let weight = c.weight.unwrap_or(0);
        total += u64::from(weight);
        out.push(WeightedCluster {
            name,
            cluster_header: c.cluster_header,
            host_rewrite: c.host_rewrite,
            weight,
            request_headers: c.request_headers,
            response_headers: c.response_headers,
            per_filter: Default::default(),
        });
    }
    if total == 0 {
        return Err(p
            .field("clusters")
            .err("the sum of the weights must be greater than 0"));
    }
    if total > u64::from(u32::MAX) {
        return Err(p
            .field("clusters")
            .err("the sum of the weights must fit in 32 bits"));
    }
    Ok(WeightedClusters {
        clusters: out,
        total_weight: total,
        random_header: None,
        use_hash_policy: false,
    })
}
