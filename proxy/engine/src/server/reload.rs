//! File reload: on SIGHUP or a config file change, read, parse and validate the file on a
//! blocking thread (never on the async workers), then hand it to [`Server::apply`]. A bad or
//! empty file is rejected (the error names the field) and the running version keeps serving.

use std::{sync::Arc, time::Duration};

use super::{Server, ServerError};
use crate::config;

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
            let _ = s.reload().await;
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
                    let _ = server.reload().await;
                }
            }
        });
    }
}

impl Server {
    /// Reloads the config file through [`apply`](Self::apply); returns the new version, or why
    /// the file was refused (the running version keeps serving). `Ok(None)`: no config file.
    pub async fn reload(self: &Arc<Self>) -> Result<Option<u64>, ServerError> {
        let Some(path) = self.config_path.clone() else {
            return Ok(None);
        };
        let loaded = tokio::task::spawn_blocking(move || config::load_serving_file(path))
            .await
            .map_err(|e| ServerError::Runtime(std::io::Error::other(e)))?;
        let (bootstrap, source) = match loaded {
            Ok(l) => l,
            Err(e) => {
                self.stats.server.reload_failures.inc();
                tracing::error!(field = e.path(), error = %e, "config rejected; keeping the running config");
                return Err(e.into());
            }
        };
        self.apply(bootstrap, source).await.map(Some)
    }
}
