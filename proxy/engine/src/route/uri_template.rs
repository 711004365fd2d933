//! Envoy's URI templates (`envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig`,
//! Envoy's `uri_template` library): `/`-separated literals, `*` (one path segment), `**` (any
//! text, `/` included; nothing may glob after it) and variables `{name}` / `{name=match}`,
//! compiled to one anchored regex as Envoy does. istiod writes one for every
//! AuthorizationPolicy path with `{*}` or `{**}` (RBAC `Permission.uri_template`).

use regex::Regex;

/// RFC 3986 `pchar` without `*` (and with `=`): what a literal and a glob may hold.
const PCHAR: &str = r"a-zA-Z0-9\-._~%!$&'()+,;:@=";
/// Envoy's limits on variables.
const MAX_VARIABLES: usize = 5;
const MAX_VARIABLE_NAME: usize = 16;

/// One parsed piece.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    /// `*` (false) or `**` (true).
    Glob(bool),
    /// A variable's name and match pieces (empty: `*`).
    Variable(String, Vec<Piece>),
}

/// Compiles `template` into the regex Envoy's matcher fully matches the path (without query and
/// fragment) against; `Err` says why Envoy refuses it.
pub fn compile(template: &str) -> Result<Regex, String> {
    let pieces = parse(template)?;
    let mut re = String::from("^");
    for p in &pieces {
        push_regex(&mut re, p);
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

fn push_regex(re: &mut String, p: &Piece) {
    match p {
        Piece::Literal(l) => re.push_str(&regex::escape(l)),
        Piece::Glob(false) => re.push_str(&format!("[{PCHAR}]+")),
        Piece::Glob(true) => re.push_str(&format!("[{PCHAR}/]*")),
        Piece::Variable(name, m) => {
            re.push_str(&format!("(?P<{name}>"));
            if m.is_empty() {
                push_regex(re, &Piece::Glob(false));
            }
            for q in m {
                push_regex(re, q);
            }
            re.push(')');
        }
    }
}

fn valid_literal(l: &str) -> bool {
    !l.is_empty()
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

/// A literal at the front of `s`: `/` alone, else up to the next `/` or `{`.
fn literal(s: &str) -> Result<(Piece, &str), String> {
    if let Some(rest) = s.strip_prefix('/') {
        return Ok((Piece::Literal("/".into()), rest));
    }
    let end = s.find(['/', '{']).unwrap_or(s.len());
    let lit = &s[..end];
    if !valid_literal(lit) {
        return Err(format!("invalid literal {lit:?}"));
    }
    Ok((Piece::Literal(lit.into()), &s[end..]))
}

/// `*` or `**` at the front of `s`.
fn glob(s: &str) -> (Piece, &str) {
    match s.strip_prefix("**") {
        Some(rest) => (Piece::Glob(true), rest),
        None => (Piece::Glob(false), &s[1..]),
    }
}

/// A `{name}` or `{name=match}` at the front of `s`.
fn variable(s: &str) -> Result<(Piece, &str), String> {
    let body = s.strip_prefix('{').ok_or("invalid variable")?;
    let (inner, rest) = body
        .split_once('}')
        .ok_or_else(|| format!("unmatched variable bracket in {s:?}"))?;
    let (name, matcher) = match inner.split_once('=') {
        Some((n, m)) => (n, Some(m)),
        None => (inner, None),
    };
    let mut chars = name.chars();
    let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(format!("invalid variable name {name:?}"));
    }
    let mut m = Vec::new();
    if let Some(mut item) = matcher {
        if item.is_empty() {
            return Err("empty variable match".into());
        }
        while !item.is_empty() {
            let after_glob = matches!(m.last(), Some(Piece::Glob(_)));
            let (piece, rest) = if item.starts_with('*') && !after_glob {
                glob(item)
            } else if !item.starts_with('/') && after_glob {
                return Err(
                    "a literal or glob directly after a glob in a variable match (a / missing?)"
                        .into(),
                );
            } else {
                literal(item)?
            };
            m.push(piece);
            item = rest;
        }
    }
    Ok((Piece::Variable(name.into(), m), rest))
}

fn parse(template: &str) -> Result<Vec<Piece>, String> {
    let printable = template.starts_with('/') && template.bytes().all(|b| b.is_ascii_graphic());
    if !printable {
        return Err(format!(
            "invalid pattern {template:?} (must start with / and be printable)"
        ));
    }
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let (piece, r) = if rest.starts_with('*') {
            glob(rest)
        } else if rest.starts_with('{') {
            variable(rest)?
        } else {
            literal(rest)?
        };
        pieces.push(piece);
        rest = r;
    }
    // Envoy's checks, in its order: variable names, glob after `**`, double `/`.
    let mut names: Vec<&str> = Vec::new();
    for p in &pieces {
        if let Piece::Variable(name, _) = p {
            if names.len() >= MAX_VARIABLES {
                return Err(format!("exceeded variable count limit ({MAX_VARIABLES})"));
            }
            if name.len() > MAX_VARIABLE_NAME {
                return Err(format!(
                    "invalid variable name length ({name:?}: at most {MAX_VARIABLE_NAME})"
                ));
            }
            if names.contains(&name.as_str()) {
                return Err(format!("repeated variable name {name:?}"));
            }
            names.push(name);
        }
    }
    let mut seen_text_glob = false;
    for p in &pieces {
        let globs: Vec<bool> = match p {
            Piece::Glob(t) => vec![*t],
            Piece::Variable(_, m) if m.is_empty() => vec![false],
            Piece::Variable(_, m) => m
                .iter()
                .filter_map(|q| match q {
                    Piece::Glob(t) => Some(*t),
                    _ => None,
                })
                .collect(),
            Piece::Literal(_) => Vec::new(),
        };
        for t in globs {
            if seen_text_glob {
                return Err("glob after text glob (**)".into());
            }
            seen_text_glob = t;
        }
    }
    let is_separator = |p: &Piece| match p {
        Piece::Literal(l) => l == "/",
        Piece::Variable(_, m) => matches!(m.first(), Some(Piece::Literal(l)) if l == "/"),
        Piece::Glob(_) => false,
    };
    if pieces
        .windows(2)
        .any(|w| is_separator(&w[0]) && is_separator(&w[1]))
    {
        return Err("double slashes (/) are not allowed".into());
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::compile;

    fn matches(template: &str, path: &str) -> bool {
        compile(template)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .is_match(path)
    }

    #[test]
    fn globs_and_variables_match_as_envoys_regexes_do() {
        // istiod's translations of AuthorizationPolicy paths `/path/template/{*}` and
        // `/{**}/path/template`.
        assert!(matches("/path/template/*", "/path/template/x.y"));
        assert!(!matches("/path/template/*", "/path/template/"));
        assert!(!matches("/path/template/*", "/path/template/a/b"));
        assert!(matches("/**/path/template", "/a/b/path/template"));
        assert!(matches("/**/path/template", "//path/template"));
        assert!(!matches("/**/path/template", "/path/template"));
        assert!(matches("/api/**", "/api/"));
        assert!(matches("/api/**", "/api/v1/users/7"));
        assert!(matches("/{lang}/docs", "/en/docs"));
        assert!(matches("/{rest=**}", "/a/b"));
        assert!(matches("/v1/{x=a/*}/c", "/v1/a/b/c"));
        assert!(!matches("/v1/{x=a/*}/c", "/v1/a/c"));
        // Literal text, never a regex.
        assert!(matches("/a.b+c", "/a.b+c"));
        assert!(!matches("/a.b+c", "/aXbbc"));
    }

    #[test]
    fn templates_envoy_refuses_are_refused() {
        for bad in [
            "no-slash",
            "/a b",
            "/a*b",
            "/**/*",
            "/**/{x}",
            "/a//b",
            "/{1x}",
            "/{x}/{x}",
            "/{x=}",
            "/{a}/{b}/{c}/{d}/{e}/{f}",
            "/{abcdefghijklmnopq}",
            "/{x",
        ] {
            assert!(compile(bad).is_err(), "{bad} should be refused");
        }
    }
}
