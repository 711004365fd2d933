//! The one entry that gives a running [`Server`] a new configuration, whatever its source (the
//! config file today, xDS later): [`Server::apply`]. Nothing here assumes a file.
//!
//! The new version is validated whole before it takes traffic: cross-references checked, every
//! cluster built (unchanged ones kept), warmed, then swapped in atomically and the listeners
//! reconciled. Any failure leaves the running version serving and names the field or listener.
//! Requests in flight keep the version they loaded and finish on it.

use std::sync::Arc;

use super::{Runtime, Server, ServerError};
use crate::{admin::ConfigOrigin, config};

impl Server {
    /// Replaces the running configuration with `bootstrap` (`source` is its document as JSON,
    /// for /config_dump) and returns the new version number. Serialised with every other
    /// apply/reload; on error nothing changed and the running version keeps serving.
    pub async fn apply(
        self: &Arc<Self>,
        bootstrap: config::Bootstrap,
        source: serde_json::Value,
    ) -> Result<u64, ServerError> {
        self.apply_with_origin(bootstrap, source, ConfigOrigin::default())
            .await
    }

    /// [`apply`](Self::apply) for a source that knows where each resource came from (xDS: the
    /// dynamic resources with their versions), shown by `/config_dump`.
    pub async fn apply_with_origin(
        self: &Arc<Self>,
        bootstrap: config::Bootstrap,
        source: serde_json::Value,
        origin: ConfigOrigin,
    ) -> Result<u64, ServerError> {
        let _guard = self.reload_lock.lock().await;
        let result = self.apply_locked(bootstrap, source, origin).await;
        match &result {
            Ok(version) => {
                self.stats.server.reloads.inc();
                tracing::info!(version, "config applied");
            }
            Err(e) => {
                self.stats.server.reload_failures.inc();
                tracing::error!(error = %e, "config rejected; keeping the running config");
            }
        }
        result
    }

    async fn apply_locked(
        self: &Arc<Self>,
        bootstrap: config::Bootstrap,
        source: serde_json::Value,
        origin: ConfigOrigin,
    ) -> Result<u64, ServerError> {
        bootstrap.check_references()?;
        let current = self.runtime();
        let version = current.version + 1;
        let mut rt = Runtime::build(
            bootstrap,
            source,
            &self.stats,
            version,
            Some(&current),
            &self.connector,
        )?;
        rt.origin = Arc::new(origin);
        rt.warm().await;
        let previous = self.current.swap(Arc::new(rt));
        if let Err(e) = self.reconcile_listeners().await {
            self.current.store(previous);
            if let Err(again) = self.reconcile_listeners().await {
                tracing::error!(error = %again, "restoring the previous listeners failed");
            }
            return Err(e);
        }
        Ok(version)
    }
}
