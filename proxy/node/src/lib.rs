//! sluice-node: the node side of sluice — loads and attaches the eBPF programs and keeps their
//! maps per network namespace, serves the capture listeners (15001/15006) and hands their
//! connections to the TCP passthrough or the L7 engine (`sluice-engine`), and runs the node
//! agent, the per-pod sidecar, the CNI plugin and the iptables baseline.
//!
//! The only crate that builds the eBPF object (build.rs). See ARCHITECTURE.md for the code map.

pub mod admin_port;
pub mod agent;
pub mod bpf;
pub mod cni;
pub mod drain;
pub mod inbound;
pub mod iptables;
pub mod l7capture;
pub mod listener;
pub mod metrics_endpoint;
pub mod netns;
pub mod outbound;
pub mod pod_sockets;
pub mod policy;
pub mod services;
pub mod sidecar;
pub mod upstream_factory;
