//! Envoy substitution formats in header values (`%REQ(x-user)%`, `%PROTOCOL%`, ...), compiled
//! once at config load into a [`HeaderValueFormat`] and rendered per request from a
//! [`FormatContext`].

use std::{net::SocketAddr, time::SystemTime};

use crate::http::access_log::{
    ops::{LogOp, LOG_OPERATORS},
    Entry,
};

/// The command operators a header value may use (Envoy's names).
pub const SUPPORTED_OPERATORS: &str = "REQ(header or :authority, :path, :method, :scheme), \
DOWNSTREAM_REMOTE_ADDRESS, \
DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_ADDRESS, \
DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, UPSTREAM_REMOTE_ADDRESS, \
UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, PROTOCOL, HOSTNAME, START_TIME[(format)]";

/// One part of a header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Piece {
    /// Literal text (`%%` already unescaped).
    Lit(String),
    /// `%REQ(name)%` / `%REQ(name?alt)%` (first value; `:authority` reads Host, `:path`,
    /// `:method` and `:scheme` the request line), with the optional `:N` length limit.
    Req {
        name: String,
        alt: Option<String>,
        max_len: Option<usize>,
    },
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` (`with_port`) or `..._WITHOUT_PORT`.
    DownstreamRemote { with_port: bool },
    /// `%DOWNSTREAM_LOCAL_ADDRESS%` or `..._WITHOUT_PORT`.
    DownstreamLocal { with_port: bool },
    /// `%DOWNSTREAM_REMOTE_PORT%` (`remote`) or `%DOWNSTREAM_LOCAL_PORT%`.
    DownstreamPort { remote: bool },
    /// `%UPSTREAM_REMOTE_ADDRESS%` or `..._WITHOUT_PORT` (known on the response side).
    UpstreamRemote { with_port: bool },
    /// `%PROTOCOL%`.
    Protocol,
    /// `%HOSTNAME%`, resolved at load.
    Hostname(String),
    /// `%START_TIME%` (Envoy's default `%Y-%m-%dT%H:%M:%E3SZ`), or `%START_TIME(format)%`.
    StartTime(Option<super::start_time::StartTimeFormat>),
    /// `%LOCAL_REPLY_BODY%` (body formats only): the direct response's own body.
    LocalReplyBody,
    /// `%RESPONSE_CODE%` (body and access log formats): the status of the reply being made.
    ResponseCode,
    /// An access log operator (access log formats only).
    Log(LogOp),
}

/// A header value: literal, or a template with command operators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderValueFormat {
    pieces: Vec<Piece>,
}

/// A parsed header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedValue {
    /// No command operator: the text (`%%` unescaped).
    Literal(String),
    /// A template with operators.
    Format(HeaderValueFormat),
}

/// What the operators of a [`HeaderValueFormat`] read; unknown parts render empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct FormatContext<'a> {
    /// The downstream request's headers.
    pub request: Option<&'a http::HeaderMap>,
    /// The request's pseudo-headers `:method`, `:path` (with the query) and `:scheme`, as
    /// the operators' moment sees them (a rewritten path on the response side).
    pub line: Option<RequestLine<'a>>,
    /// The downstream peer.
    pub downstream_remote: Option<SocketAddr>,
    /// The local address of the downstream connection.
    pub downstream_local: Option<SocketAddr>,
    /// The upstream host (response side).
    pub upstream_remote: Option<SocketAddr>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: Option<&'static str>,
    /// When the request started.
    pub start: Option<SystemTime>,
    /// The status of a local reply being rendered (`%RESPONSE_CODE%`).
    pub response_code: Option<u16>,
    /// The request's access log entry (access log formats).
    pub log: Option<&'a Entry>,
}

/// The pseudo-headers `%REQ(...)%` reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// `:authority` when known apart from the headers (an HTTP/2 request has no Host header);
    /// else the Host header is read.
    pub authority: Option<&'a str>,
}

impl<'a> RequestLine<'a> {
    /// The line of a request whose path is `path` (the rewritten one on the response side)
    /// and whose scheme is `scheme`.
    pub fn new(method: &'a http::Method, path: &'a str, scheme: &'a str) -> Self {
        Self {
            method: method.as_str(),
            path,
            scheme,
            authority: None,
        }
    }
}

impl HeaderValueFormat {
    /// Parses an Envoy header value: `Literal` when it has no operator (`%%` unescaped), else
    /// the compiled template. Errors name the operator.
    pub fn parse(v: &str) -> Result<ParsedValue, String> {
        if !v.contains('%') {
            return Ok(ParsedValue::Literal(v.to_string()));
        }
        match Self::parse_as(v, Kind::Header)? {
            f if f.pieces.iter().all(|p| matches!(p, Piece::Lit(_))) => Ok(ParsedValue::Literal(
                f.pieces.into_iter().map(lit_text).collect(),
            )),
            f => Ok(ParsedValue::Format(f)),
        }
    }

    /// Parses a template even when it has no operator (a route's `path_rewrite` /
    /// `host_rewrite`). Errors name the operator.
    pub(crate) fn parse_template(v: &str) -> Result<Self, String> {
        Self::parse_as(v, Kind::Header)
    }

    /// Parses a body format string (`SubstitutionFormatString`): `%LOCAL_REPLY_BODY%` is
    /// allowed too. Errors name the operator.
    pub(crate) fn parse_body(v: &str) -> Result<Self, String> {
        Self::parse_as(v, Kind::Body)
    }

    /// Parses an access log format string: the access log's operators ([`LogOp`]) are
    /// allowed too. Errors name the operator.
    pub(crate) fn parse_log(v: &str) -> Result<Self, String> {
        Self::parse_as(v, Kind::Log)
    }

    /// Whether the format reads request headers other than the request line's pseudo-headers
    /// (`%REQ(...)%`).
    pub(crate) fn reads_request_headers(&self) -> bool {
        self.pieces.iter().any(|p| match p {
            Piece::Req { name, alt, .. } => {
                !is_line(name) || alt.as_deref().is_some_and(|a| !is_line(a))
            }
            _ => false,
        })
    }

    /// Whether the format reads response headers (`%RESP(...)%`).
    pub(crate) fn reads_response_headers(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Log(op) if op.reads_response_headers()))
    }

    fn parse_as(v: &str, kind: Kind) -> Result<Self, String> {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut lit = String::new();
        let mut rest = v;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            let (piece, after) = parse_operator(rest, kind)?;
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Self { pieces })
    }

    /// Renders the value (empty when every operator had nothing to say and there is no
    /// literal text).
    pub fn render(&self, ctx: &FormatContext<'_>) -> String {
        let mut out = String::new();
        self.render_into(ctx, None, "", &mut out);
        out
    }

    /// Appends the rendering to `out`, with `missing` for each operator that has no value
    /// (Envoy's text formatter: `-`, or nothing with `omit_empty_values`); `local_body` is
    /// `%LOCAL_REPLY_BODY%`. Returns whether every operator had a value.
    pub(crate) fn render_into(
        &self,
        ctx: &FormatContext<'_>,
        local_body: Option<&str>,
        missing: &str,
        out: &mut String,
    ) -> bool {
        let mut all = true;
        for p in &self.pieces {
            if !push_piece(p, ctx, local_body, out) {
                out.push_str(missing);
                all = false;
            }
        }
        all
    }

    /// Whether the format is one numeric operator and nothing else (a JSON value then is a
    /// number).
    pub(crate) fn is_numeric_operator(&self) -> bool {
        match self.pieces.as_slice() {
            [Piece::ResponseCode] => true,
            [Piece::Log(op)] => op.is_numeric(),
            _ => false,
        }
    }

    /// Whether the format is one operator and nothing else (a JSON value then becomes `null`
    /// when it has no value).
    pub(crate) fn is_single_operator(&self) -> bool {
        matches!(self.pieces.as_slice(), [p] if !matches!(p, Piece::Lit(_)))
    }
}

/// Appends piece `p`'s value to `out`; false when it has none.
fn push_piece(
    p: &Piece,
    ctx: &FormatContext<'_>,
    local_body: Option<&str>,
    out: &mut String,
) -> bool {
    let text = match p {
        Piece::Lit(s) => Some(s.as_str()),
        Piece::Req { name, alt, max_len } => req_header(ctx, name)
            .or_else(|| alt.as_deref().and_then(|a| req_header(ctx, a)))
            .map(|v| match max_len {
                Some(n) => truncate(v, *n),
                None => v,
            }),
        Piece::DownstreamRemote { with_port } => {
            return push_addr(out, ctx.downstream_remote, *with_port)
        }
        Piece::DownstreamLocal { with_port } => {
            return push_addr(out, ctx.downstream_local, *with_port)
        }
        Piece::DownstreamPort { remote } => {
            use std::fmt::Write;
            let a = if *remote {
                ctx.downstream_remote
            } else {
                ctx.downstream_local
            };
            let Some(a) = a else { return false };
            let _ = write!(out, "{}", a.port());
            return true;
        }
        Piece::UpstreamRemote { with_port } => {
            return push_addr(out, ctx.upstream_remote, *with_port)
        }
        Piece::Protocol => ctx.protocol,
        Piece::Hostname(h) => Some(h.as_str()),
        Piece::StartTime(f) => {
            let Some(t) = ctx.start else { return false };
            match f {
                Some(f) => f.render(t, out),
                None => out.push_str(&crate::http::access_log::format_time(t)),
            }
            return true;
        }
        Piece::LocalReplyBody => local_body,
        Piece::Log(op) => return ctx.log.is_some_and(|e| op.push(e, out)),
        Piece::ResponseCode => {
            let Some(c) = ctx.response_code else {
                return false;
            };
            use std::fmt::Write;
            let _ = write!(out, "{c}");
            return true;
        }
    };
    text.map(|t| out.push_str(t)).is_some()
}

/// Where a format string is used: header values, a body format (which may also say
/// `%LOCAL_REPLY_BODY%` and `%RESPONSE_CODE%`), or an access log format (the access log's
/// operators and `%RESPONSE_CODE%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Header,
    Body,
    Log,
}

/// Whether `%REQ(name)%` reads the request line rather than a header (an access log entry
/// keeps the authority with it).
fn is_line(name: &str) -> bool {
    matches!(name, ":path" | ":method" | ":scheme" | ":authority")
}

fn lit_text(p: Piece) -> String {
    match p {
        Piece::Lit(s) => s,
        _ => String::new(),
    }
}

/// `v` cut to at most `n` bytes, at a character boundary (the `:N` length limit).
pub(crate) fn truncate(v: &str, n: usize) -> &str {
    if v.len() <= n {
        return v;
    }
    let mut end = n;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

fn req_header<'a>(ctx: &FormatContext<'a>, name: &str) -> Option<&'a str> {
    match name {
        // A CONNECT to an authority has no path.
        ":path" => return ctx.line.map(|l| l.path).filter(|p| !p.is_empty()),
        ":method" => return ctx.line.map(|l| l.method),
        ":scheme" => return ctx.line.map(|l| l.scheme),
        ":authority" => {
            if let Some(a) = ctx.line.and_then(|l| l.authority) {
                return Some(a);
            }
        }
        _ => {}
    }
    let h = ctx.request?;
    let name = if name == ":authority" { "host" } else { name };
    h.get(name)?.to_str().ok()
}

/// Appends address `a` (with or without its port); false when there is none.
pub(crate) fn push_addr(out: &mut String, a: Option<SocketAddr>, with_port: bool) -> bool {
    use std::fmt::Write;
    let Some(a) = a else { return false };
    let _ = if with_port {
        write!(out, "{a}")
    } else {
        write!(out, "{}", a.ip())
    };
    true
}

/// Parses `NAME[(arg)][:N]%` at the start of `s` (after the opening `%`).
fn parse_operator(s: &str, kind: Kind) -> Result<(Piece, &str), String> {
    let end = s
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..end];
    let mut rest = &s[end..];
    let mut arg = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r
            .find(')')
            .ok_or_else(|| format!("header value formatter %{name}(...: missing `)`"))?;
        arg = Some(&r[..close]);
        rest = &r[close + 1..];
    }
    let mut max_len = None;
    if let Some(r) = rest.strip_prefix(':') {
        let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        max_len = Some(
            r[..digits]
                .parse::<usize>()
                .map_err(|_| format!("header value formatter %{name}: invalid length"))?,
        );
        rest = &r[digits..];
    }
    let rest = rest.strip_prefix('%').ok_or_else(|| {
        format!("header value formatter %{name}...: missing closing `%` (write %% for a literal %)")
    })?;
    let unsupported = || {
        match kind {
        Kind::Header => format!(
            "not supported (header value formatter %{name}%; supported here: {SUPPORTED_OPERATORS}; write %% for a literal %)"
        ),
        Kind::Body => format!(
            "not supported (command operator %{name}%; supported here: {SUPPORTED_OPERATORS}, LOCAL_REPLY_BODY, RESPONSE_CODE; write %% for a literal %)"
        ),
        Kind::Log => format!(
            "not supported (command operator %{name}%; supported here: {SUPPORTED_OPERATORS}, {LOG_OPERATORS}; write %% for a literal %)"
        ),
    }
    };
    let no_arg = |p: Piece| {
        if arg.is_some() || max_len.is_some() {
            Err(format!(
                "header value formatter %{name}% takes no argument or length"
            ))
        } else {
            Ok(p)
        }
    };
    let piece = match name {
        "REQ" => {
            let arg =
                arg.ok_or_else(|| "header value formatter %REQ% needs (header)".to_string())?;
            let (main, alt) = match arg.split_once('?') {
                Some((m, a)) => (m, Some(a)),
                None => (arg, None),
            };
            let check = |h: &str| -> Result<String, String> {
                let h = h.to_ascii_lowercase();
                if matches!(h.as_str(), ":authority" | ":path" | ":method" | ":scheme") {
                    return Ok(h);
                }
                if h.starts_with(':') || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(format!(
                        "header value formatter %REQ({h})%: not supported header name"
                    ));
                }
                Ok(h)
            };
            Piece::Req {
                name: check(main)?,
                alt: alt.map(check).transpose()?,
                max_len,
            }
        }
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Piece::DownstreamRemote { with_port: true })?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(Piece::DownstreamRemote { with_port: false })?
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(Piece::DownstreamLocal { with_port: true })?,
        "DOWNSTREAM_LOCAL_PORT" => no_arg(Piece::DownstreamPort { remote: false })?,
        "DOWNSTREAM_REMOTE_PORT" => no_arg(Piece::DownstreamPort { remote: true })?,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
            no_arg(Piece::DownstreamLocal { with_port: false })?
        }
        "UPSTREAM_REMOTE_ADDRESS" => no_arg(Piece::UpstreamRemote { with_port: true })?,
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(Piece::UpstreamRemote { with_port: false })?
        }
        "PROTOCOL" => no_arg(Piece::Protocol)?,
        "HOSTNAME" => no_arg(Piece::Hostname(
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        ))?,
        // An empty format is the default one, as Envoy's.
        "START_TIME" if max_len.is_none() => match arg.filter(|a| !a.is_empty()) {
            Some(f) => Piece::StartTime(Some(super::start_time::StartTimeFormat::parse(f)?)),
            None => Piece::StartTime(None),
        },
        "LOCAL_REPLY_BODY" if kind == Kind::Body => no_arg(Piece::LocalReplyBody)?,
        "RESPONSE_CODE" if kind != Kind::Header => no_arg(Piece::ResponseCode)?,
        _ if kind == Kind::Log => match LogOp::parse(name, arg, max_len) {
            Some(op) => Piece::Log(op?),
            None => return Err(unsupported()),
        },
        _ => return Err(unsupported()),
    };
    Ok((piece, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(v: &str) -> HeaderValueFormat {
        match HeaderValueFormat::parse(v).unwrap() {
            ParsedValue::Format(f) => f,
            ParsedValue::Literal(l) => panic!("{v:?} parsed as literal {l:?}"),
        }
    }

    #[test]
    fn literals_and_escapes_stay_literal() {
        assert_eq!(
            HeaderValueFormat::parse("plain"),
            Ok(ParsedValue::Literal("plain".into()))
        );
        assert_eq!(
            HeaderValueFormat::parse("100%%"),
            Ok(ParsedValue::Literal("100%".into()))
        );
    }

    #[test]
    fn operators_render_from_the_context() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert("host", "front.example.com".parse().unwrap());
        let method = http::Method::PUT;
        let ctx = FormatContext {
            request: Some(&h),
            line: Some(RequestLine::new(&method, "/a?b=1", "http")),
            downstream_remote: Some("127.0.0.1:4242".parse().unwrap()),
            downstream_local: Some("[::1]:80".parse().unwrap()),
            upstream_remote: None,
            protocol: Some("HTTP/1.1"),
            start: Some(SystemTime::UNIX_EPOCH),
            response_code: None,
            log: None,
        };
        assert_eq!(fmt("u=%REQ(X-User)%;%%").render(&ctx), "u=alice;%");
        assert_eq!(fmt("%REQ(x-none?x-user):3%").render(&ctx), "ali");
        assert_eq!(fmt("%REQ(:authority)%").render(&ctx), "front.example.com");
        assert_eq!(
            fmt("%REQ(:METHOD)% %REQ(:scheme)% %REQ(:path):2%").render(&ctx),
            "PUT http /a"
        );
        assert_eq!(
            fmt("%DOWNSTREAM_REMOTE_ADDRESS%").render(&ctx),
            "127.0.0.1:4242"
        );
        assert_eq!(
            fmt("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%").render(&ctx),
            "127.0.0.1"
        );
        assert_eq!(fmt("%DOWNSTREAM_LOCAL_ADDRESS%").render(&ctx), "[::1]:80");
        assert_eq!(fmt("%PROTOCOL%").render(&ctx), "HTTP/1.1");
        assert_eq!(fmt("%UPSTREAM_REMOTE_ADDRESS%").render(&ctx), "");
        assert_eq!(fmt("%REQ(x-missing)%").render(&ctx), "");
        assert_eq!(fmt("%START_TIME%").render(&ctx), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn unknown_or_malformed_operators_are_rejected() {
        let e = HeaderValueFormat::parse("%NOPE%").unwrap_err();
        assert!(e.contains("%NOPE%") && e.contains("not supported"), "{e}");
        assert!(HeaderValueFormat::parse("%REQ(x-a%").is_err());
        assert!(HeaderValueFormat::parse("50% off").is_err());
        assert!(HeaderValueFormat::parse("%PROTOCOL(x)%").is_err());
        assert!(HeaderValueFormat::parse("%REQ(:protocol)%").is_err());
    }
}
