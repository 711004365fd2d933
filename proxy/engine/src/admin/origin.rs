//! Where each resource of a config version came from, for `/config_dump`: the file (static
//! entries, loaded at one time) or xDS (dynamic entries with the `version_info` they arrived
//! with, when they last changed, and the resource as received). Cheap metadata kept beside the
//! [`Runtime`](crate::server::Runtime); the data path never reads it.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

/// One resource that came over xDS.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicEntry {
    /// The `version_info` of the response that last changed it (Delta: the resource's version).
    pub version_info: String,
    /// When it last changed.
    pub last_updated: SystemTime,
    /// The resource as received: proto3 JSON text (Envoy field names; RDS names not inlined),
    /// shared with the xDS client's accepted state and parsed when a dump is made.
    pub resource: Arc<str>,
}

impl DynamicEntry {
    /// The resource's JSON, parsed now (admin path only).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.resource).unwrap_or(serde_json::Value::Null)
    }
}

/// The origin of every resource of one config version. The default is "all from the file".
#[derive(Debug, Clone)]
pub struct ConfigOrigin {
    /// When the file's resources were loaded.
    pub static_loaded: SystemTime,
    /// LDS resources by listener name.
    pub listeners: BTreeMap<String, DynamicEntry>,
    /// RDS resources by route configuration name.
    pub routes: BTreeMap<String, DynamicEntry>,
    /// CDS resources by cluster name.
    pub clusters: BTreeMap<String, DynamicEntry>,
    /// EDS resources by EDS service name.
    pub endpoints: BTreeMap<String, DynamicEntry>,
    /// Listeners accepted but still warming (their RDS on its way), by name; the version in
    /// `listeners`, if any, serves meanwhile.
    pub warming_listeners: BTreeMap<String, DynamicEntry>,
    /// Clusters accepted but still warming (their EDS on its way), by name.
    pub warming_clusters: BTreeMap<String, DynamicEntry>,
    /// Secrets over ADS by name (SecretsConfigDump's `dynamic_active_secrets`; keys redacted
    /// when dumped).
    pub secrets: BTreeMap<String, DynamicEntry>,
    /// The last accepted LDS `version_info` (ListenersConfigDump.version_info).
    pub lds_version: Option<String>,
    /// The last accepted CDS `version_info` (ClustersConfigDump.version_info).
    pub cds_version: Option<String>,
}

impl Default for ConfigOrigin {
    fn default() -> Self {
        Self::file(SystemTime::now())
    }
}

impl ConfigOrigin {
    /// Everything from the file, loaded at `at`.
    pub fn file(at: SystemTime) -> Self {
        Self {
            static_loaded: at,
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            clusters: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            warming_listeners: BTreeMap::new(),
            warming_clusters: BTreeMap::new(),
            secrets: BTreeMap::new(),
            lds_version: None,
            cds_version: None,
        }
    }
}
