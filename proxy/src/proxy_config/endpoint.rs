//! `proxy-config endpoint`: istioctl's ENDPOINT / STATUS / OUTLIER CHECK / CLUSTER table from
//! `/clusters?format=json` (or, for a config dump file, from its EndpointsConfigDump), filters
//! `--address`, `--port`, `--cluster`, `--status`; and the `all` view's NAME / STATUS /
//! LOCALITY / CLUSTER table from the dump's EndpointsConfigDump.

use serde_json::Value;

use super::dump::{self, subset_key};

/// istioctl's endpoint filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `--address` (the IP, without the port).
    pub address: String,
    /// `--port`.
    pub port: u32,
    /// `--cluster`.
    pub cluster: String,
    /// `--status` (HEALTHY, UNHEALTHY, ...).
    pub status: String,
}

/// One host of one cluster.
#[derive(Debug, Clone)]
pub struct Endpoint {
    address: String,
    port: u64,
    cluster: String,
    status: String,
    failed_outlier: bool,
    locality: String,
}

impl Filter {
    fn verify(&self, e: &Endpoint) -> bool {
        (self.address.is_empty() || e.address.eq_ignore_ascii_case(&self.address))
            && (self.port == 0 || e.port == u64::from(self.port))
            && (self.cluster.is_empty() || e.cluster.eq_ignore_ascii_case(&self.cluster))
            && (self.status.is_empty() || e.status.eq_ignore_ascii_case(&self.status))
    }
}

fn socket(a: &Value) -> (String, u64) {
    let s = &a["socket_address"];
    match s["address"].as_str() {
        Some(ip) => (ip.to_string(), s["port_value"].as_u64().unwrap_or(0)),
        None => match a["pipe"]["path"].as_str() {
            Some(p) => (format!("unix://{p}"), 0),
            None => ("unknown".into(), 0),
        },
    }
}

/// The hosts of a `/clusters?format=json` answer.
pub fn from_clusters_json(v: &Value) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for c in v["cluster_statuses"].as_array().into_iter().flatten() {
        let cluster = c["name"].as_str().unwrap_or("").to_string();
        for h in c["host_statuses"].as_array().into_iter().flatten() {
            let (address, port) = socket(&h["address"]);
            out.push(Endpoint {
                address,
                port,
                cluster: cluster.clone(),
                status: h["health_status"]["eds_health_status"]
                    .as_str()
                    .unwrap_or("UNKNOWN")
                    .to_string(),
                failed_outlier: h["health_status"]["failed_outlier_check"] == true,
                locality: String::new(),
            });
        }
    }
    out
}

/// The hosts of a config dump's EndpointsConfigDump (`include_eds`).
pub fn from_dump(d: &Value) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for cla in dump::endpoints(d) {
        let cluster = cla["cluster_name"].as_str().unwrap_or("").to_string();
        for llb in cla["endpoints"].as_array().into_iter().flatten() {
            let l = &llb["locality"];
            let locality = [&l["region"], &l["zone"], &l["sub_zone"]]
                .iter()
                .map(|v| v.as_str().unwrap_or(""))
                .collect::<Vec<_>>();
            let locality = match locality.as_slice() {
                [r, "", _] => (*r).to_string(),
                [r, z, ""] => format!("{r}/{z}"),
                [r, z, s] => format!("{r}/{z}/{s}"),
                _ => String::new(),
            };
            for ep in llb["lb_endpoints"].as_array().into_iter().flatten() {
                let (address, port) = socket(&ep["endpoint"]["address"]);
                out.push(Endpoint {
                    address,
                    port,
                    cluster: cluster.clone(),
                    status: ep["health_status"]
                        .as_str()
                        .unwrap_or("UNKNOWN")
                        .to_string(),
                    failed_outlier: false,
                    locality: locality.clone(),
                });
            }
        }
    }
    out
}

fn endpoint(e: &Endpoint) -> String {
    if e.port != 0 {
        format!("{}:{}", e.address, e.port)
    } else {
        e.address.clone()
    }
}

/// The `short` table rows (header first), sorted by address, port, cluster (istioctl's).
pub fn rows(endpoints: &[Endpoint], f: &Filter) -> Vec<Vec<String>> {
    let mut eps: Vec<&Endpoint> = endpoints.iter().filter(|e| f.verify(e)).collect();
    eps.sort_by(|a, b| (&a.address, a.port, &a.cluster).cmp(&(&b.address, b.port, &b.cluster)));
    let mut rows = vec![["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]
        .map(String::from)
        .to_vec()];
    for e in eps {
        let outlier = if e.failed_outlier { "FAILED" } else { "OK" };
        rows.push(vec![
            endpoint(e),
            e.status.clone(),
            outlier.into(),
            e.cluster.clone(),
        ]);
    }
    rows
}

/// The `all` view's endpoint table (from the dump), sorted by cluster as istioctl sorts
/// clusters.
pub fn dump_rows(endpoints: &[Endpoint], f: &Filter) -> Vec<Vec<String>> {
    let mut eps: Vec<&Endpoint> = endpoints.iter().filter(|e| f.verify(e)).collect();
    eps.sort_by_key(|e| {
        let (d, s, n, p) = subset_key(&e.cluster);
        (n, s, p, d)
    });
    let mut rows = vec![["NAME", "STATUS", "LOCALITY", "CLUSTER"]
        .map(String::from)
        .to_vec()];
    for e in eps {
        rows.push(vec![
            format!("endpoint/{}", endpoint(e)),
            e.status.clone(),
            e.locality.clone(),
            e.cluster.clone(),
        ]);
    }
    rows
}
