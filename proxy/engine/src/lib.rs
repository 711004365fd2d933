//! sluice-engine: the Envoy-model L7 engine — an Envoy v3 bootstrap validated into typed config,
//! compiled route tables, the cluster manager, the HTTP connection manager and TCP proxy, and the
//! [`server::Server`] that runs config versions and takes new ones through one entry.
//!
//! No eBPF, no network namespaces, no agent: it builds and tests on stable Rust alone. The node
//! side (`sluice-node`) plugs in through [`upstream::connector::Connector`] (where upstream
//! sockets come from) and [`server::Server::serve_captured`] (connections it accepted).
//! See ARCHITECTURE.md at the repository root for the code map.

mod accept;
pub mod admin;
pub mod config;
pub mod detect;
pub mod downstream_tls;
pub mod explain;
pub mod heap;
pub mod http;
pub mod network_ext_authz;
pub mod proxy_protocol;
pub mod rbac;
pub mod route;
pub mod server;
pub mod tcp_proxy;
#[cfg(test)]
mod testing;
pub mod tls_common;
pub mod upstream;
pub mod workers;
