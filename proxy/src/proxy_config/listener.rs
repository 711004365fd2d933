//! `proxy-config listener`: istioctl's ADDRESSES / PORT / MATCH / DESTINATION table (one row
//! per filter chain), filters `--address`, `--port`, `--type` (HTTP, TCP, HTTP+TCP).

use serde_json::Value;

use super::route::describe_match;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP: &str = "envoy.filters.network.tcp_proxy";

/// istioctl's listener filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `--address`.
    pub address: String,
    /// `--port`.
    pub port: u32,
    /// `--type`.
    pub kind: String,
}

fn address(l: &Value) -> String {
    let a = &l["address"];
    a["socket_address"]["address"]
        .as_str()
        .or_else(|| a["pipe"]["path"].as_str())
        .unwrap_or("")
        .to_string()
}

fn addresses(l: &Value) -> Vec<String> {
    let mut v = vec![address(l)];
    for a in l["additional_addresses"].as_array().into_iter().flatten() {
        v.push(
            a["address"]["socket_address"]["address"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    v
}

fn port(l: &Value) -> u64 {
    l["address"]["socket_address"]["port_value"]
        .as_u64()
        .unwrap_or(0)
}

fn chains(l: &Value) -> Vec<&Value> {
    let mut v: Vec<&Value> = l["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if let Some(d) = l.get("default_filter_chain") {
        v.push(d);
    }
    v
}

fn filters(fc: &Value) -> impl Iterator<Item = &Value> {
    fc["filters"].as_array().into_iter().flatten()
}

fn is_blackhole(f: &Value) -> bool {
    f["typed_config"].to_string().contains("BlackHoleCluster")
}

/// HTTP, TCP, HTTP+TCP or UNKNOWN (istioctl's `retrieveListenerType`).
pub fn kind(l: &Value) -> &'static str {
    let (mut http, mut tcp) = (0, 0);
    for f in chains(l).into_iter().flat_map(filters) {
        match f["name"].as_str() {
            Some(HCM) => http += 1,
            Some(TCP) if !is_blackhole(f) => tcp += 1,
            _ => {}
        }
    }
    match (http > 0, tcp > 0) {
        (true, false) => "HTTP",
        (true, true) => "HTTP+TCP",
        (false, true) => "TCP",
        (false, false) => "UNKNOWN",
    }
}

impl Filter {
    /// Whether `l` passes.
    pub fn verify(&self, l: &Value) -> bool {
        (self.address.is_empty()
            || addresses(l)
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&self.address)))
            && (self.port == 0 || port(l) == u64::from(self.port))
            && (self.kind.is_empty() || kind(l).eq_ignore_ascii_case(&self.kind))
    }
}

/// istioctl's `getMatches` for a filter chain's `filter_chain_match`.
pub fn describe_chain_match(m: &Value) -> String {
    let strs = |k: &str| -> Vec<String> {
        m[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let mut d = Vec::new();
    let sni = strs("server_names");
    if !sni.is_empty() {
        d.push(format!("SNI: {}", sni.join(",")));
    }
    if let Some(t) = m["transport_protocol"].as_str().filter(|t| !t.is_empty()) {
        d.push(format!("Trans: {t}"));
    }
    let alpn = strs("application_protocols");
    if !alpn.is_empty() {
        const KNOWN: &[(&str, &[&str])] = &[
            (
                "App: HTTP TLS",
                &[
                    "http/1.0",
                    "http/1.1",
                    "h2c",
                    "istio-http/1.0",
                    "istio-http/1.1",
                    "istio-h2",
                ],
            ),
            (
                "App: Istio HTTP Plain",
                &["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
            ),
            ("App: TCP TLS", &["istio-peer-exchange", "istio"]),
            ("App: HTTP", &["http/1.0", "http/1.1", "h2c"]),
        ];
        match KNOWN.iter().find(|(_, p)| *p == alpn.as_slice()) {
            Some((name, _)) => d.push((*name).to_string()),
            None => d.push(format!("App: {}", alpn.join(","))),
        }
    }
    let port = m["destination_port"]
        .as_u64()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let ranges: Vec<String> = m["prefix_ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}/{}",
                r["address_prefix"].as_str().unwrap_or(""),
                r["prefix_len"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    if !ranges.is_empty() {
        d.push(format!("Addr: {}{port}", ranges.join(",")));
    } else if !port.is_empty() {
        d.push(format!("Addr: *{port}"));
    }
    if d.is_empty() {
        return "ALL".into();
    }
    d.join("; ")
}

/// istioctl's `getFilterType`: where a chain sends its traffic.
pub fn destination(fc: &Value) -> String {
    for f in filters(fc) {
        let tc = &f["typed_config"];
        match f["name"].as_str() {
            Some(HCM) => {
                if let Some(rc) = tc.get("route_config") {
                    return describe_route_config(rc);
                }
                if let Some(n) = tc["rds"]["route_config_name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                {
                    return format!("Route: {n}");
                }
                return "HTTP".into();
            }
            Some(TCP) if !is_blackhole(f) => {
                let c = tc["cluster"].as_str().unwrap_or("");
                return if c.contains("Cluster") {
                    c.into()
                } else {
                    format!("Cluster: {c}")
                };
            }
            _ => {}
        }
    }
    "Non-HTTP/Non-TCP".into()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn describe_route_config(rc: &Value) -> String {
    let vhosts: Vec<&Value> = rc["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if let [vh] = vhosts.as_slice() {
        let routes: Vec<&Value> = vh["routes"].as_array().into_iter().flatten().collect();
        if strings(&vh["domains"]) == ["*"]
            && routes.len() == 1
            && routes[0]["match"]["prefix"] == "/"
        {
            if let Some(c) = routes[0]["route"]["cluster"].as_str() {
                return if c.contains("Cluster") {
                    c.into()
                } else {
                    format!("Cluster: {c}")
                };
            }
        }
    }
    let described: Vec<String> = vhosts
        .iter()
        .map(|vh| {
            let domains = strings(&vh["domains"]);
            let routes: Vec<String> = vh["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| describe_match(&r["match"]))
                .collect();
            let routes = routes.join(", ");
            if domains == ["*"] {
                routes
            } else {
                format!("{} {routes}", domains.join("/"))
            }
        })
        .collect();
    format!("Inline Route: {}", described.join("; "))
}

/// The listeners sorted as istioctl sorts them (port, address, type).
pub fn sorted(mut listeners: Vec<Value>) -> Vec<Value> {
    listeners.sort_by(|a, b| (port(a), address(a), kind(a)).cmp(&(port(b), address(b), kind(b))));
    listeners
}

/// The `short` table rows (header first); `with_name` adds istioctl's `all` NAME column.
pub fn rows(listeners: &[Value], f: &Filter, with_name: bool) -> Vec<Vec<String>> {
    let mut head = vec!["ADDRESSES", "PORT", "MATCH", "DESTINATION"];
    if with_name {
        head.insert(0, "NAME");
    }
    let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
    let kept: Vec<Value> = listeners.iter().filter(|l| f.verify(l)).cloned().collect();
    for l in sorted(kept) {
        let mut matches: Vec<(String, String)> = chains(&l)
            .into_iter()
            .map(|fc| {
                (
                    describe_chain_match(&fc["filter_chain_match"]),
                    destination(fc),
                )
            })
            .collect();
        matches.sort_by(|a, b| b.1.cmp(&a.1));
        for (m, d) in matches {
            let mut row = vec![addresses(&l).join(","), port(&l).to_string(), m, d];
            if with_name {
                row.insert(0, format!("listener/{}", l["name"].as_str().unwrap_or("")));
            }
            rows.push(row);
        }
    }
    rows
}
