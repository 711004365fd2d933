//! Compiles a route's `match` (path, header and query parameter matchers) with regexes
//! compiled once, anchored for RE2's full-match semantics.

use super::{
    FractionalPercent, HeaderMatchKind, HeaderMatcher, Int64Range, PathMatch,
    QueryParameterMatcher, RouteMatch, StringMatcher,
};
use crate::config::{
    raw_route::{
        RawHeaderMatcher, RawInt64, RawInt64Range, RawRegexMatcher, RawRouteMatch,
        RawRuntimeFractionalPercent, RawStringMatcher,
    },
    ConfigError, FieldPath,
};

pub(crate) fn route_match(raw: &RawRouteMatch, p: &FieldPath) -> Result<RouteMatch, ConfigError> {
    let mut specs = Vec::new();
    if let Some(x) = &raw.prefix {
        specs.push(PathMatch::Prefix(x.clone()));
    }
    if let Some(x) = &raw.path {
        specs.push(PathMatch::Path(x.clone()));
    }
    if let Some(x) = &raw.safe_regex {
        specs.push(PathMatch::SafeRegex(full_regex(x, &p.field("safe_regex"))?));
    }
    if let Some(x) = &raw.path_separated_prefix {
        let pp = p.field("path_separated_prefix");
        if !x.starts_with('/') || x.ends_with('/') || x.contains(['?', '#']) {
            return Err(pp.err(format!(
                "{x:?} must start with '/', not end with '/' and contain no '?' or '#'"
            )));
        }
        specs.push(PathMatch::PathSeparatedPrefix(x.clone()));
    }
    let path = match specs.len() {
        1 => specs.pop().expect("one"),
        0 => {
            return Err(
                p.err("one of prefix, path, safe_regex and path_separated_prefix is required")
            )
        }
        _ => {
            return Err(
                p.err("only one of prefix, path, safe_regex and path_separated_prefix may be set")
            )
        }
    };
    let mut headers = Vec::new();
    for (i, h) in raw.headers.iter().enumerate() {
        headers.push(header_matcher(h, &p.field("headers").index(i))?);
    }
    let mut query_parameters = Vec::new();
    for (i, q) in raw.query_parameters.iter().enumerate() {
        let qp = p.field("query_parameters").index(i);
        let name = q
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| qp.field("name").err("required"))?;
        let string_match = match (&q.string_match, q.present_match) {
            (Some(_), Some(_)) => return Err(qp.err("only one of string_match and present_match")),
            (Some(sm), None) => Some(string_matcher(sm, &qp.field("string_match"))?),
            (None, _) => None,
        };
        query_parameters.push(QueryParameterMatcher { name, string_match });
    }
    let runtime_fraction = match &raw.runtime_fraction {
        Some(rf) => Some(fractional_percent(rf, &p.field("runtime_fraction"))?),
        None => None,
    };
    let cookies = raw
        .cookies
        .iter()
        .enumerate()
        .map(|(i, c)| super::cookies::CookieMatcher::build(c, &p.field("cookies").index(i)))
        .collect::<Result<_, _>>()?;
    let dynamic_metadata = raw
        .dynamic_metadata
        .iter()
        .enumerate()
        .map(|(i, m)| {
            crate::http::filters::metadata::build(m, &p.field("dynamic_metadata").index(i))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteMatch {
        cookies,
        dynamic_metadata,
        path,
        case_sensitive: raw.case_sensitive.unwrap_or(true),
        headers,
        query_parameters,
        runtime_fraction,
        grpc: raw.grpc.is_some(),
    })
}

/// `runtime_fraction`: its `default_value` (required, as Envoy); the runtime key is a no-op.
pub(crate) fn fractional_percent(
    raw: &RawRuntimeFractionalPercent,
    p: &FieldPath,
) -> Result<FractionalPercent, ConfigError> {
    let dp = p.field("default_value");
    let d = raw
        .default_value
        .as_ref()
        .ok_or_else(|| dp.err("required"))?;
    percent(d, &dp)
}

/// A `type.v3.FractionalPercent` at `dp` (denominator HUNDRED by default).
pub(crate) fn percent(
    d: &crate::config::raw_route::RawFractionalPercent,
    dp: &FieldPath,
) -> Result<FractionalPercent, ConfigError> {
    let denominator = match d.denominator.as_deref() {
        None | Some("HUNDRED") => 100,
        Some("TEN_THOUSAND") => 10_000,
        Some("MILLION") => 1_000_000,
        Some(o) => return Err(dp.field("denominator").err(format!("unknown value {o:?}"))),
    };
    Ok(FractionalPercent {
        numerator: d.numerator.unwrap_or(0),
        denominator,
    })
}

/// `range_match` (Int64Range; proto3 JSON int64: a number or a decimal string).
fn int64_range(raw: &RawInt64Range, p: &FieldPath) -> Result<Int64Range, ConfigError> {
    let int = |v: &Option<RawInt64>, f: &str| -> Result<i64, ConfigError> {
        match v {
            None => Ok(0),
            Some(RawInt64::Number(n)) => Ok(*n),
            Some(RawInt64::Text(t)) => t
                .parse()
                .map_err(|_| p.field(f).err(format!("invalid int64 {t:?}"))),
        }
    };
    Ok(Int64Range {
        start: int(&raw.start, "start")?,
        end: int(&raw.end, "end")?,
    })
}

pub(crate) fn header_matcher(
    raw: &RawHeaderMatcher,
    p: &FieldPath,
) -> Result<HeaderMatcher, ConfigError> {
    let name = raw
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| p.field("name").err("required"))?;
    let lit = |v: &String,
               f: &str,
               kind: fn(String) -> StringMatcher|
     -> Result<HeaderMatchKind, ConfigError> {
        if v.is_empty() && f != "exact_match" {
            return Err(p.field(f).err("must not be empty"));
        }
        Ok(HeaderMatchKind::String(kind(v.clone())))
    };
    let mut kinds = Vec::new();
    if let Some(sm) = &raw.string_match {
        kinds.push(HeaderMatchKind::String(string_matcher(
            sm,
            &p.field("string_match"),
        )?));
    }
    if let Some(b) = raw.present_match {
        kinds.push(HeaderMatchKind::Present(b));
    }
    if let Some(v) = &raw.exact_match {
        kinds.push(if v.is_empty() {
            HeaderMatchKind::Any
        } else {
            lit(v, "exact_match", |value| StringMatcher::Exact {
                value,
                ignore_case: false,
            })?
        });
    }
    if let Some(v) = &raw.prefix_match {
        kinds.push(lit(v, "prefix_match", |value| StringMatcher::Prefix {
            value,
            ignore_case: false,
        })?);
    }
    if let Some(v) = &raw.suffix_match {
        kinds.push(lit(v, "suffix_match", |value| StringMatcher::Suffix {
            value,
            ignore_case: false,
        })?);
    }
    if let Some(v) = &raw.contains_match {
        kinds.push(lit(v, "contains_match", |value| StringMatcher::Contains {
            value,
            ignore_case: false,
        })?);
    }
    if let Some(r) = &raw.range_match {
        kinds.push(HeaderMatchKind::Range(int64_range(
            r,
            &p.field("range_match"),
        )?));
    }
    if let Some(r) = &raw.safe_regex_match {
        kinds.push(HeaderMatchKind::String(StringMatcher::Regex(full_regex(
            r,
            &p.field("safe_regex_match"),
        )?)));
    }
    let kind = match kinds.len() {
        0 => HeaderMatchKind::Present(true),
        1 => kinds.pop().expect("one"),
        _ => return Err(p.err("only one header match specifier may be set")),
    };
    Ok(HeaderMatcher {
        name: name.to_ascii_lowercase(),
        kind,
        invert_match: raw.invert_match.unwrap_or(false),
        treat_missing_header_as_empty: raw.treat_missing_header_as_empty.unwrap_or(false),
    })
}

pub(crate) fn string_matcher(
    raw: &RawStringMatcher,
    p: &FieldPath,
) -> Result<StringMatcher, ConfigError> {
    let ignore_case = raw.ignore_case.unwrap_or(false);
    let mut out = Vec::new();
    if let Some(v) = &raw.exact {
        out.push(StringMatcher::Exact {
            value: v.clone(),
            ignore_case,
        });
    }
    for (f, v, k) in [
        ("prefix", &raw.prefix, 0),
        ("suffix", &raw.suffix, 1),
        ("contains", &raw.contains, 2),
    ] {
        if let Some(v) = v {
            if v.is_empty() {
                return Err(p.field(f).err("must not be empty"));
            }
            out.push(match k {
                0 => StringMatcher::Prefix {
                    value: v.clone(),
                    ignore_case,
                },
                1 => StringMatcher::Suffix {
                    value: v.clone(),
                    ignore_case,
                },
                _ => StringMatcher::Contains {
                    value: if ignore_case {
                        v.to_ascii_lowercase()
                    } else {
                        v.clone()
                    },
                    ignore_case,
                },
            });
        }
    }
    if let Some(r) = &raw.safe_regex {
        // `ignore_case` has no effect on safe_regex (Envoy documents the same).
        out.push(StringMatcher::Regex(full_regex(r, &p.field("safe_regex"))?));
    }
    match out.len() {
        1 => Ok(out.pop().expect("one")),
        0 => Err(p.err("one of exact, prefix, suffix, contains and safe_regex is required")),
        _ => Err(p.err("only one of exact, prefix, suffix, contains and safe_regex may be set")),
    }
}

/// Compiles a RegexMatcher anchored for a full match (RE2 FullMatch).
fn full_regex(raw: &RawRegexMatcher, p: &FieldPath) -> Result<regex::Regex, ConfigError> {
    let re = raw
        .regex
        .as_deref()
        .ok_or_else(|| p.field("regex").err("required"))?;
    compile_regex(&format!("^(?:{re})$"), re, &p.field("regex"))
}

/// Largest compiled program a config regex may have (the regex crate's `size_limit`). Envoy
/// refuses RE2 programs over 100 instructions (`max_program_size`); with the crate's default
/// (10 MiB) a 3 KB config of `\w{100}` matchers took minutes of CPU and gigabytes to load
/// (found by timing adversarial configs under the `config` fuzz target). Typical route regexes
/// need under 4 KiB.
pub(crate) const MAX_REGEX_PROGRAM_BYTES: usize = 256 << 10;

/// Compiles `pattern` (the config's `shown`, possibly anchored) within
/// [`MAX_REGEX_PROGRAM_BYTES`]; the error at `p` names the regex.
pub(crate) fn compile_regex(
    pattern: &str,
    shown: &str,
    p: &FieldPath,
) -> Result<regex::Regex, ConfigError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_PROGRAM_BYTES)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => p.err(format!(
                "regex {shown:?} is too large: its compiled program exceeds \
                 {MAX_REGEX_PROGRAM_BYTES} bytes (Envoy bounds RE2 programs too)"
            )),
            e => p.err(format!("invalid regex {shown:?}: {}", one_line(&e))),
        })
}

pub(crate) fn one_line(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod regex_limit_tests {
    use crate::config::from_yaml_str;

    /// A route whose `safe_regex` is `re` (YAML-escaped by the caller).
    fn with_regex(re: &str) -> String {
        format!(
            r#"{{"static_resources": {{"listeners": [{{"name": "l",
              "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 1}}}},
              "filter_chains": [{{"filters": [{{"name": "envoy.filters.network.http_connection_manager",
                "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                  "stat_prefix": "s", "http_filters": [{{"name": "envoy.filters.http.router"}}],
                  "route_config": {{"virtual_hosts": [{{"name": "v", "domains": ["*"], "routes": [
                    {{"match": {{"safe_regex": {{"regex": "{re}"}}}}, "direct_response": {{"status": 200}}}}]}}]}}}}}}]}}]}}]}}}}"#
        )
    }

    #[test]
    fn oversized_regex_programs_are_refused_quickly_naming_the_field() {
        // Found under the config fuzz target: `\w{100}` compiled to ~5 MB in ~2 s; twenty of
        // them in 3 KB took minutes.
        for re in [r"\\w{100}", "(a{1000}){30}", ".{0,1000}"] {
            let start = std::time::Instant::now();
            let e = from_yaml_str(&with_regex(re)).expect_err(re).to_string();
            assert!(e.contains("routes[0].match.safe_regex.regex"), "{e}");
            assert!(e.contains("too large"), "{e}");
            assert!(start.elapsed() < std::time::Duration::from_secs(1), "{re}");
        }
        // Everyday route regexes stay well inside the bound.
        for re in [
            r"/users/[0-9]+/items",
            r"\\w+",
            r"/notebook/(.*)/(.*)/(.*)",
            r"\\d{1,3}(\\.\\d{1,3}){3}",
        ] {
            from_yaml_str(&with_regex(re)).expect(re);
        }
    }
}
