//! The reason phrase of an HTTP/1 status line, as Envoy writes it: its own table of phrases
//! (`CodeUtility::toString`), `Unknown` for a code it has none for. hyper writes the `http`
//! crate's phrases, which differ for a few codes (`203 Non Authoritative Information`,
//! `418 I'm a teapot`, `<none>` for unassigned codes): those responses carry Envoy's phrase.

use http::{Response, StatusCode};
use hyper::ext::ReasonPhrase;

/// Puts Envoy's reason phrase on `resp` where hyper would write another, unless it carries one
/// already (an upstream's, forwarded by a cluster's `preserve_case`).
pub(crate) fn as_envoy<B>(resp: &mut Response<B>) {
    let code = resp.status();
    let envoy = phrase(code);
    if code.canonical_reason() != Some(envoy) && resp.extensions().get::<ReasonPhrase>().is_none() {
        resp.extensions_mut()
            .insert(ReasonPhrase::from_static(envoy.as_bytes()));
    }
}

/// An upstream's reason phrase (hyper keeps one that is not the standard phrase) goes on only
/// with its cluster's `preserve_case` `forward_reason_phrase`; the client gets Envoy's otherwise.
pub(crate) fn from_upstream<B>(resp: &mut Response<B>, cluster: &crate::upstream::Cluster) {
    let forward = cluster
        .spec
        .options
        .header_key_format
        .forwards_reason_phrase();
    // An empty phrase (`HTTP/1.1 200`) is never forwarded: Envoy writes its own then.
    let empty = resp
        .extensions()
        .get::<ReasonPhrase>()
        .is_some_and(|p| p.as_bytes().is_empty());
    if !forward || empty {
        resp.extensions_mut().remove::<ReasonPhrase>();
    }
}

/// Envoy 1.40's phrase for `code`.
fn phrase(code: StatusCode) -> &'static str {
    match code.as_u16() {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        599 => "Last Unassigned Server Error Code",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(code: u16) -> Option<String> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(code).expect("code");
        as_envoy(&mut r);
        r.extensions()
            .get::<ReasonPhrase>()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
    }

    #[test]
    fn only_codes_whose_phrase_differs_carry_envoys() {
        assert_eq!(written(200), None);
        assert_eq!(written(503), None);
        assert_eq!(
            written(203).as_deref(),
            Some("Non-Authoritative Information")
        );
        assert_eq!(written(418).as_deref(), Some("Unknown"));
        assert_eq!(
            written(599).as_deref(),
            Some("Last Unassigned Server Error Code")
        );
        assert_eq!(written(299).as_deref(), Some("Unknown"));
    }

    #[test]
    fn a_forwarded_phrase_stays() {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(418).expect("code");
        r.extensions_mut()
            .insert(ReasonPhrase::from_static(b"Short And Stout"));
        as_envoy(&mut r);
        let p = r.extensions().get::<ReasonPhrase>().expect("phrase");
        assert_eq!(p.as_bytes(), b"Short And Stout");
    }
}
