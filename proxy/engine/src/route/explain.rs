//! [`RouteTable::explain`]: the data path's [`RouteTable::select_observed`] run with a
//! recording observer, turned into a [`RouteTrace`] (`sluice explain`): the virtual hosts
//! and why the winner won, every route tried and why it did or did not match, and the
//! decision with its rewrites, header changes and cluster draw.

use serde::{Deserialize, Serialize};

use super::{
    describe::{describe_cookie, describe_header, describe_match, describe_query},
    observe::{DomainMatch, Mismatch, SelectObserver},
    ClusterSpecifier, HeaderMatcher, HostRewriteResult, RequestView, RouteTable, SelectedCluster,
    Selection,
};

/// Records what [`RouteTable::select_observed`] reports.
#[derive(Default)]
struct Recorder {
    host: Option<String>,
    vhost: Option<(usize, DomainMatch)>,
    tried: Vec<(usize, Result<(), Mismatch>)>,
}

impl SelectObserver for Recorder {
    fn virtual_host(&mut self, host: Option<&str>, found: Option<(usize, DomainMatch)>) {
        self.host = host.map(str::to_string);
        self.vhost = found;
    }
    fn route(&mut self, index: usize, result: Result<(), Mismatch>) {
        self.tried.push((index, result));
    }
}

/// The route table's part of an explanation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteTrace {
    /// `route_config.name`.
    pub route_config: String,
    /// The host the domains were matched against (lower-cased, port stripped with
    /// `ignore_port_in_host_matching`); `None` without a Host.
    pub host: Option<String>,
    /// Every virtual host, in config order.
    pub virtual_hosts: Vec<VhostStep>,
    /// The routes of the chosen virtual host, in order.
    pub routes: Vec<RouteStep>,
    /// What the request gets.
    pub decision: Decision,
}

/// One virtual host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VhostStep {
    /// `name`.
    pub name: String,
    /// `domains[]`.
    pub domains: Vec<String>,
    /// Whether this is the virtual host the request gets.
    pub chosen: bool,
    /// Why it won (only for the chosen one).
    pub why: Option<String>,
}

/// One route of the chosen virtual host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStep {
    /// Index in `routes[]`.
    pub index: usize,
    /// `name`, if set.
    pub name: Option<String>,
    /// The `match`, rendered.
    pub r#match: String,
    /// `matched`, `no: <why>`, or `not tried` (after the first match).
    pub result: String,
    /// Whether this is the route the request gets.
    pub matched: bool,
}

/// The routing decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// 404 NR.
    NoRoute {
        /// Why.
        why: String,
    },
    /// Forward to a cluster.
    Forward(Box<ForwardTrace>),
    /// A redirect.
    Redirect {
        /// Status code.
        status: u16,
        /// `Location`.
        location: String,
    },
    /// A direct response.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body, if any.
        body: Option<String>,
    },
}

/// A forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardTrace {
    /// The cluster (`None`: `cluster_header` absent, 503 NC).
    pub cluster: Option<String>,
    /// How it was chosen: `cluster`, `weighted_clusters` or `cluster_header <name>`.
    pub cluster_from: String,
    /// `weighted_clusters`: every cluster with its weight.
    pub weights: Vec<WeightStep>,
    /// `weighted_clusters`: the draw (`random % total_weight`).
    pub draw: Option<u64>,
    /// `:path` as received.
    pub path: String,
    /// `:path` sent upstream (`None` = unchanged).
    pub rewritten_path: Option<String>,
    /// `:authority` sent upstream (`auto` = the endpoint's host name).
    pub host_rewrite: Option<String>,
    /// Request headers added or changed by the route's header mutations (name, value).
    pub request_headers_set: Vec<(String, String)>,
    /// Request headers removed by them.
    pub request_headers_removed: Vec<String>,
    /// Response headers the mutations add on the way back (to an empty response).
    pub response_headers_set: Vec<(String, String)>,
    /// Response headers they remove.
    pub response_headers_removed: Vec<String>,
    /// Route `timeout` in milliseconds (`None` = disabled).
    pub timeout_ms: Option<u64>,
    /// `retry_policy.num_retries`, if a retry policy applies.
    pub retries: Option<u32>,
}

/// One `weighted_clusters.clusters[]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WeightStep {
    /// Cluster name.
    pub name: String,
    /// `weight`.
    pub weight: u32,
    /// Draws that pick it: `[from, to)`.
    pub range: (u64, u64),
}

impl RouteTable {
    /// Explains how `req` is routed: the data path's own [`Self::select_observed`] with a
    /// recording observer. `req_headers` are the request's headers (for the header diff).
    pub fn explain(
        &self,
        req: &RequestView<'_, Vec<(String, String)>>,
        req_headers: &[(String, String)],
    ) -> RouteTrace {
        let mut rec = Recorder::default();
        let selection = self.select_observed(req, &mut rec);
        let chosen = rec.vhost.map(|(i, _)| i);
        let untried = if matches!(selection, Selection::SslRedirect { .. }) {
            "not tried: require_tls redirects a request that is not https first"
        } else {
            "not tried"
        };
        let virtual_hosts = self
            .virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, v)| VhostStep {
                name: v.name.clone(),
                domains: v.domains.clone(),
                chosen: chosen == Some(i),
                why: rec
                    .vhost
                    .filter(|(c, _)| *c == i)
                    .map(|(_, how)| domain_why(how, rec.host.as_deref())),
            })
            .collect();
        let routes = match chosen {
            Some(vi) => self.virtual_hosts[vi]
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let tried = rec.tried.iter().find(|(t, _)| *t == i).map(|(_, res)| *res);
                    let result = match tried {
                        None => untried.to_string(),
                        Some(Ok(())) => "matched".to_string(),
                        Some(Err(m)) => format!("no: {}", mismatch_why(r, m, req)),
                    };
                    RouteStep {
                        index: i,
                        name: r.name.clone(),
                        r#match: describe_match(&r.matcher),
                        matched: tried == Some(Ok(())),
                        result,
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        let decision = decide(selection, &rec, req, req_headers);
        RouteTrace {
            route_config: self.name.clone(),
            host: rec.host,
            virtual_hosts,
            routes,
            decision,
        }
    }
}

fn domain_why(how: DomainMatch, host: Option<&str>) -> String {
    let host = host.unwrap_or("");
    match how {
        DomainMatch::OnlyDefault => "the only virtual host: domain \"*\" (Host not looked at)".into(),
        DomainMatch::Exact => format!("exact domain \"{host}\""),
        DomainMatch::Suffix(len) => format!(
            "suffix wildcard \"*{}\" (the longest suffix wildcard ending \"{host}\"; no exact domain)",
            &host[host.len() - len..]
        ),
        DomainMatch::Prefix(len) => format!(
            "prefix wildcard \"{}*\" (the longest prefix wildcard starting \"{host}\"; no exact or suffix domain)",
            &host[..len]
        ),
        DomainMatch::Default => {
            format!("default \"*\" (no exact, suffix or prefix domain matches \"{host}\")")
        }
    }
}

fn mismatch_why(
    route: &super::Route,
    m: Mismatch,
    req: &RequestView<'_, Vec<(String, String)>>,
) -> String {
    let (path, query) = super::select::split_path(req.path);
    match m {
        Mismatch::Path => format!("path \"{path}\" fails {}", describe_match(&route.matcher)),
        Mismatch::Header(i) => {
            let h = &route.matcher.headers[i];
            let value = match h.name.as_str() {
                ":method" => Some(req.method.to_string()),
                ":authority" | "host" => req.authority.map(str::to_string),
                ":path" => Some(req.path.to_string()),
                ":scheme" => Some(req.scheme.to_string()),
                name => HeaderMatcher::lookup(name, req.headers).map(|v| v.into_owned()),
            };
            let value = value.map_or("absent".to_string(), |v| format!("\"{v}\""));
            format!("header {} is {value}, wants {}", h.name, describe_header(h))
        }
        Mismatch::RuntimeFraction => match route.matcher.runtime_fraction {
            Some(f) => format!(
                "random value {} % {} is not below runtime_fraction {}",
                req.random, f.denominator, f.numerator
            ),
            None => "runtime_fraction".to_string(),
        },
        Mismatch::Grpc => "not a gRPC request (content-type)".to_string(),
        Mismatch::DynamicMetadata(i) => format!(
            "dynamic_metadata[{i}] (namespace {}) does not match",
            route.matcher.dynamic_metadata[i].namespace()
        ),
        Mismatch::Cookie(i) => {
            let c = &route.matcher.cookies[i];
            let value = super::cookies::cookie_value(req.headers, &c.name)
                .map_or("absent".to_string(), |v| format!("\"{v}\""));
            format!("cookie {} is {value}, wants {}", c.name, describe_cookie(c))
        }
        Mismatch::Query(i) => {
            let q = &route.matcher.query_parameters[i];
            format!(
                "query \"{}\" fails {}",
                query.unwrap_or(""),
                describe_query(q)
            )
        }
    }
}

fn decide(
    selection: Selection<'_>,
    rec: &Recorder,
    req: &RequestView<'_, Vec<(String, String)>>,
    req_headers: &[(String, String)],
) -> Decision {
    match selection {
        Selection::NoRoute => Decision::NoRoute {
            why: if rec.vhost.is_none() {
                "no virtual host matches the Host (404 NR)".into()
            } else {
                "no route of the virtual host matches (404 NR)".into()
            },
        },
        Selection::Redirect {
            status,
            location,
            redirect,
            path_start,
            ..
        } => Decision::Redirect {
            status,
            location: match &redirect.path {
                super::RedirectPath::Format(f) => {
                    let headers: http::HeaderMap = req_headers
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((
                                http::HeaderName::from_bytes(k.as_bytes()).ok()?,
                                http::HeaderValue::from_str(v).ok()?,
                            ))
                        })
                        .collect();
                    let ctx = super::format::FormatContext {
                        request: Some(&headers),
                        line: Some(super::format::RequestLine {
                            method: req.method,
                            path: req.path,
                            scheme: req.scheme,
                            authority: None,
                        }),
                        ..Default::default()
                    };
                    super::rendered_location(
                        f,
                        redirect.strip_query,
                        &location,
                        path_start,
                        req.path,
                        &ctx,
                    )
                    .into_owned()
                }
                _ => location,
            },
        },
        Selection::SslRedirect { location, .. } => Decision::Redirect {
            status: super::require_tls::SSL_REDIRECT_STATUS,
            location,
        },
        Selection::DirectResponse { response, .. } => Decision::DirectResponse {
            status: response.status,
            body: response
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        },
        Selection::Forward(f) => {
            let (cluster_from, weights, draw) = match &f.action.cluster {
                ClusterSpecifier::Cluster(_) => ("cluster".to_string(), Vec::new(), None),
                ClusterSpecifier::Weighted(w) => {
                    let mut from = 0;
                    let steps = w
                        .clusters
                        .iter()
                        .map(|c| {
                            let to = from + u64::from(c.weight);
                            let s = WeightStep {
                                name: c
                                    .cluster_header
                                    .as_ref()
                                    .map_or(c.name.to_string(), |h| format!("cluster_header {h}")),
                                weight: c.weight,
                                range: (from, to),
                            };
                            from = to;
                            s
                        })
                        .collect();
                    (
                        "weighted_clusters".to_string(),
                        steps,
                        Some(
                            w.random_value(req.headers, req.random, || {
                                super::request_hash::of_view(f.action, req)
                            }) % w.total_weight,
                        ),
                    )
                }
                ClusterSpecifier::Header(h) => (format!("cluster_header {h}"), Vec::new(), None),
            };
            let cluster = match f.cluster {
                SelectedCluster::Named(c) => Some(c.to_string()),
                SelectedCluster::FromHeader(h) => Some(h.to_string()),
                SelectedCluster::Missing => None,
            };
            let mut after = req_headers.to_vec();
            f.request_headers.apply(&mut after);
            let (request_headers_set, request_headers_removed) = diff(req_headers, &after);
            let mut resp: Vec<(String, String)> = Vec::new();
            f.response_headers.apply(&mut resp);
            let response_headers_removed = f
                .response_headers
                .iter()
                .flat_map(|l| l.remove.iter().cloned())
                .collect();
            Decision::Forward(Box::new(ForwardTrace {
                cluster,
                cluster_from,
                weights,
                draw,
                path: req.path.to_string(),
                rewritten_path: (f.path != req.path).then(|| f.path.to_string()),
                host_rewrite: match f.host_rewrite {
                    Some(HostRewriteResult::Literal(h)) => Some(h.to_string()),
                    Some(HostRewriteResult::Computed(h)) => Some(h),
                    Some(HostRewriteResult::Auto) => {
                        Some("auto (the endpoint's host name)".to_string())
                    }
                    Some(HostRewriteResult::Header(h)) => Some(format!("from header {h}")),
                    Some(HostRewriteResult::Format(_)) => {
                        Some("from host_rewrite's format (rendered at forward)".to_string())
                    }
                    None => f.cluster_host_rewrite.map(str::to_string),
                },
                request_headers_set,
                request_headers_removed,
                response_headers_set: resp,
                response_headers_removed,
                timeout_ms: f
                    .action
                    .timeout
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                retries: f.action.retry_policy.as_ref().map(|r| r.num_retries),
            }))
        }
    }
}

/// Headers in `after` that are not in `before` (set), names in `before` absent from `after`
/// (removed).
fn diff(
    before: &[(String, String)],
    after: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let set = after
        .iter()
        .filter(|h| !before.contains(h))
        .cloned()
        .collect();
    let mut removed: Vec<String> = before
        .iter()
        .filter(|(k, _)| !after.iter().any(|(a, _)| a.eq_ignore_ascii_case(k)))
        .map(|(k, _)| k.clone())
        .collect();
    removed.dedup();
    (set, removed)
}
