//! Table-driven route matching: (route_config YAML, request) -> rendered selection
//! (virtual host, route index, cluster, rewritten path, host, resulting headers).
//!
//! A rendered forward reads `vhost r<route> -> <cluster> <path> [host=..] [req[..]]
//! [resp[..]]`; `req[..]` is the request's header list after the request mutations,
//! `resp[..]` an empty response after the response mutations (both only when a level
//! applies).

use std::collections::HashSet;

use super::*;

mod fields;
mod router_fields;
mod vhost_fields;
use crate::config::{raw::parse_document, raw_route::RawRouteConfiguration, FieldPath};

fn table(yaml: &str) -> RouteTable {
    let raw: RawRouteConfiguration =
        parse_document(yaml).unwrap_or_else(|e| panic!("test config does not parse: {e}"));
    let clusters: HashSet<String> = [
        "a",
        "b",
        "c",
        "d",
        "outbound|80||sample-service.default.svc.cluster.local",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    build_route_table(raw, &FieldPath::root().field("route_config"), &clusters)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
}

/// The error building `yaml` (a route configuration whose only cluster is `a`) gives, with
/// field paths from `rc`.
fn table_err(yaml: &str) -> String {
    let raw = parse_document(yaml).unwrap_or_else(|e| panic!("test config does not parse: {e}"));
    build_route_table(
        raw,
        &FieldPath::root().field("rc"),
        &["a".to_string()].into_iter().collect(),
    )
    .expect_err("must be rejected")
    .to_string()
}

#[derive(Clone)]
struct Req {
    authority: Option<&'static str>,
    path: &'static str,
    method: &'static str,
    scheme: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    random: u64,
}

fn get(host: &'static str, path: &'static str) -> Req {
    Req {
        authority: Some(host),
        path,
        method: "GET",
        scheme: "http",
        headers: Vec::new(),
        random: 0,
    }
}

impl Req {
    fn h(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.push((k, v));
        self
    }
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn scheme(mut self, s: &'static str) -> Self {
        self.scheme = s;
        self
    }
    fn random(mut self, r: u64) -> Self {
        self.random = r;
        self
    }
    fn no_host(mut self) -> Self {
        self.authority = None;
        self
    }
}

fn render_headers(list: &[(String, String)]) -> String {
    let items: Vec<String> = list.iter().map(|(k, v)| format!("{k}={v}")).collect();
    items.join(",")
}

fn render(t: &RouteTable, r: &Req) -> String {
    let view = RequestView {
        authority: r.authority,
        path: r.path,
        method: r.method,
        scheme: r.scheme,
        headers: r.headers.as_slice(),
        random: r.random,
        peer: None,
        metadata: None,
    };
    let resp = |levels: &HeaderLevels<'_>| {
        if levels.is_empty() {
            return String::new();
        }
        let mut out: Vec<(String, String)> = Vec::new();
        levels.apply(&mut out);
        format!(" resp[{}]", render_headers(&out))
    };
    match t.select(&view) {
        Selection::NoRoute => "NR".to_string(),
        Selection::SslRedirect { vhost, location } => {
            format!("{} tls-redirect {location}", vhost.name)
        }
        Selection::Forward(f) => {
            let cluster = match f.cluster {
                SelectedCluster::Named(c) => c.to_string(),
                SelectedCluster::FromHeader(h) => format!("header:{h}"),
                SelectedCluster::Missing => "header:-".to_string(),
            };
            let mut s = format!(
                "{} r{} -> {} {}",
                f.vhost.name, f.route_ref.route, cluster, f.path
            );
            if let Some(h) = f.cluster_host_rewrite {
                s.push_str(&format!(" cluster_host={h}"));
            }
            match &f.host_rewrite {
                Some(HostRewriteResult::Literal(h)) => s.push_str(&format!(" host={h}")),
                Some(HostRewriteResult::Computed(h)) => s.push_str(&format!(" host={h}")),
                Some(HostRewriteResult::Auto) => s.push_str(" host=auto"),
                Some(HostRewriteResult::Header(h)) => s.push_str(&format!(" host=header:{h}")),
                Some(HostRewriteResult::Format(_)) => s.push_str(" host=format"),
                None => {}
            }
            if !f.request_headers.is_empty() {
                let mut out: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                f.request_headers.apply(&mut out);
                s.push_str(&format!(" req[{}]", render_headers(&out)));
            }
            s + &resp(&f.response_headers)
        }
        Selection::Redirect {
            vhost,
            route_ref,
            location,
            status,
            response_headers,
            ..
        } => format!(
            "{} r{} redirect {status} {location}{}",
            vhost.name,
            route_ref.route,
            resp(&response_headers)
        ),
        Selection::DirectResponse {
            vhost,
            route_ref,
            response,
            response_headers,
            ..
        } => format!(
            "{} r{} direct {} {}{}",
            vhost.name,
            route_ref.route,
            response.status,
            response
                .body
                .as_deref()
                .map_or("-".into(), String::from_utf8_lossy),
            resp(&response_headers)
        ),
    }
}

/// `explain` names the virtual host, route and cluster `select` chose (every case of
/// every table below runs through it).
fn explain_agrees(t: &RouteTable, r: &Req) -> Result<(), String> {
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let view = RequestView {
        authority: r.authority,
        path: r.path,
        method: r.method,
        scheme: r.scheme,
        headers: &headers,
        random: r.random,
        peer: None,
        metadata: None,
    };
    let trace = t.explain(&view, &headers);
    let sel = t.select(&view);
    let vhosts: Vec<&str> = trace
        .virtual_hosts
        .iter()
        .filter(|v| v.chosen)
        .map(|v| v.name.as_str())
        .collect();
    let routes: Vec<usize> = trace
        .routes
        .iter()
        .filter(|r| r.matched)
        .map(|r| r.index)
        .collect();
    let want_vhost: Vec<&str> = t
        .find_virtual_host(r.authority)
        .map(|(_, v)| v.name.as_str())
        .into_iter()
        .collect();
    if vhosts != want_vhost {
        return Err(format!("vhost {vhosts:?}, select {want_vhost:?}"));
    }
    let (want_route, want_cluster) = match &sel {
        Selection::Forward(f) => (Some(f.route_ref.route as usize), f.cluster.name()),
        Selection::Redirect { route_ref, .. } | Selection::DirectResponse { route_ref, .. } => {
            (Some(route_ref.route as usize), None)
        }
        Selection::SslRedirect { .. } | Selection::NoRoute => (None, None),
    };
    if routes != want_route.into_iter().collect::<Vec<_>>() {
        return Err(format!("route {routes:?}, select {want_route:?}"));
    }
    // Every route before the matched one was tried and failed with a reason.
    let before = match sel {
        Selection::SslRedirect { .. } => 0,
        _ => want_route.unwrap_or(trace.routes.len()),
    };
    if let Some(bad) = trace.routes[..before]
        .iter()
        .find(|s| !s.result.starts_with("no: "))
    {
        return Err(format!(
            "route #{} before the match: {}",
            bad.index, bad.result
        ));
    }
    let cluster = match &trace.decision {
        explain::Decision::Forward(f) => f.cluster.as_deref(),
        _ => None,
    };
    if cluster != want_cluster {
        return Err(format!("cluster {cluster:?}, select {want_cluster:?}"));
    }
    Ok(())
}

/// Runs every case and reports all mismatches at once.
#[track_caller]
fn check(yaml: &str, cases: &[(Req, &str)]) {
    let t = table(yaml);
    let mut failures = Vec::new();
    for (i, (req, want)) in cases.iter().enumerate() {
        let got = render(&t, req);
        if let Err(e) = explain_agrees(&t, req) {
            failures.push(format!(
                "case {i} ({:?} {}): explain disagrees: {e}",
                req.authority, req.path
            ));
        }
        if got != *want {
            failures.push(format!(
                "case {i} ({:?} {}): want {want:?}, got {got:?}",
                req.authority, req.path
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const DOMAINS: &str = r#"
virtual_hosts:
- { name: exact, domains: ["www.foo.com", "foo.com:8080", "[::1]"], routes: [{ match: { prefix: "/" }, route: { cluster: a } }] }
- { name: suffix-long, domains: ["*-bar.foo.com"], routes: [{ match: { prefix: "/" }, route: { cluster: b } }] }
- { name: suffix, domains: ["*.foo.com"], routes: [{ match: { prefix: "/" }, route: { cluster: c } }] }
- { name: prefix-long, domains: ["foo.bar.*"], routes: [{ match: { prefix: "/" }, route: { cluster: d } }] }
- { name: prefix, domains: ["foo.*"], routes: [{ match: { prefix: "/" }, route: { cluster: d } }] }
- { name: default, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: a } }] }
"#;

#[test]
fn domain_order_exact_suffix_prefix_default() {
    check(
        DOMAINS,
        &[
            (get("www.foo.com", "/"), "exact r0 -> a /"),
            (get("WWW.Foo.COM", "/"), "exact r0 -> a /"),
            (get("baz-bar.foo.com", "/"), "suffix-long r0 -> b /"),
            // `*-bar.foo.com` needs at least one character before `-bar`.
            (get("-bar.foo.com", "/"), "suffix r0 -> c /"),
            (get("x.foo.com", "/"), "suffix r0 -> c /"),
            // Non-ASCII hosts never split a character.
            (get("ü.foo.com", "/"), "suffix r0 -> c /"),
            (get("ü", "/"), "default r0 -> a /"),
            (get("a.b.foo.com", "/"), "suffix r0 -> c /"),
            // `*.foo.com` does not match `foo.com` itself (nor `.foo.com`).
            (get("foo.com", "/"), "prefix r0 -> d /"),
            (get(".foo.com", "/"), "default r0 -> a /"),
            (get("foo.bar.baz", "/"), "prefix-long r0 -> d /"),
            (get("foo.bar", "/"), "prefix r0 -> d /"),
            (get("FOO.BAR.X", "/"), "prefix-long r0 -> d /"),
            (get("other.org", "/"), "default r0 -> a /"),
            // Suffix wildcards win over prefix wildcards.
            (get("foo.x-bar.foo.com", "/"), "suffix-long r0 -> b /"),
            (get("[::1]", "/"), "exact r0 -> a /"),
            (get("www.foo.com", "/").no_host(), "NR"),
        ],
    );
}

#[test]
fn port_qualified_hosts_match_literally_as_envoy() {
    check(
        DOMAINS,
        &[
            (get("foo.com:8080", "/"), "exact r0 -> a /"),
            (get("FOO.com:8080", "/"), "exact r0 -> a /"),
            // The port is part of the host: no exact or suffix match...
            (get("www.foo.com:8080", "/"), "default r0 -> a /"),
            (get("x.foo.com:80", "/"), "default r0 -> a /"),
            // ...but a prefix wildcard covers it.
            (get("foo.com:9090", "/"), "prefix r0 -> d /"),
            (get("[::1]:80", "/"), "default r0 -> a /"),
        ],
    );
    let ignore_port = r#"
ignore_port_in_host_matching: true
virtual_hosts:
- { name: foo, domains: ["foo.com", "[::1]", "*.bar.com"], routes: [{ match: { prefix: "/" }, route: { cluster: a } }] }
"#;
    check(
        ignore_port,
        &[
            (get("foo.com:8080", "/"), "foo r0 -> a /"),
            (get("foo.com", "/"), "foo r0 -> a /"),
            (get("[::1]:15001", "/"), "foo r0 -> a /"),
            (get("x.bar.com:443", "/"), "foo r0 -> a /"),
            (get("other.com:8080", "/"), "NR"),
        ],
    );
}

#[test]
fn default_only_table_matches_without_host() {
    let only_default = r#"
virtual_hosts:
- { name: all, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: a } }] }
"#;
    check(
        only_default,
        &[
            (get("anything", "/x"), "all r0 -> a /x"),
            (get("x", "/").no_host(), "all r0 -> a /"),
        ],
    );
}

const PATHS: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { path: "/exact" }, route: { cluster: a } }
  - { match: { prefix: "/api/" }, route: { cluster: b } }
  - { match: { safe_regex: { google_re2: {}, regex: "/items/[0-9]+" } }, route: { cluster: c } }
  - { match: { path_separated_prefix: "/sep" }, route: { cluster: d } }
  - { match: { prefix: "/CI/", case_sensitive: false }, route: { cluster: a } }
  - { match: { path: "/Exact-CI", case_sensitive: false }, route: { cluster: b } }
  - { match: { path_separated_prefix: "/PS", case_sensitive: false }, route: { cluster: c } }
"#;

#[test]
fn path_matchers() {
    check(
        PATHS,
        &[
            (get("h", "/exact"), "v r0 -> a /exact"),
            (get("h", "/exact?x=1"), "v r0 -> a /exact?x=1"),
            (get("h", "/exact#frag"), "v r0 -> a /exact#frag"),
            (get("h", "/exact/"), "NR"),
            (get("h", "/EXACT"), "NR"),
            (get("h", "/api/v1/users"), "v r1 -> b /api/v1/users"),
            (get("h", "/api"), "NR"),
            // The query string is not part of the matched path.
            (get("h", "/ap?/api/"), "NR"),
            (get("h", "/items/123"), "v r2 -> c /items/123"),
            (get("h", "/items/123?page=2"), "v r2 -> c /items/123?page=2"),
            (get("h", "/items/12a"), "NR"),
            // safe_regex is a full match.
            (get("h", "/x/items/1"), "NR"),
            (get("h", "/items/1/more"), "NR"),
            (get("h", "/sep"), "v r3 -> d /sep"),
            (get("h", "/sep/x"), "v r3 -> d /sep/x"),
            (get("h", "/sep?q"), "v r3 -> d /sep?q"),
            (get("h", "/sepx"), "NR"),
            (get("h", "/ci/Foo"), "v r4 -> a /ci/Foo"),
            (get("h", "/Ci/x"), "v r4 -> a /Ci/x"),
            (get("h", "/exact-ci"), "v r5 -> b /exact-ci"),
            (get("h", "/ps/a"), "v r6 -> c /ps/a"),
            (get("h", "/pS"), "v r6 -> c /pS"),
        ],
    );
}

const HEADERS: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/", headers: [{ name: x-exact, string_match: { exact: v1 } }] }, route: { cluster: a } }
  - { match: { prefix: "/", headers: [{ name: x-prefix, string_match: { prefix: ab } }] }, route: { cluster: b } }
  - { match: { prefix: "/", headers: [{ name: x-suffix, string_match: { suffix: yz } }] }, route: { cluster: c } }
  - { match: { prefix: "/", headers: [{ name: x-contains, string_match: { contains: mid } }] }, route: { cluster: d } }
  - { match: { prefix: "/", headers: [{ name: x-regex, string_match: { safe_regex: { regex: "v[0-9]+" } } }] }, route: { cluster: a } }
  - { match: { prefix: "/", headers: [{ name: x-present, present_match: true }] }, route: { cluster: b } }
  - { match: { prefix: "/", headers: [{ name: x-gate, string_match: { exact: absent } }, { name: x-absent, present_match: false }] }, route: { cluster: c } }
  - { match: { prefix: "/", headers: [{ name: x-gate, string_match: { exact: inv } }, { name: x-inv, string_match: { exact: "no" }, invert_match: true }] }, route: { cluster: d } }
  - { match: { prefix: "/", headers: [{ name: X-Case, string_match: { exact: MiXeD, ignore_case: true } }] }, route: { cluster: a } }
  - { match: { prefix: "/", headers: [{ name: x-legacy, exact_match: legacy }] }, route: { cluster: b } }
  - { match: { prefix: "/", headers: [{ name: ":method", string_match: { exact: POST } }] }, route: { cluster: c } }
  - { match: { prefix: "/", query_parameters: [{ name: q, string_match: { exact: "1" } }] }, route: { cluster: d } }
  - { match: { prefix: "/", query_parameters: [{ name: flag, present_match: true }] }, route: { cluster: a } }
  - { match: { prefix: "/", headers: [{ name: x-missing-empty, string_match: { exact: "" }, treat_missing_header_as_empty: true }, { name: x-gate, string_match: { exact: empty } }] }, route: { cluster: b } }
  - { match: { prefix: "/" }, direct_response: { status: 404, body: { inline_string: fallthrough } } }
"#;

#[test]
fn header_and_query_matchers() {
    check(
        HEADERS,
        &[
            (get("h", "/").h("x-exact", "v1"), "v r0 -> a /"),
            (
                get("h", "/").h("x-exact", "v2"),
                "v r14 direct 404 fallthrough",
            ),
            // A repeated header matches when any of its values does (Envoy 1.40).
            (
                get("h", "/").h("x-exact", "v2").h("x-exact", "v1"),
                "v r0 -> a /",
            ),
            (
                get("h", "/").h("x-exact", "v2").h("x-exact", "v3"),
                "v r14 direct 404 fallthrough",
            ),
            (get("h", "/").h("X-Prefix", "abc"), "v r1 -> b /"),
            (
                get("h", "/").h("x-prefix", "xab"),
                "v r14 direct 404 fallthrough",
            ),
            (get("h", "/").h("x-suffix", "xyz"), "v r2 -> c /"),
            (get("h", "/").h("x-contains", "amidst"), "v r3 -> d /"),
            (get("h", "/").h("x-regex", "v12"), "v r4 -> a /"),
            (
                get("h", "/").h("x-regex", "v12x"),
                "v r14 direct 404 fallthrough",
            ),
            (get("h", "/").h("x-present", ""), "v r5 -> b /"),
            (get("h", "/").h("x-gate", "absent"), "v r6 -> c /"),
            (
                get("h", "/").h("x-gate", "absent").h("x-absent", "1"),
                "v r14 direct 404 fallthrough",
            ),
            (
                get("h", "/").h("x-gate", "inv").h("x-inv", "yes"),
                "v r7 -> d /",
            ),
            (
                get("h", "/").h("x-gate", "inv").h("x-inv", "no"),
                "v r14 direct 404 fallthrough",
            ),
            // An inverted value matcher does not match a missing header.
            (
                get("h", "/").h("x-gate", "inv"),
                "v r14 direct 404 fallthrough",
            ),
            (get("h", "/").h("x-case", "mixed"), "v r8 -> a /"),
            (get("h", "/").h("x-legacy", "legacy"), "v r9 -> b /"),
            (get("h", "/").method("POST"), "v r10 -> c /"),
            (get("h", "/?q=1"), "v r11 -> d /?q=1"),
            (get("h", "/?a=b&q=1"), "v r11 -> d /?a=b&q=1"),
            // Only the first value of a parameter is tested; no percent-decoding.
            (get("h", "/?q=2&q=1"), "v r14 direct 404 fallthrough"),
            (get("h", "/?q=%31"), "v r14 direct 404 fallthrough"),
            (get("h", "/?flag"), "v r12 -> a /?flag"),
            (get("h", "/?flag=0"), "v r12 -> a /?flag=0"),
            (get("h", "/?flags=1"), "v r14 direct 404 fallthrough"),
            (get("h", "/").h("x-gate", "empty"), "v r13 -> b /"),
        ],
    );
}

const REWRITES: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/prefix" }, route: { cluster: a, prefix_rewrite: "/" } }
  - { match: { prefix: "/foo/" }, route: { cluster: a, prefix_rewrite: "/bar/" } }
  - { match: { path: "/old" }, route: { cluster: a, prefix_rewrite: "/new" } }
  - { match: { safe_regex: { regex: "/re/.*" } }, route: { cluster: a, prefix_rewrite: "/whole" } }
  - match: { prefix: "/service/" }
    route: { cluster: b, regex_rewrite: { pattern: { regex: "^/service/([^/]+)(/.*)$" }, substitution: "\\2/instance/\\1" } }
  - match: { prefix: "/aaa" }
    route: { cluster: b, regex_rewrite: { pattern: { regex: "one" }, substitution: "two" } }
  - { match: { prefix: "/literal" }, route: { cluster: c, host_rewrite_literal: upstream.example } }
  - { match: { prefix: "/auto" }, route: { cluster: c, auto_host_rewrite: true } }
  - { match: { prefix: "/CASE/", case_sensitive: false }, route: { cluster: d, prefix_rewrite: "/lower/" } }
  - { match: { path_separated_prefix: "/ps" }, route: { cluster: d, prefix_rewrite: "/new" } }
  - match: { prefix: "/dollar" }
    route: { cluster: d, regex_rewrite: { pattern: { regex: "^/dollar/(.*)$" }, substitution: "/$x/\\1" } }
"#;

#[test]
fn path_and_host_rewrites() {
    check(
        REWRITES,
        &[
            // Envoy's trailing-slash behaviour: the configured prefix is replaced as is.
            (get("h", "/prefix/etc"), "v r0 -> a //etc"),
            (get("h", "/prefix"), "v r0 -> a /"),
            (get("h", "/prefixetc"), "v r0 -> a /etc"),
            (get("h", "/foo/x?y=1"), "v r1 -> a /bar/x?y=1"),
            (get("h", "/foo/"), "v r1 -> a /bar/"),
            (get("h", "/old?x=1"), "v r2 -> a /new?x=1"),
            // For safe_regex the whole path (not the query) is replaced.
            (get("h", "/re/abc?q=1"), "v r3 -> a /whole?q=1"),
            (
                get("h", "/service/foo/v1/api"),
                "v r4 -> b /v1/api/instance/foo",
            ),
            (
                get("h", "/service/foo/v1/api?k=v"),
                "v r4 -> b /v1/api/instance/foo?k=v",
            ),
            // No match of the rewrite pattern: path unchanged.
            (get("h", "/service/nope"), "v r4 -> b /service/nope"),
            // regex_rewrite replaces every match.
            (get("h", "/aaa/one/one"), "v r5 -> b /aaa/two/two"),
            (
                get("h", "/literal/x"),
                "v r6 -> c /literal/x host=upstream.example",
            ),
            (get("h", "/auto"), "v r7 -> c /auto host=auto"),
            (get("h", "/case/x"), "v r8 -> d /lower/x"),
            (get("h", "/Case/x?Q"), "v r8 -> d /lower/x?Q"),
            (get("h", "/ps/x"), "v r9 -> d /new/x"),
            (get("h", "/ps"), "v r9 -> d /new"),
            // A literal '$' in an RE2 substitution stays literal.
            (get("h", "/dollar/a"), "v r10 -> d /$x/a"),
        ],
    );
}

const PRECEDENCE: &str = r#"
request_headers_to_add:
- { header: { key: x-level, value: global } }
- { header: { key: x-ow, value: global }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
response_headers_to_add:
- { header: { key: x-resp, value: global } }
response_headers_to_remove: [x-drop]
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add:
  - { header: { key: x-level, value: vhost } }
  - { header: { key: x-ow, value: vhost }, append: false }
  request_headers_to_remove: [x-route-added]
  response_headers_to_add:
  - { header: { key: x-resp, value: vhost } }
  routes:
  - match: { prefix: "/levels" }
    route: { cluster: a }
    request_headers_to_add:
    - { header: { key: x-level, value: route } }
    - { header: { key: x-ow, value: route }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
    - { header: { key: x-route-added, value: "1" } }
    request_headers_to_remove: [x-client]
    response_headers_to_add:
    - { header: { key: x-resp, value: route } }
    - { header: { key: x-drop, value: route } }
  - match: { prefix: "/actions" }
    route: { cluster: b }
    request_headers_to_add:
    - { header: { key: x-absent-only, value: added }, append_action: ADD_IF_ABSENT }
    - { header: { key: x-if-exists, value: replaced }, append_action: OVERWRITE_IF_EXISTS }
    - { header: { key: x-empty, value: "" } }
    - { header: { key: x-keep-empty, value: "" }, keep_empty_value: true, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
    - { header: { key: x-pct, value: "100%%" } }
  - match: { prefix: "/weighted" }
    route:
      weighted_clusters:
        clusters:
        - { name: c, weight: 1, request_headers_to_add: [{ header: { key: x-level, value: wc } }] }
  - { match: { prefix: "/direct" }, direct_response: { status: 200, body: { inline_string: ok } }, response_headers_to_add: [{ header: { key: x-resp, value: direct } }] }
"#;

#[test]
fn header_mutation_precedence_and_append_actions() {
    check(
        PRECEDENCE,
        &[
            (
                get("h", "/levels").h("x-client", "c").h("x-ow", "client"),
                "v r0 -> a /levels req[x-level=route,x-level=vhost,x-level=global,x-ow=global] \
                 resp[x-resp=route,x-resp=vhost,x-resp=global]",
            ),
            (
                get("h", "/actions").h("x-absent-only", "kept").h("x-if-exists", "old"),
                "v r1 -> b /actions req[x-absent-only=kept,x-if-exists=replaced,x-keep-empty=,x-pct=100%,\
                 x-level=vhost,x-level=global,x-ow=global] resp[x-resp=vhost,x-resp=global]",
            ),
            (
                get("h", "/actions"),
                "v r1 -> b /actions req[x-absent-only=added,x-keep-empty=,x-pct=100%,\
                 x-level=vhost,x-level=global,x-ow=global] resp[x-resp=vhost,x-resp=global]",
            ),
            (
                get("h", "/weighted"),
                "v r2 -> c /weighted req[x-level=wc,x-level=vhost,x-level=global,x-ow=global] \
                 resp[x-resp=vhost,x-resp=global]",
            ),
            (
                get("h", "/direct"),
                "v r3 direct 200 ok resp[x-resp=direct,x-resp=vhost,x-resp=global]",
            ),
        ],
    );
    // most_specific_header_mutations_wins: the route level is applied last.
    let most_specific = format!("most_specific_header_mutations_wins: true\n{PRECEDENCE}");
    check(
        &most_specific,
        &[(
            get("h", "/levels").h("x-client", "c"),
            "v r0 -> a /levels req[x-level=global,x-level=vhost,x-level=route,x-ow=route,x-route-added=1] \
             resp[x-resp=global,x-resp=vhost,x-resp=route,x-drop=route]",
        )],
    );
}

const WEIGHTED: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: "/" }
    route:
      weighted_clusters:
        clusters: [{ name: a, weight: 10 }, { name: b, weight: 20 }, { name: d, weight: 0 }, { name: c, weight: 70 }]
"#;

#[test]
fn weighted_cluster_split_is_envoys() {
    check(
        WEIGHTED,
        &[
            (get("h", "/").random(0), "v r0 -> a /"),
            (get("h", "/").random(9), "v r0 -> a /"),
            (get("h", "/").random(10), "v r0 -> b /"),
            (get("h", "/").random(29), "v r0 -> b /"),
            (get("h", "/").random(30), "v r0 -> c /"),
            (get("h", "/").random(99), "v r0 -> c /"),
            // The random value is reduced modulo the total weight (100).
            (get("h", "/").random(100), "v r0 -> a /"),
            (get("h", "/").random(1_000_000_015), "v r0 -> b /"),
            (get("h", "/").random(u64::MAX), "v r0 -> b /"),
        ],
    );
}

const REDIRECTS: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/https" }, redirect: { https_redirect: true } }
  - { match: { prefix: "/moved" }, redirect: { host_redirect: new.example, path_redirect: /p, response_code: FOUND } }
  - { match: { prefix: "/withquery" }, redirect: { path_redirect: "/p?a=b", strip_query: true } }
  - { match: { prefix: "/strip" }, redirect: { strip_query: true, response_code: SEE_OTHER } }
  - { match: { prefix: "/old/" }, redirect: { prefix_rewrite: "/new/", response_code: TEMPORARY_REDIRECT } }
  - { match: { prefix: "/re/" }, redirect: { regex_rewrite: { pattern: { regex: "^/re/(.*)$" }, substitution: "/x/\\1" }, response_code: PERMANENT_REDIRECT } }
  - { match: { prefix: "/port" }, redirect: { https_redirect: true, port_redirect: 8443 } }
  - { match: { prefix: "/scheme" }, redirect: { scheme_redirect: ws } }
"#;

#[test]
fn redirects() {
    check(
        REDIRECTS,
        &[
            (
                get("foo.com", "/https/x?q=1"),
                "v r0 redirect 301 https://foo.com/https/x?q=1",
            ),
            // The default port of the request scheme is dropped when the scheme changes.
            (
                get("foo.com:80", "/https"),
                "v r0 redirect 301 https://foo.com/https",
            ),
            (
                get("foo.com:8080", "/https"),
                "v r0 redirect 301 https://foo.com:8080/https",
            ),
            (
                get("foo.com:443", "/https").scheme("https"),
                "v r0 redirect 301 https://foo.com:443/https",
            ),
            (
                get("foo.com", "/moved?q=1"),
                "v r1 redirect 302 http://new.example/p?q=1",
            ),
            (
                get("foo.com", "/moved#frag"),
                "v r1 redirect 302 http://new.example/p",
            ),
            (
                get("foo.com", "/withquery?q=1"),
                "v r2 redirect 301 http://foo.com/p?a=b",
            ),
            (
                get("foo.com", "/strip/a?q=1"),
                "v r3 redirect 303 http://foo.com/strip/a",
            ),
            (
                get("foo.com", "/old/a/b?c=d"),
                "v r4 redirect 307 http://foo.com/new/a/b?c=d",
            ),
            (
                get("foo.com", "/re/y?z"),
                "v r5 redirect 308 http://foo.com/x/y?z",
            ),
            (
                get("foo.com:8080", "/port"),
                "v r6 redirect 301 https://foo.com:8443/port",
            ),
            (
                get("foo.com", "/scheme"),
                "v r7 redirect 301 ws://foo.com/scheme",
            ),
        ],
    );
}

const MISC: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - { match: { prefix: "/dyn" }, route: { cluster_header: X-Cluster } }
  - { match: { prefix: "/down" }, direct_response: { status: 503 } }
  - { match: { path: "/first" }, route: { cluster: a } }
  - { match: { prefix: "/first" }, route: { cluster: b } }
  - { match: { prefix: "/ci", headers: [{ name: x-c, string_match: { contains: ABC, ignore_case: true } }] }, route: { cluster: c } }
  - { match: { prefix: "/sfx", headers: [{ name: x-s, string_match: { suffix: END, ignore_case: true } }] }, route: { cluster: d } }
"#;

#[test]
fn cluster_header_direct_response_and_first_match() {
    check(
        MISC,
        &[
            (
                get("h", "/dyn").h("x-cluster", "b"),
                "v r0 -> header:b /dyn",
            ),
            (
                get("h", "/dyn").h("x-cluster", "b").h("x-cluster", "c"),
                "v r0 -> header:b /dyn",
            ),
            (get("h", "/dyn"), "v r0 -> header:- /dyn"),
            (get("h", "/down"), "v r1 direct 503 -"),
            (get("h", "/first"), "v r2 -> a /first"),
            (get("h", "/first/x"), "v r3 -> b /first/x"),
            (get("h", "/none"), "NR"),
            (get("h", "/ci").h("x-c", "zzaBcz"), "v r4 -> c /ci"),
            (get("h", "/ci").h("x-c", "zzab"), "NR"),
            (get("h", "/sfx").h("x-s", "the-end"), "v r5 -> d /sfx"),
            (get("h", "/sfx").h("x-s", "ending"), "NR"),
        ],
    );
}

const KUBEFLOW: &str = r#"
name: http.8080
virtual_hosts:
- name: "*:80"
  domains: ["*"]
  routes:
  - match: { prefix: /notebook/default/sample-service/ }
    route: { cluster: "outbound|80||sample-service.default.svc.cluster.local", prefix_rewrite: / }
    request_headers_to_add:
    - { header: { key: x-forwarded-prefix, value: /notebook/default/sample-service }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }
"#;

#[test]
fn kubeflow_notebook_route() {
    const C: &str = "outbound|80||sample-service.default.svc.cluster.local";
    let fwd = |path: &str, extra: &str| {
        format!(
            "*:80 r0 -> {C} {path} req[{extra}x-forwarded-prefix=/notebook/default/sample-service]"
        )
    };
    check(
        KUBEFLOW,
        &[
            (
                get("gw.example", "/notebook/default/sample-service/"),
                fwd("/", "").as_str(),
            ),
            (
                get(
                    "gw.example",
                    "/notebook/default/sample-service/static/app.js?v=1",
                ),
                fwd("/static/app.js?v=1", "").as_str(),
            ),
            (
                get("10.0.0.1:80", "/notebook/default/sample-service/lab").h("cookie", "s=1"),
                fwd("/lab", "cookie=s=1,").as_str(),
            ),
            (
                get("gw.example", "/notebook/default/sample-service/")
                    .h("x-forwarded-prefix", "/evil"),
                fwd("/", "").as_str(),
            ),
            (get("gw.example", "/notebook/default/sample-service"), "NR"),
            (get("gw.example", "/notebook/default/other/"), "NR"),
        ],
    );
}
