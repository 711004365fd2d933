//! Secret streams (SDS) to static clusters other than the ADS server's: Istio's sidecar
//! bootstrap names its workload certificate and root CA with `sds_config.api_config_source` to
//! the `sds-grpc` cluster (pilot-agent's SDS server on a unix socket). One
//! `SecretDiscoveryService.StreamSecrets` stream (State of the world) per such cluster asks for
//! the names the TLS contexts want from it; each response goes to the ADS client's task, which
//! checks and applies it as it does an ADS `Secret` response (one accepted state, one
//! configuration version) and sends back the ACK or NACK detail. A stream reconnects with the
//! ADS client's backoff; names change on the same stream.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::{
        discovery::v3::{DiscoveryRequest, DiscoveryResponse},
        secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient,
    },
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    convert::{Any, ResourceType},
    credentials::Credentials,
    transport::{backoff, connect, Target},
};

/// One response of an SDS stream, for the ADS client's task to check and apply.
#[derive(Debug)]
pub struct SdsResponse {
    /// The static cluster the stream goes to.
    pub cluster: String,
    /// `version_info`.
    pub version: String,
    /// The secrets (State of the world for the names asked).
    pub resources: Vec<Any>,
    /// The NACK detail, or `None` to ACK.
    pub answer: oneshot::Sender<Option<String>>,
}

/// The SDS streams of one client, by cluster.
pub struct SdsStreams {
    targets: BTreeMap<String, Target>,
    node: Node,
    tx: mpsc::Sender<SdsResponse>,
    streams: BTreeMap<String, watch::Sender<BTreeSet<String>>>,
    /// Clusters asked for that have no target (not a static cluster with an IP or pipe
    /// endpoint), reported once.
    unknown: BTreeSet<String>,
}

impl SdsStreams {
    /// Streams to the clusters of `targets`, identifying as `node`; their responses arrive on
    /// the returned receiver.
    pub fn new(
        targets: BTreeMap<String, Target>,
        node: Node,
    ) -> (Self, mpsc::Receiver<SdsResponse>) {
        let (tx, rx) = mpsc::channel(16);
        let s = Self {
            targets,
            node,
            tx,
            streams: BTreeMap::new(),
            unknown: BTreeSet::new(),
        };
        (s, rx)
    }

    /// Asks each cluster's stream for its names now (starting the stream the first time a
    /// cluster is named; a cluster no longer named keeps its stream with no names).
    pub fn follow(&mut self, wanted: &BTreeMap<String, BTreeSet<String>>) {
        for (cluster, names) in wanted {
            if let Some(s) = self.streams.get(cluster) {
                s.send_if_modified(|n| {
                    let changed = n != names;
                    if changed {
                        n.clone_from(names);
                    }
                    changed
                });
                continue;
            }
            let Some(target) = self.targets.get(cluster).cloned() else {
                if self.unknown.insert(cluster.clone()) {
                    tracing::error!(%cluster, "SDS: the secrets' api_config_source names no static cluster with an IP or pipe endpoint; they cannot arrive");
                }
                continue;
            };
            let (names_tx, names_rx) = watch::channel(names.clone());
            tokio::spawn(run(
                cluster.clone(),
                target,
                self.node.clone(),
                names_rx,
                self.tx.clone(),
            ));
            self.streams.insert(cluster.clone(), names_tx);
        }
        for (cluster, s) in &self.streams {
            if !wanted.contains_key(cluster) {
                s.send_if_modified(|n| {
                    let changed = !n.is_empty();
                    n.clear();
                    changed
                });
            }
        }
    }
}

/// One cluster's stream, reconnecting forever (it ends when the client's task does).
async fn run(
    cluster: String,
    target: Target,
    node: Node,
    mut names: watch::Receiver<BTreeSet<String>>,
    tx: mpsc::Sender<SdsResponse>,
) {
    let mut attempt = 0u32;
    loop {
        match stream(&cluster, &target, &node, &mut names, &tx).await {
            Ok(()) => return,
            Err((got, e)) => {
                if got {
                    attempt = 0;
                }
                tracing::warn!(%cluster, error = %e, "SDS stream failed");
            }
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

/// One stream; `Ok` when the client's task is gone, `Err((got a response, why))` otherwise.
async fn stream(
    cluster: &str,
    target: &Target,
    node: &Node,
    names: &mut watch::Receiver<BTreeSet<String>>,
    tx: &mpsc::Sender<SdsResponse>,
) -> Result<(), (bool, String)> {
    let ch = connect(target, &Credentials::default())
        .await
        .map_err(|e| (false, e))?;
    let (req_tx, req_rx) = mpsc::channel(16);
    let request = |names: &BTreeSet<String>, version: &str, nonce: &str, node: Option<Node>| {
        DiscoveryRequest {
            node,
            version_info: version.to_string(),
            resource_names: names.iter().cloned().collect(),
            type_url: ResourceType::Secret.type_url().to_string(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        }
    };
    let first = request(&names.borrow_and_update(), "", "", Some(node.clone()));
    req_tx
        .send(first)
        .await
        .map_err(|e| (false, e.to_string()))?;
    let mut client = SecretDiscoveryServiceClient::new(ch);
    let mut rx = client
        .stream_secrets(ReceiverStream::new(req_rx))
        .await
        .map_err(|e| (false, format!("StreamSecrets: {e}")))?
        .into_inner();
    let (mut got, mut version, mut nonce) = (false, String::new(), String::new());
    loop {
        tokio::select! {
            m = rx.message() => {
                let resp: DiscoveryResponse = match m {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err((got, "stream closed by the server".into())),
                    Err(e) => return Err((got, e.to_string())),
                };
                got = true;
                let (answer, reply) = oneshot::channel();
                let u = SdsResponse {
                    cluster: cluster.to_string(),
                    version: resp.version_info.clone(),
                    resources: resp.resources,
                    answer,
                };
                if tx.send(u).await.is_err() {
                    return Ok(());
                }
                let Ok(error) = reply.await else { return Ok(()) };
                nonce = resp.nonce;
                let mut ack = request(&names.borrow(), &version, &nonce, None);
                match error {
                    None => {
                        version = resp.version_info;
                        ack.version_info.clone_from(&version);
                        tracing::info!(%cluster, %version, "SDS ACK");
                    }
                    Some(message) => {
                        tracing::warn!(%cluster, version = %resp.version_info, error = %message, "SDS NACK");
                        ack.error_detail = Some(envoy_types::pb::google::rpc::Status {
                            code: 3,
                            message,
                            details: Vec::new(),
                        });
                    }
                }
                req_tx.send(ack).await.map_err(|e| (got, e.to_string()))?;
            }
            changed = names.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let req = request(&names.borrow_and_update(), &version, &nonce, None);
                req_tx.send(req).await.map_err(|e| (got, e.to_string()))?;
            }
        }
    }
}
