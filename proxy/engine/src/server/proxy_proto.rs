//! The `envoy.filters.listener.proxy_protocol` listener filter at run time: reads a
//! connection's PROXY header before anything else looks at it, and counts what it found as
//! Envoy's `proxy_proto.*` stats.

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;

use super::stats::{Counter, StatsStore};
use crate::{
    config::ListenerProxyProtocol,
    proxy_protocol::{
        parse::Parsed,
        read::{read_header, Outcome},
        Version,
    },
};

/// A listener's filter, with its counters.
#[derive(Debug)]
pub struct ProxyProtoRt {
    cfg: ListenerProxyProtocol,
    /// `versions.<v>.found`, `.disallowed`, `.error`, by version (v1, v2).
    found: [Arc<Counter>; 2],
    disallowed: [Arc<Counter>; 2],
    error: [Arc<Counter>; 2],
    not_found_allowed: Arc<Counter>,
    not_found_disallowed: Arc<Counter>,
    /// `downstream_cx_proxy_proto_error` (Envoy's legacy counter of every refused header).
    legacy_error: Arc<Counter>,
}

/// What the filter decided for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it with these (source, destination) addresses, the header's.
    Restore(SocketAddr, SocketAddr),
    /// A LOCAL or UNKNOWN header: serve it with its own addresses (they are the PROXY
    /// protocol state upstream headers state).
    Header,
    /// No header (allowed, or the timeout passed with `continue_on_listener_filters_timeout`):
    /// serve it as it is.
    Keep,
    /// Close it.
    Close,
}

impl ProxyProtoRt {
    /// The filter of `cfg`, its counters named as Envoy's (`proxy_proto.[<stat_prefix>.]...`).
    pub fn new(cfg: &ListenerProxyProtocol, stats: &StatsStore) -> Self {
        let root = match cfg.stat_prefix.as_str() {
            "" => "proxy_proto.".to_string(),
            p => format!("proxy_proto.{p}."),
        };
        let c = |name: &str| stats.named_counter(&format!("{root}{name}"), false);
        let per_version = |what: &str| {
            [Version::V1, Version::V2].map(|v| c(&format!("versions.{}.{what}", v.as_str())))
        };
        Self {
            found: per_version("found"),
            disallowed: per_version("disallowed"),
            error: per_version("error"),
            not_found_allowed: c("not_found_allowed"),
            not_found_disallowed: c("not_found_disallowed"),
            legacy_error: stats.named_counter("downstream_cx_proxy_proto_error", false),
            cfg: cfg.clone(),
        }
    }

    /// Reads `stream`'s header (consuming it) and decides.
    pub async fn run(&self, stream: &mut TcpStream) -> Verdict {
        let at = |v: Version| usize::from(v == Version::V2);
        match read_header(stream, self.cfg.accept, self.cfg.timeout).await {
            Outcome::Header(h) => {
                self.found[at(h.version)].inc();
                match h.addrs {
                    Some((src, dst)) => Verdict::Restore(src, dst),
                    None => Verdict::Header,
                }
            }
            Outcome::Absent => {
                self.not_found_allowed.inc();
                Verdict::Keep
            }
            Outcome::Refused(p) => {
                match p {
                    Parsed::Denied(v) => {
                        self.found[at(v)].inc();
                        self.disallowed[at(v)].inc();
                    }
                    Parsed::Error(Some(v)) => {
                        self.error[at(v)].inc();
                        self.legacy_error.inc();
                    }
                    _ => {
                        self.not_found_disallowed.inc();
                        self.legacy_error.inc();
                    }
                }
                Verdict::Close
            }
            Outcome::TimedOut if self.cfg.continue_on_timeout => Verdict::Keep,
            Outcome::TimedOut | Outcome::Closed => Verdict::Close,
        }
    }
}
