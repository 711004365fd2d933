//! sluice's xDS client (ADS over gRPC, State-of-the-world and Delta).
//!
//! A pushed resource (`google.protobuf.Any`) is decoded against Envoy's descriptors
//! ([`pool`]), printed as proto3 JSON with Envoy's field names ([`convert`]) and assembled with
//! the bootstrap's static resources into one bootstrap document ([`assemble`]), which goes
//! through the engine's own parser and `validate()` — the same code and the same field-path
//! errors as the YAML file — before [`sluice_engine::server::Server::apply`] runs it
//! ([`core`], [`client`]). [`proxy::run`] is `sluice proxy`.

pub mod assemble;
pub mod client;
pub mod convert;
pub mod core;
pub mod credentials;
#[cfg(test)]
mod fixtures;
pub mod node_mode;
pub mod origin;
pub mod pool;
pub mod proxy;
pub mod resource;
pub mod sds;
pub mod status;
pub mod transport;
pub mod wire;
