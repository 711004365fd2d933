//! What the tracing interop tests (`zipkin_interop`, `otel_interop`) share: one traced request
//! through a proxy to a test application (what the application saw of its trace headers), a
//! counter from the proxy's admin `/stats`, and the ports masked out of a comparison.

use std::collections::BTreeMap;

use crate::upstream::{harness::curl_opt, TestUpstream};

/// The case number `i`'s `x-request-id` (its first 8 characters say the case).
pub fn request_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-000000000000", i + 1)
}

/// Sends case `i` (`method` or GET, `path`, `headers`, user agent `agent`) to the proxy on
/// `port`, giving up after `max_time` seconds: the status (0: none came), and the headers the
/// application `app` got whose names `keep` accepts (empty when the request did not reach it).
#[allow(clippy::too_many_arguments)]
pub fn send(
    max_time: &str,
    port: u16,
    i: usize,
    method: Option<&str>,
    path: &str,
    headers: &[(&str, String)],
    agent: &str,
    app: &TestUpstream,
    keep: impl Fn(&str) -> bool,
) -> (u16, BTreeMap<String, String>) {
    let mut args = vec![
        "-s".to_string(),
        "--max-time".into(),
        max_time.into(),
        "-H".into(),
        format!("x-request-id: {}", request_id(i)),
        "-H".into(),
        format!("user-agent: {agent}"),
    ];
    if let Some(m) = method {
        args.extend(["-X".to_string(), m.to_string()]);
    }
    for (k, v) in headers {
        args.extend(["-H".to_string(), format!("{k}: {v}")]);
    }
    args.push(format!("http://127.0.0.1:{port}{path}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = app.state.request_count();
    let status = curl_opt(&args).map_or(0, |r| r.0);
    let seen = (app.state.request_count() > before)
        .then(|| app.state.last_request())
        .flatten();
    let got = seen
        .map(|r| {
            r.headers
                .iter()
                .filter(|(k, _)| keep(k.as_str()))
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    (status, got)
}

/// The counter `name` on the admin `/stats` of the proxy at `admin`.
pub fn counter(admin: &str, name: &str) -> u64 {
    let (_, stats) = crate::admin_run::get(admin, "GET", "/stats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /stats"))
}

/// `text` with `127.0.0.1:<port>` of the listeners as `PORT` and of the application as `APP`.
pub fn mask_ports(text: &str, listeners: &[u16], app: u16) -> String {
    let mut v = text.to_string();
    for p in listeners {
        v = v.replace(&format!("127.0.0.1:{p}"), "127.0.0.1:PORT");
    }
    v.replace(&format!("127.0.0.1:{app}"), "127.0.0.1:APP")
}

/// The cases where sluice's normalized observation differs from Envoy's, each with both.
pub fn differences<K: std::fmt::Display + Ord>(
    envoy: &BTreeMap<K, serde_json::Value>,
    sluice: &BTreeMap<K, serde_json::Value>,
) -> Vec<String> {
    envoy
        .iter()
        .filter(|(n, v)| sluice.get(*n) != Some(v))
        .map(|(n, v)| {
            let s = sluice.get(n).unwrap_or(&serde_json::Value::Null);
            format!("{n}:\n  envoy:  {v}\n  sluice: {s}")
        })
        .collect()
}

/// The distinct collector requests (their heads as JSON), sorted: the proxies batch
/// differently, each request says the same.
pub fn distinct(requests: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = requests.iter().map(ToString::to_string).collect();
    v.sort();
    v.dedup();
    v
}
