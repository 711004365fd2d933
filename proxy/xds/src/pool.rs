//! The descriptor pool of Envoy's v3 API, compiled at build time from the `.proto` files the
//! `envoy-types` crate ships (see `build.rs`). Built once, on first use.

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// Envoy's v3 API (every message `envoy-types` ships) plus udpa/xds and the well-known types.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS).expect("descriptor set built by build.rs")
    })
}
