//! [`SelectObserver`]: what [`RouteTable::select_observed`](super::RouteTable::select_observed)
//! reports while it matches, for `sluice explain`. The data path passes `()`, whose empty
//! methods compile away: matching pays nothing for the trace.

/// How the virtual host was found (Envoy's domain order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainMatch {
    /// The table has only a `*` host: the authority is not looked at.
    OnlyDefault,
    /// An exact domain equal to the (lower-cased) host.
    Exact,
    /// The longest `*<suffix>` wildcard whose suffix (this many bytes) ends the host.
    Suffix(usize),
    /// The longest `<prefix>*` wildcard whose prefix (this many bytes) starts the host.
    Prefix(usize),
    /// No other domain matched: the `*` virtual host.
    Default,
}

/// Why a route's `match` failed (the first failing condition, in Envoy's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The path matcher (`prefix` / `path` / `safe_regex` / `path_separated_prefix`).
    Path,
    /// `headers[i]` (`:method` and the other pseudo-headers included).
    Header(usize),
    /// `query_parameters[i]`.
    Query(usize),
    /// `runtime_fraction`: the request's random value fell outside the fraction.
    RuntimeFraction,
    /// `grpc`: the request is not gRPC (`content-type`).
    Grpc,
    /// `cookies[i]`.
    Cookie(usize),
    /// `dynamic_metadata[i]`.
    DynamicMetadata(usize),
}

/// Receives the steps of one route selection.
pub trait SelectObserver {
    /// The virtual host lookup for `host` (after `ignore_port_in_host_matching`, lower-cased):
    /// the index and how it matched, or `None`.
    #[inline(always)]
    fn virtual_host(&mut self, _host: Option<&str>, _found: Option<(usize, DomainMatch)>) {}
    /// Route `index` of the chosen virtual host was tried: `Ok` = it matched (the last call).
    #[inline(always)]
    fn route(&mut self, _index: usize, _result: Result<(), Mismatch>) {}
}

/// The data path's observer: nothing.
impl SelectObserver for () {}

/// The `tracing` target of [`log_taken`]'s line (enable with `sluice_route=debug`).
pub const TAKEN_TARGET: &str = "sluice_route";

/// Logs, at debug level under [`TAKEN_TARGET`], what the data path chose for one request:
/// `action`, `vhost`, `route` (index), `route_name`, `cluster`, and `random` (the draw for
/// `weighted_clusters`, which `sluice explain --seed` replays). Like Envoy's router debug line
/// ("cluster 'x' match for URL '/y'"); off by default, when it costs the callsite's cached
/// level check and nothing is computed.
#[inline]
pub fn log_taken(sel: &super::Selection<'_>, random: u64) {
    log_selection(sel, random, false);
}

/// [`log_taken`] for the route chosen again after a filter cleared the route cache: the same
/// line with `again=true` (`sluice explain` answers for the first choice; the request went by
/// this one).
#[inline]
pub fn log_chosen_again(sel: &super::Selection<'_>, random: u64) {
    log_selection(sel, random, true);
}

fn log_selection(sel: &super::Selection<'_>, random: u64, again: bool) {
    use super::Selection;
    if !tracing::enabled!(target: TAKEN_TARGET, tracing::Level::DEBUG) {
        return;
    }
    let (action, route_ref, cluster) = match sel {
        Selection::Forward(f) => ("forward", Some(f.route_ref), f.cluster.name()),
        Selection::Redirect { route_ref, .. } => ("redirect", Some(*route_ref), None),
        Selection::SslRedirect { .. } => ("redirect", None, None),
        Selection::DirectResponse { route_ref, .. } => ("direct_response", Some(*route_ref), None),
        Selection::NoRoute => ("no_route", None, None),
    };
    let vhost = sel.vhost().map_or("", |v| v.name.as_str());
    let route = route_ref.map_or(-1, |r| i64::from(r.route));
    let route_name = sel.route().and_then(|r| r.name.as_deref()).unwrap_or("");
    let cluster = cluster.unwrap_or("");
    tracing::debug!(
        target: TAKEN_TARGET,
        action,
        vhost = ?vhost,
        route = ?route,
        route_name = ?route_name,
        cluster = ?cluster,
        random,
        again,
        "route taken"
    );
}
