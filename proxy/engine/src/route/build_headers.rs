//! Compiles `*_headers_to_add` / `*_headers_to_remove` of one level into
//! [`HeaderMutations`], rejecting what Envoy's HeaderParser rejects.

use super::{
    format::{HeaderValueFormat, ParsedValue},
    AppendAction, HeaderMutations, HeaderToAdd,
};
use crate::config::{raw_route::RawHeaderValueOption, ConfigError, FieldPath};

/// `<dir>_headers_to_add` / `<dir>_headers_to_remove` of one level at `p`.
pub(crate) fn mutations(
    add: &[RawHeaderValueOption],
    remove: &[String],
    p: &FieldPath,
    dir: &str,
) -> Result<HeaderMutations, ConfigError> {
    let ap = p.field(&format!("{dir}_headers_to_add"));
    let rp = p.field(&format!("{dir}_headers_to_remove"));
    mutations_at(add, remove, &ap, &rp)
}

/// Header additions at `ap` and removals at `rp` (a filter's own field names).
pub(crate) fn mutations_at(
    add: &[RawHeaderValueOption],
    remove: &[String],
    ap: &FieldPath,
    rp: &FieldPath,
) -> Result<HeaderMutations, ConfigError> {
    let mut out = HeaderMutations::default();
    for (i, name) in remove.iter().enumerate() {
        let n = name.to_ascii_lowercase();
        check_header_name(&n, &rp.index(i))?;
        out.remove.push(n);
    }
    for (i, h) in add.iter().enumerate() {
        out.add.push(header_to_add(h, &ap.index(i))?);
    }
    Ok(out)
}

/// One `HeaderValueOption` at `hp`.
pub(crate) fn header_to_add(
    h: &RawHeaderValueOption,
    hp: &FieldPath,
) -> Result<HeaderToAdd, ConfigError> {
    let hv = h
        .header
        .as_ref()
        .ok_or_else(|| hp.field("header").err("required"))?;
    let key = hv.key.as_deref().unwrap_or("").to_ascii_lowercase();
    check_header_name(&key, &hp.field("header").field("key"))?;
    let raw_value = hv.value.as_deref().unwrap_or("");
    let (value, format) = match HeaderValueFormat::parse(raw_value)
        .map_err(|m| hp.field("header").field("value").err(m))?
    {
        ParsedValue::Literal(v) => (v, None),
        ParsedValue::Format(f) => (String::new(), Some(f)),
    };
    if http::HeaderValue::from_str(&value).is_err() {
        return Err(hp
            .field("header")
            .field("value")
            .err(format!("invalid header value {raw_value:?}")));
    }
    let action = match (h.append, h.append_action.as_deref()) {
        (Some(_), Some(_)) => return Err(hp.err("only one of append and append_action may be set")),
        (Some(true), None) | (None, None) | (None, Some("APPEND_IF_EXISTS_OR_ADD")) => {
            AppendAction::AppendIfExistsOrAdd
        }
        (Some(false), None) | (None, Some("OVERWRITE_IF_EXISTS_OR_ADD")) => {
            AppendAction::OverwriteIfExistsOrAdd
        }
        (None, Some("ADD_IF_ABSENT")) => AppendAction::AddIfAbsent,
        (None, Some("OVERWRITE_IF_EXISTS")) => AppendAction::OverwriteIfExists,
        (None, Some(o)) => {
            return Err(hp
                .field("append_action")
                .err(format!("unknown value {o:?}")))
        }
    };
    Ok(HeaderToAdd {
        name: key,
        value,
        format,
        action,
        keep_empty_value: h.keep_empty_value.unwrap_or(false),
    })
}

pub(crate) fn check_header_name(n: &str, p: &FieldPath) -> Result<(), ConfigError> {
    if n.starts_with(':') || n == "host" {
        return Err(p.err(format!(
            "{n:?}: :-prefixed or host headers may not be modified"
        )));
    }
    if n.is_empty() || http::HeaderName::from_bytes(n.as_bytes()).is_err() {
        return Err(p.err(format!("invalid header name {n:?}")));
    }
    Ok(())
}
