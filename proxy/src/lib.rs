//! sluice: eBPF transparent redirection and an Envoy-style proxy, in one crate.
//!
//! See ARCHITECTURE.md at the repository root for the bird's-eye view and the code map.

pub mod bpf;
pub mod config;
pub mod route;
