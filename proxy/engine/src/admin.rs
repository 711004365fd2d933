//! Admin interface with Envoy's paths and formats: `/config_dump` (ConfigDump JSON, with
//! `resource=`, `mask=`, `name_regex=`, `include_eds`), `/clusters` and `/listeners` (text and
//! `?format=json`), `/server_info`, `/ready`, `/stats`, `/stats/prometheus`, sluice's `/explain`, and the mutating
//! `/logging`, `/drain_listeners`, `/quitquitquit`, which answer POST only (GET gets Envoy's
//! 405). The admin listener binds `admin.address` from the config (Envoy configs put it on
//! 127.0.0.1). Everything here reads the current [`Runtime`](crate::server::Runtime); nothing
//! runs on a request's path.

mod certs;
mod clusters;
pub mod config_dump;
pub mod explain;
mod listeners;
pub mod logging;
mod origin;
pub mod query;
mod redact;
pub mod time;
mod xds_status;

use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
    time::Instant,
};

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub use self::{
    config_dump::{configs, set_canonicalizer, Canonicalizer},
    origin::{ConfigOrigin, DynamicEntry},
    query::{DumpQuery, QueryError},
    xds_status::StatusProvider,
};
use crate::{
    http::{local_reply, Body},
    server::{Runtime, Server},
};

/// `/config_dump?<query>` of `rt` as JSON text (pretty, like Envoy's), or the status and
/// message Envoy answers for a bad query. The node agent calls this per pod.
pub fn config_dump(rt: &Runtime, query: &str) -> Result<String, QueryError> {
    let q = DumpQuery::parse(query)?;
    let v = q.apply(configs(rt, q.include_eds))?;
    Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n")
}

/// What `/quitquitquit` does; the default sends SIGTERM to this process, which takes the
/// normal shutdown path of `sluice proxy`.
pub type QuitHook = fn();

static QUIT: OnceLock<QuitHook> = OnceLock::new();

/// Installs the `/quitquitquit` action (first call wins).
pub fn set_quit_hook(f: QuitHook) {
    let _ = QUIT.set(f);
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Accepts admin connections until the process ends.
pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    started();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Back off like the main listener: at EMFILE `continue` would spin a core.
            Err(e) => {
                crate::accept::failed(&e).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(route(&server, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

fn reply(status: u16, body: String, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(local_reply::full(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The paths that change state: POST only, as in Envoy.
const MUTATING: &[&str] = &[
    "/logging",
    "/drain_listeners",
    "/quitquitquit",
    "/healthcheck/fail",
    "/healthcheck/ok",
];

const HELP: &str = "admin commands are:
  /certs: print certs on machine
  /clusters: upstream cluster status
      format: File format to use; One of (text, json)
  /config_dump: dump current Envoy configs
      resource: The resource to dump
      mask: The mask to apply
      name_regex: Dump only the currently loaded configurations whose names match the specified regex
      include_eds: Dump currently loaded configuration including EDS
  /drain_listeners (POST): drain listeners
      inboundonly: Drains all inbound listeners
  /explain: how the live config routes a request (sluice)
      url: The request URL (http://host:port/path?query; the port picks the listener)
      method: The request method (default GET)
      header: A request header, name:value (repeatable)
      listener: Explain on this listener instead of the one the URL reaches
      seed: The random draw for weighted clusters (default 0)
  /healthcheck/fail (POST): cause the server to fail health checks
  /healthcheck/ok (POST): cause the server to pass health checks
  /help: print out list of admin commands
  /listeners: print listener info
      format: File format to use; One of (text, json)
  /logging (POST): query/change logging levels
  /quitquitquit (POST): exit the server
  /ready: print server state, return 200 if LIVE, otherwise return 503
  /server_info: print server version/status information
  /stats: print server stats
  /stats/prometheus: print server stats in prometheus format
  /xds_status: the xDS client's state per resource type and its control-plane stream (sluice only)
";

/// Content type of Prometheus' text format.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4";

/// `/stats/prometheus`: Envoy's counters in Envoy's Prometheus naming, then Istio's standard
/// metrics (also what the sidecar serves on 15090).
pub fn prometheus(server: &Server) -> String {
    let mut out = server.stats.render_prometheus();
    out.push_str(&crate::server::istio::encode::text(vec![
        crate::server::istio::encode::Target {
            metrics: vec![server.stats.istio.clone()],
            ..Default::default()
        },
    ]));
    out
}

fn route(server: &Server, req: &Request<Incoming>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("");
    respond(server, req.method(), req.uri().path(), query)
}

/// The admin's answer to `method path?query` on `server`: what the admin listener serves, and
/// what the node agent serves for each pod (sluice-node's `pod_admin`, which refuses the
/// process-wide paths first).
pub fn respond(server: &Server, method: &Method, path: &str, query: &str) -> Response<Body> {
    let format_json = query::params(query).any(|(k, v)| k == "format" && v == "json");
    if MUTATING.contains(&path) && method != Method::POST {
        return reply(
            405,
            format!("Method {method} not allowed, POST required."),
            TEXT,
        );
    }
    let rt = server.runtime();
    match path {
        "/ready" => match server_state(server) {
            "LIVE" => reply(200, "LIVE\n".into(), TEXT),
            state => reply(503, format!("{state}\n"), TEXT),
        },
        "/healthcheck/fail" | "/healthcheck/ok" => {
            let fail = path == "/healthcheck/fail";
            server
                .stats
                .health_check_failed
                .store(fail, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(fail, "admin: {path}");
            reply(200, "OK\n".into(), TEXT)
        }
        "/config_dump" => match config_dump(&rt, query) {
            Ok(body) => reply(200, body, JSON),
            Err(e) => reply(e.status, e.message, TEXT),
        },
        "/explain" => match explain::json(&rt, query) {
            Ok(body) => reply(200, body, JSON),
            Err(e) => reply(e.status, e.message, TEXT),
        },
        "/certs" => reply(200, pretty(&certs::json(&rt)), JSON),
        "/clusters" if format_json => reply(200, pretty(&clusters::json(&rt)), JSON),
        "/clusters" => reply(200, clusters::text(&rt), TEXT),
        "/listeners" if format_json => reply(200, pretty(&listeners::json(&rt)), JSON),
        "/listeners" => reply(200, listeners::text(&rt), TEXT),
        "/server_info" => reply(200, pretty(&server_info(server, &rt)), JSON),
        "/stats" => reply(200, server.stats.render(), TEXT),
        "/stats/prometheus" => reply(200, prometheus(server), PROMETHEUS),
        "/logging" => {
            let (status, body) = logging::post(query::params(query));
            reply(status, body, TEXT)
        }
        "/drain_listeners" => {
            let inbound_only = query::params(query).any(|(k, _)| k == "inboundonly");
            let names = drain_targets(&rt, inbound_only);
            let n = server.stop_accepting(&names);
            tracing::info!(listeners = n, inbound_only, "admin: listeners drained");
            reply(200, "OK\n".into(), TEXT)
        }
        "/quitquitquit" => {
            tracing::info!("admin: /quitquitquit");
            (QUIT.get().copied().unwrap_or(terminate_self))();
            reply(200, "OK\n".into(), TEXT)
        }
        "/xds_status" => reply(200, pretty(&xds_status::json(server, &rt)), JSON),
        "/help" => reply(200, HELP.into(), TEXT),
        _ => reply(404, format!("invalid path. {HELP}"), TEXT),
    }
}

/// The listeners `/drain_listeners` stops: all, or with `inboundonly` those whose
/// `traffic_direction` is INBOUND.
fn drain_targets(rt: &Runtime, inbound_only: bool) -> Vec<String> {
    rt.bootstrap
        .listeners
        .iter()
        .filter(|l| !inbound_only || l.traffic_direction.as_deref() == Some("INBOUND"))
        .map(|l| l.name.as_str().to_string())
        .collect()
}

/// Envoy's `serverState`: INITIALIZING until the first configuration is complete, then
/// DRAINING while the server fails its health checks (`/healthcheck/fail`), else LIVE.
fn server_state(server: &Server) -> &'static str {
    if !server.is_ready() {
        "INITIALIZING"
    } else if server
        .stats
        .health_check_failed
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        "DRAINING"
    } else {
        "LIVE"
    }
}

fn terminate_self() {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGTERM);
}

/// `/server_info` (`envoy.admin.v3.ServerInfo`, the fields sluice can fill).
fn server_info(server: &Server, rt: &Runtime) -> Value {
    let up = format!("{}s", started().elapsed().as_secs());
    let mut node = rt.source.get("node").cloned().unwrap_or_else(|| json!({}));
    if node.is_object() {
        node["user_agent_name"] = json!("sluice");
    }
    json!({
        "version": concat!("sluice/", env!("CARGO_PKG_VERSION")),
        "state": server_state(server),
        "uptime_current_epoch": up,
        "uptime_all_epochs": up,
        "hot_restart_version": "disabled",
        "node": node,
        "command_line_options": {},
    })
}

#[cfg(test)]
mod tests;
