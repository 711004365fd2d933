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
    /// The `pipe` endpoints (unix sockets) of the other static clusters, by cluster name: gRPC
    /// services the xDS client dials (Istio's `sds-grpc`, pilot-agent's SDS server), taken out
    /// of the clusters as the engine cannot serve data traffic to a unix socket.
    pub grpc_pipes: std::collections::BTreeMap<String, Vec<PathBuf>>,
}

/// `dynamic_resources.ads_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdsConfig {
    /// `api_type: DELTA_GRPC` (else `GRPC`, State-of-the-world).
    pub delta: bool,
    /// `grpc_services[0].envoy_grpc.cluster_name`: a static cluster (empty with `google`).
    pub cluster_name: String,
    /// `grpc_services[0].google_grpc`: the server by target URI instead of a cluster.
    pub google: Option<GoogleGrpc>,
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
    let svc = &ads.grpc_services[0];
    let initial_metadata = initial_metadata(&svc.initial_metadata, &gp.field("initial_metadata"))?;
    let (cluster_name, google, pipes) = match (&svc.envoy_grpc, &svc.google_grpc) {
        (Some(e), None) => {
            let cluster_name = e
                .cluster_name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| gp.field("envoy_grpc").field("cluster_name").err("required"))?;
            let pipes = ads_cluster_pipes(statics, &cluster_name, &gp)?;
            (cluster_name, None, pipes)
        }
        (None, Some(g)) => (
            String::new(),
            Some(google_grpc(g, &gp.field("google_grpc"))?),
            Vec::new(),
        ),
        (Some(_), Some(_)) => {
            return Err(gp.err("only one of envoy_grpc and google_grpc may be set"))
        }
        (None, None) => return Err(gp.err("envoy_grpc or google_grpc is required")),
    };
    let grpc_pipes = statics
        .as_mut()
        .map(|s| &mut s.clusters[..])
        .unwrap_or(&mut [])
        .iter_mut()
        .filter_map(|c| {
            let pipes = take_pipes(c);
            Some((c.name.clone()?, pipes)).filter(|(_, p)| !p.is_empty())
        })
        .collect();
    let (lds, lds_initial_fetch_timeout) = source(raw.lds_config.as_ref(), &p.field("lds_config"))?;
    let (cds, cds_initial_fetch_timeout) = source(raw.cds_config.as_ref(), &p.field("cds_config"))?;
    Ok(DynamicResources {
        ads: AdsConfig {
            delta,
            cluster_name,
            google,
            pipes,
            set_node_on_first_message_only: ads.set_node_on_first_message_only.unwrap_or(false),
            initial_metadata,
        },
        lds,
        cds,
        lds_initial_fetch_timeout,
        cds_initial_fetch_timeout,
        grpc_pipes,
    })
}

/// `GrpcService.GoogleGrpc`, as far as an ADS client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleGrpc {
    /// `target_uri` (`host:port`, `dns:[///]host:port`, `ipv4:`/`ipv6:` addresses,
    /// `unix:path`), resolved by the client.
    pub target_uri: String,
    /// `channel_credentials.ssl_credentials.root_certs` (a file): TLS, the server's chain and
    /// name (the target's host) verified against it. None: plaintext (`local_credentials`, or
    /// no channel credentials).
    pub root_certs: Option<PathBuf>,
    /// `call_credentials`, as the metadata each stream carries.
    pub call_metadata: Vec<CallMetadata>,
}

/// One call credential as gRPC metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallMetadata {
    /// A fixed header (`access_token`: `authorization: Bearer TOKEN`; an inline secret).
    Static {
        /// Header name.
        key: String,
        /// Value.
        value: String,
    },
    /// `envoy.grpc_credentials.file_based_metadata` with a `filename`: `prefix` + the file's
    /// contents, read on every (re)connect (a rotated token is picked up by the next stream).
    File {
        /// Header name (`header_key`, default `authorization`).
        key: String,
        /// `header_prefix`.
        prefix: String,
        /// `secret_data.filename`.
        path: PathBuf,
    },
}

/// The plugin and type of file-based call credentials.
const FILE_BASED_METADATA: &str = "envoy.grpc_credentials.file_based_metadata";
const FILE_BASED_METADATA_TYPE: &str =
    "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig";

/// The ADS cluster's `pipe` endpoints, taken out of `statics` (the engine cannot serve data
/// traffic to a unix socket; the xDS client can); the cluster must be a static one.
fn ads_cluster_pipes(
    statics: &mut Option<RawStaticResources>,
    cluster_name: &str,
    gp: &FieldPath,
) -> Result<Vec<PathBuf>, ConfigError> {
    let clusters = statics
        .as_mut()
        .map(|s| &mut s.clusters[..])
        .unwrap_or(&mut []);
    let Some(cluster) = clusters
        .iter_mut()
        .find(|c| c.name.as_deref() == Some(cluster_name))
    else {
        return Err(gp.field("envoy_grpc").field("cluster_name").err(format!(
            "unknown cluster {cluster_name:?} (must be a static cluster)"
        )));
    };
    Ok(take_pipes(cluster))
}

/// `cluster`'s `pipe` endpoints, taken out of it.
fn take_pipes(cluster: &mut super::raw_cluster::RawCluster) -> Vec<PathBuf> {
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
    pipes
}

/// `google_grpc`: target, TLS roots and call credentials; what sluice cannot honour is refused
/// naming the field.
fn google_grpc(
    g: &super::raw_dynamic::RawGoogleGrpc,
    p: &FieldPath,
) -> Result<GoogleGrpc, ConfigError> {
    let target_uri = g
        .target_uri
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| p.field("target_uri").err("required"))?;
    if g.stat_prefix.as_deref().is_none_or(str::is_empty) {
        return Err(p.field("stat_prefix").err("required"));
    }
    let unix = target_uri.starts_with("unix:");
    let mut root_certs = None;
    if let Some(cc) = &g.channel_credentials {
        let cp = p.field("channel_credentials");
        match (
            &cc.ssl_credentials,
            &cc.local_credentials,
            &cc.google_default,
        ) {
            (Some(ssl), None, None) => {
                let sp = cp.field("ssl_credentials");
                if ssl.private_key.is_some() || ssl.cert_chain.is_some() {
                    let f = if ssl.private_key.is_some() {
                        "private_key"
                    } else {
                        "cert_chain"
                    };
                    return Err(sp
                        .field(f)
                        .unsupported("client certificates for google_grpc"));
                }
                let rp = sp.field("root_certs");
                let roots = ssl.root_certs.as_ref().ok_or_else(|| {
                    rp.err("required (sluice does not use the system's roots for the management server)")
                })?;
                if unix {
                    return Err(sp.unsupported("TLS to a unix socket target"));
                }
                root_certs = match (&roots.filename, &roots.inline_string) {
                    (Some(f), None) if !f.is_empty() => Some(PathBuf::from(f)),
                    (None, Some(_)) => {
                        return Err(rp
                            .field("inline_string")
                            .unsupported("inline root_certs (use filename)"))
                    }
                    _ => return Err(rp.err("filename is required")),
                };
            }
            (None, Some(_), None) => {}
            (None, None, Some(_)) => {
                return Err(cp
                    .field("google_default")
                    .unsupported("google_default credentials"))
            }
            _ => {
                return Err(
                    cp.err("exactly one of ssl_credentials and local_credentials is required")
                )
            }
        }
    }
    // Envoy's credentials factories: the default one honours the built-in call credentials and
    // skips `from_plugin`; the file-based one honours only its `from_plugin` entries.
    let file_factory = match g.credentials_factory_name.as_deref() {
        None | Some("") => false,
        Some(FILE_BASED_METADATA) => true,
        Some(o) => {
            return Err(p
                .field("credentials_factory_name")
                .unsupported(&format!("credentials factory {o:?}")))
        }
    };
    let mut call_metadata = Vec::new();
    for (i, c) in g.call_credentials.iter().enumerate() {
        let cp = p.field("call_credentials").index(i);
        if file_factory != c.from_plugin.is_some() {
            tracing::warn!(field = %cp, "call credential skipped, as Envoy skips it: the {} credentials factory does not use it", if file_factory { "file-based" } else { "default" });
            continue;
        }
        let other = [
            ("google_compute_engine", c.google_compute_engine.is_some()),
            ("google_refresh_token", c.google_refresh_token.is_some()),
            (
                "service_account_jwt_access",
                c.service_account_jwt_access.is_some(),
            ),
            ("google_iam", c.google_iam.is_some()),
            ("sts_service", c.sts_service.is_some()),
        ];
        if let Some((f, _)) = other.iter().find(|(_, set)| *set) {
            return Err(cp.field(f).unsupported(&format!("{f} call credentials")));
        }
        match (&c.access_token, &c.from_plugin) {
            (Some(t), None) => {
                let value = format!("Bearer {t}");
                if http::HeaderValue::from_str(&value).is_err() {
                    return Err(cp.field("access_token").err("not a valid header value"));
                }
                call_metadata.push(CallMetadata::Static {
                    key: "authorization".into(),
                    value,
                });
            }
            (None, Some(plugin)) => {
                if plugin.name.as_deref() != Some(FILE_BASED_METADATA) {
                    tracing::warn!(field = %cp, "call credentials plugin skipped, as Envoy's file-based factory skips plugins it does not know");
                    continue;
                }
                call_metadata.push(file_based(plugin, &cp.field("from_plugin"))?);
            }
            _ => return Err(cp.err("exactly one credential is required")),
        }
    }
    // gRPC sends call credentials over a secure channel only (TLS, or a local unix socket);
    // Envoy's file-based factory without channel credentials uses TLS with the system roots.
    if !call_metadata.is_empty() && root_certs.is_none() && !unix {
        let why = if g.channel_credentials.is_none() && file_factory {
            "the file-based factory then uses TLS with the system's roots, which sluice does not use: set ssl_credentials.root_certs"
        } else {
            "call credentials are sent over TLS only (gRPC refuses them on a plaintext TCP channel): set ssl_credentials"
        };
        return Err(p.field("channel_credentials").err(why));
    }
    Ok(GoogleGrpc {
        target_uri,
        root_certs,
        call_metadata,
    })
}

/// `from_plugin` `envoy.grpc_credentials.file_based_metadata` (the only plugin sluice has).
fn file_based(
    plugin: &super::raw_dynamic::RawMetadataCredentialsFromPlugin,
    p: &FieldPath,
) -> Result<CallMetadata, ConfigError> {
    let tc = plugin.typed_config.as_ref();
    let ty = tc.and_then(|t| t.get("@type")).and_then(|t| t.as_str());
    let tp = p.field("typed_config");
    if ty != Some(FILE_BASED_METADATA_TYPE) {
        return Err(tp
            .field("@type")
            .err(format!("expected {FILE_BASED_METADATA_TYPE}")));
    }
    let raw: super::raw_dynamic::RawFileBasedMetadataConfig =
        serde_path_to_error::deserialize(tc.cloned().unwrap_or_default())
            .map_err(|e| tp.join_serde(e.path()).err(e.inner().to_string()))?;
    let key = raw
        .header_key
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "authorization".into())
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(key.as_bytes()).is_err() || key.ends_with("-bin") {
        return Err(tp.field("header_key").err(format!(
            "{key:?} is not a gRPC metadata key sluice can send"
        )));
    }
    let prefix = raw.header_prefix.unwrap_or_default();
    let sp = tp.field("secret_data");
    let secret = raw.secret_data.ok_or_else(|| sp.err("required"))?;
    Ok(match (secret.filename, secret.inline_string) {
        (Some(f), None) if !f.is_empty() => CallMetadata::File {
            key,
            prefix,
            path: f.into(),
        },
        (None, Some(s)) => {
            let value = format!("{prefix}{s}");
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(sp.field("inline_string").err("not a valid header value"));
            }
            CallMetadata::Static { key, value }
        }
        _ => return Err(sp.err("exactly one of filename and inline_string is required")),
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
