//! Header access for matching ([`HeaderLookup`]) and Envoy's header mutations
//! (`*_headers_to_add` / `*_headers_to_remove`, [`HeaderLevels`] in Envoy's order).

use super::format::{FormatContext, HeaderValueFormat};

/// Read access to request headers (names are passed lower-case).
pub trait HeaderLookup {
    /// Calls `f` with every value of header `name`, in order. Values that are not valid
    /// UTF-8 may be skipped.
    fn for_each_value<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s str));

    /// Calls `f` with every value of header `name` as sent, in order (text or not).
    fn for_each_raw<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        self.for_each_value(name, &mut |v| f(v.as_bytes()));
    }

    /// The first value of `name`.
    fn first_value(&self, name: &str) -> Option<&str> {
        let mut first = None;
        self.for_each_value(name, &mut |v| {
            if first.is_none() {
                first = Some(v)
            }
        });
        first
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn for_each_value<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s str)) {
        for (k, v) in self {
            if k.eq_ignore_ascii_case(name) {
                f(v)
            }
        }
    }
}

impl HeaderLookup for Vec<(String, String)> {
    fn for_each_value<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s str)) {
        for (k, v) in self {
            if k.eq_ignore_ascii_case(name) {
                f(v)
            }
        }
    }
}

impl HeaderLookup for http::HeaderMap {
    fn for_each_value<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s str)) {
        for v in self.get_all(name) {
            if let Ok(s) = v.to_str() {
                f(s)
            }
        }
    }

    fn for_each_raw<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s [u8])) {
        for v in self.get_all(name) {
            f(v.as_bytes())
        }
    }
}

/// Write access to a header map, for applying [`HeaderMutations`].
pub trait HeaderMapMut {
    /// Removes every value of `name`.
    fn remove_all(&mut self, name: &str);
    /// Whether `name` has at least one value.
    fn contains(&self, name: &str) -> bool;
    /// Adds a value for `name`, keeping the existing ones.
    fn append(&mut self, name: &str, value: &str);
    /// Replaces every value of `name` by `value`.
    fn set(&mut self, name: &str, value: &str) {
        self.remove_all(name);
        self.append(name, value);
    }
}

impl HeaderMapMut for Vec<(String, String)> {
    fn remove_all(&mut self, name: &str) {
        self.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    fn contains(&self, name: &str) -> bool {
        self.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
    fn append(&mut self, name: &str, value: &str) {
        self.push((name.to_string(), value.to_string()));
    }
}

impl HeaderMapMut for http::HeaderMap {
    fn remove_all(&mut self, name: &str) {
        self.remove(name);
    }
    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
    fn append(&mut self, name: &str, value: &str) {
        // Names and values were validated at config load (header name / value syntax).
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            http::HeaderMap::append(self, n, v);
        }
    }
    fn set(&mut self, name: &str, value: &str) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            self.insert(n, v);
        }
    }
}

/// `append_action` of a HeaderValueOption (legacy `append: true|false` maps to
/// `AppendIfExistsOrAdd` / `OverwriteIfExistsOrAdd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AppendAction {
    /// `APPEND_IF_EXISTS_OR_ADD` (default): add another value.
    #[default]
    AppendIfExistsOrAdd,
    /// `ADD_IF_ABSENT`: add only if the header is absent.
    AddIfAbsent,
    /// `OVERWRITE_IF_EXISTS_OR_ADD`: replace every value, or add.
    OverwriteIfExistsOrAdd,
    /// `OVERWRITE_IF_EXISTS`: replace every value only if present.
    OverwriteIfExists,
}

/// One `*_headers_to_add[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderToAdd {
    /// `header.key`, lower-cased.
    pub name: String,
    /// `header.value` (`%%` unescaped to `%`) when it has no command operator.
    pub value: String,
    /// `header.value` when it has command operators (`%REQ(x)%`, ...): rendered per request;
    /// a value that renders empty is not added (unless `keep_empty_value`).
    pub format: Option<HeaderValueFormat>,
    /// `append_action` / `append`.
    pub action: AppendAction,
    /// `keep_empty_value`: apply even when `value` is empty (Envoy skips empty values
    /// otherwise).
    pub keep_empty_value: bool,
}

/// The `*_headers_to_add` / `*_headers_to_remove` of one level (weighted cluster, route,
/// virtual host or route config).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HeaderMutations {
    /// `*_headers_to_remove[]`, lower-cased; applied before the adds of the same level.
    pub remove: Vec<String>,
    /// `*_headers_to_add[]`, in order.
    pub add: Vec<HeaderToAdd>,
}

impl HeaderMutations {
    /// Whether an addition has command operators (rendered per request).
    pub fn has_format(&self) -> bool {
        self.add.iter().any(|h| h.format.is_some())
    }

    /// Whether this level changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Applies this level as Envoy's HeaderParser does: removals first, then additions.
    /// Formatted values render from an empty context (see [`Self::apply_with`]).
    pub fn apply<M: HeaderMapMut + ?Sized>(&self, map: &mut M) {
        self.apply_with(map, &FormatContext::default());
    }

    /// [`Self::apply`], rendering formatted values from `ctx`.
    pub fn apply_with<M: HeaderMapMut + ?Sized>(&self, map: &mut M, ctx: &FormatContext<'_>) {
        for name in &self.remove {
            map.remove_all(name);
        }
        for h in &self.add {
            let rendered;
            let value = match &h.format {
                Some(f) => {
                    rendered = f.render(ctx);
                    rendered.as_str()
                }
                None => h.value.as_str(),
            };
            if value.is_empty() && !h.keep_empty_value {
                continue;
            }
            match h.action {
                AppendAction::AppendIfExistsOrAdd => map.append(&h.name, value),
                AppendAction::AddIfAbsent => {
                    if !map.contains(&h.name) {
                        map.append(&h.name, value)
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => map.set(&h.name, value),
                AppendAction::OverwriteIfExists => {
                    if map.contains(&h.name) {
                        map.set(&h.name, value)
                    }
                }
            }
        }
    }
}

/// The header mutation levels of a selected route, in the order Envoy evaluates them (a
/// later level wins over an earlier one). At most four levels: weighted cluster, then
/// route, virtual host, route config (or the reverse three with
/// `most_specific_header_mutations_wins`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderLevels<'a> {
    levels: [Option<&'a HeaderMutations>; 4],
}

impl<'a> HeaderLevels<'a> {
    /// Levels in application order; empty levels are dropped.
    pub(crate) fn new(levels: [Option<&'a HeaderMutations>; 4]) -> Self {
        let mut out = [None; 4];
        let mut n = 0;
        for l in levels.into_iter().flatten() {
            if !l.is_empty() {
                out[n] = Some(l);
                n += 1;
            }
        }
        Self { levels: out }
    }

    /// The non-empty levels, in application order.
    pub fn iter(&self) -> impl Iterator<Item = &'a HeaderMutations> + '_ {
        self.levels.iter().flatten().copied()
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_none()
    }

    /// Applies every level in order.
    pub fn apply<M: HeaderMapMut + ?Sized>(&self, map: &mut M) {
        self.apply_with(map, &FormatContext::default());
    }

    /// Applies every level in order, rendering formatted values from `ctx`.
    pub fn apply_with<M: HeaderMapMut + ?Sized>(&self, map: &mut M, ctx: &FormatContext<'_>) {
        for l in self.iter() {
            l.apply_with(map, ctx);
        }
    }
}
