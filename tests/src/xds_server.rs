//! A scripted ADS management server for tests (tonic, envoy-types' `AggregatedDiscoveryService`):
//! the test sets numbered snapshots ([`XdsServer::set`]); every stream, State-of-the-world or
//! Delta, is pushed the difference; every ACK and NACK it receives is recorded ([`Ack`]) with the
//! snapshot version its nonce carried. A snapshot may be set for the streams of some nodes only
//! ([`XdsServer::set_for`], node mode's per-pod streams), and every stream's node and end are
//! recorded ([`StreamRecord`]). [`XdsServer::stop`] kills the server and its streams;
//! [`XdsServer::restart`] serves again on the same port.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use futures_util::Stream;
use serde_json::Value;
use sluice_xds::convert::{json_to_any, Any};
use tokio::{sync::watch, task::JoinHandle};
use tonic::{Request, Response, Status, Streaming};

/// Type URLs.
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RouteConfiguration.
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Cluster.
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// ClusterLoadAssignment.
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of secrets (SDS over ADS).
pub const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// One ACK or NACK the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The type.
    pub type_url: String,
    /// The snapshot version of the response it answers (by nonce).
    pub version: String,
    /// `error_detail.message` (a NACK) or None (an ACK).
    pub error: Option<String>,
}

/// When one response was queued and when its ACK or NACK arrived (for the xDS benchmark).
#[derive(Debug, Clone)]
pub struct AckTime {
    /// The type.
    pub type_url: String,
    /// The snapshot version of the response.
    pub version: String,
    /// When the server queued the response.
    pub sent: Instant,
    /// When its ACK or NACK arrived.
    pub acked: Instant,
}

/// A snapshot: version and resources by type URL and name.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Version string.
    pub version: String,
    /// type URL -> name -> resource.
    pub resources: BTreeMap<String, BTreeMap<String, Any>>,
}

impl Snapshot {
    /// A snapshot from `(type_url, JSON)` pairs (names from `name` / `cluster_name`).
    pub fn from_json(version: &str, items: &[(&str, Value)]) -> Self {
        let mut resources: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
        for (ty, json) in items {
            let name = json
                .get("name")
                .or_else(|| json.get("cluster_name"))
                .and_then(Value::as_str)
                .expect("resource name")
                .to_string();
            let any = json_to_any(ty, json).unwrap_or_else(|e| panic!("{e}"));
            resources
                .entry(ty.to_string())
                .or_default()
                .insert(name, any);
        }
        Self {
            version: version.into(),
            resources,
        }
    }
}

impl Snapshot {
    /// The types whose resources differ between `self` and `other`.
    pub fn changed_types<'a>(&'a self, other: &'a Snapshot) -> Vec<&'a str> {
        let types: BTreeSet<&String> = self
            .resources
            .keys()
            .chain(other.resources.keys())
            .collect();
        types
            .into_iter()
            .filter(|t| self.resources.get(*t) != other.resources.get(*t))
            .map(String::as_str)
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Ack>>,
    times: Mutex<Vec<AckTime>>,
    /// SotW: do not resend a type whose resources did not change since the last response of
    /// that type (as a per-type versioned server does); off by default, where every snapshot
    /// version is sent for every type.
    skip_unchanged: std::sync::atomic::AtomicBool,
    /// Resources a Delta stream sent, in total (to check a reconnect resends nothing).
    delta_sent: Mutex<usize>,
    streams: Mutex<usize>,
    /// `node.id` of every request that carried a node.
    nodes: Mutex<Vec<String>>,
    /// Send RDS/EDS resources nobody subscribed to as well (a misbehaving server).
    unrequested: std::sync::atomic::AtomicBool,
    /// (part of a node id, snapshot): what streams of matching nodes get instead of the default.
    per_node: Mutex<Vec<(String, Arc<Snapshot>)>>,
    /// Every stream that sent a node.
    records: Mutex<Vec<StreamRecord>>,
}

/// One stream as the server saw it.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// The node of its first request.
    pub node: Node,
    /// The call's `authorization` metadata.
    pub authorization: Option<String>,
    /// The call's ASCII metadata, `(key, value)` (headers included).
    pub metadata: Vec<(String, String)>,
    /// When it ended (None while open).
    pub closed: Option<Instant>,
}

impl Shared {
    fn acked(&self, type_url: &str, version: &str, sent: Instant, error: Option<String>) {
        let acked = Instant::now();
        self.log.lock().unwrap().push(Ack {
            type_url: type_url.to_string(),
            version: version.to_string(),
            error,
        });
        self.times.lock().unwrap().push(AckTime {
            type_url: type_url.to_string(),
            version: version.to_string(),
            sent,
            acked,
        });
    }

    /// The snapshot for `node`: the first [`XdsServer::set_for`] entry its id contains, else
    /// `default`.
    fn snapshot_for(&self, node: Option<&str>, default: Arc<Snapshot>) -> Arc<Snapshot> {
        let Some(id) = node else { return default };
        self.per_node
            .lock()
            .unwrap()
            .iter()
            .find(|(part, _)| id.contains(part.as_str()))
            .map_or(default, |(_, s)| s.clone())
    }
}

/// Records a stream's node once, and its end when the stream's task ends.
struct StreamGuard {
    shared: Arc<Shared>,
    index: Option<usize>,
    id: Option<String>,
    authorization: Option<String>,
    metadata: Vec<(String, String)>,
}

impl StreamGuard {
    fn new<T>(shared: Arc<Shared>, req: &Request<T>) -> Self {
        let authorization = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let metadata = req
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().ok()?.to_string()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        Self {
            shared,
            index: None,
            id: None,
            authorization,
            metadata,
        }
    }

    fn saw(&mut self, node: &Option<Node>) {
        let Some(n) = node else { return };
        self.shared.nodes.lock().unwrap().push(n.id.clone());
        if self.index.is_none() {
            let mut r = self.shared.records.lock().unwrap();
            r.push(StreamRecord {
                node: n.clone(),
                authorization: self.authorization.clone(),
                metadata: self.metadata.clone(),
                closed: None,
            });
            self.index = Some(r.len() - 1);
            self.id = Some(n.id.clone());
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            self.shared.records.lock().unwrap()[i].closed = Some(Instant::now());
        }
    }
}

/// The running server.
pub struct XdsServer {
    /// Where it listens (TCP).
    pub addr: SocketAddr,
    /// The unix socket it listens on instead, for [`start_unix`](Self::start_unix).
    pub unix: Option<std::path::PathBuf>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    shared: Arc<Shared>,
    /// Closes every open stream when set to true.
    kill: watch::Sender<bool>,
    /// Serve TLS with this config ([`start_tls`](Self::start_tls)).
    tls: Option<Arc<rustls::ServerConfig>>,
    task: Option<JoinHandle<()>>,
}

impl XdsServer {
    /// Starts on a free loopback port with an empty snapshot.
    pub async fn start() -> Self {
        Self::start_on(None).await
    }

    /// Starts on the unix socket `path` (an Envoy `pipe` address).
    pub async fn start_unix(path: std::path::PathBuf) -> Self {
        Self::start_on(Some(path)).await
    }

    /// Starts on a free loopback port serving TLS with `config` (ALPN h2).
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(None, Some(config)).await
    }

    async fn start_on(unix: Option<std::path::PathBuf>) -> Self {
        Self::start_with(unix, None).await
    }

    async fn start_with(
        unix: Option<std::path::PathBuf>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        let (kill, _) = watch::channel(false);
        let mut s = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            unix,
            snapshot,
            shared: Arc::default(),
            kill,
            tls,
            task: None,
        };
        s.serve().await;
        s
    }

    async fn serve(&mut self) {
        // A fresh kill switch per serve: `stop` ends the streams and, through the graceful
        // shutdown below, the connections too, so a client cannot keep using a dead server's
        // HTTP/2 connection.
        if *self.kill.borrow() {
            self.kill = watch::channel(false).0;
        }
        let ads = Ads {
            snapshot: self.snapshot.subscribe(),
            shared: self.shared.clone(),
            kill: self.kill.subscribe(),
        };
        // The same server answers SecretDiscoveryService's StreamSecrets (as pilot-agent's SDS
        // server does) from the same snapshot.
        let router = tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(ads.clone()))
            .add_service(AggregatedDiscoveryServiceServer::new(ads));
        let mut kill = self.kill.subscribe();
        let killed = async move {
            let _ = kill.wait_for(|k| *k).await;
        };
        self.task = Some(match &self.unix {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                let l = tokio::net::UnixListener::bind(path).expect("bind unix");
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
                tokio::spawn(async move {
                    let _ = router.serve_with_incoming_shutdown(incoming, killed).await;
                })
            }
            None => {
                let l = tokio::net::TcpListener::bind(self.addr)
                    .await
                    .expect("bind");
                self.addr = l.local_addr().unwrap();
                // TCP_NODELAY, as Go (istiod, go-control-plane) sets on every connection: with
                // Nagle, a response's last segment can wait for the proxy's delayed ACK (40 ms).
                let incoming = {
                    use futures_util::StreamExt as _;
                    tokio_stream::wrappers::TcpListenerStream::new(l).map(|r| {
                        r.inspect(|s| {
                            let _ = s.set_nodelay(true);
                        })
                    })
                };
                match &self.tls {
                    Some(config) => {
                        let incoming = tls_incoming(incoming, config.clone());
                        tokio::spawn(async move {
                            let _ = router.serve_with_incoming_shutdown(incoming, killed).await;
                        })
                    }
                    None => tokio::spawn(async move {
                        let _ = router.serve_with_incoming_shutdown(incoming, killed).await;
                    }),
                }
            }
        });
    }

    /// Pushes `snap` to every stream (now and on every new stream).
    pub fn set(&self, snap: Snapshot) {
        self.snapshot.send_replace(Arc::new(snap));
    }

    /// Streams of nodes whose id contains `node_part` get `snap` (now and from then on) instead
    /// of the default snapshot of [`set`](Self::set).
    pub fn set_for(&self, node_part: &str, snap: Snapshot) {
        {
            let mut p = self.shared.per_node.lock().unwrap();
            p.retain(|(part, _)| part != node_part);
            p.push((node_part.to_string(), Arc::new(snap)));
        }
        // Wakes every stream to look again.
        self.snapshot.send_modify(|_| {});
    }

    /// Every stream that sent a node, in order of their first request.
    pub fn stream_records(&self) -> Vec<StreamRecord> {
        self.shared.records.lock().unwrap().clone()
    }

    /// Stops listening and ends every stream (the port is closed).
    pub async fn stop(&mut self) {
        self.kill.send_replace(true);
        if let Some(mut t) = self.task.take() {
            // Graceful: every stream ends on the kill switch, then tonic closes the
            // connections; a client that never reads its GOAWAY is cut off after 5 s.
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.serve().await;
    }

    /// When each response was queued and answered, in order of the answers.
    pub fn ack_times(&self) -> Vec<AckTime> {
        self.shared.times.lock().unwrap().clone()
    }

    /// SotW: skip a type whose resources did not change (see `Shared::skip_unchanged`).
    pub fn skip_unchanged_types(&self, yes: bool) {
        self.shared
            .skip_unchanged
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every ACK/NACK received so far.
    pub fn log(&self) -> Vec<Ack> {
        self.shared.log.lock().unwrap().clone()
    }

    /// From now on, also send RDS/EDS resources the client did not subscribe to.
    pub fn send_unrequested(&self, yes: bool) {
        self.shared
            .unrequested
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resources sent on Delta streams so far.
    pub fn delta_resources_sent(&self) -> usize {
        *self.shared.delta_sent.lock().unwrap()
    }

    /// `node.id` of every request that carried a node, in order.
    pub fn node_ids(&self) -> Vec<String> {
        self.shared.nodes.lock().unwrap().clone()
    }

    /// Streams opened so far.
    pub fn streams(&self) -> usize {
        *self.shared.streams.lock().unwrap()
    }

    /// Waits (up to 10 s) for the ACK or NACK of `version` of `type_url`.
    pub async fn wait_for(&self, type_url: &str, version: &str) -> Ack {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = self
                .log()
                .into_iter()
                .find(|a| a.type_url == type_url && a.version == version)
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no ACK/NACK of {type_url} version {version}; log: {:#?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.kill.send_replace(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Accepted TCP connections after their TLS handshake (a failed handshake is an error item,
/// which the server logs and skips).
fn tls_incoming(
    tcp: impl Stream<Item = std::io::Result<tokio::net::TcpStream>>,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = std::io::Result<TlsIo>> {
    use futures_util::StreamExt as _;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tcp.then(move |r| {
        let acceptor = acceptor.clone();
        async move { Ok(TlsIo(acceptor.accept(r?).await?)) }
    })
}

/// A server-side TLS connection, as tonic's incoming stream wants it.
struct TlsIo(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct Ads {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    shared: Arc<Shared>,
    kill: watch::Receiver<bool>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn wildcard(ty: &str) -> bool {
    ty == LDS || ty == CDS
}

/// A hash of a SotW response's resources.
fn fingerprint(resources: &[Any]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in resources {
        r.type_url.hash(&mut h);
        r.value.hash(&mut h);
    }
    h.finish()
}

fn version_of(any: &Any) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// SecretDiscoveryService: a State-of-the-world stream like the ADS one (its requests carry
/// the Secret type URL); Delta and Fetch are not served.
#[tonic::async_trait]
impl SecretDiscoveryService for Ads {
    type StreamSecretsStream = Out<DiscoveryResponse>;
    type DeltaSecretsStream = Out<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        self.stream_aggregated_resources(req).await
    }

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("DeltaSecrets"))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("FetchSecrets"))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        *self.shared.streams.lock().unwrap() += 1;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (mut snap_rx, shared, mut kill) = (
            self.snapshot.clone(),
            self.shared.clone(),
            self.kill.clone(),
        );
        let mut guard = StreamGuard::new(shared.clone(), &req);
        let mut inbound = req.into_inner();
        tokio::spawn(async move {
            // Per type: subscribed names (None = wildcard), last sent version, nonce -> version.
            let mut subs: HashMap<String, Option<BTreeSet<String>>> = HashMap::new();
            let mut sent: HashMap<String, String> = HashMap::new();
            let mut prints: HashMap<String, u64> = HashMap::new();
            let mut nonces: HashMap<String, (String, Instant)> = HashMap::new();
            let mut n = 0u64;
            loop {
                let mut changed_types: Vec<String> = Vec::new();
                tokio::select! {
                    _ = kill.wait_for(|k| *k) => return,
                    r = snap_rx.changed() => {
                        if r.is_err() { return; }
                        changed_types = subs.keys().cloned().collect();
                    }
                    m = inbound.message() => {
                        let Ok(Some(m)) = m else { return };
                        guard.saw(&m.node);
                        if !m.response_nonce.is_empty() {
                            if let Some((v, sent)) = nonces.get(&m.response_nonce) {
                                shared.acked(&m.type_url, v, *sent, m.error_detail.map(|e| e.message));
                            }
                        }
                        let names = (!wildcard(&m.type_url))
                            .then(|| m.resource_names.iter().cloned().collect::<BTreeSet<_>>());
                        if subs.get(&m.type_url) != Some(&names) {
                            subs.insert(m.type_url.clone(), names);
                            sent.remove(&m.type_url);
                        }
                        changed_types.push(m.type_url.clone());
                    }
                }
                // A new snapshot set while a request was handled is taken now, for every
                // type: borrowing it below marks it seen, so its own wake-up never comes.
                if snap_rx.has_changed().unwrap_or(false) {
                    changed_types.extend(subs.keys().cloned());
                }
                let snap =
                    shared.snapshot_for(guard.id.as_deref(), snap_rx.borrow_and_update().clone());
                for ty in changed_types {
                    if snap.version.is_empty() || sent.get(&ty) == Some(&snap.version) {
                        continue;
                    }
                    let Some(names) = subs.get(&ty) else { continue };
                    let resources: Vec<Any> = snap
                        .resources
                        .get(&ty)
                        .into_iter()
                        .flatten()
                        .filter(|(name, _)| {
                            names.as_ref().is_none_or(|s| s.contains(*name))
                                || shared
                                    .unrequested
                                    .load(std::sync::atomic::Ordering::Relaxed)
                        })
                        .map(|(_, a)| a.clone())
                        .collect();
                    if shared
                        .skip_unchanged
                        .load(std::sync::atomic::Ordering::Relaxed)
                    {
                        let print = fingerprint(&resources);
                        if prints.get(&ty) == Some(&print) {
                            sent.insert(ty.clone(), snap.version.clone());
                            continue;
                        }
                        prints.insert(ty.clone(), print);
                    }
                    n += 1;
                    let nonce = n.to_string();
                    nonces.insert(nonce.clone(), (snap.version.clone(), Instant::now()));
                    sent.insert(ty.clone(), snap.version.clone());
                    let resp = DiscoveryResponse {
                        version_info: snap.version.clone(),
                        resources,
                        type_url: ty,
                        nonce,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        *self.shared.streams.lock().unwrap() += 1;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let (mut snap_rx, shared, mut kill) = (
            self.snapshot.clone(),
            self.shared.clone(),
            self.kill.clone(),
        );
        let mut guard = StreamGuard::new(shared.clone(), &req);
        let mut inbound = req.into_inner();
        tokio::spawn(async move {
            // Per type: subscribed names (None = wildcard) and what the client has (name -> version).
            let mut subs: HashMap<String, Option<BTreeSet<String>>> = HashMap::new();
            let mut has: HashMap<String, HashMap<String, String>> = HashMap::new();
            let mut nonces: HashMap<String, (String, Instant)> = HashMap::new();
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = kill.wait_for(|k| *k) => return,
                    r = snap_rx.changed() => if r.is_err() { return },
                    m = inbound.message() => {
                        let Ok(Some(m)) = m else { return };
                        guard.saw(&m.node);
                        if !m.response_nonce.is_empty() {
                            if let Some((v, sent)) = nonces.get(&m.response_nonce) {
                                shared.acked(&m.type_url, v, *sent, m.error_detail.map(|e| e.message));
                            }
                        }
                        let sub = subs.entry(m.type_url.clone()).or_insert_with(|| {
                            (!wildcard(&m.type_url)).then(BTreeSet::new)
                        });
                        if let Some(s) = sub {
                            s.extend(m.resource_names_subscribe.iter().cloned());
                            for u in &m.resource_names_unsubscribe {
                                s.remove(u);
                            }
                        }
                        let h = has.entry(m.type_url.clone()).or_default();
                        h.extend(m.initial_resource_versions.clone());
                        for u in &m.resource_names_unsubscribe {
                            h.remove(u);
                        }
                    }
                }
                let snap =
                    shared.snapshot_for(guard.id.as_deref(), snap_rx.borrow_and_update().clone());
                if snap.version.is_empty() {
                    continue;
                }
                for (ty, names) in &subs {
                    let h = has.entry(ty.clone()).or_default();
                    let current: BTreeMap<&String, &Any> = snap
                        .resources
                        .get(ty)
                        .into_iter()
                        .flatten()
                        .filter(|(name, _)| {
                            names.as_ref().is_none_or(|s| s.contains(*name))
                                || shared
                                    .unrequested
                                    .load(std::sync::atomic::Ordering::Relaxed)
                        })
                        .collect();
                    let mut resources = Vec::new();
                    for (name, any) in &current {
                        let v = version_of(any);
                        if h.get(*name) != Some(&v) {
                            h.insert((*name).clone(), v.clone());
                            resources.push(Resource {
                                name: (*name).clone(),
                                version: v,
                                resource: Some((*any).clone()),
                                ..Default::default()
                            });
                        }
                    }
                    let removed: Vec<String> = h
                        .keys()
                        .filter(|k| !current.contains_key(k))
                        .cloned()
                        .collect();
                    for r in &removed {
                        h.remove(r);
                    }
                    if resources.is_empty() && removed.is_empty() {
                        continue;
                    }
                    *shared.delta_sent.lock().unwrap() += resources.len();
                    n += 1;
                    let nonce = n.to_string();
                    nonces.insert(nonce.clone(), (snap.version.clone(), Instant::now()));
                    let resp = DeltaDiscoveryResponse {
                        system_version_info: snap.version.clone(),
                        resources,
                        type_url: ty.clone(),
                        removed_resources: removed,
                        nonce,
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The stream records of the node whose id is `id`.
pub fn streams_of(server: &XdsServer, id: &str) -> Vec<StreamRecord> {
    server
        .stream_records()
        .into_iter()
        .filter(|r| r.node.id == id)
        .collect()
}

/// The string `key` of the stream's node metadata (panics when it is missing).
pub fn metadata(r: &StreamRecord, key: &str) -> String {
    use envoy_types::pb::google::protobuf::value::Kind;
    let fields = &r.node.metadata.as_ref().expect("node metadata").fields;
    match fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("metadata {key}: {other:?} in {:?}", r.node),
    }
}
