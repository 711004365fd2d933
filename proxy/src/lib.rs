//! sluice: eBPF transparent redirection and an Envoy-style proxy, in one crate.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view and the code map.

pub mod admin;
pub mod agent;
pub mod bpf;
pub mod cli;
pub mod cni;
pub mod config;
pub mod connector;
pub mod detect;
pub mod drain;
pub mod http;
pub mod inbound;
pub mod iptables;
pub mod l7capture;
pub mod listener;
pub mod netns;
pub mod outbound;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod services;
pub mod sidecar;
pub mod tcp_proxy;
pub mod upstream;
