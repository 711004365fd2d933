//! The ADS client's state, independent of the wire variant (State-of-the-world or Delta): the
//! accepted resources, what to subscribe to, warming and when a configuration is complete.
//!
//! A response is checked whole ([`Core::check`]): decoded, merged into a copy of the accepted
//! resources, assembled with the bootstrap and run through the engine's validation. A failure is
//! the NACK detail (naming the resource and the field path); success is a [`Candidate`] the
//! stream applies to the server and then [`commit`](Core::commit)s before ACKing.
//!
//! Warming is per resource, as Envoy's listener and cluster managers do it: a listener whose RDS
//! names, or an EDS cluster whose assignment, have not arrived (nor timed out) warms on its own.
//! The configuration applied meanwhile ([`Plan`]) has every other resource up to date and the
//! warming one at its previous version (or left out if new); when it completes, it is applied
//! with it. Before the first complete configuration (`/ready`), the whole accepted state waits,
//! as Envoy's init manager holds the server until every resource has initialized.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::Value;
use sluice_engine::config::{self, Bootstrap, DynamicResources, DEFAULT_INITIAL_FETCH_TIMEOUT};

pub use self::wanted::Names;
use self::wanted::{union, WantedMemo};
use crate::{
    assemble::{assemble, static_eds, with_assignment, Assembly, Resources},
    convert::{decode_resource, Any, ResourceType},
    resource::Resource,
};

/// One response's resources.
#[derive(Debug)]
pub enum Update {
    /// State of the world: every resource of the type (LDS/CDS: absence = removal; RDS/EDS:
    /// the named ones, others stay).
    Sotw(Vec<Any>),
    /// Delta: added or changed resources (name, version, resource) and removed names.
    Delta {
        /// `(name, version, Any)`.
        added: Vec<(String, String, Any)>,
        /// `removed_resources`.
        removed: Vec<String>,
    },
}

/// How a checked response changes the running configuration.
#[derive(Debug)]
pub enum Apply {
    /// A whole new version: the validated configuration. (The server is given the bootstrap
    /// file's document, not the assembled one: `/config_dump` shows the xDS resources from the
    /// origin metadata, which shares their JSON with the accepted state.)
    Full {
        /// The validated configuration.
        bootstrap: Box<Bootstrap>,
    },
    /// An EDS response that changes the endpoints of running clusters only: their new configs
    /// (validated one by one), for `Server::update_endpoints`. If the server finds one differs
    /// in more than endpoints, [`Core::full`] gives the whole version instead.
    Endpoints(Vec<config::Cluster>),
}

/// A checked response, ready to apply and commit.
#[derive(Debug)]
pub struct Candidate {
    ty: ResourceType,
    resources: Resources,
    /// A State-of-the-world response's resources by their bytes (`None` for Delta).
    memo: Option<Memo>,
    /// Delta: the versions this response sets, and the names it removes.
    versions: BTreeMap<String, String>,
    removed: Vec<String>,
    /// What the server would run (`None`: what runs now, before the first complete
    /// configuration).
    plan: Option<Plan>,
    /// What to apply, if the running configuration changes.
    pub apply: Option<Apply>,
    /// Nothing it needs is still warming.
    pub complete: bool,
}

impl Candidate {
    /// The accepted state this candidate would become.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// What the server runs once it is applied (`None`: before the first complete
    /// configuration, what runs now).
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// Delta: the versions of the resources this response adds or changes.
    pub fn versions(&self) -> &BTreeMap<String, String> {
        &self.versions
    }
}

/// The client's state across streams (it survives reconnects).
#[derive(Debug)]
pub struct Core {
    base: Arc<Value>,
    dynamic: DynamicResources,
    accepted: Resources,
    /// Delta: each accepted resource's version, per type (`initial_resource_versions`).
    pub resource_versions: BTreeMap<ResourceType, BTreeMap<String, String>>,
    /// SotW: the last accepted `version_info` per type.
    pub versions: BTreeMap<ResourceType, String>,
    /// Per RDS/EDS name: when it was first wanted and its `initial_fetch_timeout`.
    wanted_since: HashMap<(ResourceType, String), (Instant, Option<Duration>)>,
    /// LDS/CDS have had a response (or their initial fetch timed out).
    initialized: BTreeSet<ResourceType>,
    start: Instant,
    /// Before the first complete configuration: the accepted state waits for all it needs.
    pending: bool,
    /// What the server runs (the last applied plan).
    serving: Plan,
    /// Timeouts up to this instant have been taken into account.
    evaluated: Instant,
    ready: bool,
    /// Per-resource version and time for /config_dump.
    pub meta: crate::origin::Meta,
    /// Per type, the last accepted State-of-the-world response's resources by their bytes.
    memo: HashMap<ResourceType, Memo>,
    /// The RDS/EDS names of listener and cluster sets seen lately.
    names: WantedMemo,
    /// The RDS, EDS and SDS names `wanted_since` was last brought up to date with.
    tracked: [Option<Names>; 3],
    /// The secrets the bootstrap file's own listeners and clusters ask for, and where from.
    static_secret_refs: Vec<crate::assemble::SecretRef>,
}

/// A decoded resource, shared with the accepted state.
#[derive(Debug, Clone)]
struct Shared {
    name: Arc<str>,
    res: Arc<Resource>,
}

/// A fast hasher for the client's own tables (the keys come from the management server, which
/// the client trusts with its whole configuration).
type FastHash = foldhash::fast::RandomState;

/// Resources by the bytes they came as (an `Any`'s `value`).
type Memo = HashMap<Vec<u8>, Shared, FastHash>;

impl Core {
    /// A client for `base` (the bootstrap file as JSON) whose `dynamic_resources` are `dynamic`.
    pub fn new(base: Value, dynamic: DynamicResources, now: Instant) -> Self {
        let static_names = static_eds(&base).map(|(_, _, e)| e).collect();
        let static_secret_refs = crate::assemble::static_secrets(&base);
        let static_secrets = static_secret_refs.iter().map(|(n, _)| n.clone()).collect();
        Self {
            base: Arc::new(base),
            dynamic,
            accepted: Resources::new(),
            resource_versions: BTreeMap::new(),
            versions: BTreeMap::new(),
            wanted_since: HashMap::new(),
            initialized: BTreeSet::new(),
            start: now,
            pending: false,
            serving: Plan::default(),
            evaluated: now,
            ready: false,
            meta: crate::origin::Meta::default(),
            memo: HashMap::new(),
            names: WantedMemo::new(static_names, static_secrets),
            static_secret_refs,
            tracked: [None, None, None],
        }
    }

    /// The types this client subscribes to at all (LDS/CDS per the bootstrap, RDS/EDS always).
    pub fn types(&self) -> Vec<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .filter(|t| match t {
                ResourceType::Listener => self.dynamic.lds,
                ResourceType::Cluster => self.dynamic.cds,
                _ => true,
            })
            .collect()
    }

    /// Whether `ty` is a wildcard subscription (LDS, CDS).
    pub fn wildcard(ty: ResourceType) -> bool {
        matches!(ty, ResourceType::Listener | ResourceType::Cluster)
    }

    /// The names to subscribe to for `ty` (RDS from HCMs, EDS from EDS clusters, of the accepted
    /// listeners and clusters and of the previous versions serving while those warm, and the
    /// bootstrap file's own EDS clusters; empty for the wildcard types).
    pub fn wanted(&self, ty: ResourceType) -> Names {
        union(
            self.names.names(&self.accepted, ty),
            self.names.names(&self.serving.resources, ty),
        )
    }

    /// The names of `ty` to ask the ADS stream for: [`Core::wanted`], but for secrets only those
    /// some TLS context names with `sds_config: {ads: {}}` (the others come on the SDS streams
    /// of [`Core::secret_streams`]).
    pub fn subscribed(&self, ty: ResourceType) -> Names {
        if ty != ResourceType::Secret {
            return self.wanted(ty);
        }
        let names = self.wanted(ty);
        if !self.secret_refs().any(|(_, from)| from.is_some()) {
            return names;
        }
        let ads: BTreeSet<String> = self
            .secret_refs()
            .filter(|(n, from)| from.is_none() && names.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        Arc::new(ads)
    }

    /// The secrets to ask each SDS stream for: by static cluster, the names TLS contexts name
    /// with a GRPC `api_config_source` to it.
    pub fn secret_streams(&self) -> BTreeMap<String, BTreeSet<String>> {
        let wanted = self.wanted(ResourceType::Secret);
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (n, from) in self.secret_refs() {
            if let Some(c) = from.as_ref().filter(|_| wanted.contains(n)) {
                out.entry(c.to_string()).or_default().insert(n.clone());
            }
        }
        out
    }

    /// Every secret reference of the accepted and running listeners and clusters and of the
    /// bootstrap file's own.
    fn secret_refs(&self) -> impl Iterator<Item = &crate::assemble::SecretRef> {
        [&self.accepted, &self.serving.resources]
            .into_iter()
            .flat_map(|r| {
                [ResourceType::Listener, ResourceType::Cluster]
                    .into_iter()
                    .filter_map(move |t| r.get(&t))
            })
            .flat_map(|m| m.values())
            .flat_map(|v| v.secret_refs())
            .chain(self.static_secret_refs.iter())
    }

    /// The accepted resources of `ty`.
    pub fn accepted(&self, ty: ResourceType) -> Option<&BTreeMap<String, Arc<Resource>>> {
        self.accepted.get(&ty).map(|m| &**m)
    }

    /// Whether `/ready` should answer 200.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether part of the accepted state waits for RDS/EDS resources (or their fetch timeouts)
    /// before it is applied; meanwhile the previous versions serve.
    pub fn warming(&self) -> bool {
        self.pending || !self.serving.warming.is_empty()
    }

    /// The listeners and clusters still warming (after the first complete configuration).
    pub fn warming_resources(&self) -> &BTreeSet<(ResourceType, String)> {
        &self.serving.warming
    }

    /// Whether CDS answers wait: after the first complete configuration, while a cluster warms,
    /// Envoy pauses CDS (its ACK or NACK goes out once no cluster warms).
    pub fn cds_paused(&self) -> bool {
        self.ready
            && self
                .serving
                .warming
                .iter()
                .any(|(t, _)| *t == ResourceType::Cluster)
    }

    /// What the server runs (the last applied plan).
    pub fn serving(&self) -> &Plan {
        &self.serving
    }

    /// Checks one response of `ty`; `Err` is the NACK detail.
    pub fn check(
        &self,
        ty: ResourceType,
        update: Update,
        now: Instant,
    ) -> Result<Candidate, String> {
        let mut resources = self.accepted.clone();
        let mut versions = BTreeMap::new();
        let mut removed_names = Vec::new();
        let wanted = self.wanted(ty);
        let keep = |name: &str| Core::wildcard(ty) || wanted.contains(name);
        let before = resources.get(&ty).cloned().unwrap_or_default();
        let count = match &update {
            Update::Sotw(list) => list.len(),
            Update::Delta { added, .. } => added.len(),
        };
        let mut seen: HashSet<Arc<str>, FastHash> =
            HashSet::with_capacity_and_hasher(count, FastHash::default());
        let memo = self.memo.get(&ty);
        let mut next_memo = None;
        // A resource whose bytes the last State-of-the-world response of its type carried is
        // not decoded again: it is the same resource (decoding is a function of the bytes), and
        // sharing its JSON lets every later comparison stop at the pointer.
        let mut decode = |i: usize, any: &Any| -> Result<Option<Shared>, String> {
            let cached = memo
                .filter(|_| any.type_url == ty.type_url())
                .and_then(|m| m.get(&any.value));
            let d = match cached {
                Some(d) => d.clone(),
                None => {
                    let d = decode_resource(ty, any).map_err(|e| format!("resources[{i}]: {e}"))?;
                    let res = Resource::new(ty, &d.json)
                        .map_err(|e| format!("resources[{i}] {:?}: {e}", d.name))?;
                    Shared {
                        res: Arc::new(res),
                        name: d.name.into(),
                    }
                }
            };
            if !seen.insert(d.name.clone()) {
                return Err(format!("duplicate {} {:?}", ty.kind(), d.name));
            }
            // Envoy ignores resources it did not ask for. A name already accepted is let
            // through without the lookup: the prune below drops it if nothing wants it now.
            Ok((before.contains_key(&*d.name) || keep(&d.name)).then_some(d))
        };
        // Only this type's map of pointers is copied (the others stay shared), and only once
        // something in it changes: a State-of-the-world response that resends every resource
        // of the type leaves the unchanged ones where they are.
        let slot = resources.entry(ty).or_default();
        match update {
            Update::Sotw(list) => {
                let wildcard = Core::wildcard(ty);
                if wildcard {
                    Arc::make_mut(slot).clear();
                }
                let mut memo = Memo::with_capacity_and_hasher(list.len(), FastHash::default());
                for (i, any) in list.into_iter().enumerate() {
                    let Some(d) = decode(i, &any)? else { continue };
                    let prev = before.get(&*d.name);
                    let res = reuse(prev, &d.res);
                    // An unchanged resource is already in the map, unless a wildcard type's
                    // map was cleared.
                    if wildcard || !prev.is_some_and(|p| Arc::ptr_eq(p, &res)) {
                        Arc::make_mut(slot).insert(d.name.to_string(), res.clone());
                    }
                    memo.insert(any.value, Shared { name: d.name, res });
                }
                next_memo = Some(memo);
            }
            Update::Delta { added, removed } => {
                let map = Arc::make_mut(slot);
                for name in removed {
                    map.remove(&name);
                    removed_names.push(name);
                }
                for (i, (name, version, any)) in added.iter().enumerate() {
                    if let Some(d) = decode(i, any)? {
                        if *d.name != **name {
                            return Err(format!(
                                "resources[{i}]: name {name:?} differs from the {} name {:?}",
                                ty.kind(),
                                d.name
                            ));
                        }
                        versions.insert(name.clone(), version.clone());
                        let res = reuse(before.get(&*d.name), &d.res);
                        map.insert(name.clone(), res);
                    }
                }
            }
        }
        let map = &**slot;
        // A listener is checked as it is loaded (its inline routes' clusters must exist); the
        // others are not re-checked against clusters that left since.
        let strict: HashSet<String> = match ty {
            ResourceType::Listener => map
                .iter()
                .filter(|(n, v)| before.get(*n) != Some(*v))
                .map(|(n, _)| n.clone())
                .collect(),
            _ => HashSet::new(),
        };
        prune(&self.names, &mut resources, &self.serving.resources);
        if ty == ResourceType::Endpoint && self.ready && !self.pending {
            let plan = self.select(&resources, now);
            let same_set = |t| plan.resources.get(&t) == self.serving.resources.get(&t);
            if plan.warming == self.serving.warming
                && same_set(ResourceType::Listener)
                && same_set(ResourceType::Cluster)
            {
                let empty = BTreeMap::new();
                let running = self.serving.resources.get(&ty).map_or(&empty, |m| &**m);
                if let Some(clusters) = endpoints_only(running, &plan.resources, &self.base) {
                    return Ok(Candidate {
                        ty,
                        complete: plan.warming.is_empty(),
                        resources,
                        memo: next_memo,
                        versions,
                        removed: removed_names,
                        plan: Some(plan),
                        apply: Some(Apply::Endpoints(clusters)),
                    });
                }
            }
        }
        // The whole accepted state is checked (NACK), warming resources with empty stand-ins.
        let asm = assemble(&self.base, &resources, &strict);
        let bootstrap = validate(&asm)?;
        let complete = self.complete(&asm, now);
        let (plan, apply) = if complete {
            let plan = Plan {
                resources: resources.clone(),
                warming: BTreeSet::new(),
            };
            let apply = Apply::Full {
                bootstrap: Box::new(bootstrap),
            };
            (Some(plan), Some(apply))
        } else if !self.ready {
            (None, None)
        } else {
            let (plan, applied) = self.settle(self.select(&resources, now))?;
            // Also when only what warms changed: the applied origin shows it in /config_dump.
            let apply = (plan != self.serving).then(|| Apply::Full {
                bootstrap: Box::new(applied),
            });
            (Some(plan), apply)
        };
        Ok(Candidate {
            ty,
            resources,
            memo: next_memo,
            versions,
            removed: removed_names,
            plan,
            apply,
            complete,
        })
    }

    /// The whole version a candidate stands for (when an endpoint-only update cannot be done in
    /// place); `Err` is the NACK detail.
    pub fn full(&self, c: &Candidate) -> Result<Bootstrap, String> {
        let resources = c.plan.as_ref().map_or(&c.resources, |p| &p.resources);
        let asm = assemble(&self.base, resources, &HashSet::new());
        validate(&asm)
    }

    /// The document of what runs (tests look into it).
    #[cfg(test)]
    pub(crate) fn serving_doc(&self) -> Value {
        assemble(&self.base, &self.serving.resources, &HashSet::new()).doc
    }

    /// The bootstrap file's document, which the server keeps as its source (its static
    /// resources, node, admin: what `/config_dump` shows beside the xDS resources).
    pub fn base(&self) -> Arc<Value> {
        self.base.clone()
    }

    /// Makes a checked (and, if complete, applied) candidate the accepted state.
    pub fn commit(&mut self, c: Candidate, now: Instant) {
        self.accepted = c.resources;
        if let Some(m) = c.memo {
            self.memo.insert(c.ty, m);
        }
        let v = self.resource_versions.entry(c.ty).or_default();
        for name in &c.removed {
            v.remove(name);
        }
        v.extend(c.versions);
        if let Some(m) = self.accepted.get(&c.ty) {
            if !sorted_subset(v.keys(), m.keys()) {
                v.retain(|n, _| m.contains_key(n));
            }
        }
        self.initialized.insert(c.ty);
        match c.plan {
            Some(plan) => {
                self.serving = plan;
                self.pending = false;
            }
            None => self.pending = true,
        }
        // What only a version that no longer runs named.
        prune(&self.names, &mut self.accepted, &self.serving.resources);
        self.track_wanted(now);
        self.evaluated = now;
        if c.complete {
            self.ready = self.ready || self.lds_cds_initialized(now);
        }
    }

    /// Timers: once warming resources time out (or LDS/CDS's initial fetch does), the accepted
    /// state is assembled with empty stand-ins; returns what to apply, if anything.
    pub fn tick(&mut self, now: Instant) -> Option<Bootstrap> {
        self.evaluated = now;
        if self.ready {
            if self.serving.warming.is_empty() {
                return None;
            }
            let plan = self.select(&self.accepted, now);
            if plan == self.serving {
                return None;
            }
            let (plan, applied) = self.settle(plan).ok()?;
            let changed = plan != self.serving;
            self.serving = plan;
            prune(&self.names, &mut self.accepted, &self.serving.resources);
            return changed.then_some(applied);
        }
        if !self.pending {
            if !self.lds_cds_initialized(now) {
                return None;
            }
            self.ready = true;
            return self.applied_whole();
        }
        let asm = assemble(&self.base, &self.accepted, &HashSet::new());
        if !self.complete(&asm, now) {
            return None;
        }
        self.ready = self.lds_cds_initialized(now);
        self.applied_whole()
    }

    /// The whole accepted state as the running plan (before `/ready`: stand-ins for what is
    /// missing).
    fn applied_whole(&mut self) -> Option<Bootstrap> {
        let asm = assemble(&self.base, &self.accepted, &HashSet::new());
        let b = validate(&asm).ok()?;
        self.pending = false;
        self.serving = Plan {
            resources: self.accepted.clone(),
            warming: BTreeSet::new(),
        };
        Some(b)
    }

    /// The next instant a timer may change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut out: Option<Instant> = None;
        let mut consider = |t: Instant| out = Some(out.map_or(t, |o| o.min(t)));
        if self.warming() {
            for ((ty, name), (since, timeout)) in &self.wanted_since {
                let arrived = self.accepted.get(ty).is_some_and(|m| m.contains_key(name));
                if let (false, Some(t)) = (arrived, timeout) {
                    consider(*since + *t);
                }
            }
        }
        if !self.ready {
            for (ty, t) in self.initial_timeouts() {
                if !self.initialized.contains(&ty) {
                    if let Some(t) = t {
                        consider(self.start + t);
                    }
                }
            }
        }
        // Deadlines already taken into account would fire again at once.
        out.filter(|t| *t > self.evaluated)
    }

    fn initial_timeouts(&self) -> Vec<(ResourceType, Option<Duration>)> {
        let mut v = Vec::new();
        if self.dynamic.lds {
            v.push((
                ResourceType::Listener,
                self.dynamic.lds_initial_fetch_timeout,
            ));
        }
        if self.dynamic.cds {
            v.push((
                ResourceType::Cluster,
                self.dynamic.cds_initial_fetch_timeout,
            ));
        }
        v
    }

    fn lds_cds_initialized(&self, now: Instant) -> bool {
        self.initial_timeouts().into_iter().all(|(ty, t)| {
            self.initialized.contains(&ty) || t.is_some_and(|t| now >= self.start + t)
        })
    }

    /// No needed resource is missing, except ones whose initial fetch timed out.
    fn complete(&self, asm: &Assembly, now: Instant) -> bool {
        asm.missing
            .iter()
            .all(|(ty, name)| self.timed_out(*ty, name, now))
    }

    /// Whether the initial fetch of RDS/EDS `name` has timed out by `now` (a name not tracked
    /// yet has just started waiting).
    fn timed_out(&self, ty: ResourceType, name: &str, now: Instant) -> bool {
        self.wanted_since
            .get(&(ty, name.to_string()))
            .and_then(|(since, t)| t.map(|t| *since + t))
            .is_some_and(|deadline| now >= deadline)
    }

    fn track_wanted(&mut self, now: Instant) {
        let now_wanted = ResourceType::NAMED.map(|t| self.wanted(t));
        let same = |a: &Option<Names>, b: &Names| a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b));
        if self
            .tracked
            .iter()
            .zip(&now_wanted)
            .all(|(a, b)| same(a, b))
        {
            return;
        }
        let mut current = HashSet::new();
        for (ty, names) in ResourceType::NAMED.into_iter().zip(&now_wanted) {
            for name in names.iter().cloned() {
                // Looked up for new names only: each lookup scans every listener or cluster.
                let (accepted, base) = (&self.accepted, &self.base);
                self.wanted_since
                    .entry((ty, name.clone()))
                    .or_insert_with(|| (now, timeout_for(accepted, base, ty, &name)));
                current.insert((ty, name));
            }
        }
        self.wanted_since.retain(|k, _| current.contains(k));
        self.tracked = now_wanted.map(Some);
    }
}

/// The new configs of the clusters whose assignments changed from `before` to `after`, when
/// only assignments of existing EDS clusters changed (none removed) and each of those clusters
/// validates alone; `None` sends the response down the whole-config path (which also gives a
/// failure its exact NACK detail).
fn endpoints_only(
    before: &BTreeMap<String, Arc<Resource>>,
    after: &Resources,
    base: &Value,
) -> Option<Vec<config::Cluster>> {
    let now = after.get(&ResourceType::Endpoint)?;
    // One walk over both maps in name order (no lookups): a name of `before` missing from
    // `now` was removed; a name of `now` missing from or changed since `before` changed.
    let mut changed: BTreeSet<&str> = BTreeSet::new();
    let mut old = before.iter().peekable();
    for (name, cla) in now.iter() {
        if old.next_if(|(o, _)| *o < name).is_some() {
            return None;
        }
        match old.next_if(|(o, _)| *o == name) {
            Some((_, b)) if same(b, cla) => {}
            _ => {
                changed.insert(name);
            }
        }
    }
    if old.next().is_some() {
        return None;
    }
    let mut out = Vec::new();
    if changed.is_empty() {
        return Some(out);
    }
    // The secrets a cluster's TLS contexts may name: the file's and those that arrived (one
    // naming a secret still on its way falls back to the whole-config path).
    let secrets = || -> Vec<Value> {
        let file = base["static_resources"]["secrets"]
            .as_array()
            .into_iter()
            .flatten();
        let arrived = after
            .get(&ResourceType::Secret)
            .into_iter()
            .flat_map(|m| m.values());
        file.cloned().chain(arrived.map(|s| s.json())).collect()
    };
    let needs_secrets = |c: &Value| {
        c.get("transport_socket").is_some() || c.get("transport_socket_matches").is_some()
    };
    for (i, (name, c)) in after.get(&ResourceType::Cluster)?.iter().enumerate() {
        let Some(eds) = c.eds_name().filter(|e| changed.contains(e.as_str())) else {
            continue;
        };
        let json = with_assignment(c.json(), name, now.get(eds).map(|v| v.json()));
        let s = if needs_secrets(&json) {
            secrets()
        } else {
            Vec::new()
        };
        out.push(config::cluster_from_json_with(json, i, s).ok()?);
    }
    // The bootstrap file's own EDS clusters.
    for (i, c, eds) in static_eds(base).filter(|(_, _, e)| changed.contains(e.as_str())) {
        let name = c["name"].as_str()?;
        let json = with_assignment(c.clone(), name, now.get(&eds).map(|v| v.json()));
        let s = if needs_secrets(&json) {
            secrets()
        } else {
            Vec::new()
        };
        out.push(config::cluster_from_json_with(json, i, s).ok()?);
    }
    Some(out)
}

/// Whether every item of `a` is in `b`, both in ascending order (one walk, no lookups).
fn sorted_subset<'a>(
    a: impl IntoIterator<Item = &'a String>,
    b: impl IntoIterator<Item = &'a String>,
) -> bool {
    let mut b = b.into_iter().peekable();
    a.into_iter().all(|x| {
        while b.next_if(|y| *y < x).is_some() {}
        b.next_if(|y| *y == x).is_some()
    })
}

/// `old` when `new` is equal to it (a resource sent again in another allocation keeps the one
/// everything already compares against by pointer), else `new`.
fn reuse(old: Option<&Arc<Resource>>, new: &Arc<Resource>) -> Arc<Resource> {
    match old {
        Some(o) if same(o, new) => o.clone(),
        _ => new.clone(),
    }
}

/// The same resource: one allocation, or equal JSON.
fn same(a: &Arc<Resource>, b: &Arc<Resource>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Drops RDS/EDS/SDS resources nothing names any more, in `resources` or the running listeners
/// and clusters of `serving` (Envoy unsubscribes them).
fn prune(names: &WantedMemo, resources: &mut Resources, serving: &Resources) {
    for ty in ResourceType::NAMED {
        let wanted = union(names.names(resources, ty), names.names(serving, ty));
        if let Some(m) = resources
            .get_mut(&ty)
            .filter(|m| !sorted_subset(m.keys(), wanted.iter()))
        {
            Arc::make_mut(m).retain(|n, _| wanted.contains(n));
        }
    }
}

/// The `initial_fetch_timeout` of the config source that asks for `name` (an HCM's
/// `rds.config_source`, an EDS cluster's `eds_cluster_config.eds_config`); `None` = forever.
fn timeout_for(
    resources: &Resources,
    base: &Value,
    ty: ResourceType,
    name: &str,
) -> Option<Duration> {
    let all = |t| resources.get(&t).into_iter().flat_map(|m| m.values());
    let source = match ty {
        ResourceType::Route => all(ResourceType::Listener)
            .filter(|l| l.route_names().iter().any(|r| r == name))
            .flat_map(|l| {
                let l = l.json();
                l["filter_chains"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(l.get("default_filter_chain"))
                    .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
                    .map(|f| &f["typed_config"]["rds"])
                    .filter(|r| r["route_config_name"] == name)
                    .map(|r| r["config_source"].clone())
                    .collect::<Vec<_>>()
            })
            .next(),
        ResourceType::Endpoint => all(ResourceType::Cluster)
            .find(|c| c.eds_name().is_some_and(|e| e == name))
            .map(|c| c.json()["eds_cluster_config"]["eds_config"].clone())
            .or_else(|| {
                static_eds(base)
                    .find(|(_, _, e)| e == name)
                    .map(|(_, c, _)| c["eds_cluster_config"]["eds_config"].clone())
            }),
        ResourceType::Secret => all(ResourceType::Listener)
            .chain(all(ResourceType::Cluster))
            .filter(|r| r.secret_names().any(|s| s == name))
            .find_map(|r| crate::assemble::secret_source(&r.json(), name).cloned())
            .or_else(|| {
                let sr = &base["static_resources"];
                crate::assemble::secret_source(sr, name).cloned()
            }),
        _ => None,
    };
    match source.as_ref().map(|s| &s["initial_fetch_timeout"]) {
        Some(Value::String(d)) => match parse_duration(d) {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
        },
        _ => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
    }
}

/// A proto3 JSON duration (`"1.5s"`).
fn parse_duration(s: &str) -> Option<Duration> {
    s.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Runs the assembled document through the engine's parser and validation; the error names
/// the resource and the field path (`Listener "x": filter_chains[0]...: message`).
pub fn validate(asm: &Assembly) -> Result<Bootstrap, String> {
    validate_raw(asm).map_err(|e| asm.origins.describe(e.path(), e.message()))
}

fn validate_raw(asm: &Assembly) -> Result<Bootstrap, config::ConfigError> {
    let text = serde_json::to_string(&asm.doc).expect("a JSON value serialises");
    config::from_yaml_str(&text)
}

mod plan;
pub use plan::Plan;
mod wanted;

#[cfg(test)]
mod tests;
