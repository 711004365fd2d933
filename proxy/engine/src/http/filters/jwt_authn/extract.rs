//! Where a verifier looks for tokens (Envoy's jwt_authn `Extractor`): the headers (with an
//! optional value prefix, `Authorization: Bearer ` by default), query parameters
//! (`access_token` by default) and cookies of its providers, each location remembering which
//! issuers named it; and how a verified token is taken out of the request (`forward: false`).

use http::{HeaderMap, HeaderName};

use super::{verify::Working, Provider};
use crate::http::query_decode::decode;
use crate::route::{cookies, HeaderLookup};

/// Issuers whose providers named a location: a provider without `issuer` allows any.
#[derive(Debug, Default, Clone)]
pub struct Issuers {
    any: bool,
    named: Vec<String>,
}

impl Issuers {
    fn add(&mut self, issuer: &str) {
        if issuer.is_empty() {
            self.any = true;
        } else if !self.named.iter().any(|i| i == issuer) {
            self.named.push(issuer.to_string());
        }
    }

    /// Whether a token with issuer `iss` may come from here.
    pub fn allows(&self, iss: &str) -> bool {
        self.any || self.named.iter().any(|i| i == iss)
    }
}

/// One verifier's locations, in Envoy's order: headers by name and prefix, then parameters by
/// name, then cookies by name.
#[derive(Debug, Default)]
pub struct Extractor {
    headers: Vec<(HeaderName, String, Issuers)>,
    params: Vec<(String, Issuers)>,
    cookies: Vec<(String, Issuers)>,
    /// `forward_payload_header` and `claim_to_headers` names: removed from the request before
    /// extraction, so a client cannot send them.
    sanitize: Vec<HeaderName>,
}

/// Where a token was found.
#[derive(Debug, Clone)]
pub enum Place {
    Header(HeaderName),
    Param(String),
    Cookie,
}

/// A token and where it came from.
#[derive(Debug)]
pub struct Found<'e> {
    pub token: String,
    pub place: Place,
    pub issuers: &'e Issuers,
}

impl Extractor {
    /// The locations of `providers`.
    pub fn new<'p>(providers: impl IntoIterator<Item = &'p Provider>) -> Extractor {
        let mut x = Extractor::default();
        for p in providers {
            for (name, prefix) in &p.from_headers {
                match x
                    .headers
                    .iter_mut()
                    .find(|(n, pre, _)| n == name && pre == prefix)
                {
                    Some(e) => e.2.add(&p.issuer),
                    None => {
                        let mut i = Issuers::default();
                        i.add(&p.issuer);
                        x.headers.push((name.clone(), prefix.clone(), i));
                    }
                }
            }
            for (list, names) in [
                (&mut x.params, &p.from_params),
                (&mut x.cookies, &p.from_cookies),
            ] {
                for name in names {
                    match list.iter_mut().find(|(n, _)| n == name) {
                        Some(e) => e.1.add(&p.issuer),
                        None => {
                            let mut i = Issuers::default();
                            i.add(&p.issuer);
                            list.push((name.clone(), i));
                        }
                    }
                }
            }
            x.sanitize.extend(p.forward_payload_header.iter().cloned());
            x.sanitize
                .extend(p.claim_to_headers.iter().map(|(h, _)| h.clone()));
        }
        // Envoy keeps them in ordered maps (headers by name + prefix).
        x.headers.sort_by(|a, b| {
            (a.0.as_str().to_string() + &a.1).cmp(&(b.0.as_str().to_string() + &b.1))
        });
        x.params.sort_by(|a, b| a.0.cmp(&b.0));
        x.cookies.sort_by(|a, b| a.0.cmp(&b.0));
        x
    }

    /// Removes the headers a verified token would set.
    pub fn sanitize(&self, w: &mut Working<'_>) {
        for h in &self.sanitize {
            if w.headers().contains_key(h) {
                w.remove_header(h);
            }
        }
    }

    /// The tokens in the request, in Envoy's order.
    pub fn extract(&self, headers: &HeaderMap, path: &str) -> Vec<Found<'_>> {
        let mut out = Vec::new();
        for (name, prefix, issuers) in &self.headers {
            for v in headers.get_all(name) {
                // Envoy reads the bytes as sent: a token that is not text fails to parse.
                let v = String::from_utf8_lossy(v.as_bytes());
                let v = v.as_ref();
                let token = if prefix.is_empty() {
                    v
                } else {
                    let Some(pos) = v.find(prefix.as_str()) else {
                        continue;
                    };
                    jwt_from(v, pos + prefix.len())
                };
                out.push(Found {
                    token: token.to_string(),
                    place: Place::Header(name.clone()),
                    issuers,
                });
            }
        }
        if !self.params.is_empty() {
            let query = query_params(path);
            for (name, issuers) in &self.params {
                if let Some((_, v)) = query.iter().find(|(k, _)| k == name) {
                    out.push(Found {
                        token: v.clone(),
                        place: Place::Param(name.clone()),
                        issuers,
                    });
                }
            }
        }
        for (name, issuers) in &self.cookies {
            if let Some(v) = cookies::cookie_value(headers, name) {
                out.push(Found {
                    token: v.to_string(),
                    place: Place::Cookie,
                    issuers,
                });
            }
        }
        out
    }
}

/// Envoy's `extractJWT`: from the first base64url character (or dot) after `after` to the end;
/// the whole value when there is none.
fn jwt_from(v: &str, after: usize) -> &str {
    let tail = v.get(after..).unwrap_or("");
    match tail.find(|c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Some(i) => &tail[i..],
        None => v,
    }
}

/// The query's parameters as Envoy's `parseAndDecodeQueryString` reads them: split at `&`,
/// key and value percent-decoded (`+` a space), a parameter without `=` an empty value.
fn query_params(path: &str) -> Vec<(String, String)> {
    let Some((_, q)) = path.split_once('?') else {
        return Vec::new();
    };
    let q = q.split_once('#').map_or(q, |(q, _)| q);
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `path` without query parameter `name`, as Envoy's `replaceQueryString` writes the rest: the
/// parameters sorted by key (a key's values in order), decoded, each `key=value`.
pub fn without_param(path: &str, name: &str) -> String {
    let (p, _) = path.split_once('?').unwrap_or((path, ""));
    let mut kept: Vec<(String, String)> = query_params(path)
        .into_iter()
        .filter(|(k, _)| k != name)
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = p.to_string();
    for (i, (k, v)) in kept.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    if out.parse::<http::uri::PathAndQuery>().is_ok() {
        return out;
    }
    // A decoded value that cannot stand in a request target (a space, a quote, `#`): the
    // other parameters as sent instead, so the token never stays.
    let q = path.split_once('?').map_or("", |(_, q)| q);
    let raw: Vec<&str> = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| decode(kv.split_once('=').map_or(kv, |(k, _)| k)) != name)
        .collect();
    if raw.is_empty() {
        p.to_string()
    } else {
        format!("{p}?{}", raw.join("&"))
    }
}

impl HeaderLookup for Working<'_> {
    fn for_each_value<'s>(&'s self, name: &str, f: &mut dyn FnMut(&'s str)) {
        self.headers().for_each_value(name, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cut_after_the_prefix_and_params_removed_alone() {
        assert_eq!(jwt_from("Bearer  abc.def.ghi", 7), "abc.def.ghi");
        assert_eq!(jwt_from("Bearer ", 7), "Bearer ");
        assert_eq!(
            without_param("/p?a=1&access_token=x&b=2", "access_token"),
            "/p?a=1&b=2"
        );
        assert_eq!(without_param("/p?access_token=x", "access_token"), "/p");
        assert_eq!(
            without_param("/p?q=a+b&access_token=x&z=%23", "access_token"),
            "/p?q=a+b&z=%23",
            "decoded values that cannot stand in a target: the rest as sent"
        );
        assert_eq!(without_param("/p", "access_token"), "/p");
    }
}
