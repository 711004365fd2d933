//! Case files (tests/conformance/*.yaml): the schema, loading, and rendering a case into the one
//! Envoy bootstrap YAML both proxies run.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    dns::DnsSpec,
    upstream::{pattern, Reply},
};

/// One conformance case: a config, upstream scripts and the requests to send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// File stem, filled in by [`load_all`].
    #[serde(skip)]
    pub name: String,
    /// What the case checks.
    pub description: String,
    /// The Envoy proto fields whose observable effect the case checks, each as the full message
    /// name without `envoy.` and the field: `config.route.v3.HeaderMatcher.range_match`,
    /// `extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.merge_slashes`.
    #[serde(default)]
    pub covers: Vec<String>,
    /// A complete bootstrap as text, with `{{listener}}`, `{{upstream.NAME}}`, `{{closed_port}}`,
    /// `{{unanswered_port}}`, `{{redirected_port}}`, `{{access_log}}`, `{{ca_file}}` and `{{pki_dir}}` placeholders. Exclusive with `route_config`; `clusters` then only names the upstreams to run.
    pub bootstrap: Option<String>,
    /// The http_connection_manager's inline `route_config`; the harness wraps it into a bootstrap
    /// with one listener named `main` on `{{listener}}`.
    pub route_config: Option<Value>,
    /// Extra http_connection_manager fields (e.g. `use_remote_address`).
    #[serde(default)]
    pub hcm: serde_json::Map<String, Value>,
    /// Clusters by name. Each gets a recording upstream server (unless `closed`) and, with
    /// `route_config`, a STATIC cluster pointing at it.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Reply scripts by upstream (cluster) name; default: 200 with the name as body.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Vec<Reply>>,
    /// Requests, sent in order on fresh connections.
    pub requests: Vec<CaseRequest>,
    /// Rename upstreams in the `upstream` observation by order of first appearance in the case
    /// (`#1`, `#2`, ...), for load-balancing cases where only the pattern is deterministic.
    #[serde(default)]
    pub relabel_upstreams: bool,
    /// Observe `up.conn`: which connection of its upstream server the last attempt came on (1
    /// for the server's first), for connection reuse cases (`max_requests_per_connection`).
    #[serde(default)]
    pub upstream_conns: bool,
    /// The upstream order is one round of this many picks repeated from a random start (Envoy's
    /// weighted round robin): the `upstream` observations are rotated to a canonical start first.
    #[serde(default)]
    pub upstream_round: Option<usize>,
    /// Upstreams that get shadow (mirrored) copies: their recordings are left out of
    /// `upstream` / `attempts` / `up.*` and observed as `shadow.*` (see the module doc of
    /// `conformance`), after a short wait, since a shadow arrives in its own time.
    #[serde(default)]
    pub shadow_upstreams: Vec<String>,
    /// Upstreams that answer a filter's side call (an ext_authz check): their recordings are
    /// left out of `upstream` / `attempts` / `up.*` and observed as `check.*` (the call is made
    /// before the response, so nothing is waited for).
    #[serde(default)]
    pub check_upstreams: Vec<String>,
    /// Observe `log` on every request: the lines the proxy appended to the file `{{access_log}}`
    /// (an HCM `FileAccessLog` path in the config) during it, masked by
    /// [`super::access_log::normalize`].
    #[serde(default)]
    pub access_log: bool,
    /// With `access_log`, a custom `log_format`'s varying tokens: the space-separated tokens of
    /// a line at these indexes (from 0) are observed as `<x>` instead of Envoy's default
    /// format's time and durations (see [`super::access_log::normalize`]).
    #[serde(default)]
    pub log_mask: Vec<usize>,
    /// With `access_log`, a custom `log_format`'s durations: the tokens at these indexes are
    /// observed as `<ms>` when they are a number (`-` stays, and is compared).
    #[serde(default)]
    pub log_ms: Vec<usize>,
    /// The path of the config's HTTP health checks: requests for it are answered from
    /// `health_replies` and never observed as the case's requests (only as `startup.*`).
    pub health_check_path: Option<String>,
    /// Health check reply scripts by upstream name (see [`super::upstream::HealthScripts`]).
    #[serde(default)]
    pub health_replies: BTreeMap<String, Vec<Reply>>,
    /// Observe `up.keepalive`: the kernel's keepalive timer on the proxy's connection that
    /// carried the last attempt, right after the response ([`super::keepalive`]).
    #[serde(default)]
    pub upstream_keepalive: bool,
    /// Observe on the first request what the upstream servers got before it (the proxy's first
    /// active health checks) as `startup.upstream` (names sorted) and `startup.NAME.*` (the
    /// last such request each, reduced like `up.*`).
    #[serde(default)]
    pub startup_requests: bool,
    /// Declared divergences for every request: observation key (or `sluice-start`) -> reason. A key
    /// ending in `*` is a prefix. Each must also be listed in docs/conformance.md.
    #[serde(default)]
    pub diverge: BTreeMap<String, String>,
    /// Reserve `{{redirected_port}}` and REDIRECT it to the listener while the case runs
    /// ([`super::redirect`]); a request's `to: redirected` connects there.
    #[serde(default)]
    pub redirected: bool,
    /// A DNS server both proxies resolve through, observed as `dns.NAME` on every request
    /// ([`super::dns`]).
    pub dns: Option<DnsSpec>,
}

/// How a cluster of a case is backed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Point the endpoint at a closed loopback port (connect failure) instead of an upstream server.
    #[serde(default)]
    pub closed: bool,
    /// The upstream server speaks TLS (the test PKI's `localhost` certificate; its CA in the file
    /// `{{ca_file}}`); the case's cluster config sets the `transport_socket`.
    #[serde(default)]
    pub tls: bool,
    /// Point the endpoint at a loopback port that never answers a connect (the SYN is dropped,
    /// [`super::unanswered`]), so a connect hangs until the cluster's `connect_timeout`.
    #[serde(default)]
    pub unanswered: bool,
    /// The upstream is a gRPC ext_authz service (HTTP/2 plaintext; the case's `extra` sets the
    /// cluster's HTTP/2 options), answering from its script (`upstream::grpc_authz`).
    #[serde(default)]
    pub grpc_authz: bool,
    /// Extra cluster fields merged into the generated cluster (e.g. `connect_timeout`, `lb_policy`).
    #[serde(default)]
    pub extra: serde_json::Map<String, Value>,
}

/// One request of a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// Method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request target.
    pub path: String,
    /// Host header (default `example.com`); `null` sends none.
    #[serde(default = "default_host")]
    pub host: Option<String>,
    /// Extra request headers in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Option<String>,
    /// Send on the previous request's connection (HTTP/1.1 keep-alive) instead of a new one.
    #[serde(default)]
    pub reuse: bool,
    /// Send the request as HTTP/1.0.
    #[serde(default)]
    pub http10: bool,
    /// Instead of `body`: this many bytes of [`super::upstream::pattern`].
    pub body_size: Option<usize>,
    /// Wait this long before sending (connection timers: `idle_timeout`,
    /// `max_connection_duration`).
    pub pause_ms: Option<u64>,
    /// Send it inside TLS with this SNI (the server verified against the TLS upstreams' CA): for
    /// listeners that pass TLS through (`server_names` chains to `tls` upstreams). Not checked
    /// against explain, which is asked about plaintext requests.
    pub tls_sni: Option<String>,
    /// Connect to `redirected` (`{{redirected_port}}`) or `closed` (`{{closed_port}}`) instead
    /// of the listener. Not checked against explain (which is asked about the listener).
    pub to: Option<String>,
    /// A PROXY protocol header written before the request on a fresh connection: text (a v1
    /// line, YAML escapes for `\r\n`), or `hex:` and the bytes in hex (a v2 header). Not
    /// checked against explain, which is asked about a connection with its own addresses.
    pub proxy_header: Option<String>,
    /// Send it on its own connection without waiting for the answer: the next request goes out
    /// once an upstream got this one (it is then in flight there), and this one is observed
    /// after the next has been answered (no `log`, `startup.*` or shadows for it).
    #[serde(default)]
    pub background: bool,
    /// Observations Envoy must show (key -> value), checked so a case provably tests what it says.
    #[serde(default)]
    pub expect: BTreeMap<String, String>,
    /// Declared divergences for this request: key -> reason.
    #[serde(default)]
    pub diverge: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_host() -> Option<String> {
    Some("example.com".into())
}

/// Ports a rendering substitutes.
pub struct Ports<'a> {
    /// The listener.
    pub listener: u16,
    /// A loopback port nothing listens on.
    pub closed: u16,
    /// A loopback port whose listener never answers a connect.
    pub unanswered: u16,
    /// A loopback port redirected to the listener (with the case's `redirected`).
    pub redirected: u16,
    /// The access log file's path.
    pub access_log: &'a str,
    /// The file holding the TLS upstreams' CA certificate.
    pub ca_file: &'a str,
    /// The directory of the test PKI's PEM files (`{{pki_dir}}`: `ca.pem`, `client.pem` /
    /// `client.key`, `spiffe.pem` / `spiffe.key`, `server.pem` / `server.key`).
    pub pki_dir: &'a str,
    /// Upstream port by name.
    pub upstream: &'a dyn Fn(&str) -> u16,
}

impl Case {
    /// Names of the upstream servers to run (clusters not marked closed or unanswered).
    pub fn upstream_names(&self) -> Vec<String> {
        self.clusters
            .iter()
            .filter(|(_, c)| !c.closed && !c.unanswered)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The bootstrap YAML text with ports filled in.
    pub fn render(&self, ports: &Ports<'_>) -> String {
        let text = match (&self.bootstrap, &self.route_config) {
            (Some(b), None) => b.clone(),
            (None, Some(rc)) => self.wrap(rc),
            _ => panic!(
                "case {}: give exactly one of `bootstrap` and `route_config`",
                self.name
            ),
        };
        let mut out = text.replace("{{listener}}", &ports.listener.to_string());
        out = out.replace("{{closed_port}}", &ports.closed.to_string());
        out = out.replace("{{unanswered_port}}", &ports.unanswered.to_string());
        out = out.replace("{{redirected_port}}", &ports.redirected.to_string());
        out = out.replace("{{access_log}}", ports.access_log);
        out = out.replace("{{ca_file}}", ports.ca_file);
        out = out.replace("{{pki_dir}}", ports.pki_dir);
        for name in self.upstream_names() {
            out = out.replace(
                &format!("{{{{upstream.{name}}}}}"),
                &(ports.upstream)(&name).to_string(),
            );
        }
        assert!(
            !out.contains("{{"),
            "case {}: unknown placeholder left in:\n{out}",
            self.name
        );
        out
    }

    fn wrap(&self, route_config: &Value) -> String {
        let mut hcm = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "conformance",
            "route_config": route_config,
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
            }]
        });
        for (k, v) in &self.hcm {
            hcm[k] = v.clone();
        }
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, spec)| {
                let port = if spec.closed {
                    "{{closed_port}}".to_string()
                } else if spec.unanswered {
                    "{{unanswered_port}}".to_string()
                } else {
                    format!("{{{{upstream.{name}}}}}")
                };
                let mut c = json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "__PORT__"}}}}
                    ]}]}
                });
                for (k, v) in &spec.extra {
                    c[k] = v.clone();
                }
                (c, port)
            })
            .map(|(c, port)| {
                // Serialised separately so the port placeholder can be a bare integer in the YAML.
                let text = serde_norway::to_string(&c).expect("cluster to YAML");
                serde_json::Value::String(text.replace("'__PORT__'", &port).replace("__PORT__", &port))
            })
            .collect();
        let listener = json!({
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": "__LISTENER_PORT__"}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]
        });
        let listener_yaml = serde_norway::to_string(&json!({"listeners": [listener]}))
            .expect("listener to YAML")
            .replace("'__LISTENER_PORT__'", "{{listener}}")
            .replace("__LISTENER_PORT__", "{{listener}}");
        let mut out =
            String::from("# Rendered by tests/src/conformance/case.rs\nstatic_resources:\n");
        out.push_str(&indent(&listener_yaml, 2));
        out.push_str("  clusters:\n");
        for c in clusters {
            let text = c.as_str().expect("cluster text");
            out.push_str(&indent_list_item(text, 2));
        }
        out
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// `text` (a mapping) as one item of a block list indented by `n`.
fn indent_list_item(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{pad}- {l}\n")
            } else {
                format!("{pad}  {l}\n")
            }
        })
        .collect()
}

/// Loads every `*.yaml` case in `dir`, sorted by file name.
pub fn load_all(dir: &Path) -> Vec<Case> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading case directory {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            let mut case: Case = serde_norway::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing case {}: {e}", p.display()));
            case.name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            expand_sized_headers(&mut case);
            case
        })
        .collect()
}

/// A reply header value written `<N bytes>` stands for N bytes of [`pattern`] (a large
/// response head without a long line in the case file).
fn expand_sized_headers(case: &mut Case) {
    for (_, v) in case
        .upstreams
        .values_mut()
        .flatten()
        .flat_map(|r| &mut r.headers)
    {
        let n = v
            .strip_prefix('<')
            .and_then(|v| v.strip_suffix(" bytes>"))
            .and_then(|n| n.parse().ok());
        if let Some(n) = n {
            *v = pattern(n);
        }
    }
}

/// The bytes of a request's `proxy_header`: `hex:` and hex digits (spaces allowed), else the
/// text as is.
pub fn proxy_header_bytes(spec: &str) -> Vec<u8> {
    match spec.strip_prefix("hex:") {
        Some(hex) => {
            let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            digits
                .chunks(2)
                .map(|pair| {
                    let s = std::str::from_utf8(pair).unwrap_or("");
                    u8::from_str_radix(s, 16)
                        .unwrap_or_else(|_| panic!("proxy_header: bad hex byte {s:?}"))
                })
                .collect()
        }
        None => spec.as_bytes().to_vec(),
    }
}
