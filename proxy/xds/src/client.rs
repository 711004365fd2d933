//! The ADS client task: connect, stream, check each response, apply it to the server, ACK or
//! NACK (a CDS answer waits while a cluster warms, as Envoy pauses CDS), follow RDS/EDS names,
//! fire warming timers, and reconnect with backoff. The server keeps
//! serving the last applied configuration while the stream is down. Config work runs on this
//! task (inside `block_in_place`, so connections move to other workers), never on a
//! connection's path; it needs the multi-threaded runtime `sluice proxy` builds.

use std::{sync::Arc, time::Instant};

use envoy_types::pb::{
    envoy::config::core::v3::Node,
    google::protobuf::{value::Kind, ListValue, Struct, Value as PbValue},
};
use serde_json::Value;
use sluice_engine::{config::Bootstrap, server::Server};

use tokio::sync::mpsc;

use crate::{
    convert::ResourceType,
    core::{Apply, Candidate, Core, Update},
    credentials::Credentials,
    sds::{SdsResponse, SdsStreams},
    status::XdsStatus,
    transport::{backoff, connect, Target},
    wire::Wire,
};

/// Everything the client needs from the bootstrap.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The ADS server.
    pub target: Target,
    /// `api_type: DELTA_GRPC`.
    pub delta: bool,
    /// The node sent to the server.
    pub node: Node,
    /// `set_node_on_first_message_only`: the node only in a stream's first request.
    pub node_first_only: bool,
    /// What the client knows of its synchronisation (admin `/xds_status`).
    pub status: Arc<XdsStatus>,
    /// TLS and metadata: a bootstrap's ADS cluster `transport_socket` and `initial_metadata`;
    /// node mode's `--xds-ca`, `--xds-token`.
    pub credentials: Credentials,
    /// Where each static cluster a secret's `api_config_source` may name is (its pipe, else
    /// its first IP endpoint): the SDS streams' servers.
    pub secret_targets: std::collections::BTreeMap<String, Target>,
}

impl ClientConfig {
    /// From a validated bootstrap with `dynamic_resources`.
    pub fn from_bootstrap(b: &Bootstrap) -> Result<Self, String> {
        let d = b
            .dynamic_resources
            .as_ref()
            .ok_or("the bootstrap has no dynamic_resources")?;
        let n = b.node.clone().unwrap_or_default();
        // A google_grpc service names its server by URI (whose host TLS checks), envoy_grpc by
        // a cluster.
        let (target, google_host) = match &d.ads.google {
            Some(g) => Target::from_target_uri(&g.target_uri)?,
            None => (Target::from_bootstrap(b)?, String::new()),
        };
        let cluster_tls = b
            .cluster(&d.ads.cluster_name)
            .map(|c| sluice_engine::upstream::from_config::cluster_spec(c))
            .and_then(|spec| spec.tls.map(|tls| (spec.name, tls)));
        let mut credentials = Credentials {
            cluster_tls,
            initial_metadata: d.ads.initial_metadata.clone(),
            ..Default::default()
        };
        if let Some(g) = &d.ads.google {
            credentials.ca = g.root_certs.clone();
            credentials.server_name = google_host;
            credentials.call_metadata = g.call_metadata.clone();
        }
        let node_json =
            serde_json::json!({"id": n.id, "cluster": n.cluster, "metadata": n.metadata});
        let secret_targets = b
            .clusters
            .iter()
            .filter_map(|c| {
                let name = c.name.as_str();
                let target = match d.grpc_pipes.get(name).and_then(|p| p.first()) {
                    Some(p) => Target::Pipe(p.clone()),
                    None => c.endpoints.iter().find_map(|e| match &e.address {
                        sluice_engine::config::EndpointAddress::Ip(a) => Some(Target::Tcp(*a)),
                        _ => None,
                    })?,
                };
                Some((name.to_string(), target))
            })
            .collect();
        Ok(Self {
            secret_targets,
            status: XdsStatus::new(node_json, &target, d.ads.delta),
            credentials,
            target,
            delta: d.ads.delta,
            node_first_only: d.ads.set_node_on_first_message_only,
            node: Node {
                id: n.id,
                cluster: n.cluster,
                metadata: n.metadata.as_ref().and_then(to_struct),
                user_agent_name: "sluice".into(),
                client_features: vec!["envoy.lb.does_not_support_overprovisioning".into()],
                ..Default::default()
            },
        })
    }
}

/// Runs the client forever against `server` (started from the bootstrap's static resources)
/// and registers its status as the server's admin `/xds_status`.
pub async fn run(server: Arc<Server>, cfg: ClientConfig, core: Core) {
    run_all(vec![server], cfg, core).await
}

/// [`run`] for several servers that serve one proxy (a node-mode pod's outbound and inbound
/// servers): each accepted configuration is applied to all of them, in order, as one version
/// (ACKed once every server took it, NACKed if one refused it), and each serves the client's
/// status as its `/xds_status`.
pub async fn run_all(servers: Vec<Arc<Server>>, cfg: ClientConfig, core: Core) {
    let server = Servers(servers);
    let mut core = core;
    let mut attempt = 0u32;
    for s in &server.0 {
        let status = cfg.status.clone();
        s.set_xds_status(Arc::new(move || status.json()));
    }
    cfg.status.subscriptions(&core);
    let (mut sds, mut sds_rx) = SdsStreams::new(cfg.secret_targets.clone(), cfg.node.clone());
    sds.follow(&core.secret_streams());
    loop {
        // The token is read on every (re)connect: a rotated one is used from the next stream.
        let connected = match cfg.credentials.metadata() {
            Ok(md) => connect(&cfg.target, &cfg.credentials)
                .await
                .map(|ch| (ch, md)),
            Err(e) => Err(e),
        };
        let error = match connected {
            Ok((ch, md)) => {
                let r = stream(&server, &cfg, &mut core, ch, md, (&mut sds, &mut sds_rx)).await;
                if matches!(r, Ok(true) | Err((true, _))) {
                    attempt = 0;
                }
                match r {
                    Err((_, e)) => {
                        tracing::warn!(error = %e, "xDS stream failed");
                        format!("stream: {e}")
                    }
                    Ok(_) => {
                        tracing::warn!("xDS stream closed by the server");
                        "stream closed by the server".to_string()
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "xDS connect failed");
                format!("connect: {e}")
            }
        };
        cfg.status.disconnected(error);
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::info!(?wait, attempt, "xDS reconnecting");
        let until = tokio::time::Instant::now() + wait;
        // Warming timers keep running while disconnected.
        loop {
            let deadline = core
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .filter(|d| *d < until);
            match deadline {
                Some(d) => {
                    tokio::time::sleep_until(d).await;
                    tick(&server, &mut core, &cfg.status).await;
                }
                None => {
                    tokio::time::sleep_until(until).await;
                    break;
                }
            }
        }
    }
}

/// One stream; `Ok(got a response)` when the server closed it, `Err((got, why))` on failure.
async fn stream(
    server: &Servers,
    cfg: &ClientConfig,
    core: &mut Core,
    ch: tonic::transport::Channel,
    metadata: crate::credentials::Metadata,
    (sds, sds_rx): (&mut SdsStreams, &mut mpsc::Receiver<SdsResponse>),
) -> Result<bool, (bool, String)> {
    let mut wire = Wire::open(
        ch,
        cfg.delta,
        core,
        &cfg.node,
        cfg.node_first_only,
        metadata,
    )
    .await
    .map_err(|e| (false, e))?;
    cfg.status.connected();
    let mut got = false;
    // A CDS answer held while a cluster warms (Envoy's CDS pause); only the latest is sent.
    let mut held: Option<Answer> = None;
    loop {
        let deadline = core.next_deadline().map(tokio::time::Instant::from_std);
        let msg = tokio::select! {
            m = wire.recv() => m,
            _ = sleep_until_opt(deadline) => {
                let before = wanted(core);
                tick(server, core, &cfg.status).await;
                follow(&mut wire, core, &cfg.status, &before, &mut held, sds)
                    .await
                    .map_err(|e| (got, e))?;
                continue;
            }
            Some(u) = sds_rx.recv() => {
                let before = wanted(core);
                let update = Update::Sotw(u.resources);
                let error =
                    handle(server, cfg, core, ResourceType::Secret, update, &u.version, false).await;
                if let Some(e) = &error {
                    tracing::warn!(cluster = %u.cluster, version = %u.version, error = %e, "SDS response refused");
                }
                let _ = u.answer.send(error);
                follow(&mut wire, core, &cfg.status, &before, &mut held, sds)
                    .await
                    .map_err(|e| (got, e))?;
                continue;
            }
        };
        let Some(resp) = msg.map_err(|e| (got, e))? else {
            return Ok(got);
        };
        got = true;
        let Some(ty) =
            ResourceType::from_type_url(&resp.type_url).filter(|t| core.types().contains(t))
        else {
            tracing::warn!(type_url = %resp.type_url, "xDS: ignoring a response of a type not subscribed to");
            continue;
        };
        cfg.status.received(ty, &resp.version_info, &resp.nonce);
        let before = wanted(core);
        let error = handle(server, cfg, core, ty, resp.update, &resp.version_info, true).await;
        let a = Answer {
            ty,
            version: resp.version_info,
            nonce: resp.nonce,
            error,
        };
        if ty == ResourceType::Cluster && core.cds_paused() {
            tracing::debug!(version = %a.version, "xDS: CDS answer held while a cluster warms");
            held = Some(a);
        } else {
            answer(&mut wire, core, &cfg.status, &a)
                .await
                .map_err(|e| (got, e))?;
        }
        follow(&mut wire, core, &cfg.status, &before, &mut held, sds)
            .await
            .map_err(|e| (got, e))?;
    }
}

/// Checks one response of `ty` (from the ADS stream, `ads`, or an SDS stream), applies it to the
/// servers and commits it; the NACK detail, if refused. An SDS stream's version is its own:
/// the ADS stream's `version_info` of the type is left alone.
async fn handle(
    server: &Servers,
    cfg: &ClientConfig,
    core: &mut Core,
    ty: ResourceType,
    update: Update,
    version: &str,
    ads: bool,
) -> Option<String> {
    let now = Instant::now();
    // Decoding and validation are CPU work: this worker hands its other tasks (connections)
    // to the rest of the pool while it runs.
    let checked = tokio::task::block_in_place(|| core.check(ty, update, now));
    let result = match checked {
        Err(detail) => Err(detail),
        Ok(c) => {
            let meta = core.meta.next(
                c.resources(),
                ty,
                version,
                c.versions(),
                std::time::SystemTime::now(),
            );
            let meta = match c.plan() {
                Some(plan) => meta.with_plan(plan),
                None => meta,
            };
            let mut versions = core.versions.clone();
            if ads && !cfg.delta {
                versions.insert(ty, version.to_string());
            }
            let applied = match &c.apply {
                Some(a) => apply(server, core, &c, a, || meta.origin(&versions)).await,
                None => Ok(()),
            };
            applied.map(|()| (c, meta))
        }
    };
    match result {
        Ok((c, meta)) => {
            core.commit(c, now);
            core.meta = meta;
            if ads {
                core.versions.insert(ty, version.to_string());
            }
            if core.is_ready() && !server.is_ready() {
                server.set_ready(true);
            }
            None
        }
        Err(detail) => Some(detail),
    }
}

/// The ACK (or NACK with its detail) of one response.
struct Answer {
    ty: ResourceType,
    version: String,
    nonce: String,
    error: Option<String>,
}

/// Sends `a` on the stream, logs it and records it in the status.
async fn answer(
    wire: &mut Wire,
    core: &Core,
    status: &XdsStatus,
    a: &Answer,
) -> Result<(), String> {
    let url = a.ty.type_url();
    match &a.error {
        None => tracing::info!(type_url = %url, version = %a.version, "xDS ACK"),
        Some(e) => tracing::warn!(type_url = %url, version = %a.version, error = %e, "xDS NACK"),
    }
    wire.ack(core, a.ty, &a.nonce, a.error.clone()).await?;
    match &a.error {
        None => status.acked(a.ty, &a.version, &a.nonce),
        Some(e) => status.nacked(a.ty, &a.version, &a.nonce, e),
    }
    Ok(())
}

/// The RDS/EDS/SDS names subscribed to now.
fn wanted(core: &Core) -> [(ResourceType, crate::core::Names); 3] {
    ResourceType::NAMED.map(|t| (t, core.subscribed(t)))
}

/// After a response or a timer: the status, RDS/EDS/SDS subscriptions following the names
/// wanted `before` to now (and the SDS streams' names), and a held CDS answer once no cluster
/// warms.
async fn follow(
    wire: &mut Wire,
    core: &Core,
    status: &XdsStatus,
    before: &[(ResourceType, crate::core::Names); 3],
    held: &mut Option<Answer>,
    sds: &mut SdsStreams,
) -> Result<(), String> {
    status.subscriptions(core);
    for (t, old) in before {
        wire.resubscribe(core, *t, old).await?;
    }
    sds.follow(&core.secret_streams());
    if !core.cds_paused() {
        if let Some(a) = held.take() {
            answer(wire, core, status, &a).await?;
        }
    }
    Ok(())
}

/// Applies what a candidate changes: endpoint-only updates in place when the servers can, else
/// the whole version. `Err` is the NACK detail.
async fn apply(
    server: &Servers,
    core: &Core,
    c: &Candidate,
    a: &Apply,
    origin: impl FnOnce() -> sluice_engine::admin::ConfigOrigin,
) -> Result<(), String> {
    match a {
        Apply::Full { bootstrap } => {
            server
                .apply_with_origin(bootstrap, &core.base(), origin())
                .await
        }
        Apply::Endpoints(clusters) => {
            if server.update_endpoints(clusters).await? {
                return Ok(());
            }
            let bootstrap = tokio::task::block_in_place(|| core.full(c))?;
            server
                .apply_with_origin(&bootstrap, &core.base(), origin())
                .await
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Warming timers: apply what timed-out warming now allows.
async fn tick(server: &Servers, core: &mut Core, status: &XdsStatus) {
    if let Some(bootstrap) = tokio::task::block_in_place(|| core.tick(Instant::now())) {
        core.meta = core.meta.clone().with_plan(core.serving());
        let origin = core.meta.origin(&core.versions);
        if let Err(e) = server
            .apply_with_origin(&bootstrap, &core.base(), origin)
            .await
        {
            tracing::error!(error = %e, "xDS: applying after warming or initial_fetch_timeout failed");
        }
    }
    status.subscriptions(core);
    if core.is_ready() && !server.is_ready() {
        server.set_ready(true);
    }
}

/// The servers one client configures.
struct Servers(Vec<Arc<Server>>);

impl Servers {
    /// Applies one version to every server (the first refusal stops and is returned).
    async fn apply_with_origin(
        &self,
        bootstrap: &Bootstrap,
        source: &Arc<Value>,
        origin: sluice_engine::admin::ConfigOrigin,
    ) -> Result<(), String> {
        for s in &self.0 {
            s.apply_with_origin(bootstrap.clone(), source.clone(), origin.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// An endpoint-only update on every server; false when one of them needs a whole apply
    /// (servers already updated keep their new endpoints, which that apply also carries).
    async fn update_endpoints(
        &self,
        clusters: &[sluice_engine::config::Cluster],
    ) -> Result<bool, String> {
        for s in &self.0 {
            if !s
                .update_endpoints(clusters)
                .await
                .map_err(|e| e.to_string())?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn is_ready(&self) -> bool {
        self.0.iter().all(|s| s.is_ready())
    }

    fn set_ready(&self, ready: bool) {
        for s in &self.0 {
            s.set_ready(ready);
        }
    }
}

/// `node.metadata` (JSON) as a `google.protobuf.Struct`.
fn to_struct(v: &Value) -> Option<Struct> {
    match to_value(v).kind {
        Some(Kind::StructValue(s)) => Some(s),
        _ => None,
    }
}

fn to_value(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    PbValue { kind: Some(kind) }
}
