//! `sluice agent --xds-address`: node mode's per-pod ADS streams. Implements sluice-node's
//! [`PodConfigSource`] with sluice-xds: every pod whose L7 engine servers start (enroll, adoption
//! after a restart or an upgrade) gets its own ADS client with its own Istio node identity,
//! applying each accepted version to the pod's outbound and inbound servers; dropping the guard
//! (unenroll, agent shutdown) aborts the client, which closes its stream.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::{Args, ValueEnum};
use sluice_k8s::directory::PodDirectory;
use sluice_node::{
    agent::pod_config::{PodConfigSource, PodInfo, PodMeta},
    l7capture::{L7Config, PodServers},
};
use sluice_xds::{
    client,
    core::Core,
    credentials::Credentials,
    node_mode::{pod_bootstrap, PodNode, XdsAddress, DEFAULT_CLUSTER_ID},
};

/// The xDS flags of `sluice agent` and `sluice sidecar`.
#[derive(Args, Debug, Clone)]
pub struct XdsArgs {
    /// The management server: `http://HOST:PORT` (plaintext gRPC), `https://HOST:PORT` (TLS,
    /// with --xds-ca) or `unix:PATH`. Each node-mode pod served by the L7 engine (or the
    /// sidecar's pod) gets its own ADS stream with its own node identity; --config becomes
    /// optional (its static resources are every pod's base).
    #[arg(long, value_name = "URL")]
    xds_address: Option<String>,
    /// PEM CA bundle the server's certificate (chain and HOST) is verified against; needs an
    /// `https://` --xds-address.
    #[arg(long, value_name = "FILE", requires = "xds_address")]
    xds_ca: Option<std::path::PathBuf>,
    /// File holding a bearer token (e.g. a projected service-account token), read on every
    /// (re)connect and sent as `authorization: Bearer ...`.
    #[arg(long, value_name = "FILE", requires = "xds_address")]
    xds_token: Option<std::path::PathBuf>,
    /// ADS flavour: State-of-the-world (`sotw`) or `delta`.
    #[arg(long, value_enum, default_value_t = XdsApi::Sotw, requires = "xds_address")]
    xds_api: XdsApi,
    /// `CLUSTER_ID` in every pod's node metadata.
    #[arg(long, default_value = DEFAULT_CLUSTER_ID, requires = "xds_address")]
    xds_cluster_id: String,
}

/// `--xds-api`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdsApi {
    /// `GRPC`.
    Sotw,
    /// `DELTA_GRPC`.
    Delta,
}

/// The per-pod config source given to the agent.
pub type Source = Arc<dyn PodConfigSource>;

/// How long a pod's stream waits for the pod watcher to know the pod (its labels and service
/// account go in the node metadata) before it starts without them.
const META_WAIT: Duration = Duration::from_secs(3);

/// The L7 config and the per-pod source for these flags: without --xds-address, `l7` unchanged
/// and no source; with it, `l7` (or an empty base) serving both directions by the engine.
/// `directory` (with --watch-pods) gives each pod's labels and service account.
pub fn setup(
    args: &XdsArgs,
    l7: Option<Arc<L7Config>>,
    directory: Option<PodDirectory>,
) -> Result<(Option<Arc<L7Config>>, Option<Source>)> {
    let Some(url) = &args.xds_address else {
        return Ok((l7, None));
    };
    let address = XdsAddress::parse(url).map_err(anyhow::Error::msg)?;
    let credentials = credentials(args, &address).map_err(|e| anyhow::anyhow!("{e}"))?;
    let source = XdsPods {
        base: Arc::new(
            l7.as_ref()
                .map_or(serde_json::Value::Null, |c| c.source().clone()),
        ),
        address,
        delta: args.xds_api == XdsApi::Delta,
        cluster_id: args.xds_cluster_id.clone(),
        credentials,
        directory,
    };
    // Checked once here so a bad base fails the start, not every enrollment.
    let probe = PodInfo {
        netns: "agent".into(),
        name: "agent".into(),
        namespace: "default".into(),
        ips: Vec::new(),
        meta: None,
    };
    let (bootstrap, doc) = source
        .bootstrap(&probe, None)
        .map_err(|e| anyhow::anyhow!("--xds-address {url}: {e}"))?;
    let l7 = match l7 {
        Some(c) => Arc::unwrap_or_clone(c).with_dynamic_listeners(),
        // Without --config every pod's servers start from the ADS bootstrap (the xDS cluster
        // only, no listener until the server sends some).
        None => L7Config::dynamic_only(bootstrap, doc),
    };
    Ok((Some(Arc::new(l7)), Some(Arc::new(source))))
}

/// TLS when the address is `https://` (a CA is required: there are no system roots) and the
/// token file; the CA is loaded once here so a bad file fails the start.
fn credentials(args: &XdsArgs, address: &XdsAddress) -> Result<Credentials, String> {
    let (host, tls) = match address {
        XdsAddress::Tcp { host, tls, .. } => (host.clone(), *tls),
        XdsAddress::Unix(_) => (String::new(), false),
    };
    match (tls, &args.xds_ca) {
        (true, None) => return Err("an https:// --xds-address needs --xds-ca FILE".into()),
        (false, Some(_)) => return Err("--xds-ca needs an https:// --xds-address".into()),
        _ => {}
    }
    let c = Credentials {
        ca: args.xds_ca.clone(),
        server_name: host,
        token: args.xds_token.clone(),
        ..Default::default()
    };
    c.tls().map_err(|e| format!("--xds-ca: {e}"))?;
    Ok(c)
}

/// One ADS client per pod.
#[derive(Clone)]
struct XdsPods {
    /// The agent's `--config` as JSON (shared by every pod's bootstrap).
    base: Arc<serde_json::Value>,
    address: XdsAddress,
    delta: bool,
    cluster_id: String,
    credentials: Credentials,
    directory: Option<PodDirectory>,
}

impl XdsPods {
    /// The pod as the control plane sees it, with `meta` when known.
    fn node(&self, pod: &PodInfo, meta: Option<PodMeta>) -> PodNode {
        let meta = meta.unwrap_or_default();
        PodNode {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            ips: pod.ips.clone(),
            cluster_id: self.cluster_id.clone(),
            labels: meta.labels,
            service_account: meta.service_account,
            workload_name: meta.workload_name,
            owner: meta.owner,
        }
    }

    /// The pod's metadata: its own (sidecar mode's environment), else the pod watcher's,
    /// waited for up to [`META_WAIT`]; None without either.
    async fn meta(&self, pod: &PodInfo) -> Option<PodMeta> {
        if let Some(m) = &pod.meta {
            return Some(m.clone());
        }
        let dir = self.directory.as_ref()?;
        let found = dir.wait_for(&pod.namespace, &pod.name, META_WAIT).await;
        if found.is_none() {
            tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), wait = ?META_WAIT, "the pod watcher does not know the pod: its node metadata has no LABELS or SERVICE_ACCOUNT");
        }
        found
    }

    /// The pod's bootstrap, validated, and its document.
    fn bootstrap(
        &self,
        pod: &PodInfo,
        meta: Option<PodMeta>,
    ) -> Result<(sluice_engine::config::Bootstrap, serde_json::Value), String> {
        let node = self.node(pod, meta);
        let doc = pod_bootstrap(&self.base, node.node(), &self.address, self.delta)?;
        let text = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
        let bootstrap = sluice_engine::config::from_yaml_str(&text).map_err(|e| e.to_string())?;
        Ok((bootstrap, doc))
    }

    /// The pod's client configuration and its core.
    fn client(
        &self,
        pod: &PodInfo,
        meta: Option<PodMeta>,
    ) -> Result<(client::ClientConfig, Core), String> {
        let (bootstrap, doc) = self.bootstrap(pod, meta)?;
        let dynamic = bootstrap
            .dynamic_resources
            .clone()
            .ok_or("no dynamic_resources")?;
        let mut cfg = client::ClientConfig::from_bootstrap(&bootstrap)?;
        cfg.credentials = self.credentials.clone();
        Ok((cfg, Core::new(doc, dynamic, Instant::now())))
    }
}

impl XdsPods {
    /// Runs the pod's ADS client with `meta` (forever; returns at once if the pod's bootstrap
    /// cannot be made).
    async fn stream(
        &self,
        pod: &PodInfo,
        servers: &[Arc<sluice_engine::server::Server>],
        meta: Option<PodMeta>,
    ) {
        let (cfg, core) = match self.client(pod, meta) {
            Ok(c) => c,
            Err(e) => {
                // Checked at startup with the same base; only a pod-specific value gets here.
                tracing::error!(error = %e, "no xDS stream for the pod");
                return;
            }
        };
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), cluster = %cfg.node.cluster, "pod ADS stream starting");
        client::run_all(servers.to_vec(), cfg, core).await
    }
}

/// Aborts the pod's client when dropped.
struct Stream(tokio::task::JoinHandle<()>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PodConfigSource for XdsPods {
    fn start(&self, pod: &PodInfo, servers: &PodServers) -> Box<dyn Send + Sync> {
        let servers: Vec<_> = [&servers.outbound, &servers.inbound]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let node_id = self.node(pod, None).id();
        let span = tracing::info_span!("xds", netns = %pod.netns, node = %node_id);
        let (this, pod) = (self.clone(), pod.clone());
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let meta = this.meta(&pod).await;
                let late = this.directory.clone().filter(|_| meta.is_none());
                let stream = this.stream(&pod, &servers, meta);
                let Some(dir) = late else {
                    return stream.await;
                };
                // The watcher did not know the pod in time (an agent restart adopting pods
                // while its first list is slow): the stream starts without the Kubernetes
                // metadata and starts again with it once the watcher knows the pod.
                tokio::select! {
                    () = stream => {}
                    m = dir.known(&pod.namespace, &pod.name) => {
                        tracing::info!("the pod watcher knows the pod now: its ADS stream starts again with LABELS and SERVICE_ACCOUNT");
                        this.stream(&pod, &servers, Some(m)).await;
                    }
                }
            },
            span,
        ));
        Box::new(Stream(task))
    }
}
