//! The proxy's own identity in its spans (Envoy's `LocalInfo`): the node's id (the `node_id`
//! tag), its cluster (the local endpoint's `serviceName`) and its address (Envoy's
//! `getLocalAddress(v4)`, as `x-forwarded-for` uses it).

use std::{net::IpAddr, sync::Arc};

use crate::config::Node;

/// Who reports the spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// `node.id`.
    pub node_id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// The local address.
    pub address: IpAddr,
}

impl Local {
    /// The identity of a proxy with bootstrap `node`.
    pub fn of(node: Option<&Node>) -> Arc<Self> {
        Arc::new(Self {
            node_id: node.map(|n| n.id.clone()).unwrap_or_default(),
            cluster: node.map(|n| n.cluster.clone()).unwrap_or_default(),
            address: crate::http::sanitize::local_address(),
        })
    }
}
