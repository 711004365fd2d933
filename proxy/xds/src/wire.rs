//! The two ADS wire variants behind one interface: State-of-the-world
//! (`StreamAggregatedResources`: version_info + nonce per type, ACK = new version, NACK = the
//! previous version + `error_detail`) and Delta (`DeltaAggregatedResources`: per-resource
//! versions, subscribe/unsubscribe, `removed_resources`, `initial_resource_versions` on
//! reconnect).

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        },
    },
    google::rpc::Status,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

use crate::{
    convert::ResourceType,
    core::{Core, Update},
    credentials::Metadata,
};

/// The largest response accepted (a larger one ends the stream; the client reconnects).
const MAX_MESSAGE: usize = 64 << 20;
/// `google.rpc.Code.INVALID_ARGUMENT`, Envoy's NACK code.
const INVALID_ARGUMENT: i32 = 3;

/// A call carrying `metadata` (the bootstrap's `initial_metadata`, `authorization`).
fn with_metadata<T>(body: T, metadata: &Metadata) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    for (k, v) in metadata {
        r.metadata_mut().append(k.clone(), v.clone());
    }
    r
}

/// One response, either variant.
#[derive(Debug)]
pub struct Response {
    /// `type_url`.
    pub type_url: String,
    /// `nonce`.
    pub nonce: String,
    /// SotW `version_info` (Delta: `system_version_info`).
    pub version_info: String,
    /// The resources.
    pub update: Update,
}

/// An open ADS stream.
pub enum Wire {
    /// State of the world.
    Sotw {
        /// Requests to the server.
        tx: mpsc::Sender<DiscoveryRequest>,
        /// Responses.
        rx: Streaming<DiscoveryResponse>,
        /// The last nonce per type (sent with subscription changes).
        nonces: HashMap<ResourceType, String>,
        /// The node for every request (None: first request only).
        every: Option<Node>,
    },
    /// Delta.
    Delta {
        /// Requests to the server.
        tx: mpsc::Sender<DeltaDiscoveryRequest>,
        /// Responses.
        rx: Streaming<DeltaDiscoveryResponse>,
        /// The node for every request (None: first request only).
        every: Option<Node>,
    },
}

impl Wire {
    /// Opens the stream and sends the first request of every subscribed type (CDS, EDS, LDS,
    /// RDS; RDS/EDS only with names): the node, the last accepted versions (SotW) or
    /// `initial_resource_versions` (Delta). The node goes in every request unless
    /// `first_only` (`set_node_on_first_message_only`). `metadata` goes in the call's
    /// metadata.
    pub async fn open(
        ch: Channel,
        delta: bool,
        core: &Core,
        node: &Node,
        first_only: bool,
        metadata: Metadata,
    ) -> Result<Self, String> {
        let mut client = AggregatedDiscoveryServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let every = (!first_only).then(|| node.clone());
        let mut first = Some(node.clone());
        let mut node = || first.take().or_else(|| every.clone());
        let types: Vec<ResourceType> = core
            .types()
            .into_iter()
            .filter(|t| Core::wildcard(*t) || !core.subscribed(*t).is_empty())
            .collect();
        if delta {
            let (tx, rx) = mpsc::channel(64);
            for ty in types {
                let wanted = core.subscribed(ty);
                let req = DeltaDiscoveryRequest {
                    node: node(),
                    type_url: ty.type_url().to_string(),
                    resource_names_subscribe: wanted.iter().cloned().collect(),
                    initial_resource_versions: core
                        .resource_versions
                        .get(&ty)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                    ..Default::default()
                };
                tx.send(req).await.map_err(|e| e.to_string())?;
            }
            let rx = client
                .delta_aggregated_resources(with_metadata(ReceiverStream::new(rx), &metadata))
                .await
                .map_err(|e| format!("DeltaAggregatedResources: {e}"))?
                .into_inner();
            Ok(Wire::Delta { tx, rx, every })
        } else {
            let (tx, rx) = mpsc::channel(64);
            for ty in types {
                let req = DiscoveryRequest {
                    node: node(),
                    version_info: core.versions.get(&ty).cloned().unwrap_or_default(),
                    resource_names: core.subscribed(ty).iter().cloned().collect(),
                    type_url: ty.type_url().to_string(),
                    ..Default::default()
                };
                tx.send(req).await.map_err(|e| e.to_string())?;
            }
            let rx = client
                .stream_aggregated_resources(with_metadata(ReceiverStream::new(rx), &metadata))
                .await
                .map_err(|e| format!("StreamAggregatedResources: {e}"))?
                .into_inner();
            Ok(Wire::Sotw {
                tx,
                rx,
                nonces: HashMap::new(),
                every,
            })
        }
    }

    /// The next response; `Ok(None)` when the server ended the stream.
    pub async fn recv(&mut self) -> Result<Option<Response>, String> {
        match self {
            Wire::Sotw { rx, nonces, .. } => {
                let Some(r) = rx.message().await.map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                if let Some(ty) = ResourceType::from_type_url(&r.type_url) {
                    nonces.insert(ty, r.nonce.clone());
                }
                Ok(Some(Response {
                    type_url: r.type_url,
                    nonce: r.nonce,
                    version_info: r.version_info,
                    update: Update::Sotw(r.resources),
                }))
            }
            Wire::Delta { rx, .. } => {
                let Some(r) = rx.message().await.map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                let added = r
                    .resources
                    .into_iter()
                    .filter_map(|res| res.resource.map(|a| (res.name, res.version, a)))
                    .collect();
                Ok(Some(Response {
                    type_url: r.type_url,
                    nonce: r.nonce,
                    version_info: r.system_version_info,
                    update: Update::Delta {
                        added,
                        removed: r.removed_resources,
                    },
                }))
            }
        }
    }

    /// ACK (`error: None`) or NACK of the response `nonce` of `ty`. SotW sends the accepted
    /// version (the new one after an ACK, the previous one after a NACK) and the names.
    pub async fn ack(
        &mut self,
        core: &Core,
        ty: ResourceType,
        nonce: &str,
        error: Option<String>,
    ) -> Result<(), String> {
        let error_detail = error.map(|message| Status {
            code: INVALID_ARGUMENT,
            message,
            details: Vec::new(),
        });
        match self {
            Wire::Sotw { tx, every, .. } => tx
                .send(DiscoveryRequest {
                    node: every.clone(),
                    version_info: core.versions.get(&ty).cloned().unwrap_or_default(),
                    resource_names: core.subscribed(ty).iter().cloned().collect(),
                    type_url: ty.type_url().to_string(),
                    response_nonce: nonce.to_string(),
                    error_detail,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
            Wire::Delta { tx, every, .. } => tx
                .send(DeltaDiscoveryRequest {
                    node: every.clone(),
                    type_url: ty.type_url().to_string(),
                    response_nonce: nonce.to_string(),
                    error_detail,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The names of `ty` (RDS/EDS) changed from `old` to the core's current ones.
    pub async fn resubscribe(
        &mut self,
        core: &Core,
        ty: ResourceType,
        old: &BTreeSet<String>,
    ) -> Result<(), String> {
        let new = core.subscribed(ty);
        if *new == *old {
            return Ok(());
        }
        match self {
            Wire::Sotw {
                tx, nonces, every, ..
            } => tx
                .send(DiscoveryRequest {
                    node: every.clone(),
                    version_info: core.versions.get(&ty).cloned().unwrap_or_default(),
                    resource_names: new.iter().cloned().collect(),
                    type_url: ty.type_url().to_string(),
                    response_nonce: nonces.get(&ty).cloned().unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
            Wire::Delta { tx, every, .. } => tx
                .send(DeltaDiscoveryRequest {
                    node: every.clone(),
                    type_url: ty.type_url().to_string(),
                    resource_names_subscribe: new.difference(old).cloned().collect(),
                    resource_names_unsubscribe: old.difference(&new).cloned().collect(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
        }
    }
}
