//! `VirtualHost.require_tls`: Envoy's `SslRedirectRoute`, the 301 to `https://` a virtual host
//! answers a plain request with before any of its routes is tried.

use super::{HeaderLookup, RequestView};
use crate::config::{ConfigError, FieldPath};

/// Envoy's `SslRedirector` status (`MovedPermanently`).
pub const SSL_REDIRECT_STATUS: u16 = 301;

/// `require_tls` (Envoy's `TlsRequirementType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequireTls {
    /// `NONE` (default): no requirement.
    #[default]
    None,
    /// `EXTERNAL_ONLY`: a request not marked internal (`x-envoy-internal: true`, which the
    /// connection manager strips from every request since none is internal without
    /// `internal_address_config`) must be https.
    ExternalOnly,
    /// `ALL`: every request must be https.
    All,
}

impl RequireTls {
    /// Parses the enum's name (unset: `NONE`).
    pub(crate) fn parse(raw: Option<&str>, p: &FieldPath) -> Result<Self, ConfigError> {
        match raw {
            None | Some("NONE") => Ok(Self::None),
            Some("EXTERNAL_ONLY") => Ok(Self::ExternalOnly),
            Some("ALL") => Ok(Self::All),
            Some(other) => Err(p.err(format!(
                "unknown value {other:?} (expected NONE, EXTERNAL_ONLY or ALL)"
            ))),
        }
    }

    /// The `Location` of the redirect `req` gets, if it must be https and is not (Envoy's
    /// `getRouteFromEntries`: the scheme is the `x-forwarded-proto` value, compared exactly
    /// with `https`; the URI is `https://` + the Host as sent + the path with its query,
    /// `createSslRedirectPath`). Allocates only for a redirect.
    #[inline]
    pub fn redirect<H: HeaderLookup + ?Sized>(self, req: &RequestView<'_, H>) -> Option<String> {
        let required = match self {
            Self::None => return None,
            Self::All => true,
            Self::ExternalOnly => req.headers.first_value("x-envoy-internal") != Some("true"),
        };
        let scheme = req
            .headers
            .first_value("x-forwarded-proto")
            .unwrap_or(req.scheme);
        (required && scheme != "https")
            .then(|| format!("https://{}{}", req.authority.unwrap_or(""), req.path))
    }
}
