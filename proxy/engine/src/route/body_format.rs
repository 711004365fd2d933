//! `DirectResponseAction.body_format` (`core.v3.SubstitutionFormatString`): the body of a direct
//! response rendered per request from a text or JSON template, with the command operators the
//! header formatter knows plus `%LOCAL_REPLY_BODY%` (the action's own `body`).

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::format::{FormatContext, HeaderValueFormat};
use crate::config::{raw_route::RawDataSource, ConfigError, FieldPath};

/// The body format's alternatives, for errors.
const FORMATS: &str = "text_format, json_format and text_format_source";

/// `SubstitutionFormatString` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBodyFormat {
    pub text_format: Option<String>,
    #[serde(default)]
    pub omit_empty_values: bool,
    pub json_format: Option<Value>,
    /// Empty: the format's default.
    #[serde(default)]
    pub content_type: String,
    pub text_format_source: Option<RawDataSource>,
    /// Formatter extensions: none is supported (non-empty is rejected).
    #[serde(default)]
    pub formatters: Vec<Value>,
    /// istiod's JSON access logs set `{sort_properties: false}` (`{}` in proto JSON); checked
    /// by deserializing, a no-op.
    #[allow(dead_code)]
    pub json_format_options: Option<RawJsonFormatOptions>,
}

/// `core.v3.JsonFormatOptions`: `sort_properties` either way is Envoy 1.40's output, whose
/// keys always come sorted (a `json_format` is a protobuf Struct), so a no-op.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonFormatOptions {
    /// Either way Envoy's order.
    #[allow(dead_code)]
    pub sort_properties: Option<bool>,
}

/// A compiled body format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyFormat {
    template: Template,
    /// `omit_empty_values`: an operator without a value renders nothing (text) or drops its
    /// key or list element (JSON) instead of `-` / `null`.
    omit_empty: bool,
    /// `content_type`, else `text/plain` (text) or `application/json` (JSON).
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Template {
    Text(HeaderValueFormat),
    Json(Json),
}

/// A JSON template: strings are formats, other scalars kept, object keys sorted (Envoy's
/// output order).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Json {
    Str(HeaderValueFormat),
    /// A number, bool or null, already serialized.
    Scalar(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl BodyFormat {
    /// Compiles `raw` (at `p`); an unsupported command operator is rejected naming it.
    pub(crate) fn build(raw: &RawBodyFormat, p: &FieldPath) -> Result<Self, ConfigError> {
        Self::build_with(raw, p, HeaderValueFormat::parse_body)
    }

    /// Compiles an access logger's `log_format` (at `p`): the access log's command operators
    /// instead of `%LOCAL_REPLY_BODY%`.
    pub(crate) fn build_log(raw: &RawBodyFormat, p: &FieldPath) -> Result<Self, ConfigError> {
        Self::build_with(raw, p, HeaderValueFormat::parse_log)
    }

    /// Whether a rendering reads request headers other than the request line.
    pub fn reads_request_headers(&self) -> bool {
        self.any(&HeaderValueFormat::reads_request_headers)
    }

    /// Whether a rendering reads response headers.
    pub fn reads_response_headers(&self) -> bool {
        self.any(&HeaderValueFormat::reads_response_headers)
    }

    /// Whether any string of the template satisfies `f`.
    fn any(&self, f: &dyn Fn(&HeaderValueFormat) -> bool) -> bool {
        fn walk(j: &Json, f: &dyn Fn(&HeaderValueFormat) -> bool) -> bool {
            match j {
                Json::Str(s) => f(s),
                Json::Scalar(_) => false,
                Json::List(items) => items.iter().any(|i| walk(i, f)),
                Json::Object(fields) => fields.iter().any(|(_, v)| walk(v, f)),
            }
        }
        match &self.template {
            Template::Text(t) => f(t),
            Template::Json(j) => walk(j, f),
        }
    }

    fn build_with(
        raw: &RawBodyFormat,
        p: &FieldPath,
        parse_str: fn(&str) -> Result<HeaderValueFormat, String>,
    ) -> Result<Self, ConfigError> {
        if !raw.formatters.is_empty() {
            return Err(p.field("formatters").unsupported("not implemented"));
        }
        let parse = |v: &str, at: &FieldPath| parse_str(v).map_err(|e| at.err(e));
        let formats = [
            raw.text_format.is_some(),
            raw.json_format.is_some(),
            raw.text_format_source.is_some(),
        ];
        match formats.iter().filter(|set| **set).count() {
            1 => {}
            0 => return Err(p.err(format!("one of {FORMATS} is required"))),
            _ => return Err(p.err(format!("only one of {FORMATS} may be set"))),
        }
        let template = if let Some(t) = &raw.text_format {
            Template::Text(parse(t, &p.field("text_format"))?)
        } else if let Some(j) = &raw.json_format {
            if !j.is_object() {
                return Err(p.field("json_format").err("must be an object"));
            }
            Template::Json(json(j, &p.field("json_format"), &parse)?)
        } else {
            let sp = p.field("text_format_source");
            let src = raw.text_format_source.as_ref().expect("counted above");
            if src.filename.is_some() {
                return Err(sp.field("filename").unsupported("use inline_string"));
            }
            let text = src
                .inline_string
                .as_deref()
                .ok_or_else(|| sp.field("inline_string").err("required"))?;
            Template::Text(parse(text, &sp.field("inline_string"))?)
        };
        let content_type = match (raw.content_type.as_str(), &template) {
            (c, _) if !c.is_empty() => {
                http::HeaderValue::from_str(c)
                    .map_err(|_| p.field("content_type").err("not a valid header value"))?;
                c.to_string()
            }
            (_, Template::Text(_)) => "text/plain".to_string(),
            (_, Template::Json(_)) => "application/json".to_string(),
        };
        Ok(Self {
            template,
            omit_empty: raw.omit_empty_values,
            content_type,
        })
    }

    /// The body for one request (`local_body`: the action's own `body`). Text: each operator
    /// without a value is `-` (nothing with `omit_empty_values`); JSON: compact, keys sorted,
    /// a string that is one operator without a value is `null` (dropped with
    /// `omit_empty_values`), in a longer string `-` as in text; then a newline (Envoy 1.40's output).
    pub fn render(&self, ctx: &FormatContext<'_>, local_body: Option<&str>) -> String {
        let mut out = String::new();
        match &self.template {
            Template::Text(f) => {
                f.render_into(ctx, local_body, self.missing(), &mut out);
            }
            Template::Json(j) => {
                self.render_json(j, ctx, local_body, &mut out);
                out.push('\n');
            }
        }
        out
    }

    /// What an operator without a value renders as inside a string.
    fn missing(&self) -> &'static str {
        if self.omit_empty {
            ""
        } else {
            "-"
        }
    }

    /// Appends `j`; false when it is a lone operator without a value that `omit_empty_values`
    /// drops (nothing was written).
    fn render_json(
        &self,
        j: &Json,
        ctx: &FormatContext<'_>,
        local_body: Option<&str>,
        out: &mut String,
    ) -> bool {
        match j {
            Json::Str(f) => {
                let mut s = String::new();
                let all = f.render_into(ctx, local_body, self.missing(), &mut s);
                if !all && f.is_single_operator() {
                    if self.omit_empty {
                        return false;
                    }
                    out.push_str("null");
                } else if f.is_numeric_operator() {
                    // A typed operator alone keeps its type in JSON (Envoy: `"code": 404`).
                    out.push_str(&s);
                } else {
                    let _ = write!(out, "{}", Value::String(s));
                }
            }
            Json::Scalar(s) => out.push_str(s),
            Json::List(items) => {
                let items = items.iter().map(|v| (None, v));
                self.render_seq(('[', ']'), items, ctx, local_body, out);
            }
            Json::Object(fields) => {
                let fields = fields.iter().map(|(k, v)| (Some(k.as_str()), v));
                self.render_seq(('{', '}'), fields, ctx, local_body, out);
            }
        }
        true
    }

    /// A list (no keys) or an object's fields, dropping the members `omit_empty_values` drops.
    fn render_seq<'j>(
        &self,
        (open, close): (char, char),
        members: impl Iterator<Item = (Option<&'j str>, &'j Json)>,
        ctx: &FormatContext<'_>,
        local_body: Option<&str>,
        out: &mut String,
    ) {
        out.push(open);
        let mut first = true;
        for (key, v) in members {
            let mark = out.len();
            if !first {
                out.push(',');
            }
            if let Some(k) = key {
                let _ = write!(out, "{}:", Value::String(k.to_string()));
            }
            if self.render_json(v, ctx, local_body, out) {
                first = false;
            } else {
                out.truncate(mark);
            }
        }
        out.push(close);
    }
}

/// Compiles a JSON template (at `p`), its strings with `parse`.
fn json(
    v: &Value,
    p: &FieldPath,
    parse: &dyn Fn(&str, &FieldPath) -> Result<HeaderValueFormat, ConfigError>,
) -> Result<Json, ConfigError> {
    Ok(match v {
        Value::String(s) => Json::Str(parse(s, p)?),
        // Envoy's Struct numbers are doubles: a whole number prints without a fraction.
        Value::Number(n) => Json::Scalar(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::Bool(_) | Value::Null => Json::Scalar(v.to_string()),
        Value::Array(items) => Json::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| json(item, &p.index(i), parse))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut fields = map
                .iter()
                .map(|(k, item)| Ok((k.clone(), json(item, &p.field(k), parse)?)))
                .collect::<Result<Vec<_>, ConfigError>>()?;
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(fields)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<BodyFormat, String> {
        let raw: RawBodyFormat = crate::config::raw::parse_document(yaml).expect("parses");
        BodyFormat::build(&raw, &FieldPath::root().field("bf")).map_err(|e| e.to_string())
    }

    fn render(yaml: &str, headers: &[(&str, &str)]) -> (String, String) {
        let f = build(yaml).expect("valid");
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let ctx = FormatContext {
            request: Some(&h),
            protocol: Some("HTTP/1.1"),
            ..Default::default()
        };
        (f.render(&ctx, Some("orig")), f.content_type)
    }

    /// (format, `x-a` value or none, body, content type), as Envoy 1.40 renders them (case
    /// `direct_response_body_format`).
    const CASES: &[(&str, Option<&str>, &str, &str)] = &[
        (
            "text_format: '%REQ(x-a)% [%REQ(x-m)%] <%LOCAL_REPLY_BODY%> %REQ(x-a):2% %%'",
            Some("abc"),
            "abc [-] <orig> ab %",
            "text/plain",
        ),
        ("text_format: '[%REQ(x-a)%]'", Some(""), "[]", "text/plain"),
        (
            "{ text_format: '[%REQ(x-m)%]', omit_empty_values: true, content_type: text/html }",
            None,
            "[]",
            "text/html",
        ),
        (
            "text_format_source: { inline_string: 'src %UPSTREAM_REMOTE_ADDRESS%' }",
            None,
            "src -",
            "text/plain",
        ),
        (
            "json_format: { z: '%REQ(x-a)%', m: '%REQ(x-m)%', x: 'a-%REQ(x-m)%', n: 5.0, l: [true, '%PROTOCOL%'] }",
            Some("abc"),
            "{\"l\":[true,\"HTTP/1.1\"],\"m\":null,\"n\":5,\"x\":\"a--\",\"z\":\"abc\"}\n",
            "application/json",
        ),
        (
            "{ json_format: { m: '%REQ(x-m)%', l: ['%REQ(x-m)%', 1], x: '<%REQ(x-m)%>' }, omit_empty_values: true }",
            None,
            "{\"l\":[1],\"x\":\"<>\"}\n",
            "application/json",
        ),
    ];

    #[test]
    fn renders_as_envoy() {
        for &(yaml, xa, body, ct) in CASES {
            let headers: Vec<(&str, &str)> = xa.map(|v| ("x-a", v)).into_iter().collect();
            let (b, c) = render(yaml, &headers);
            assert_eq!((b.as_str(), c.as_str()), (body, ct), "{yaml}");
        }
    }

    #[test]
    fn bad_formats_name_the_field() {
        for (yaml, want) in [
            (
                "text_format: '%RESPONSE_FLAGS%'",
                "bf.text_format: not supported (command operator %RESPONSE_FLAGS%",
            ),
            (
                "json_format: { a: { b: '%FOO%' } }",
                "bf.json_format.a.b: not supported (command operator %FOO%",
            ),
            ("json_format: [1]", "bf.json_format: must be an object"),
            ("{ text_format: a, json_format: {} }", "bf: only one of"),
            ("omit_empty_values: true", "bf: one of text_format"),
            (
                "{ text_format: a, formatters: [{}] }",
                "bf.formatters: not supported",
            ),
            (
                "text_format_source: { filename: /x }",
                "bf.text_format_source.filename: not supported",
            ),
        ] {
            let e = build(yaml).expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }
}
