//! Envoy's response code details (`%RESPONSE_CODE_DETAILS%`) and upstream transport failure
//! reason (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`): why a response is what it is.
//!
//! A reply whose reason the response flag does not tell carries a [`ResponseDetails`] in its
//! extensions (a failed upstream attempt, an RBAC denial, a route's own answer); any other is
//! an upstream's (`via_upstream`) or told by its flag ([`ResponseDetails::of_response`]).

use crate::http::local_reply::Flag;

/// What made a response, when its flag does not tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDetails {
    /// A route's `direct_response` or redirect.
    DirectResponse,
    /// The last upstream attempt failed before a response head: Envoy's reset `reason`
    /// (`remote connection failure`, `connection timeout`, ...) and, for a failed connect,
    /// the transport failure reason (`delayed connect error: Connection refused`).
    Reset {
        /// Envoy's reset reason.
        reason: &'static str,
        /// Envoy's transport failure reason, when the connect failed.
        transport: Option<Box<str>>,
    },
    /// A detail named by what made the reply (`upstream_per_try_timeout`, ...).
    Named(&'static str),
    /// The RBAC filter denied the request: the policy that matched (a `DENY` policy), if any.
    RbacDenied(Option<Box<str>>),
    /// A tcp_proxy connection whose upstream connect failed: only the transport failure
    /// reason (a TCP session has no response code details).
    Transport(Box<str>),
    /// The jwt_authn filter refused the request (a token's status text, or a route's unknown
    /// requirement name): `jwt_authn_access_denied{<reason, spaces as _>}`.
    JwtDenied(std::borrow::Cow<'static, str>),
}

impl ResponseDetails {
    /// The details of a failed connect: the reset reason with the connect error as the
    /// transport failure reason, as Envoy words a socket error (`delayed connect error:` and
    /// the system's text; a connect that fails before the handshake starts, as an unreachable
    /// network, is `immediate`).
    pub fn connect_failed(reason: &'static str, e: &std::io::Error) -> Self {
        ResponseDetails::Reset {
            reason,
            transport: Some(Self::connect_error(e)),
        }
    }

    /// Envoy's transport failure reason for a connect that failed with `e`.
    pub fn connect_error(e: &std::io::Error) -> Box<str> {
        let when = match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EACCES | libc::EPERM | libc::EADDRNOTAVAIL) => {
                "immediate"
            }
            _ => "delayed",
        };
        // std's text is strerror's followed by ` (os error N)`.
        let text = e.to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        format!("{when} connect error: {text}").into()
    }

    /// The details of a response: what its maker attached (`attached`), else `via_upstream`
    /// for an upstream's answer, else what its flag tells.
    pub fn of_response(attached: Option<&Self>, from_upstream: bool, flag: Flag) -> Option<Self> {
        match attached {
            Some(d) => Some(d.clone()),
            None if from_upstream => Some(ResponseDetails::Named("via_upstream")),
            None => Self::of_flag(flag).map(ResponseDetails::Named),
        }
    }

    /// Envoy's detail for a reply the response flag tells, if it has one.
    fn of_flag(flag: Flag) -> Option<&'static str> {
        Some(match flag {
            Flag::NoRoute => "route_not_found",
            Flag::NoCluster => "cluster_not_found",
            Flag::NoHealthyUpstream => "no_healthy_upstream",
            Flag::Timeout | Flag::RetryLimitTimeout => "response_timeout",
            Flag::FaultInjected => "fault_filter_abort",
            Flag::RateLimited => "local_rate_limited",
            Flag::StreamIdleTimeout => "stream_idle_timeout",
            Flag::DurationTimeout => "max_duration_timeout",
            Flag::Overflow => "upstream_reset_before_response_started{overflow}",
            Flag::ConnectFailure | Flag::RetryLimitConnectFailure => {
                "upstream_reset_before_response_started{remote_connection_failure}"
            }
            Flag::ConnectionTermination
            | Flag::RetryLimitConnectionTermination
            | Flag::RetryLimitExceeded => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            Flag::UpstreamRemoteReset | Flag::RetryLimitRemoteReset => {
                "upstream_reset_before_response_started{remote_reset}"
            }
            Flag::UpstreamProtocolError | Flag::RetryLimitProtocolError => {
                "upstream_reset_before_response_started{protocol_error}"
            }
            Flag::FailedLocalHealthCheck => "health_check_failed",
            Flag::DownstreamProtocolError
            | Flag::DownstreamTermination
            | Flag::None
            | Flag::DelayInjected
            | Flag::UnauthorizedExternalService => return None,
        })
    }

    /// Appends the details as Envoy's access log writes them (spaces as `_`); false when
    /// there are none.
    pub fn push(&self, out: &mut String) -> bool {
        match self {
            ResponseDetails::Transport(_) => return false,
            ResponseDetails::DirectResponse => out.push_str("direct_response"),
            ResponseDetails::Reset { reason, transport } => {
                out.push_str("upstream_reset_before_response_started{");
                push_underscored(reason, out);
                if let Some(t) = transport {
                    out.push('|');
                    push_underscored(t, out);
                }
                out.push('}');
            }
            ResponseDetails::Named(n) => out.push_str(n),
            ResponseDetails::JwtDenied(why) => {
                out.push_str("jwt_authn_access_denied{");
                push_underscored(why, out);
                out.push('}');
            }
            ResponseDetails::RbacDenied(policy) => {
                out.push_str("rbac_access_denied_matched_policy[");
                push_underscored(policy.as_deref().unwrap_or("none"), out);
                out.push(']');
            }
        }
        true
    }

    /// The transport failure reason, if the details have one.
    pub fn transport_failure(&self) -> Option<&str> {
        match self {
            ResponseDetails::Reset { transport, .. } => transport.as_deref(),
            ResponseDetails::Transport(t) => Some(t),
            _ => None,
        }
    }
}

/// Appends `s` with every space as `_` (Envoy's access log form of details).
pub fn push_underscored(s: &str, out: &mut String) {
    out.extend(s.chars().map(|c| if c == ' ' { '_' } else { c }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(d: &ResponseDetails) -> String {
        let mut s = String::new();
        d.push(&mut s);
        s
    }

    #[test]
    fn written_as_envoy() {
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let d = ResponseDetails::connect_failed("remote connection failure", &refused);
        assert_eq!(
            text(&d),
            "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"
        );
        assert_eq!(
            d.transport_failure(),
            Some("delayed connect error: Connection refused")
        );
        let unreachable = std::io::Error::from_raw_os_error(libc::ENETUNREACH);
        let d = ResponseDetails::connect_failed("remote connection failure", &unreachable);
        assert_eq!(
            d.transport_failure(),
            Some("immediate connect error: Network is unreachable")
        );
        let timeout = ResponseDetails::Reset {
            reason: "connection timeout",
            transport: None,
        };
        assert_eq!(
            text(&timeout),
            "upstream_reset_before_response_started{connection_timeout}"
        );
        assert_eq!(
            text(&ResponseDetails::RbacDenied(None)),
            "rbac_access_denied_matched_policy[none]"
        );
    }
}
