//! The field inventory (docs/config-fields.txt): every field of the Envoy messages sluice's config
//! reads, one line each, with what sluice does with it. Parsed here; checked against Envoy's proto
//! descriptors and the config loader by tests/tests/config_fields.rs; rendered into
//! docs/config-fields.md ([`render`]) and, with the conformance cases' `covers:`, into
//! docs/conformance-coverage.md ([`coverage`]).
//!
//! A line is `<message>.<field>  <status>  <note>`: the full proto message name without the
//! `envoy.` prefix, then the field (`config.route.v3.RouteAction.prefix_rewrite`), a status
//! (`supported`, `no-op` or `rejected`) and the rest of the line as the note (required for `no-op`
//! and `rejected`: why). Columns are separated by runs of spaces; `#` starts a comment line.

pub mod coverage;
pub mod probe;
pub mod render;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

/// Messages the inventory must list completely (every field of each). Any other message named in
/// the inventory must be complete too.
pub const ROOT_MESSAGES: &[&str] = &[
    "config.route.v3.RouteConfiguration",
    "config.route.v3.VirtualHost",
    "config.route.v3.Route",
    "config.route.v3.RouteMatch",
    "config.route.v3.RouteAction",
    "config.route.v3.RouteAction.HashPolicy",
    "config.route.v3.RouteAction.HashPolicy.Header",
    "config.route.v3.RouteAction.HashPolicy.Cookie",
    "config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
    "config.route.v3.WeightedCluster",
    "config.route.v3.WeightedCluster.ClusterWeight",
    "config.route.v3.RedirectAction",
    "config.route.v3.DirectResponseAction",
    "config.route.v3.HeaderMatcher",
    "config.route.v3.QueryParameterMatcher",
    "config.route.v3.RetryPolicy",
    "config.route.v3.RetryPolicy.RetryBackOff",
    "config.route.v3.HedgePolicy",
    "config.route.v3.CorsPolicy",
    "config.route.v3.RateLimit",
    "config.route.v3.Decorator",
    "config.route.v3.Tracing",
    "config.core.v3.HeaderValueOption",
    "config.core.v3.HeaderValue",
    "type.matcher.v3.StringMatcher",
    "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
    "extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing",
    "extensions.filters.network.http_connection_manager.v3.RequestIDExtension",
    "extensions.request_id.uuid.v3.UuidRequestIdConfig",
    "type.tracing.v3.CustomTag",
    "config.accesslog.v3.AccessLog",
    "config.cluster.v3.Cluster",
    "config.cluster.v3.Cluster.EdsClusterConfig",
    "config.cluster.v3.Cluster.LeastRequestLbConfig",
    "config.cluster.v3.Cluster.RingHashLbConfig",
    "config.cluster.v3.Cluster.MaglevLbConfig",
    "config.cluster.v3.Cluster.OriginalDstLbConfig",
    "config.cluster.v3.CircuitBreakers",
    "config.cluster.v3.CircuitBreakers.Thresholds",
    "config.cluster.v3.OutlierDetection",
    "config.core.v3.HealthCheck",
    "config.core.v3.HealthCheck.HttpHealthCheck",
    "config.endpoint.v3.ClusterLoadAssignment",
    "config.endpoint.v3.ClusterLoadAssignment.Policy",
    "config.endpoint.v3.LocalityLbEndpoints",
    "config.endpoint.v3.LbEndpoint",
    "config.endpoint.v3.Endpoint",
    "config.core.v3.Address",
    "config.core.v3.SocketAddress",
];

/// What sluice does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Implemented with Envoy's semantics.
    Supported,
    /// Accepted and documented to have no observable effect here.
    NoOp,
    /// The config loader rejects it, naming the field.
    Rejected,
}

impl Status {
    /// Every status, in report order.
    pub const ALL: [Status; 3] = [Status::Supported, Status::NoOp, Status::Rejected];

    fn parse(word: &str) -> Option<Status> {
        match word {
            "supported" => Some(Status::Supported),
            "no-op" => Some(Status::NoOp),
            "rejected" => Some(Status::Rejected),
            _ => None,
        }
    }

    /// Whether the config loader accepts the field.
    pub fn accepted(self) -> bool {
        self != Status::Rejected
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Supported => "supported",
            Status::NoOp => "no-op",
            Status::Rejected => "rejected",
        })
    }
}

/// One line of the inventory.
#[derive(Debug, Clone)]
pub struct Field {
    /// `<message>.<field>`, the message's full name without `envoy.`.
    pub name: String,
    /// What sluice does with it.
    pub status: Status,
    /// Why (required unless supported), or the supported subset's limits.
    pub note: String,
    /// 1-based line in the inventory file.
    pub line: usize,
}

impl Field {
    /// The message's full name without `envoy.` (everything before the last `.`).
    pub fn message(&self) -> &str {
        self.name.rsplit_once('.').map_or("", |(m, _)| m)
    }

    /// The field's proto name (after the last `.`).
    pub fn field(&self) -> &str {
        self.name.rsplit_once('.').map_or(&self.name, |(_, f)| f)
    }
}

/// The parsed inventory, in file order.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Every field line.
    pub fields: Vec<Field>,
}

impl Inventory {
    /// Parses the inventory text; an error names the line.
    pub fn parse(text: &str) -> Result<Inventory, String> {
        let mut fields = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (name, rest) = split_word(trimmed);
            let (status, note) = split_word(rest);
            let status = Status::parse(status).ok_or_else(|| {
                format!("line {line}: status {status:?}: expected supported, no-op or rejected")
            })?;
            if !name.contains('.') || name.starts_with("envoy.") {
                return Err(format!(
                    "line {line}: {name:?}: expected <message without envoy.>.<field>"
                ));
            }
            if status != Status::Supported && note.is_empty() {
                return Err(format!(
                    "line {line}: {name}: a {status} field needs a note (why)"
                ));
            }
            if !seen.insert(name.to_string()) {
                return Err(format!("line {line}: {name} is listed twice"));
            }
            fields.push(Field {
                name: name.to_string(),
                status,
                note: note.to_string(),
                line,
            });
        }
        Ok(Inventory { fields })
    }

    /// Loads and parses [`path`]; panics naming the file.
    pub fn load() -> Inventory {
        let path = path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Inventory::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The field named `name` (`<message>.<field>`).
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Every message named, in order of first appearance.
    pub fn messages(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.fields {
            if !out.contains(&f.message()) {
                out.push(f.message());
            }
        }
        out
    }

    /// The fields of `message`, in file order.
    pub fn fields_of<'a>(&'a self, message: &'a str) -> impl Iterator<Item = &'a Field> + 'a {
        self.fields.iter().filter(move |f| f.message() == message)
    }
}

/// The first whitespace-separated word and the trimmed rest.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

/// The repository's docs/ directory.
pub fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// docs/config-fields.txt, the inventory.
pub fn path() -> PathBuf {
    docs_dir().join("config-fields.txt")
}

/// The generated docs: (file name under docs/, what [`coverage::generate`] writes there).
pub const GENERATED: [&str; 2] = ["config-fields.md", "conformance-coverage.md"];

/// What to do when a generated doc is stale.
pub const REGENERATE: &str = "run `cargo xtask conformance-coverage` and commit the result";
