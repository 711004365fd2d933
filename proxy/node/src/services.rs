//! A minimal static service table (ClusterIP VIP:port -> endpoints), kube-proxy's view of the node.
//!
//! Stand-in for the L7 engine's clusters: the TCP passthrough consults it when a captured
//! connection's original destination is a known VIP, otherwise it connects to the original
//! destination itself (Envoy's PassthroughCluster). File format (YAML):
//!
//! ```yaml
//! services:
//!   - vip: 10.96.0.10:80
//!     endpoints: [10.200.0.2:80]
//! ```

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

use serde::Deserialize;

/// Errors reading a service file; each names the file and, when it applies, the service.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The file cannot be read.
    #[error("services file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The YAML does not parse.
    #[error("services file {path}: {source}")]
    Parse {
        path: String,
        source: serde_norway::Error,
    },
    /// A service lists no endpoint, or a VIP appears twice.
    #[error("services file {path}: service {vip}: {reason}")]
    Invalid {
        path: String,
        vip: SocketAddr,
        reason: &'static str,
    },
}

/// The file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Every service.
    services: Vec<ServiceConf>,
}

/// One service in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceConf {
    /// ClusterIP and port the apps dial.
    vip: SocketAddr,
    /// Endpoint addresses (pod IP:port), used round robin.
    endpoints: Vec<SocketAddr>,
}

/// One service: its endpoints and a round-robin cursor.
#[derive(Debug)]
struct Service {
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

/// VIP:port -> endpoints. Empty by default (pure passthrough).
#[derive(Debug, Default)]
pub struct Services {
    by_vip: HashMap<SocketAddr, Service>,
}

impl Services {
    /// Reads and validates a YAML service file.
    pub fn load(path: &Path) -> Result<Self, ServicesError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ServicesError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&name, &text)
    }

    /// Parses YAML text (`name` is used in errors).
    pub fn parse(name: &str, text: &str) -> Result<Self, ServicesError> {
        let file: File = serde_norway::from_str(text).map_err(|source| ServicesError::Parse {
            path: name.to_string(),
            source,
        })?;
        let mut by_vip = HashMap::new();
        for s in file.services {
            let invalid = |reason| ServicesError::Invalid {
                path: name.to_string(),
                vip: s.vip,
                reason,
            };
            if s.endpoints.is_empty() {
                return Err(invalid("no endpoints"));
            }
            if by_vip.contains_key(&s.vip) {
                return Err(invalid("listed twice"));
            }
            by_vip.insert(
                s.vip,
                Service {
                    endpoints: s.endpoints,
                    next: AtomicUsize::new(0),
                },
            );
        }
        Ok(Self { by_vip })
    }

    /// Where a connection to `orig_dst` goes: the next endpoint of its service, or `orig_dst`
    /// itself when it is no known VIP (passthrough).
    pub fn resolve(&self, orig_dst: SocketAddr) -> SocketAddr {
        match self.by_vip.get(&orig_dst) {
            Some(s) => {
                let i = s.next.fetch_add(1, Ordering::Relaxed) % s.endpoints.len();
                s.endpoints[i]
            }
            None => orig_dst,
        }
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.by_vip.len()
    }

    /// True when there is no service (pure passthrough).
    pub fn is_empty(&self) -> bool {
        self.by_vip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_round_robin_and_passthrough() {
        let s = Services::parse(
            "t",
            "services:\n  - vip: 10.96.0.10:80\n    endpoints: [10.0.0.1:8080, 10.0.0.2:8080]\n",
        )
        .unwrap();
        let vip: SocketAddr = "10.96.0.10:80".parse().unwrap();
        let got: Vec<_> = (0..3).map(|_| s.resolve(vip).to_string()).collect();
        assert_eq!(got, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.1:8080"]);
        let other: SocketAddr = "10.96.0.10:81".parse().unwrap();
        assert_eq!(s.resolve(other), other);
    }

    #[test]
    fn bad_files_name_the_service() {
        let err = Services::parse(
            "f.yaml",
            "services:\n  - vip: 10.96.0.10:80\n    endpoints: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("f.yaml") && err.contains("10.96.0.10:80") && err.contains("no endpoints"),
            "{err}"
        );
        let err = Services::parse("f.yaml", "services:\n  - vip: nope\n    endpoints: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.yaml"), "{err}");
    }
}
