//! The one entry that gives a running [`Server`] a new configuration, whatever its source (the
//! config file today, xDS later): [`Server::apply`]. Nothing here assumes a file.
//!
//! The new version is validated whole before it takes traffic: cross-references checked, every
//! cluster built (unchanged ones kept), warmed, then swapped in atomically and the listeners
//! reconciled. Any failure leaves the running version serving and names the field or listener.
//! Requests in flight keep the version they loaded and finish on it. The replaced version is
//! dropped off the serving threads once they have, and the heap it freed goes back to the
//! kernel (a 100k-route table is hundreds of MiB that glibc would otherwise keep).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{ChainRt, Runtime, Server, ServerError};
use crate::{admin::ConfigOrigin, config};

impl Server {
    /// Replaces the running configuration with `bootstrap` (`source` is its document as JSON,
    /// for /config_dump) and returns the new version number. Serialised with every other
    /// apply/reload; on error nothing changed and the running version keeps serving.
    pub async fn apply(
        self: &Arc<Self>,
        bootstrap: config::Bootstrap,
        source: impl Into<Arc<serde_json::Value>>,
    ) -> Result<u64, ServerError> {
        self.apply_with_origin(bootstrap, source, ConfigOrigin::default())
            .await
    }

    /// [`apply`](Self::apply) for a source that knows where each resource came from (xDS: the
    /// dynamic resources with their versions), shown by `/config_dump`.
    pub async fn apply_with_origin(
        self: &Arc<Self>,
        bootstrap: config::Bootstrap,
        source: impl Into<Arc<serde_json::Value>>,
        origin: ConfigOrigin,
    ) -> Result<u64, ServerError> {
        let _guard = self.reload_lock.lock().await;
        let result = self.apply_locked(bootstrap, source.into(), origin).await;
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
        source: Arc<serde_json::Value>,
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
        retire(previous);
        Ok(version)
    }
}

/// How long a replaced version waits for requests in flight on it before it is let go anyway
/// (the last of them then frees it).
const RETIRE_WAIT: Duration = Duration::from_secs(10);

/// Drops a replaced config version on a blocking thread once nothing else holds it (waiting at
/// most [`RETIRE_WAIT`]), then gives the freed heap pages back to the kernel.
fn retire(previous: Arc<Runtime>) {
    tokio::spawn(async move {
        let deadline = Instant::now() + RETIRE_WAIT;
        while in_use(&previous) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tokio::task::spawn_blocking(move || {
            drop(previous);
            crate::heap::trim();
        })
        .await;
    });
}

/// Whether anything besides `rt` itself holds it, its listeners or their HTTP connection
/// managers (requests in flight, connections on a listener that was removed).
fn in_use(rt: &Arc<Runtime>) -> bool {
    Arc::strong_count(rt) > 1
        || rt.listeners.values().any(|l| {
            Arc::strong_count(l) > 1
                || l.chains
                    .iter()
                    .any(|c| matches!(c, ChainRt::Http(h) if Arc::strong_count(h) > 1))
        })
}
