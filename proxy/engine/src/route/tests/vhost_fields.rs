//! Issue 14's virtual-host and match fields: `require_tls` (conformance cases
//! `vhost_require_tls_*`).

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

#[test]
fn bad_require_tls_names_the_field() {
    let raw = crate::config::raw::parse_document(
        "virtual_hosts: [{ name: v, domains: ['*'], require_tls: SOME, routes: [] }]",
    )
    .expect("parses");
    let e = super::super::build_route_table(
        raw,
        &crate::config::FieldPath::root().field("rc"),
        &Default::default(),
    )
    .expect_err("must be rejected")
    .to_string();
    assert!(
        e.contains("rc.virtual_hosts[0].require_tls: unknown value \"SOME\""),
        "{e}"
    );
}
