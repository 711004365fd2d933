//! Differential conformance harness: runs one case's Envoy YAML under a real Envoy and under
//! `sluice proxy`, records what the client and the upstream servers saw, and compares the two.
//!
//! An observation is a flat map `key -> value` per request:
//! - `status`, `body` (over 256 bytes: length and hash), `resp.header.<name>` (the response the client got; repeated headers joined
//!   with `\n`), `resp.reason` (the status line's reason phrase, when it is not the status's
//!   standard one) and `resp.cased` (the response header names written with an upper-case
//!   letter, as written, sorted, `,`-joined; absent when none, as Envoy and sluice write lower case),
//! - `upstream` (the upstreams that got the request, in order, `,`-joined, or `none`), `attempts`,
//! - `up.method`, `up.path`, `up.host`, `up.body`, `up.header.<name>` (the last attempt as the
//!   upstream server saw it; `host` is only in `up.host`; `up.cased` like `resp.cased`), and with the case's `upstream_conns`
//!   `up.conn` (which connection of that server it came on, 1 = the first), `up.peer` (the
//!   address the proxy connected from, when it is not 127.0.0.1).
//! - for a case with `access_log`: `log` (the access log lines written during the request,
//!   masked: [`access_log::normalize`]); for a case with `startup_requests`, on the first request:
//!   `startup.upstream` and `startup.NAME.*` (what the upstreams got before it: health checks).
//! - for a case with `shadow_upstreams`: `shadow.upstream` (those that got a copy, by name, or
//!   `none`), and for the last copy (by name) `shadow.method`, `shadow.path`, `shadow.host`, `shadow.body`,
//!   `shadow.header.<name>` (reduced like `up.*`); the copies never count in `upstream`.
//! - for a case with `check_upstreams`: `check.upstream` (those that got a filter's side call,
//!   an ext_authz check, in order, or `none`) and the last such call as `check.method`,
//!   `check.path`, `check.host`, `check.body`, `check.header.<name>` (reduced like `up.*`).
//! - for a case with `dns`: `dns.NAME` (the A queries for NAME the case's DNS server got within
//!   its window, [`dns`]).
//!
//! Values that vary by nature are reduced to `<present>`: see [`PRESENCE_ONLY_RESPONSE`] and
//! [`PRESENCE_ONLY_UPSTREAM`] (a client-sent, non-UUID `x-request-id` is still compared, a UUID
//! one is reduced to `<uuid:N>`, N its trace-reason nibble), and
//! `x-envoy-expected-rq-timeout-ms` and `grpc-timeout` when the request was retried (they then
//! carry the time left).

pub mod access_log;
pub mod agreement;
pub mod background;
pub mod case;
pub mod client;
pub mod dns;
pub mod keepalive;
pub mod proxy;
pub mod redirect;
pub mod unanswered;
pub mod upstream;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::runtime::Runtime;

use self::{
    agreement::{LogCursor, Tally},
    client::Response,
    upstream::Recorded,
};
pub use self::{
    case::{load_all, Case},
    proxy::Kind,
};

/// Flat observation of one request: key -> value (see the module doc).
pub type Observation = BTreeMap<String, String>;

/// Response headers whose value differs run to run: only their presence is compared.
pub const PRESENCE_ONLY_RESPONSE: &[&str] =
    &["date", "x-envoy-upstream-service-time", "x-request-id"];

/// Response headers left out of the comparison altogether (none: `server` is compared, since
/// `server_name` and `server_header_transformation` decide it, and sluice's default is Envoy's
/// `server: envoy`).
pub const IGNORED_RESPONSE: &[&str] = &[];

/// Upstream request headers whose value differs run to run: only their presence is compared.
pub const PRESENCE_ONLY_UPSTREAM: &[&str] = &["x-request-id"];

/// Case-level `diverge` key declaring that sluice does not run the case at all (it rejects the
/// config or dies); stale, like any declaration, once sluice runs it.
pub const SLUICE_START: &str = "sluice-start";

/// Marker for a value that is present but not compared.
pub const PRESENT: &str = "<present>";

/// Marker for an absent key in reports and in `expect`.
pub const ABSENT: &str = "<absent>";

/// How long the client waits for one response.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The directory holding the case files.
pub fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// A runtime for the upstream servers.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What one proxy did with a case: an observation per request, or why the run could not happen.
pub type RunResult = Result<Vec<Observation>, String>;

/// Runs `case` under each of `kinds` in turn, on the same rendered YAML file, the same listener port
/// and the same upstream servers. The rendered config is kept in `workdir`. A run whose proxy could
/// not bind its ports (another process took one in between) is retried once on fresh ports.
///
/// For the sluice run, the agreement of its admin's `/explain` with what its data path did,
/// request by request, is added to `tally` (see [`agreement`]).
pub fn run_case(
    rt: &Runtime,
    case: &Case,
    kinds: &[Kind],
    workdir: &Path,
    tally: &mut Tally,
) -> Vec<(Kind, RunResult)> {
    let mut t = Tally::default();
    let mut runs = run_case_once((rt, case, kinds, workdir), &mut t);
    let port_clash = |r: &RunResult| {
        r.as_ref()
            .is_err_and(|e| e.contains("Address already in use"))
    };
    if runs.iter().any(|(_, r)| port_clash(r)) {
        t = Tally::default();
        runs = run_case_once((rt, case, kinds, workdir), &mut t);
    }
    tally.add(t);
    runs
}

fn run_case_once(
    (rt, case, kinds, workdir): (&Runtime, &Case, &[Kind], &Path),
    tally: &mut Tally,
) -> Vec<(Kind, RunResult)> {
    std::fs::create_dir_all(workdir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", workdir.display()));
    let names = case.upstream_names();
    for r in case.upstreams.keys().chain(case.health_replies.keys()) {
        assert!(
            names.contains(r),
            "case {}: upstream script for unknown cluster {r}",
            case.name
        );
    }
    let health = upstream::HealthScripts {
        path: case.health_check_path.clone(),
        replies: case.health_replies.clone(),
    };
    let tls: Vec<String> = case
        .clusters
        .iter()
        .filter(|(_, c)| c.tls)
        .map(|(n, _)| n.clone())
        .collect();
    let grpc_authz: Vec<String> = case
        .clusters
        .iter()
        .filter(|(_, c)| c.grpc_authz)
        .map(|(n, _)| n.clone())
        .collect();
    let ups = upstream::Upstreams::start(rt, &names, &case.upstreams, &health, &tls, &grpc_authz);
    let unanswered = unanswered::Unanswered::start();
    let dns = case.dns.as_ref().map(|d| dns::Dns::start(d, workdir));
    let [listener, closed, admin, redirected] = proxy::free_ports::<4>();
    let _redirect = case
        .redirected
        .then(|| redirect::Redirect::install(redirected, listener));
    let log = workdir.join(ACCESS_LOG);
    let ca_file = workdir.join("ca.pem");
    ups.write_pki(workdir);
    let ports = case::Ports {
        listener,
        closed,
        unanswered: unanswered.port(),
        redirected,
        access_log: &log.to_string_lossy(),
        ca_file: &ca_file.to_string_lossy(),
        pki_dir: &workdir.to_string_lossy(),
        upstream: &|n| ups.port(n),
    };
    let config = workdir.join("envoy.yaml");
    // The admin listener is in the file both proxies run (sluice's `/explain` is asked during
    // its run; Envoy also gets it from `--config-yaml`, the same address).
    let text = case.render(&ports)
        + &format!(
            "\nadmin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}\n"
        );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
    kinds
        .iter()
        .map(|&kind| {
            (
                kind,
                run_one(
                    case,
                    kind,
                    &config,
                    [listener, admin, closed, redirected],
                    (&ups, dns.as_ref()),
                    workdir,
                    tally,
                ),
            )
        })
        .collect()
}

fn run_one(
    case: &Case,
    kind: Kind,
    config: &Path,
    [listener, admin, closed, redirected]: [u16; 4],
    (ups, dns): (&upstream::Upstreams, Option<&dns::Dns>),
    workdir: &Path,
    tally: &mut Tally,
) -> RunResult {
    // sluice with the data path's route lines, for the explain agreement check.
    let log = Some(agreement::LOG_FILTER);
    // `{{listener}}` in a request's target or Host (e.g. the port `strip_matching_host_port`
    // strips).
    let mut case = case.clone();
    let port = listener.to_string();
    for r in &mut case.requests {
        r.path = r.path.replace("{{listener}}", &port);
        if let Some(h) = r.host.as_mut() {
            *h = h.replace("{{listener}}", &port);
        }
    }
    let case = &case;
    ups.restart_health_scripts();
    // The access log is started afresh before the proxy opens it.
    let mut access_log = case
        .access_log
        .then(|| access_log::LogTail::new(&workdir.join(ACCESS_LOG)));
    if let Some(d) = dns {
        d.reset();
    }
    let mut proc = proxy::start_logging(kind, config, [listener, admin], workdir, log, dns)?;
    let mut route_lines = (kind == Kind::Sluice).then(|| LogCursor::new(&proc.log_path()));
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    let addr: SocketAddr = ([127, 0, 0, 1], listener).into();
    if let Some(tail) = access_log.as_mut() {
        // The readiness probe's connection is a line of a tcp_proxy's access log: not a request's.
        tail.skip_settled(kind, admin_addr);
    }
    let mut out = Vec::new();
    if !case.check_upstreams.is_empty() {
        // The readiness probe's connection may be checked too (a network ext_authz filter):
        // let that check land before the case's first request.
        std::thread::sleep(SHADOW_SETTLE);
    }
    let mut startup = Some(ups.take_all()).filter(|_| case.startup_requests);
    let upstream_ports: Vec<(&str, u16)> =
        ups.names().into_iter().map(|n| (n, ups.port(n))).collect();
    let fill = |text: &str| {
        ups.names().iter().fold(text.to_string(), |t, n| {
            t.replace(&format!("{{{{upstream.{n}}}}}"), &ups.port(n).to_string())
        })
    };
    let mut conn = None;
    // Background requests in flight, observed once the next foreground request is answered.
    let mut held: Vec<background::Held> = Vec::new();
    for (i, r) in case.requests.iter().enumerate() {
        let path = fill(&r.path);
        let body = r
            .body_size
            .map(upstream::pattern)
            .or_else(|| r.body.clone());
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect();
        let preamble = r.proxy_header.as_deref().map(case::proxy_header_bytes);
        let req = client::Request {
            method: &r.method,
            path: &path,
            host: r.host.as_deref(),
            headers: &headers,
            body: body.as_deref().map(str::as_bytes),
            http10: r.http10,
            preamble: preamble.as_deref(),
        };
        let addr = match r.to.as_deref() {
            None => addr,
            Some("redirected") => ([127, 0, 0, 1], redirected).into(),
            Some("closed") => ([127, 0, 0, 1], closed).into(),
            Some(other) => panic!("case {}: `to: {other}`", case.name),
        };
        if let Some(ms) = r.pause_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if r.background {
            let sent = background::Owned {
                method: r.method.clone(),
                path: path.clone(),
                host: r.host.clone(),
                headers: headers.clone(),
                body: body.clone(),
            };
            held.push(background::send(i, addr, sent, ups, route_lines.as_mut()));
            out.push(Observation::new());
            continue;
        }
        let resp = match &r.tls_sni {
            Some(sni) => {
                let ca = ups.ca_pem().unwrap_or_else(|| {
                    panic!("case {}: tls_sni without a `tls` upstream", case.name)
                });
                client::send_tls(addr, sni, ca, &req, REQUEST_TIMEOUT)
            }
            None => {
                let reused = if r.reuse { conn.take() } else { None };
                client::send_on(reused, addr, &req, REQUEST_TIMEOUT).map(|(resp, s)| {
                    conn = Some(s);
                    resp
                })
            }
        };
        if !case.shadow_upstreams.is_empty() {
            // A shadow copy is fire and forget: give it time to arrive (loopback, no delay).
            std::thread::sleep(SHADOW_SETTLE);
        }
        let recorded = ups.take();
        let keepalive = recorded
            .last()
            .filter(|_| case.upstream_keepalive)
            .map(|last| {
                let at = |port| std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port);
                keepalive::observe(at(last.peer_port), at(ups.port(&last.upstream)))
            });
        let (checks, recorded): (Vec<Recorded>, Vec<Recorded>) = recorded
            .into_iter()
            .partition(|r| case.check_upstreams.contains(&r.upstream));
        let mut obs = observe_with_shadows(resp, recorded, &case.shadow_upstreams);
        if !case.check_upstreams.is_empty() {
            observe_side(&mut obs, "check", &checks);
            obs.remove("check.conn");
        }
        // Which connection a shadow copy came on is never compared.
        obs.remove("shadow.conn");
        if let Some(k) = keepalive {
            obs.insert("up.keepalive".into(), k);
        }
        if let Some(tail) = access_log.as_mut() {
            // A connection the next request does not reuse is closed now rather than when the
            // next one opens: a tcp_proxy logs a connection when it closes.
            if !case.requests.get(i + 1).is_some_and(|n| n.reuse) {
                conn = None;
            }
            let lines: Vec<String> = tail
                .take(|| access_log::flush(kind, admin_addr))
                .iter()
                .map(|l| access_log::normalize(l, &upstream_ports, &case.log_mask, &case.log_ms))
                .collect();
            obs.insert("log".into(), joined_or_none(&lines, "\n"));
        }
        if let Some(recorded) = startup.take() {
            observe_startup(&mut obs, &recorded);
        }
        if !case.upstream_conns {
            obs.remove("up.conn");
        }
        if let Some(d) = dns {
            d.observe(&mut obs);
        }
        if let Some(lines) = route_lines.as_mut() {
            let i = out.len();
            let taken = lines.taken();
            if r.tls_sni.is_none() && r.to.is_none() && r.proxy_header.is_none() {
                agreement::check(
                    case, i, admin_addr, listener, &path, &headers, &taken, &obs, tally,
                );
            }
        }
        out.push(obs);
        for h in held.drain(..) {
            let explained = route_lines.is_some().then_some((admin_addr, listener));
            let (i, obs) = finish_background(case, h, ups, explained, tally);
            out[i] = obs;
        }
        if let Some(e) = proc.exited() {
            return Err(format!("{kind} died during case {}: {e}", case.name));
        }
    }
    for h in held.drain(..) {
        let explained = route_lines.is_some().then_some((admin_addr, listener));
        let (i, obs) = finish_background(case, h, ups, explained, tally);
        out[i] = obs;
    }
    if let Some(round) = case.upstream_round {
        rotate_round(&mut out, round);
    }
    if case.relabel_upstreams {
        relabel(&mut out);
    }
    if case.upstream_conns {
        renumber_conns(&mut out);
    }
    Ok(out)
}

/// Waits for a background request's answer and observes it; `explained`: the admin address and
/// the listener port when the run checks explain's agreement (sluice).
fn finish_background(
    case: &Case,
    held: background::Held,
    ups: &upstream::Upstreams,
    explained: Option<(SocketAddr, u16)>,
    tally: &mut Tally,
) -> (usize, Observation) {
    let mut done = held.finish(ups);
    if !case.upstream_conns {
        done.obs.remove("up.conn");
    }
    if let Some((admin, listener)) = explained {
        let (sent, obs) = (&done.sent, &done.obs);
        agreement::check(
            case,
            done.index,
            admin,
            listener,
            &sent.path,
            &sent.headers,
            &done.taken,
            obs,
            tally,
        );
    }
    (done.index, done.obs)
}

/// The access log file of a case (`{{access_log}}`), in its work directory.
const ACCESS_LOG: &str = "access.log";

/// `items` joined with `sep`, or `none`.
fn joined_or_none<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join(sep)
}

/// Upstream names as observed: `,`-joined, or `none`.
fn names_or_none(names: &[&str]) -> String {
    joined_or_none(names, ",")
}

/// `startup.upstream` (the upstreams that got a request before the case's first one, sorted:
/// health checks race each other) and `startup.NAME.*` for the last of them per upstream; which
/// connection is not compared.
fn observe_startup(o: &mut Observation, recorded: &[Recorded]) {
    let mut names: Vec<&str> = recorded.iter().map(|r| r.upstream.as_str()).collect();
    names.sort_unstable();
    o.insert("startup.upstream".into(), names_or_none(&names));
    let mut last: BTreeMap<&str, &Recorded> = BTreeMap::new();
    for r in recorded {
        last.insert(&r.upstream, r);
    }
    for (name, r) in last {
        let prefix = format!("startup.{name}");
        record_request(o, &prefix, r, false);
        o.remove(&format!("{prefix}.conn"));
    }
}

/// Numbers `up.conn` from 1 per upstream by first appearance in the run (the upstream servers
/// outlive one proxy's run, so their own serials continue across the two proxies).
fn renumber_conns(obs: &mut [Observation]) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for o in obs {
        let Some(conn) = o.get("up.conn").cloned() else {
            continue;
        };
        let up = o
            .get("upstream")
            .and_then(|u| u.rsplit(',').next())
            .unwrap_or_default()
            .to_string();
        let key = (up.clone(), conn);
        if !seen.contains(&key) {
            seen.push(key.clone());
        }
        let n = seen
            .iter()
            .filter(|(u, _)| *u == up)
            .position(|k| *k == key);
        o.insert("up.conn".into(), (n.unwrap_or(0) + 1).to_string());
    }
}

/// Rotates the `upstream` observations of a case whose order is a repeated round of `round`
/// picks from a random start: of the `round` possible starts, the one whose sequence relabelled
/// by first appearance is smallest, wrapping around by one round at the end (so every
/// observation is still compared). Two proxies with the same round then compare equal whatever
/// their starts; a different round (or one that does not repeat) does not.
fn rotate_round(obs: &mut [Observation], round: usize) {
    let seq: Vec<Option<String>> = obs.iter().map(|o| o.get("upstream").cloned()).collect();
    let n = seq.len();
    if round == 0 || n < round {
        return;
    }
    let rotated = |r: usize| -> Vec<Observation> {
        (0..n)
            .map(|i| {
                let j = if i + r < n { i + r } else { i + r - round };
                seq[j]
                    .iter()
                    .map(|v| ("upstream".to_string(), v.clone()))
                    .collect()
            })
            .collect()
    };
    let labels = |r: usize| -> Vec<Option<String>> {
        let mut o = rotated(r);
        relabel(&mut o);
        o.into_iter().map(|o| o.get("upstream").cloned()).collect()
    };
    let best = (0..round).min_by_key(|r| labels(*r)).unwrap_or(0);
    for (o, r) in obs.iter_mut().zip(rotated(best)) {
        match r.get("upstream") {
            Some(v) => o.insert("upstream".to_string(), v.clone()),
            None => o.remove("upstream"),
        };
    }
}

/// Replaces upstream names in `upstream` by `#1`, `#2`, ... in order of first appearance.
fn relabel(obs: &mut [Observation]) {
    let mut seen: Vec<String> = Vec::new();
    for o in obs {
        let Some(v) = o.get_mut("upstream") else {
            continue;
        };
        if v == "none" {
            continue;
        }
        let names: Vec<String> = v
            .split(',')
            .map(|n| {
                let i = seen.iter().position(|s| s == n).unwrap_or_else(|| {
                    seen.push(n.to_string());
                    seen.len() - 1
                });
                format!("#{}", i + 1)
            })
            .collect();
        *v = names.join(",");
    }
}

/// How long a case with `shadow_upstreams` waits after each response for the shadow copies.
const SHADOW_SETTLE: Duration = Duration::from_millis(300);

/// [`observe`], with the recordings of the `shadows` upstreams observed as `shadow.*`.
pub fn observe_with_shadows(
    resp: Result<Response, String>,
    recorded: Vec<Recorded>,
    shadows: &[String],
) -> Observation {
    let (mut shadow, main): (Vec<Recorded>, Vec<Recorded>) = recorded
        .into_iter()
        .partition(|r| shadows.contains(&r.upstream));
    // Copies to several clusters race each other: observed in name order.
    shadow.sort_by(|x, y| x.upstream.cmp(&y.upstream));
    let mut o = observe(resp, main);
    if !shadows.is_empty() {
        observe_side(&mut o, "shadow", &shadow);
    }
    o
}

/// `<prefix>.upstream` (the side upstreams that got a request, in order, or `none`) and the
/// last such request as `<prefix>.*`, reduced like `up.*`.
fn observe_side(o: &mut Observation, prefix: &str, recorded: &[Recorded]) {
    let names: Vec<&str> = recorded.iter().map(|r| r.upstream.as_str()).collect();
    o.insert(format!("{prefix}.upstream"), names_or_none(&names));
    if let Some(last) = recorded.last() {
        record_request(o, prefix, last, false);
    }
}

/// Flattens a response and the upstream recordings into an [`Observation`].
pub fn observe(resp: Result<Response, String>, recorded: Vec<Recorded>) -> Observation {
    let mut o = Observation::new();
    match resp {
        Ok(r) => {
            o.insert("status".into(), r.status.to_string());
            if !r.interim.is_empty() {
                let interim: Vec<String> = r.interim.iter().map(u16::to_string).collect();
                o.insert("interim".into(), interim.join(","));
            }
            o.insert("body".into(), body_text(&r.body));
            // Header casing: the reason phrase when it is not the status's standard one, and
            // the names written with an upper-case letter (normally none).
            let standard = http::StatusCode::from_u16(r.status)
                .ok()
                .and_then(|c| c.canonical_reason());
            if standard != Some(r.reason.as_str()) {
                o.insert("resp.reason".into(), r.reason.clone());
            }
            if !r.cased.is_empty() {
                o.insert("resp.cased".into(), sorted_names(&r.cased));
            }
            for (k, v) in r
                .headers
                .iter()
                .filter(|(k, _)| !IGNORED_RESPONSE.contains(&k.as_str()))
            {
                let v = reduce(PRESENCE_ONLY_RESPONSE, k, v);
                let v = if k == "set-cookie" {
                    mask_generated_cookie(&v).into_owned().into()
                } else {
                    v
                };
                push_value(&mut o, format!("resp.header.{k}"), &v);
            }
        }
        Err(e) => {
            o.insert("status".into(), format!("error: {e}"));
        }
    }
    let names: Vec<&str> = recorded.iter().map(|r| r.upstream.as_str()).collect();
    o.insert("upstream".into(), names_or_none(&names));
    o.insert("attempts".into(), recorded.len().to_string());
    if let Some(last) = recorded.last() {
        record_request(&mut o, "up", last, recorded.len() > 1);
    }
    o
}

/// `<prefix>.method`, `.path`, `.body`, `.host` and `.header.<name>` of one recorded request;
/// `retried`: the request had earlier attempts.
fn record_request(o: &mut Observation, prefix: &str, last: &Recorded, retried: bool) {
    o.insert(format!("{prefix}.method"), last.method.clone());
    o.insert(format!("{prefix}.conn"), last.conn.to_string());
    // The source address only when it is not the default one (`upstream_bind_config`).
    if last.peer != std::net::IpAddr::from([127, 0, 0, 1]) {
        o.insert(format!("{prefix}.peer"), last.peer.to_string());
    }
    if let Some(tls) = &last.tls {
        o.insert(format!("{prefix}.tls"), tls.clone());
    }
    if let Some(protocol) = last.protocol {
        o.insert(format!("{prefix}.protocol"), protocol.to_string());
    }
    if let Some(proxy) = &last.proxy_header {
        o.insert(format!("{prefix}.proxy"), proxy.clone());
    }
    o.insert(format!("{prefix}.path"), last.path.clone());
    if !last.cased.is_empty() {
        o.insert(format!("{prefix}.cased"), sorted_names(&last.cased));
    }
    if !last.body.is_empty() {
        o.insert(format!("{prefix}.body"), body_text(&last.body));
    }
    for (k, v) in &last.headers {
        if k == "host" {
            push_value(o, format!("{prefix}.host"), v);
            continue;
        }
        // On a retried request Envoy sends the time left (also as a gRPC request's
        // `grpc-timeout` under `max_grpc_timeout`), which varies with elapsed time.
        let v = if (k == "x-envoy-expected-rq-timeout-ms" || k == "grpc-timeout") && retried {
            PRESENT
        } else {
            v
        };
        push_value(
            o,
            format!("{prefix}.header.{k}"),
            &reduce(PRESENCE_ONLY_UPSTREAM, k, v),
        );
    }
}

/// Header names as written, sorted ignoring case (the proxies order headers differently),
/// `,`-joined.
fn sorted_names(names: &[String]) -> String {
    let mut names = names.to_vec();
    names.sort_by_key(|n| n.to_ascii_lowercase());
    names.join(",")
}

/// `v`, or [`PRESENT`] when `k` is in `list` — except an `x-request-id`: one that is not a
/// UUID (the client's own) must arrive unchanged, so it is compared, and a UUID (generated, or
/// the client's) keeps its 15th character, the version nibble where Envoy packs the trace
/// reason (`4` none, `9` sampled, `a` forced, `b` client): `<uuid:9>`.
fn reduce<'a>(list: &[&str], k: &str, v: &'a str) -> std::borrow::Cow<'a, str> {
    if !list.contains(&k) {
        v.into()
    } else if k == "x-request-id" {
        if is_uuid(v) {
            format!("<uuid:{}>", &v[14..15]).into()
        } else {
            v.into()
        }
    } else {
        PRESENT.into()
    }
}

/// A cookie a hash policy generated (`name="<16 hex digits>"...`) has a value that depends on
/// the client's port: the value becomes [`GENERATED_COOKIE`], the attributes stay compared.
fn mask_generated_cookie(v: &str) -> std::borrow::Cow<'_, str> {
    if let Some((name, rest)) = v.split_once("=\"") {
        if let Some((value, tail)) = rest.split_once('"') {
            if value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return format!("{name}=\"{GENERATED_COOKIE}\"{tail}").into();
            }
        }
    }
    v.into()
}

/// What [`mask_generated_cookie`] puts for a generated cookie's value.
pub const GENERATED_COOKIE: &str = "<generated>";

fn is_uuid(v: &str) -> bool {
    let groups: Vec<&str> = v.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A body as observed: the text, or for more than 256 bytes its length and FNV-1a hash.
pub fn body_text(b: &[u8]) -> String {
    if b.len() <= 256 {
        return String::from_utf8_lossy(b).into_owned();
    }
    let hash = b.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("<{} bytes, fnv1a {hash:016x}>", b.len())
}

fn push_value(o: &mut Observation, key: String, v: &str) {
    o.entry(key)
        .and_modify(|old| {
            old.push('\n');
            old.push_str(v);
        })
        .or_insert_with(|| v.to_string());
}

/// Checks a case's `expect` entries against observations (Envoy's): one line per mismatch.
pub fn check_expectations(case: &Case, obs: &[Observation]) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, (req, o)) in case.requests.iter().zip(obs).enumerate() {
        for (k, want) in &req.expect {
            let got = o.get(k).map(String::as_str).unwrap_or(ABSENT);
            // `<present>` holds for any value (a reduced one such as `<uuid:4>` included).
            let holds = got == want || (want == PRESENT && got != ABSENT);
            if !holds {
                bad.push(format!(
                    "  req[{i}] {} {}: {k}: expected {want:?}, got {got:?}",
                    req.method, req.path
                ));
            }
        }
    }
    bad
}

/// The comparison of one case: undeclared differences (failures), declared ones, and declarations
/// that matched nothing (stale, also failures).
#[derive(Debug, Default)]
pub struct Diff {
    /// `req[i] key: envoy=.. sluice=..` lines not covered by a declaration.
    pub undeclared: Vec<String>,
    /// The observation key of each `undeclared` line, in the same order.
    pub undeclared_keys: Vec<String>,
    /// Differences covered by a declared divergence, with its reason.
    pub declared: Vec<String>,
    /// Declared divergences that matched no difference.
    pub stale: Vec<String>,
}

/// Compares Envoy's and sluice's observations of `case`, key by key.
pub fn compare(case: &Case, envoy: &[Observation], sluice: &[Observation]) -> Diff {
    let mut d = Diff::default();
    let mut used: BTreeMap<(Option<usize>, &str), bool> = BTreeMap::new();
    for k in case.diverge.keys() {
        used.insert((None, k), false);
    }
    for (i, r) in case.requests.iter().enumerate() {
        for k in r.diverge.keys() {
            used.insert((Some(i), k), false);
        }
    }
    let empty = Observation::new();
    for (i, req) in case.requests.iter().enumerate() {
        let (e, s) = (
            envoy.get(i).unwrap_or(&empty),
            sluice.get(i).unwrap_or(&empty),
        );
        let keys: std::collections::BTreeSet<&String> = e.keys().chain(s.keys()).collect();
        for k in keys {
            let (ev, sv) = (
                e.get(k).map(String::as_str).unwrap_or(ABSENT),
                s.get(k).map(String::as_str).unwrap_or(ABSENT),
            );
            if ev == sv {
                continue;
            }
            let line = format!(
                "  req[{i}] {} {} {k}: envoy={ev:?} sluice={sv:?}",
                req.method, req.path
            );
            let hit = find_decl(&req.diverge, k)
                .map(|(p, reason)| ((Some(i), p), reason))
                .or_else(|| find_decl(&case.diverge, k).map(|(p, reason)| ((None, p), reason)));
            match hit {
                Some((slot, reason)) => {
                    used.insert(slot, true);
                    d.declared.push(format!("{line} (declared: {reason})"));
                }
                None => {
                    d.undeclared.push(line);
                    d.undeclared_keys.push(k.clone());
                }
            }
        }
    }
    for ((i, k), hit) in used {
        if !hit {
            let at = i
                .map(|i| format!("req[{i}]"))
                .unwrap_or_else(|| "case".into());
            d.stale.push(format!(
                "  {at} declared divergence {k:?} did not occur (remove it here and in docs)"
            ));
        }
    }
    d
}

fn find_decl<'a>(decls: &'a BTreeMap<String, String>, key: &str) -> Option<(&'a str, &'a str)> {
    decls
        .iter()
        .find(|(p, _)| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => p.as_str() == key,
        })
        .map(|(p, r)| (p.as_str(), r.as_str()))
}

/// A scratch directory for this process's runs.
pub fn workdir() -> PathBuf {
    std::env::temp_dir().join(format!("sluice-conformance-{}", std::process::id()))
}

/// The heading under which every declared divergence must be listed.
pub const DIVERGENCE_HEADING: &str = "## Known divergences from Envoy";

/// The documentation page holding [`DIVERGENCE_HEADING`]: docs/config.md once the section has been
/// folded in there, docs/conformance.md until then. Returns the path and the section's text.
pub fn divergence_docs() -> (PathBuf, String) {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    for name in ["config.md", "conformance.md"] {
        let path = docs.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Some(start) = text.find(DIVERGENCE_HEADING) {
                let body = &text[start + DIVERGENCE_HEADING.len()..];
                let end = body.find("\n## ").unwrap_or(body.len());
                return (path, body[..end].to_string());
            }
        }
    }
    panic!(
        "no `{DIVERGENCE_HEADING}` section in {}/config.md or conformance.md",
        docs.display()
    )
}

/// Declared divergences that the docs section does not list: each must appear as a line naming
/// the case (`` `case` ``) and the key (`` `key` ``).
pub fn undocumented_divergences(cases: &[Case], section: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for case in cases {
        let keys = case
            .diverge
            .keys()
            .chain(case.requests.iter().flat_map(|r| r.diverge.keys()));
        for key in keys {
            let (c, k) = (format!("`{}`", case.name), format!("`{key}`"));
            if !section.lines().any(|l| l.contains(&c) && l.contains(&k)) {
                missing.push(format!("  {}: {key}", case.name));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests;
