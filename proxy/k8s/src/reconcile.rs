//! The level-based reconcile: every pass compares what should be captured (the store's pods,
//! [`decide`](crate::decide::decide)d, each with its netns found from its UID) with what the agent has
//! enrolled (its `status`), and enrolls, switches or unenrolls until they agree. Nothing
//! depends on having seen an event: pods running before the watcher started, a pod whose
//! annotation changed, a pod deleted while the watcher was away and an agent that lost every
//! pod (node reboot) all come out right on the next pass. A pass runs after events and every
//! resync period ([`run`]).
//!
//! Which enrolled pods the watcher owns: those whose netns cookie is a known pod's, those of
//! pods that left the store, and CNI enrollments naming a pod (`pod_namespace`/`pod_name`) that
//! no longer exists (after a grace period, so a CNI ADD that beat the watch event is kept) or
//! whose cookie is no longer that pod's (an old sandbox). Anything else (manual `sluice
//! enroll`) is left alone. A pod whose labels cannot be honoured ([`DecideError`]) keeps its
//! last valid decision (or, with none, whatever it has), and the error is logged once.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use sluice_node::{
    agent::{
        health::ReadyGate,
        protocol::{self, ClientError, PodStatus, Request, Response},
    },
    policy::{EnrollSpec, PodIdentity},
};
use tracing::{error, info, warn};

use crate::{
    decide::{decide, pod_key, DecideError, Decision, Settings},
    pod_netns::{self, PodNetns, PodPids},
    store::{Input, Store},
};

/// The agent as the reconcile sees it (blocking calls).
pub trait Agent: Send + Sync {
    /// Every enrolled pod.
    fn status(&self) -> Result<Vec<PodStatus>, AgentCallError>;
    /// Enrolls or re-enrolls (a live mode switch for an enrolled pod).
    fn enroll(&self, spec: &EnrollSpec) -> Result<(), AgentCallError>;
    /// Unenrolls the pod enrolled as `netns`.
    fn unenroll(&self, netns: &str) -> Result<(), AgentCallError>;
}

/// A failed agent call.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    /// The control socket could not be used.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The control socket is served by another process's agent (this one handed over).
    #[error("control socket {path} is served by another agent (pid {pid}): this agent handed over, its pod watcher pauses")]
    OtherAgent { path: PathBuf, pid: i32 },
    /// The agent answered with an error (or something unexpected).
    #[error("agent refused {what}: {message}")]
    Refused { what: String, message: String },
}

/// The agent behind its control socket, through the same client as the CLI and CNI plugin.
pub struct ControlAgent {
    /// The control socket.
    pub path: PathBuf,
    /// Talk only to the agent of this process (`sluice agent --watch-pods`): after a graceful
    /// upgrade the socket path is the new agent's, whose own watcher reconciles from then on,
    /// so this one pauses instead of second-guessing it (its decisions may differ by version).
    pub only_own_process: bool,
}

impl ControlAgent {
    fn call(&self, what: &str, req: &Request) -> Result<Response, AgentCallError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let stream = std::os::unix::net::UnixStream::connect(&self.path).map_err(io)?;
        if self.only_own_process {
            let peer =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                    .map_err(|e| io(e.into()))?
                    .pid();
            if peer != std::process::id() as i32 {
                return Err(AgentCallError::OtherAgent {
                    path: self.path.clone(),
                    pid: peer,
                });
            }
        }
        match protocol::call_on(stream, &self.path, req)? {
            Response::Error { message } => Err(AgentCallError::Refused {
                what: what.to_string(),
                message,
            }),
            r => Ok(r),
        }
    }
}

impl Agent for ControlAgent {
    fn status(&self) -> Result<Vec<PodStatus>, AgentCallError> {
        match self.call("status", &Request::Status)? {
            Response::Status(s) => Ok(s.pods),
            other => Err(unexpected("status", &other)),
        }
    }

    fn enroll(&self, spec: &EnrollSpec) -> Result<(), AgentCallError> {
        let what = format!("enroll {}", spec.netns);
        match self.call(&what, &Request::Enroll(spec.clone()))? {
            Response::Enrolled(_) => Ok(()),
            other => Err(unexpected(&what, &other)),
        }
    }

    fn unenroll(&self, netns: &str) -> Result<(), AgentCallError> {
        let what = format!("unenroll {netns}");
        let req = Request::Unenroll {
            netns: netns.to_string(),
        };
        match self.call(&what, &req)? {
            Response::Unenrolled { .. } => Ok(()),
            other => Err(unexpected(&what, &other)),
        }
    }
}

fn unexpected(what: &str, r: &Response) -> AgentCallError {
    AgentCallError::Refused {
        what: what.to_string(),
        message: format!("unexpected answer {r:?}"),
    }
}

/// How long a CNI enrollment naming a pod the store does not know is kept (the CNI ADD can
/// come before the watch event of a new pod).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// The reconcile state: the store plus what the watcher remembers between passes.
pub struct Reconciler {
    /// Pods and namespaces.
    pub store: Store,
    settings: Settings,
    proc: PathBuf,
    /// The spec last sent per cookie (a pod is re-enrolled when its wanted spec differs).
    sent: HashMap<u64, EnrollSpec>,
    /// The netns cookie last seen per pod UID.
    cookies: HashMap<String, u64>,
    /// Cookies of pods that left the store, to unenroll.
    gone: HashMap<u64, String>,
    /// CNI enrollments naming an unknown pod, since when.
    orphan_since: HashMap<u64, Instant>,
    /// How long such an enrollment is kept ([`ORPHAN_GRACE`]).
    orphan_grace: Duration,
    /// The last decision error logged per pod UID (logged once).
    reported: HashMap<String, String>,
    /// The last valid decision per pod UID: what a pod whose labels turned invalid keeps
    /// (also through an agent restart).
    last_good: HashMap<String, Want>,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// `NAMESPACE/NAME mode` of each pod enrolled or switched.
    pub enrolled: Vec<String>,
    /// The netns of each pod unenrolled.
    pub unenrolled: Vec<String>,
    /// Agent calls that failed.
    pub failures: usize,
}

/// What a found pod should have.
#[derive(Clone)]
// One per node pod (a few hundred at most): the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Want {
    Capture(EnrollSpec),
    Skip(String),
    /// Leave it as it is (undecidable now, or its labels are invalid).
    Keep,
}

impl Reconciler {
    /// A reconciler reading processes under `proc` (`/proc`).
    pub fn new(settings: Settings, proc: PathBuf) -> Self {
        Self {
            store: Store::default(),
            settings,
            proc,
            sent: HashMap::new(),
            cookies: HashMap::new(),
            gone: HashMap::new(),
            orphan_since: HashMap::new(),
            orphan_grace: ORPHAN_GRACE,
            reported: HashMap::new(),
            last_good: HashMap::new(),
        }
    }

    /// Keeps a CNI enrollment naming an unknown pod this long instead of [`ORPHAN_GRACE`].
    pub fn with_orphan_grace(mut self, grace: Duration) -> Self {
        self.orphan_grace = grace;
        self
    }

    /// One pass (blocking): does nothing until both initial lists are complete.
    pub fn pass(&mut self, agent: &dyn Agent, now: Instant) -> Result<Summary, AgentCallError> {
        let mut sum = Summary::default();
        if !self.store.synced() {
            return Ok(sum);
        }
        for (uid, key) in self.store.take_departed() {
            if let Some(c) = self.cookies.remove(&uid) {
                self.gone.insert(c, key);
            }
            self.reported.remove(&uid);
            self.last_good.remove(&uid);
        }
        let enrolled = agent.status()?;
        let pids = PodPids::scan(&self.proc).unwrap_or_else(|e| {
            warn!(proc = %self.proc.display(), error = %e, "cannot scan processes for pods");
            PodPids::default()
        });
        // Every running pod's netns and what it should have.
        let mut live: HashMap<u64, (String, PodNetns, Want)> = HashMap::new();
        for (uid, pod) in self.store.pods() {
            if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                continue;
            }
            let Ok(found) = pod_netns::find(&pids, &self.proc, uid) else {
                continue;
            };
            let want = match want(&self.store, &self.settings, &mut self.reported, uid, pod) {
                Some(w) => {
                    self.last_good.insert(uid.clone(), w.clone());
                    w
                }
                None => self.last_good.get(uid).cloned().unwrap_or(Want::Keep),
            };
            self.cookies.insert(uid.clone(), found.cookie);
            live.insert(found.cookie, (pod_key(pod), found, want));
        }
        let known: std::collections::HashSet<u64> = enrolled.iter().map(|p| p.cookie).collect();
        for entry in &enrolled {
            let act = match live.get(&entry.cookie) {
                Some((key, _, Want::Capture(spec))) => {
                    let mut spec = spec.clone();
                    spec.netns = entry.netns.clone();
                    spec.pod = entry.pod.clone().or_else(|| identity_of(key, &self.store));
                    let same_mode = spec.mode.as_deref() == Some(entry.mode.as_str());
                    if same_mode && self.sent.get(&entry.cookie) == Some(&spec) {
                        continue;
                    }
                    Action::Enroll(key.clone(), spec)
                }
                Some((key, _, Want::Skip(why))) => {
                    Action::Unenroll(key.clone(), why.clone(), entry.netns.clone())
                }
                Some((_, _, Want::Keep)) => continue,
                None => match self.owner_gone(entry, &live, now) {
                    Some((key, why)) => Action::Unenroll(key, why, entry.netns.clone()),
                    None => continue,
                },
            };
            self.act(agent, entry.cookie, act, &mut sum);
        }
        for (cookie, (key, found, want)) in &live {
            let Want::Capture(spec) = want else { continue };
            if known.contains(cookie) {
                continue;
            }
            let mut spec = spec.clone();
            spec.netns = found.netns.clone();
            spec.pod = identity_of(key, &self.store);
            self.act(agent, *cookie, Action::Enroll(key.clone(), spec), &mut sum);
        }
        self.gone
            .retain(|c, _| known.contains(c) && !live.contains_key(c));
        self.orphan_since.retain(|c, _| known.contains(c));
        self.sent
            .retain(|c, _| known.contains(c) || live.contains_key(c));
        Ok(sum)
    }

    /// Whether an enrollment no live pod claims belongs to a pod that is gone: a departed pod's
    /// cookie, or a CNI identity naming a pod that no longer has this netns.
    fn owner_gone(
        &mut self,
        entry: &PodStatus,
        live: &HashMap<u64, (String, PodNetns, Want)>,
        now: Instant,
    ) -> Option<(String, String)> {
        if let Some(key) = self.gone.get(&entry.cookie) {
            return Some((key.clone(), "the pod was deleted".into()));
        }
        let id = entry.pod.as_ref()?;
        let (ns, name) = (id.pod_namespace.as_deref()?, id.pod_name.as_deref()?);
        let key = format!("{ns}/{name}");
        match self.store.pod_named(ns, name) {
            Some((uid, _)) => {
                let current = self.cookies.get(uid)?;
                (live.contains_key(current) && *current != entry.cookie)
                    .then(|| (key, "an earlier sandbox of the pod".into()))
            }
            None => {
                let since = *self.orphan_since.entry(entry.cookie).or_insert(now);
                (now.duration_since(since) >= self.orphan_grace)
                    .then(|| (key, "the pod no longer exists".into()))
            }
        }
    }

    fn act(&mut self, agent: &dyn Agent, cookie: u64, act: Action, sum: &mut Summary) {
        match act {
            Action::Enroll(key, spec) => {
                let mode = spec.mode.clone().unwrap_or_default();
                match agent.enroll(&spec) {
                    Ok(()) => {
                        info!(pod = %key, netns = %spec.netns, cookie, %mode, "pod watcher: enrolled");
                        sum.enrolled.push(format!("{key} {mode}"));
                        self.sent.insert(cookie, spec);
                    }
                    Err(e) => {
                        warn!(pod = %key, error = %e, "pod watcher: enroll failed");
                        sum.failures += 1;
                    }
                }
            }
            Action::Unenroll(key, why, netns) => match agent.unenroll(&netns) {
                Ok(()) => {
                    info!(pod = %key, %netns, cookie, reason = %why, "pod watcher: unenrolled");
                    sum.unenrolled.push(netns);
                    self.sent.remove(&cookie);
                    self.gone.remove(&cookie);
                }
                Err(e) => {
                    warn!(pod = %key, error = %e, "pod watcher: unenroll failed");
                    sum.failures += 1;
                }
            },
        }
    }
}

/// The decision for a found pod; None when it cannot be decided now (namespace unknown, or
/// labels that cannot be honoured: that error is logged once per pod and message).
fn want(
    store: &Store,
    settings: &Settings,
    reported: &mut HashMap<String, String>,
    uid: &str,
    pod: &Pod,
) -> Option<Want> {
    let ns_name = pod.metadata.namespace.as_deref().unwrap_or("");
    let ns = store.namespace(ns_name)?;
    match decide(pod, ns, settings) {
        Ok(Decision::Capture(c)) => {
            reported.remove(uid);
            Some(Want::Capture(c.spec))
        }
        Ok(Decision::Skip(why)) => {
            reported.remove(uid);
            Some(Want::Skip(why))
        }
        Err(e) => {
            let msg = e.to_string();
            if reported.get(uid) != Some(&msg) {
                let kind = match e {
                    DecideError::Malformed { .. } => "invalid",
                    DecideError::Unsupported { .. } => "unsupported",
                };
                error!(pod = %pod_key(pod), error = %msg, "{kind} capture setting: the pod keeps its current enrollment");
                reported.insert(uid.to_string(), msg);
            }
            None
        }
    }
}

// One at a time, never stored.
#[allow(clippy::large_enum_variant)]
enum Action {
    Enroll(String, EnrollSpec),
    /// Pod, reason, the netns it is enrolled as.
    Unenroll(String, String, String),
}

/// The identity the watcher enrolls a pod with: its UID stands in for the sandbox id (the CNI
/// plugin's key), so a CNI DEL finds the pod by its netns.
fn identity_of(key: &str, store: &Store) -> Option<PodIdentity> {
    let (ns, name) = key.split_once('/')?;
    let (uid, _) = store.pod_named(ns, name)?;
    Some(PodIdentity {
        container_id: uid.clone(),
        pod_name: Some(name.to_string()),
        pod_namespace: Some(ns.to_string()),
    })
}

/// How [`run`] paces itself and reports readiness.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// A pass at least this often, events or not (an agent restart sends no event).
    pub resync: Duration,
    /// After a watch error, not ready for this long (longer than the watcher's backoff, so a
    /// server that keeps failing keeps the agent not ready).
    pub error_hold: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(5),
            error_hold: Duration::from_secs(35),
        }
    }
}

/// Why the watcher is not ready before its first lists are complete.
pub const NOT_SYNCED: &str =
    "pod watcher: waiting for the first list of pods and namespaces from the Kubernetes API server";

/// Runs passes over `inputs` until the stream ends. `ready` is true while both initial lists
/// are complete and no watch error happened within `error_hold`; `directory` gets the pods'
/// metadata after every batch of events.
pub async fn run<S>(
    inputs: S,
    mut rec: Reconciler,
    agent: Arc<dyn Agent>,
    opts: LoopOptions,
    ready: Option<ReadyGate>,
    directory: Option<crate::directory::PodDirectory>,
) where
    S: Stream<Item = Input> + Send,
{
    let mut inputs = std::pin::pin!(inputs);
    let mut tick = tokio::time::interval(opts.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<(Instant, String)> = None;
    let mut was_ready = false;
    let mut paused = false;
    loop {
        tokio::select! {
            item = inputs.next() => {
                let Some(item) = item else { return };
                let mut items = vec![item];
                // Everything already queued goes into the same pass.
                while let Some(Some(more)) = futures_util::FutureExt::now_or_never(inputs.next()) {
                    items.push(more);
                }
                for i in items {
                    if let Input::WatchError(msg) = &i {
                        if last_error.as_ref().is_none_or(|(t, _)| t.elapsed() >= opts.error_hold) {
                            error!(error = %msg, "pod watcher: Kubernetes API server unreachable or refusing; not ready until it answers");
                        }
                        last_error = Some((Instant::now(), msg.clone()));
                    }
                    rec.store.apply(i);
                }
                if let Some(d) = &directory {
                    d.publish(&rec.store);
                }
            }
            _ = tick.tick() => {}
        }
        let recent_error = last_error
            .as_ref()
            .filter(|(t, _)| t.elapsed() < opts.error_hold);
        let now_ready = rec.store.synced() && recent_error.is_none();
        if now_ready != was_ready {
            info!(ready = now_ready, "pod watcher readiness");
            was_ready = now_ready;
        }
        if let Some(r) = &ready {
            match recent_error {
                _ if now_ready => r.set_ready(),
                Some((_, msg)) => r.set_not_ready(&format!(
                    "pod watcher: Kubernetes API server unreachable or refusing: {msg}"
                )),
                None => r.set_not_ready(NOT_SYNCED),
            }
        }
        let a = agent.clone();
        let done = tokio::task::spawn_blocking(move || {
            let r = rec.pass(&*a, Instant::now());
            (rec, r)
        })
        .await;
        let (back, result) = match done {
            Ok(v) => v,
            Err(e) => return error!(error = %e, "pod watcher pass panicked"),
        };
        rec = back;
        match result {
            Err(e @ AgentCallError::OtherAgent { .. }) => {
                if !paused {
                    info!(reason = %e, "pod watcher paused");
                    paused = true;
                }
            }
            Err(e) => warn!(error = %e, "pod watcher: agent not reachable; retrying"),
            Ok(_) => paused = false,
        }
    }
}
