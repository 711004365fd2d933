//! Issue 14's virtual-host and match fields: `require_tls` (conformance cases
//! `vhost_require_tls_*`), `RouteMatch.cookies` (case `route_match_cookies`).

use super::{check, get};

const REQUIRE_TLS: &str = r#"
virtual_hosts:
- name: all
  domains: ["all.test", "all.test:*"]
  require_tls: ALL
  response_headers_to_add: [{ header: { key: x-v, value: v } }]
  routes: [{ match: { prefix: "/" }, route: { cluster: a } }]
- name: ext
  domains: ["ext.test"]
  require_tls: EXTERNAL_ONLY
  routes: [{ match: { prefix: "/only" }, route: { cluster: a } }]
- name: none
  domains: ["*"]
  require_tls: NONE
  routes: [{ match: { prefix: "/" }, route: { cluster: b } }]
"#;

/// Host, path, `x-forwarded-proto` (empty: none), `x-envoy-internal` (empty: none), selection.
const REQUIRE_TLS_CASES: &[(&str, &str, &str, &str, &str)] = &[
    // Before route matching; the Host as sent, port and case kept; query kept.
    (
        "all.test",
        "/a?b=%2F",
        "",
        "",
        "all tls-redirect https://all.test/a?b=%2F",
    ),
    (
        "all.test:80",
        "/p",
        "",
        "",
        "all tls-redirect https://all.test:80/p",
    ),
    (
        "ALL.test",
        "/p",
        "",
        "",
        "all tls-redirect https://ALL.test/p",
    ),
    // The scheme is `x-forwarded-proto`, exactly `https`.
    ("all.test", "/p", "https", "", "all r0 -> a /p resp[x-v=v]"),
    (
        "all.test",
        "/p",
        "HTTPS",
        "",
        "all tls-redirect https://all.test/p",
    ),
    // EXTERNAL_ONLY: only a request marked internal passes (none is, after sanitation).
    (
        "ext.test",
        "/x",
        "",
        "",
        "ext tls-redirect https://ext.test/x",
    ),
    ("ext.test", "/only", "", "true", "ext r0 -> a /only"),
    (
        "ext.test",
        "/only",
        "",
        "yes",
        "ext tls-redirect https://ext.test/only",
    ),
    ("other", "/p", "", "", "none r0 -> b /p"),
];

#[test]
fn require_tls() {
    let mut cases: Vec<_> = REQUIRE_TLS_CASES
        .iter()
        .map(|&(host, path, xfp, internal, want)| {
            let mut r = get(host, path);
            if !xfp.is_empty() {
                r = r.h("x-forwarded-proto", xfp);
            }
            if !internal.is_empty() {
                r = r.h("x-envoy-internal", internal);
            }
            (r, want)
        })
        .collect();
    // Without the header, the connection's scheme.
    cases.push((
        get("all.test", "/p").scheme("https"),
        "all r0 -> a /p resp[x-v=v]",
    ));
    check(REQUIRE_TLS, &cases);
}

const COOKIES: &str = r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: { prefix: "/", cookies: [{ name: s, string_match: { exact: v1 } }, { name: t, string_match: { prefix: x }, invert_match: true }] }
    route: { cluster: a }
  - match: { prefix: "/" }
    route: { cluster: b }
"#;

/// `Cookie` header values, selection.
const COOKIE_CASES: &[(&[&str], &str)] = &[
    (&["s=v1"], "v r0 -> a /"),
    (&["a=1; s=\"v1\"; t=y"], "v r0 -> a /"),
    (&["s=v1; t=x1"], "v r1 -> b /"),
    (&["s=v2; s=v1"], "v r1 -> b /"),
    (&["t=1", "s=v1"], "v r0 -> a /"),
    (&["s=v2", "s=v1"], "v r1 -> b /"),
    (&["S=v1"], "v r1 -> b /"),
    (&[], "v r1 -> b /"),
];

#[test]
fn cookies() {
    let cases: Vec<_> = COOKIE_CASES
        .iter()
        .map(|&(values, want)| {
            let r = values.iter().fold(get("h", "/"), |r, v| r.h("cookie", v));
            (r, want)
        })
        .collect();
    check(COOKIES, &cases);
}

fn build_err(vhost: &str) -> String {
    super::table_err(&format!("virtual_hosts: [{vhost}]"))
}

#[test]
fn bad_fields_name_the_field() {
    let cookie = "rc.virtual_hosts[0].routes[0].match.cookies[0]";
    for (vhost, want) in [
        (
            "{ name: v, domains: ['*'], require_tls: SOME, routes: [] }".to_string(),
            "rc.virtual_hosts[0].require_tls: unknown value \"SOME\"".to_string(),
        ),
        (
            route_with_cookie("{ string_match: { exact: v } }"),
            format!("{cookie}.name: required"),
        ),
        (
            route_with_cookie("{ name: s }"),
            format!("{cookie}.string_match: required"),
        ),
        (
            route_with_cookie(
                "{ name: s, string_match: { safe_regex: { regex: a }, ignore_case: true } }",
            ),
            format!("{cookie}.string_match.ignore_case: has no effect for safe_regex"),
        ),
        (
            route_with_cookie(&format!(
                "{{ name: {}, string_match: {{ exact: v }} }}",
                "n".repeat(1025)
            )),
            format!("{cookie}.name: longer than 1024 bytes"),
        ),
    ] {
        let e = build_err(&vhost);
        assert!(e.contains(&want), "{vhost}: {e}");
    }
}

fn route_with_cookie(cookie: &str) -> String {
    format!(
        "{{ name: v, domains: ['*'], routes: [{{ match: {{ prefix: /, cookies: [{cookie}] }}, route: {{ cluster: a }} }}] }}"
    )
}
