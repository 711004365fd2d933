//! `sluice explain` agrees with the data path (issue 12, test 4), checked on the sluice process
//! each conformance case already runs: after every request, what the process really did (its
//! `sluice_route` debug line: action, virtual host, route index and name, cluster, and the random
//! draw; in `route_config` cases also the upstream server that answered, which by construction
//! is the cluster of the same name; for tcp_proxy the upstream that got the bytes) is compared
//! with the answer of the same process's admin `GET /explain` for the same request, asked with
//! the draw the data path made as `seed` (so weighted clusters compare exactly). Explain answers
//! for the route chosen before the filters; when a filter cleared the route cache the process
//! also logs the route it chose again (`again=true`), and the upstream that answered is checked against that one.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use sluice_engine::{
    explain::Explanation,
    route::explain::{Decision, RouteTrace},
};

use super::{case::CaseRequest, client, Case, Observation};

/// The log filter sluice runs with in the suite: its warnings and the route lines.
pub const LOG_FILTER: &str = "warn,sluice_route=debug";

/// One `route taken` line of the data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// `forward`, `redirect`, `direct_response` or `no_route`.
    pub action: String,
    /// The virtual host's name (empty: none).
    pub vhost: String,
    /// The route's index in the virtual host (-1: none).
    pub route: i64,
    /// The route's name (empty: unnamed).
    pub route_name: String,
    /// The cluster (empty: none).
    pub cluster: String,
    /// The random draw.
    pub random: u64,
    /// An `again=true` line: the route chosen again after a filter cleared the route cache.
    pub again: bool,
}

/// Parses a `route taken` line (fields as tracing's fmt layer writes them; `again=true`: the
/// route a filter had chosen again).
pub fn parse_taken(line: &str) -> Option<Taken> {
    if !line.contains("sluice_route:") || !line.contains("route taken") {
        return None;
    }
    let again = bare(line, "again") == Some("true");
    Some(Taken {
        again,
        action: quoted(line, "action")?,
        vhost: quoted(line, "vhost")?,
        route: bare(line, "route")?.parse().ok()?,
        route_name: quoted(line, "route_name")?,
        cluster: quoted(line, "cluster")?,
        random: bare(line, "random")?.parse().ok()?,
    })
}

fn bare<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

/// A `key="..."` value with Rust's Debug escapes undone (`\"`, `\\`).
fn quoted(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}=\""))? + key.len() + 3;
    let mut out = String::new();
    let mut chars = line[at..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Reads the `route taken` lines a process appended to its log since the last call.
pub struct LogCursor {
    path: PathBuf,
    offset: u64,
}

impl LogCursor {
    /// A cursor at the current end of `path`.
    pub fn new(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        Self {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// The complete new lines' `route taken` entries.
    pub fn taken(&mut self) -> Vec<Taken> {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.path) {
            let _ = f.seek(SeekFrom::Start(self.offset));
            let _ = f.read_to_string(&mut text);
        }
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        text[..complete].lines().filter_map(parse_taken).collect()
    }
}

/// Counts over the suite.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests whose route (or tcp_proxy cluster) was compared.
    pub compared: usize,
    /// Of those, requests forwarded to a cluster whose name was compared.
    pub clusters: usize,
    /// Of those, `weighted_clusters` draws replayed with `seed`.
    pub weighted: usize,
    /// Clusters also checked against the upstream server that answered.
    pub by_backend: usize,
    /// Redirects and direct responses (route compared, no cluster).
    pub local: usize,
    /// 404 NR (no route; compared as such).
    pub no_route: usize,
    /// Requests refused before routing (missing Host, request target, upgrade): no route
    /// line, and explain says refused.
    pub refused: usize,
    /// Requests whose connection closed before the proxy read them (no route line, no
    /// answer): nothing to compare.
    pub unanswered: usize,
    /// Authority-form targets (not a URL, so not asked) that the data path did not route.
    pub not_url: usize,
    /// Requests whose route a filter had chosen again (the upstream checked against that one).
    pub chosen_again: usize,
    /// Disagreements, one line each.
    pub disagreements: Vec<String>,
}

impl Tally {
    /// Adds `o`'s counts and disagreements.
    pub fn add(&mut self, o: Tally) {
        self.compared += o.compared;
        self.clusters += o.clusters;
        self.weighted += o.weighted;
        self.by_backend += o.by_backend;
        self.local += o.local;
        self.no_route += o.no_route;
        self.refused += o.refused;
        self.unanswered += o.unanswered;
        self.not_url += o.not_url;
        self.chosen_again += o.chosen_again;
        self.disagreements.extend(o.disagreements);
    }
}

/// What the same process's admin explains for `req`, with `seed`.
fn explain(
    admin: SocketAddr,
    listener: u16,
    req: &CaseRequest,
    path: &str,
    headers: &[(String, String)],
    seed: u64,
) -> Result<Explanation, String> {
    // Absolute-form: routing sees the URI's authority and path (the Host header is replaced).
    let (path, host) = match path.parse::<http::Uri>() {
        Ok(u) if u.scheme().is_some() => (
            u.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            u.authority().map(|a| {
                let a = a.as_str();
                a.rsplit_once('@').map_or(a, |(_, h)| h).to_string()
            }),
        ),
        _ => (path.to_string(), req.host.clone()),
    };
    // `host:` (empty) asks explain for a request without Host, like curl's `-H 'Host:'`.
    let mut hs = vec![format!("host: {}", host.unwrap_or_default())];
    hs.extend(headers.iter().map(|(k, v)| format!("{k}: {v}")));
    let url = format!("http://127.0.0.1:{listener}{path}");
    let mut q = sluice_engine::admin::explain::path(&url, &req.method, &hs, None, seed);
    if req.http10 {
        q.push_str("&version=HTTP/1.0");
    }
    let get = client::Request {
        method: "GET",
        path: &q,
        host: Some("admin"),
        headers: &[],
        body: None,
        http10: false,
        preamble: None,
    };
    // The harness waits for the proxy's listener; its admin listener may come up just after.
    let mut tries = 0;
    let r = loop {
        match client::send(admin, &get, Duration::from_secs(5)) {
            Err(e) if e.contains("refused") && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r?,
        }
    };
    if r.status != 200 {
        return Err(format!(
            "GET {q}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        ));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("GET {q}: {e}"))
}

/// Compares request `i` of `case` (sent with `path` and `headers`, observed as `obs`, logged
/// as `taken`) with `/explain` of the process at `admin`.
#[allow(clippy::too_many_arguments)]
pub fn check(
    case: &Case,
    i: usize,
    admin: SocketAddr,
    listener: u16,
    path: &str,
    headers: &[(String, String)],
    taken: &[Taken],
    obs: &Observation,
    tally: &mut Tally,
) {
    let req = &case.requests[i];
    let at = format!("{} req[{i}] {} {}", case.name, req.method, path);
    let first_upstream = obs
        .get("upstream")
        .filter(|u| *u != "none")
        .and_then(|u| u.split(',').next());
    let url_form = path.starts_with('/')
        || path
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme().is_some());
    let errored = obs.get("status").is_some_and(|s| s.starts_with("error:"));
    // The route a filter chose again is the one the request went by.
    let again = taken.iter().rfind(|t| t.again).cloned();
    let first: Vec<Taken> = taken.iter().filter(|t| !t.again).cloned().collect();
    tally.chosen_again += usize::from(again.is_some());
    let t = match &first[..] {
        // The connection was gone before the proxy read the request (keep-alive cases).
        [] if errored && first_upstream.is_none() => return tally.unanswered += 1,
        // Authority-form (CONNECT) targets: explain takes a URL; the data path refused them.
        [] if !url_form => return tally.not_url += 1,
        [] => {
            // tcp_proxy: no routing; the cluster is the upstream that got the bytes (when the
            // cluster is named after its upstream server; a bootstrap's cluster of several
            // servers is checked by name only).
            return match explain(admin, listener, req, path, headers, 0) {
                Ok(ex) if ex.refused.is_some() => tally.refused += 1,
                Ok(ex) if ex.tcp_cluster.is_some() => {
                    tally.compared += 1;
                    tally.clusters += 1;
                    let named = ex
                        .tcp_cluster
                        .as_deref()
                        .is_some_and(|c| case.clusters.contains_key(c));
                    if named {
                        tally.by_backend += 1;
                    }
                    if named && ex.tcp_cluster.as_deref() != first_upstream {
                        tally.disagreements.push(format!(
                            "{at}: explain tcp_proxy -> {:?}, the bytes went to {first_upstream:?}",
                            ex.tcp_cluster
                        ));
                    }
                }
                Ok(ex) => tally.disagreements.push(format!(
                    "{at}: the data path did not route it; explain routes it: {:?}",
                    ex.route.map(|r| summary(&r))
                )),
                Err(e) => tally.disagreements.push(format!(
                    "{at}: the data path did not route it; explain: {e}"
                )),
            };
        }
        [t] => t,
        more => {
            tally.disagreements.push(format!(
                "{at}: {} route lines for one request: {more:?}",
                more.len()
            ));
            return;
        }
    };
    let ex = match explain(admin, listener, req, path, headers, t.random) {
        Ok(ex) => ex,
        Err(e) => {
            tally
                .disagreements
                .push(format!("{at}: data path took {t:?}; explain: {e}"));
            return;
        }
    };
    let Some(route) = &ex.route else {
        tally.disagreements.push(format!(
            "{at}: data path routed {t:?}; explain: refused {:?}, tcp_proxy {:?}",
            ex.refused, ex.tcp_cluster
        ));
        return;
    };
    let got = Taken {
        random: t.random,
        ..summary(route)
    };
    let went = again.as_ref().unwrap_or(t);
    tally.compared += 1;
    if got != *t {
        tally
            .disagreements
            .push(format!("{at}: data path took {t:?}, explain says {got:?}"));
        return;
    }
    match &route.decision {
        Decision::Forward(f) => {
            tally.clusters += 1;
            tally.weighted += usize::from(f.draw.is_some());
            if case.bootstrap.is_none() && !went.cluster.is_empty() {
                if let Some(up) = first_upstream {
                    tally.by_backend += 1;
                    if up != went.cluster {
                        tally.disagreements.push(format!(
                            "{at}: the route line says cluster {:?}, upstream {up:?} answered",
                            went.cluster
                        ));
                    }
                }
            }
        }
        Decision::NoRoute { .. } => tally.no_route += 1,
        Decision::Redirect { .. } | Decision::DirectResponse { .. } => tally.local += 1,
    }
}

/// An explanation's route table trace in the form of a route line (without the draw).
fn summary(r: &RouteTrace) -> Taken {
    let vhost = r.virtual_hosts.iter().find(|v| v.chosen);
    let route = r.routes.iter().find(|s| s.matched);
    let (action, cluster) = match &r.decision {
        Decision::Forward(f) => ("forward", f.cluster.clone().unwrap_or_default()),
        Decision::Redirect { .. } => ("redirect", String::new()),
        Decision::DirectResponse { .. } => ("direct_response", String::new()),
        Decision::NoRoute { .. } => ("no_route", String::new()),
    };
    Taken {
        action: action.to_string(),
        // The data path's NoRoute carries no virtual host (even when one matched the Host).
        vhost: vhost
            .filter(|_| action != "no_route")
            .map(|v| v.name.clone())
            .unwrap_or_default(),
        route: route.map_or(-1, |s| s.index as i64),
        route_name: route.and_then(|s| s.name.clone()).unwrap_or_default(),
        cluster,
        random: 0,
        again: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_route_line() {
        let line = "2026-12-03T18:36:58.470263Z DEBUG sluice_route: route taken action=\"forward\" \
                    vhost=\"all \\\"x\\\"\" route=0 route_name=\"nb\" cluster=\"a\" random=17591144953936639627";
        assert_eq!(
            parse_taken(line),
            Some(Taken {
                action: "forward".into(),
                vhost: "all \"x\"".into(),
                route: 0,
                route_name: "nb".into(),
                cluster: "a".into(),
                random: 17_591_144_953_936_639_627,
                again: false,
            })
        );
        let again = format!("{line} again=true");
        assert!(parse_taken(&again).is_some_and(|t| t.again));
        assert_eq!(parse_taken("INFO sluice_engine::server: started"), None);
    }
}
