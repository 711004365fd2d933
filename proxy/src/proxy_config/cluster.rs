//! `proxy-config cluster`: istioctl's SERVICE FQDN / PORT / SUBSET / DIRECTION / TYPE /
//! DESTINATION RULE table, filters `--fqdn`, `--port`, `--subset`, `--direction` (substring
//! matches on the cluster name, as istioctl's).

use serde_json::Value;

use super::dump::{management, subset_key};

/// istioctl's cluster filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `--fqdn`.
    pub fqdn: String,
    /// `--port`.
    pub port: u32,
    /// `--subset`.
    pub subset: String,
    /// `--direction`.
    pub direction: String,
}

impl Filter {
    /// Whether `cluster` passes.
    pub fn verify(&self, cluster: &Value) -> bool {
        let name = cluster["name"].as_str().unwrap_or("");
        (self.fqdn.is_empty() || name.contains(&self.fqdn))
            && (self.direction.is_empty() || name.contains(&self.direction))
            && (self.subset.is_empty() || name.contains(&self.subset))
            && (self.port == 0 || name.contains(&format!("|{}|", self.port)))
    }
}

/// The clusters sorted as istioctl sorts them (fqdn, subset, port, direction).
pub fn sorted(mut clusters: Vec<Value>) -> Vec<Value> {
    clusters.sort_by_key(|c| {
        let (d, s, n, p) = subset_key(c["name"].as_str().unwrap_or(""));
        (n, s, p, d)
    });
    clusters
}

/// The `short` table rows (header first); `with_name` adds istioctl's `all` NAME column.
pub fn rows(clusters: &[Value], f: &Filter, with_name: bool) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut head = vec![
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
    ];
    if with_name {
        head.insert(0, "NAME");
    }
    rows.push(head.into_iter().map(String::from).collect());
    for c in sorted(clusters.to_vec()).iter().filter(|c| f.verify(c)) {
        let name = c["name"].as_str().unwrap_or("");
        let ty = c["type"].as_str().unwrap_or("STATIC").to_string();
        let mut row = if name.split('|').count() > 3 {
            let (d, s, n, p) = subset_key(name);
            let s = if s.is_empty() { "-".into() } else { s };
            vec![n, p.to_string(), s, d, ty, management(c)]
        } else {
            vec![
                name.into(),
                "-".into(),
                "-".into(),
                "-".into(),
                ty,
                management(c),
            ]
        };
        if with_name {
            row.insert(0, format!("cluster/{name}"));
        }
        rows.push(row);
    }
    rows
}
