//! One-line renderings of a route's `match` for `sluice explain` (display only: matching
//! itself is `matcher.rs`).

use super::{
    HeaderMatchKind, HeaderMatcher, PathMatch, QueryParameterMatcher, RouteMatch, StringMatcher,
};

/// `prefix "/a" headers[...] query[...]`.
pub(crate) fn describe_match(m: &RouteMatch) -> String {
    let mut s = match &m.path {
        PathMatch::Prefix(p) => format!("prefix \"{p}\""),
        PathMatch::Path(p) => format!("path \"{p}\""),
        PathMatch::SafeRegex(re) => format!("regex \"{}\"", inner_regex(re.as_str())),
        PathMatch::PathSeparatedPrefix(p) => format!("path_separated_prefix \"{p}\""),
    };
    if !m.case_sensitive {
        s.push_str(" (case-insensitive)");
    }
    for h in &m.headers {
        s.push_str(&format!(" header {} {}", h.name, describe_header(h)));
    }
    for q in &m.query_parameters {
        s.push_str(&format!(" query {}", describe_query(q)));
    }
    for c in &m.cookies {
        s.push_str(&format!(" cookie {} {}", c.name, describe_cookie(c)));
    }
    s
}

/// `exact "v"`, `not prefix "x"` (a missing cookie matches the inverted one).
pub(crate) fn describe_cookie(c: &super::cookies::CookieMatcher) -> String {
    let not = if c.invert_match { "not " } else { "" };
    format!("{not}{}", describe_string(&c.string_match))
}

/// `exact "v"`, `present`, `not prefix "x"`, ...
pub(crate) fn describe_header(h: &HeaderMatcher) -> String {
    let not = if h.invert_match { "not " } else { "" };
    let what = match &h.kind {
        HeaderMatchKind::String(sm) => describe_string(sm),
        HeaderMatchKind::Present(true) | HeaderMatchKind::Any => "present".to_string(),
        HeaderMatchKind::Present(false) => "absent".to_string(),
        HeaderMatchKind::Range(r) => format!("in range [{}, {})", r.start, r.end),
    };
    format!("{not}{what}")
}

/// `name=exact "v"` or `name present`.
pub(crate) fn describe_query(q: &QueryParameterMatcher) -> String {
    match &q.string_match {
        Some(sm) => format!("{}={}", q.name, describe_string(sm)),
        None => format!("{} present", q.name),
    }
}

fn describe_string(sm: &StringMatcher) -> String {
    let (kind, value, ignore_case) = match sm {
        StringMatcher::Exact { value, ignore_case } => ("exact", value.as_str(), *ignore_case),
        StringMatcher::Prefix { value, ignore_case } => ("prefix", value.as_str(), *ignore_case),
        StringMatcher::Suffix { value, ignore_case } => ("suffix", value.as_str(), *ignore_case),
        StringMatcher::Contains { value, ignore_case } => {
            ("contains", value.as_str(), *ignore_case)
        }
        StringMatcher::Regex(re) => ("regex", inner_regex(re.as_str()), false),
    };
    let ic = if ignore_case { " (ignore case)" } else { "" };
    format!("{kind} \"{value}\"{ic}")
}

/// The configured regex inside the full-match wrapper `^(?:re)$` the builder adds.
fn inner_regex(compiled: &str) -> &str {
    compiled
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(compiled)
}
