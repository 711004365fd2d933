//! `proxy-config route`: istioctl's NAME / VHOST NAME / DOMAINS / MATCH / VIRTUAL SERVICE
//! table (one row per route, routes to PassthroughCluster left out, `/*` and `404` for a
//! virtual host without routes), filter `--name`.

use serde_json::Value;

use super::dump::management;

/// `--name`: only the route configuration of that name.
pub fn verify(name: &str, rc: &Value) -> bool {
    name.is_empty() || rc["name"].as_str() == Some(name)
}

/// istioctl's order: numerically named configurations by number, as its insertion sort
/// leaves them (other names keep their place relative to each other).
pub fn sorted(mut routes: Vec<Value>) -> Vec<Value> {
    let num = |v: &Value| v["name"].as_str().and_then(|n| n.parse::<i64>().ok());
    for i in 1..routes.len() {
        let mut j = i;
        while j > 0 {
            match (num(&routes[j]), num(&routes[j - 1])) {
                (Some(a), Some(b)) if a < b => routes.swap(j, j - 1),
                _ => break,
            }
            j -= 1;
        }
    }
    routes
}

/// istioctl's `describeMatch` (headers are not shown).
pub fn describe_match(m: &Value) -> String {
    let mut conds = Vec::new();
    if let Some(p) = m["prefix"].as_str().filter(|p| !p.is_empty()) {
        conds.push(format!("{p}*"));
    }
    if let Some(p) = m["path_separated_prefix"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        conds.push(format!("PathPrefix:{p}"));
    }
    if let Some(p) = m["path"].as_str().filter(|p| !p.is_empty()) {
        conds.push(p.to_string());
    }
    if let Some(r) = m["safe_regex"]["regex"].as_str() {
        conds.push(format!("regex {r}"));
    }
    conds.join(" ")
}

/// istioctl's `describeRouteDomains`: one domain as is; else the port-less ones with the
/// `.svc.cluster.local` / `.svc` expansions of a shorter listed name dropped, at most two
/// and `+ N more...`.
pub fn describe_domains(domains: &[&str]) -> String {
    match domains {
        [] => return String::new(),
        [one] => return (*one).to_string(),
        _ => {}
    }
    let without_port: Vec<&str> = domains
        .iter()
        .copied()
        .filter(|d| !d.contains(':') || (d.matches(':').count() > 2 && d.ends_with(']')))
        .collect();
    let unique: std::collections::HashSet<&str> = without_port.iter().copied().collect();
    let kept: Vec<&str> = without_port
        .iter()
        .copied()
        .filter(|h| {
            let full = h.strip_suffix(".svc.cluster.local");
            let partial = h.strip_suffix(".svc");
            !full.is_some_and(|s| unique.contains(s))
                && !partial.is_some_and(|s| unique.contains(s))
        })
        .collect();
    if kept.len() > 2 {
        return format!("{} + {} more...", kept[..2].join(", "), kept.len() - 2);
    }
    kept.join(", ")
}

fn is_passthrough(route: &Value) -> bool {
    route["route"]["cluster"].as_str() == Some("PassthroughCluster")
}

/// The `short` table rows (header first); `with_name` prefixes names with `route/` (istioctl's
/// `all`).
pub fn rows(routes: &[Value], name: &str, with_name: bool) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
            .map(String::from)
            .to_vec(),
    ];
    for rc in sorted(routes.to_vec()).iter().filter(|rc| verify(name, rc)) {
        let mut rname = rc["name"].as_str().unwrap_or("").to_string();
        if with_name {
            rname = format!("route/{rname}");
        }
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            let domains: Vec<&str> = vh["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let vname = vh["name"].as_str().unwrap_or("").to_string();
            let routes: Vec<&Value> = vh["routes"].as_array().into_iter().flatten().collect();
            for r in routes.iter().filter(|r| !is_passthrough(r)) {
                rows.push(vec![
                    rname.clone(),
                    vname.clone(),
                    describe_domains(&domains),
                    describe_match(&r["match"]),
                    management(r),
                ]);
            }
            if routes.is_empty() {
                rows.push(vec![
                    rname.clone(),
                    vname,
                    describe_domains(&domains),
                    "/*".into(),
                    "404".into(),
                ]);
            }
        }
    }
    rows
}
