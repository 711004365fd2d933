//! `dynamic_resources` (ADS: LDS and CDS over one aggregated stream), `node.metadata`, the ADS
//! cluster's `pipe` address and EDS clusters' endpoint health: validated here, run by the
//! `sluice-xds` crate. The engine itself never talks gRPC.

use std::{path::PathBuf, time::Duration};

use super::{
    path::FieldPath,
    raw::RawStaticResources,
    raw_dynamic::{RawConfigSource, RawDynamicResources},
    ConfigError,
};

/// Envoy's default `initial_fetch_timeout`.
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// `dynamic_resources`: listeners and clusters come from one ADS stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicResources {
    /// `ads_config`.
    pub ads: AdsConfig,
    /// `lds_config` is `ads: {}` (listeners come over ADS).
    pub lds: bool,
    /// `cds_config` is `ads: {}` (clusters come over ADS).
    pub cds: bool,
    /// `lds_config.initial_fetch_timeout` (default 15 s; `None` = wait forever, `0s`).
    pub lds_initial_fetch_timeout: Option<Duration>,
    /// `cds_config.initial_fetch_timeout` (default 15 s; `None` = wait forever, `0s`).
    pub cds_initial_fetch_timeout: Option<Duration>,
}

/// `dynamic_resources.ads_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdsConfig {
    /// `api_type: DELTA_GRPC` (else `GRPC`, State-of-the-world).
    pub delta: bool,
    /// `grpc_services[0].envoy_grpc.cluster_name`: a static cluster.
    pub cluster_name: String,
    /// The ADS cluster's `pipe` endpoints (unix sockets), if it has any; its socket_address
    /// endpoints stay in the cluster.
    pub pipes: Vec<PathBuf>,
    /// `set_node_on_first_message_only`.
    pub set_node_on_first_message_only: bool,
    /// `grpc_services[0].initial_metadata`: `(key, value)` sent on every stream (keys
    /// lower-cased, not `-bin`, no pseudo-headers).
    pub initial_metadata: Vec<(String, String)>,
}

/// Validates `dynamic_resources` at `p`; takes the ADS cluster's `pipe` endpoints out of
/// `statics` (the engine cannot serve data traffic to a unix socket; the xDS client can).
pub(crate) fn dynamic_resources(
    raw: RawDynamicResources,
    statics: &mut Option<RawStaticResources>,
    p: &FieldPath,
) -> Result<DynamicResources, ConfigError> {
    let ap = p.field("ads_config");
    let ads = raw
        .ads_config
        .ok_or_else(|| ap.err("required (only ADS is supported)"))?;
    let delta = match ads.api_type.as_deref() {
        Some("GRPC") => false,
        Some("DELTA_GRPC") => true,
        Some(t @ ("REST" | "AGGREGATED_GRPC" | "AGGREGATED_DELTA_GRPC")) => {
            return Err(ap.field("api_type").unsupported(t))
        }
        Some(o) => return Err(ap.field("api_type").err(format!("unknown value {o:?}"))),
        None => return Err(ap.field("api_type").err("required")),
    };
    v3_only(
        ads.transport_api_version.as_deref(),
        &ap.field("transport_api_version"),
    )?;
    if ads.grpc_services.len() != 1 {
        return Err(ap
            .field("grpc_services")
            .err("exactly one entry is supported"));
    }
    let gp = ap.field("grpc_services").index(0);
    let cluster_name = ads.grpc_services[0]
        .envoy_grpc
        .as_ref()
        .ok_or_else(|| {
            gp.field("envoy_grpc")
                .err("required (google_grpc is not supported)")
        })?
        .cluster_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| gp.field("envoy_grpc").field("cluster_name").err("required"))?;
    let initial_metadata = initial_metadata(
        &ads.grpc_services[0].initial_metadata,
        &gp.field("initial_metadata"),
    )?;
    let clusters = statics
        .as_mut()
        .map(|s| &mut s.clusters[..])
        .unwrap_or(&mut []);
    let Some(cluster) = clusters
        .iter_mut()
        .find(|c| c.name.as_deref() == Some(&cluster_name))
    else {
        return Err(gp.field("envoy_grpc").field("cluster_name").err(format!(
            "unknown cluster {cluster_name:?} (must be a static cluster)"
        )));
    };
    let mut pipes = Vec::new();
    for loc in cluster
        .load_assignment
        .iter_mut()
        .flat_map(|la| la.endpoints.iter_mut())
    {
        loc.lb_endpoints.retain(|lbe| {
            match lbe
                .endpoint
                .as_ref()
                .and_then(|e| e.address.as_ref())
                .and_then(|a| a.pipe.as_ref())
            {
                Some(pipe) => {
                    pipes.extend(pipe.path.clone().map(PathBuf::from));
                    false
                }
                None => true,
            }
        });
    }
    let (lds, lds_initial_fetch_timeout) = source(raw.lds_config.as_ref(), &p.field("lds_config"))?;
    let (cds, cds_initial_fetch_timeout) = source(raw.cds_config.as_ref(), &p.field("cds_config"))?;
    Ok(DynamicResources {
        ads: AdsConfig {
            delta,
            cluster_name,
            pipes,
            set_node_on_first_message_only: ads.set_node_on_first_message_only.unwrap_or(false),
            initial_metadata,
        },
        lds,
        cds,
        lds_initial_fetch_timeout,
        cds_initial_fetch_timeout,
    })
}

/// `GrpcService.initial_metadata`: keys are header names, sent lower-cased (as Envoy's gRPC
/// client does); binary (`-bin`) values and pseudo-headers are refused, naming the entry.
fn initial_metadata(
    raw: &[super::raw_route::RawHeaderValue],
    p: &FieldPath,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let ip = p.index(i);
        let key = h
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ip.field("key").err("required"))?;
        // Envoy's gRPC client sends the key lower-cased.
        let key = key.to_ascii_lowercase();
        let key = key.as_str();
        let valid = http::HeaderName::from_bytes(key.as_bytes()).is_ok();
        if !valid || key.starts_with(':') {
            return Err(ip
                .field("key")
                .err(format!("{key:?} is not a gRPC metadata key")));
        }
        if key.ends_with("-bin") {
            return Err(ip
                .field("key")
                .unsupported(&format!("{key} (binary metadata)")));
        }
        let value = h.value.clone().unwrap_or_default();
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(ip
                .field("value")
                .err(format!("{value:?} is not a valid header value")));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// A `ConfigSource`: `(present, initial_fetch_timeout)`; only `ads: {}` is supported.
fn source(
    raw: Option<&RawConfigSource>,
    p: &FieldPath,
) -> Result<(bool, Option<Duration>), ConfigError> {
    let Some(s) = raw else {
        return Ok((false, Some(DEFAULT_INITIAL_FETCH_TIMEOUT)));
    };
    if s.ads.is_none() {
        return Err(p
            .field("ads")
            .err("required (only ADS config sources are supported)"));
    }
    v3_only(
        s.resource_api_version.as_deref(),
        &p.field("resource_api_version"),
    )?;
    Ok((true, initial_fetch_timeout(s)))
}

/// A config source's `initial_fetch_timeout`: default 15 s, `0s` = wait forever (`None`).
pub(crate) fn initial_fetch_timeout(s: &RawConfigSource) -> Option<Duration> {
    match s.initial_fetch_timeout.map(|d| d.0) {
        None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
    }
}

fn v3_only(v: Option<&str>, p: &FieldPath) -> Result<(), ConfigError> {
    match v {
        None | Some("V3") => Ok(()),
        Some(o) => Err(p.unsupported(&format!("{o}; only V3"))),
    }
}

/// `eds_cluster_config`: required for (and only allowed on) `type: EDS`, with `eds_config`
/// `ads: {}`.
pub(crate) fn eds_cluster_config(
    raw: &super::raw_cluster::RawCluster,
    discovery: super::DiscoveryType,
    p: &FieldPath,
) -> Result<(), ConfigError> {
    let ep = p.field("eds_cluster_config");
    match (&raw.eds_cluster_config, discovery) {
        (None, super::DiscoveryType::Eds) => Err(ep.err("required for type EDS")),
        (Some(_), d) if d != super::DiscoveryType::Eds => Err(ep.err("only for type EDS")),
        (Some(e), _) => match &e.eds_config {
            None => Err(ep.field("eds_config").err("required")),
            Some(s) => source(Some(s), &ep.field("eds_config")).map(|_| ()),
        },
        (None, _) => Ok(()),
    }
}

/// `health_status` as Envoy's load balancers class it (UNKNOWN and HEALTHY are healthy;
/// TIMEOUT is unhealthy).
pub(crate) fn endpoint_health(
    health_status: Option<&str>,
    p: &FieldPath,
) -> Result<super::EndpointHealth, ConfigError> {
    use super::EndpointHealth as H;
    match health_status {
        None | Some("UNKNOWN" | "HEALTHY") => Ok(H::Healthy),
        Some("DEGRADED") => Ok(H::Degraded),
        Some("UNHEALTHY" | "TIMEOUT") => Ok(H::Unhealthy),
        Some("DRAINING") => Ok(H::Draining),
        Some(o) => Err(p.err(format!("unknown value {o:?}"))),
    }
}
