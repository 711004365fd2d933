//! Path, header, query parameter and string matchers of a route's `match`.

use std::borrow::Cow;

use super::HeaderLookup;

/// `prefix` | `path` | `safe_regex` | `path_separated_prefix` (matched on the path without
/// query string and fragment, as Envoy's PathMatcher does).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path`: the whole path.
    Path(String),
    /// `safe_regex.regex`, compiled as a full match (`^(?:re)$`).
    SafeRegex(regex::Regex),
    /// `path_separated_prefix`: equal to the prefix or the prefix followed by `/`.
    PathSeparatedPrefix(String),
}

impl PathMatch {
    /// Whether `path` (without query and fragment) matches.
    pub fn matches(&self, path: &str, case_sensitive: bool) -> bool {
        match self {
            PathMatch::Prefix(p) => starts_with(path, p, case_sensitive),
            PathMatch::Path(p) => {
                if case_sensitive {
                    path == p
                } else {
                    path.eq_ignore_ascii_case(p)
                }
            }
            PathMatch::SafeRegex(re) => re.is_match(path),
            PathMatch::PathSeparatedPrefix(p) => {
                starts_with(path, p, case_sensitive)
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s.starts_with(prefix)
    } else {
        s.len() >= prefix.len()
            && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }
}

/// An Envoy StringMatcher.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// `exact`.
    Exact {
        /// The value.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// `prefix`.
    Prefix {
        /// The value.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// `suffix`.
    Suffix {
        /// The value.
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// `contains`.
    Contains {
        /// The value (lower-cased when `ignore_case`).
        value: String,
        /// `ignore_case`.
        ignore_case: bool,
    },
    /// `safe_regex.regex`, full match.
    Regex(regex::Regex),
}

/// Equal when built from the same config (a regex by its source).
impl PartialEq for StringMatcher {
    fn eq(&self, other: &Self) -> bool {
        use StringMatcher::*;
        match (self, other) {
            (
                Exact {
                    value: a,
                    ignore_case: x,
                },
                Exact {
                    value: b,
                    ignore_case: y,
                },
            )
            | (
                Prefix {
                    value: a,
                    ignore_case: x,
                },
                Prefix {
                    value: b,
                    ignore_case: y,
                },
            )
            | (
                Suffix {
                    value: a,
                    ignore_case: x,
                },
                Suffix {
                    value: b,
                    ignore_case: y,
                },
            )
            | (
                Contains {
                    value: a,
                    ignore_case: x,
                },
                Contains {
                    value: b,
                    ignore_case: y,
                },
            ) => a == b && x == y,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for StringMatcher {}

impl StringMatcher {
    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            StringMatcher::Exact { value, ignore_case } => {
                if *ignore_case {
                    s.eq_ignore_ascii_case(value)
                } else {
                    s == value
                }
            }
            StringMatcher::Prefix { value, ignore_case } => starts_with(s, value, !ignore_case),
            StringMatcher::Suffix { value, ignore_case } => {
                s.len() >= value.len() && {
                    let tail = &s.as_bytes()[s.len() - value.len()..];
                    if *ignore_case {
                        tail.eq_ignore_ascii_case(value.as_bytes())
                    } else {
                        tail == value.as_bytes()
                    }
                }
            }
            StringMatcher::Contains { value, ignore_case } => {
                if *ignore_case {
                    // `value` is lower-cased at load; compare windows without allocating.
                    value.is_empty()
                        || s.as_bytes()
                            .windows(value.len())
                            .any(|w| w.eq_ignore_ascii_case(value.as_bytes()))
                } else {
                    s.contains(value.as_str())
                }
            }
            StringMatcher::Regex(re) => re.is_match(s),
        }
    }
}

/// `headers[]` (HeaderMatcher).
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// `name`, lower-cased (`:method`, `:authority`, `:path`, `:scheme` read the request
    /// line).
    pub name: String,
    /// The match.
    pub kind: HeaderMatchKind,
    /// `invert_match`.
    pub invert_match: bool,
    /// `treat_missing_header_as_empty`.
    pub treat_missing_header_as_empty: bool,
}

/// How a [`HeaderMatcher`] tests a header value (each value of a repeated header).
#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    /// `string_match` or a legacy `exact_match`/`prefix_match`/... field.
    String(StringMatcher),
    /// `present_match` (also what a matcher without any match field means:
    /// `Present(true)`).
    Present(bool),
    /// Legacy `exact_match: ""`: any value of a present header.
    Any,
    /// `range_match`: the value is a decimal int64 in `[start, end)`.
    Range(Int64Range),
}

/// `type.v3.Int64Range`: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int64Range {
    /// `start` (inclusive).
    pub start: i64,
    /// `end` (exclusive).
    pub end: i64,
}

impl Int64Range {
    /// Envoy's range match: `absl::SimpleAtoi` (surrounding ASCII whitespace and a sign
    /// allowed) succeeds and the number is in `[start, end)`.
    pub fn matches(&self, s: &str) -> bool {
        s.trim_ascii()
            .parse::<i64>()
            .is_ok_and(|n| n >= self.start && n < self.end)
    }
}

impl HeaderMatcher {
    /// Whether a request with this header `value` (one value: a pseudo-header, or `None` when
    /// missing) matches. See [`Self::matches_any`].
    pub fn matches(&self, value: Option<Cow<'_, str>>) -> bool {
        match value {
            Some(v) => self.value_matches(&v) != self.invert_match,
            None => self.matches_missing(),
        }
    }

    /// Whether the request's `name` headers match, with Envoy 1.40's HeaderUtility
    /// semantics: a header sent several times matches when **any** of its values matches (then
    /// `invert_match` negates that); a missing header (unless `treat_missing_header_as_empty`)
    /// matches only `present_match: false`, or `present_match: true` inverted — every other
    /// matcher fails, inverted or not.
    pub fn matches_any<H: HeaderLookup + ?Sized>(&self, name: &str, headers: &H) -> bool {
        let (mut present, mut any) = (false, false);
        headers.for_each_value(name, &mut |v| {
            present = true;
            any = any || self.value_matches(v);
        });
        if present {
            any != self.invert_match
        } else {
            self.matches_missing()
        }
    }

    fn matches_missing(&self) -> bool {
        if self.treat_missing_header_as_empty {
            return self.value_matches("") != self.invert_match;
        }
        match self.kind {
            HeaderMatchKind::Present(want) => want == self.invert_match,
            _ => false,
        }
    }

    /// Whether one present value matches (before `invert_match`).
    fn value_matches(&self, value: &str) -> bool {
        match &self.kind {
            HeaderMatchKind::String(sm) => sm.matches(value),
            HeaderMatchKind::Present(want) => *want,
            HeaderMatchKind::Any => true,
            HeaderMatchKind::Range(r) => r.matches(value),
        }
    }

    /// All values of the header joined with `,` (borrowed when there is exactly one), for
    /// explanations.
    pub(crate) fn lookup<'h, H: HeaderLookup + ?Sized>(
        name: &str,
        headers: &'h H,
    ) -> Option<Cow<'h, str>> {
        let mut out: Option<Cow<'h, str>> = None;
        headers.for_each_value(name, &mut |v| {
            out = Some(match out.take() {
                None => Cow::Borrowed(v),
                Some(prev) => {
                    let mut s = prev.into_owned();
                    s.push(',');
                    s.push_str(v);
                    Cow::Owned(s)
                }
            })
        });
        out
    }
}

/// `query_parameters[]` (QueryParameterMatcher): tests the first value of the parameter
/// (not percent-decoded, as Envoy's parseQueryString).
#[derive(Debug, Clone)]
pub struct QueryParameterMatcher {
    /// `name`.
    pub name: String,
    /// `string_match`; `None` (`present_match`) = the parameter must be present.
    pub string_match: Option<StringMatcher>,
}

impl QueryParameterMatcher {
    /// Whether `query` (the part after `?`, without fragment) matches.
    pub fn matches(&self, query: &str) -> bool {
        match first_query_value(query, &self.name) {
            None => false,
            Some(v) => self.string_match.as_ref().is_none_or(|m| m.matches(v)),
        }
    }
}

/// First value of parameter `name` in `query` (`a=1&b&c=3`; a parameter without `=` has
/// the empty value).
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}
