//! Hot reload: on SIGHUP or a config file change, parse and validate the whole file, build the new
//! clusters and listeners, then swap atomically. A bad file is rejected (the error names the
//! field) and the running version keeps serving.

use std::{sync::Arc, time::Duration};

use super::{source_json, Runtime, Server};

/// Starts the SIGHUP handler and, when `poll` is set, the mtime poller.
pub fn spawn_watchers(server: Arc<Server>, poll: Option<Duration>) {
    let s = server.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            s.reload().await;
        }
    });
    if let Some(every) = poll {
        tokio::spawn(async move {
            let Some(path) = server.config_path.clone() else {
                return;
            };
            let stamp = |p: &std::path::Path| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().ok(), m.len()))
            };
            let mut last = stamp(&path);
            loop {
                tokio::time::sleep(every).await;
                let now = stamp(&path);
                if now != last && now.is_some() {
                    last = now;
                    tracing::info!(config = %path.display(), "config file changed: reloading");
                    server.reload().await;
                }
            }
        });
    }
}

impl Server {
    /// Reloads the config file; returns whether the new version was applied.
    pub async fn reload(self: &Arc<Self>) -> bool {
        let _guard = self.reload_lock.lock().await;
        let Some(path) = self.config_path.clone() else {
            return false;
        };
        let bootstrap = match crate::config::load_file(&path) {
            Ok(b) => b,
            Err(e) => {
                self.stats.server.reload_failures.inc();
                tracing::error!(field = e.path(), error = %e, "config rejected; keeping the running config");
                return false;
            }
        };
        let current = self.runtime();
        let version = current.version + 1;
        let rt = match Runtime::build(
            bootstrap,
            source_json(&path),
            &self.stats,
            version,
            Some(&current),
            &self.connector,
        ) {
            Ok(rt) => rt,
            Err(e) => {
                self.stats.server.reload_failures.inc();
                tracing::error!(error = %e, "config rejected; keeping the running config");
                return false;
            }
        };
        rt.warm().await;
        let previous = self.current.swap(Arc::new(rt));
        if let Err(e) = self.reconcile_listeners().await {
            tracing::error!(error = %e, "listener update failed; restoring the previous config");
            self.current.store(previous);
            let _ = self.reconcile_listeners().await;
            self.stats.server.reload_failures.inc();
            return false;
        }
        self.stats.server.reloads.inc();
        tracing::info!(version, "config reloaded");
        true
    }
}
