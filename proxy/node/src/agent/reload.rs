//! SIGHUP: the agent reloads its L7 config (`--config`). The file is read and validated on a
//! blocking thread (never on the serving workers), then applied to every node-mode pod's engine
//! servers through `Server::apply`; pods enrolled later start with it. A refused file leaves
//! every pod on its running version; without `--config`, or when pods are configured over xDS
//! (`--xds-address`), the signal is logged and ignored.

use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::{error, info, warn};

use super::registry::Registry;
use crate::l7capture::L7Config;

/// Reloads the `--config` file and applies it to every pod served by the L7 engine.
pub async fn l7_config(registry: Arc<Mutex<Registry>>) {
    let (path, per_pod) = {
        let r = registry.lock().await;
        (r.l7_path(), r.has_pod_config())
    };
    if per_pod {
        // The running config is the file plus what the management server sent each pod;
        // applying the file alone would drop the latter.
        info!("SIGHUP: pods are configured over xDS; the --config file is not reloaded");
        return;
    }
    let Some(path) = path else {
        info!("SIGHUP: no --config, nothing to reload");
        return;
    };
    let shown = path.display().to_string();
    let loaded = match tokio::task::spawn_blocking(move || L7Config::load(&path)).await {
        Ok(Ok(c)) => Arc::new(c),
        Ok(Err(e)) => {
            error!(config = %shown, error = %e, "SIGHUP: config rejected; keeping the running config");
            return;
        }
        Err(e) => {
            error!(config = %shown, error = %e, "SIGHUP: config load aborted");
            return;
        }
    };
    let servers = registry.lock().await.set_l7(loaded.clone());
    let (mut applied, mut refused) = (0usize, 0usize);
    for s in &servers {
        match loaded.apply_to(s).await {
            Ok(()) => applied += 1,
            Err(e) => {
                refused += 1;
                warn!(config = %shown, error = %e, "SIGHUP: a pod's engine refused the config");
            }
        }
    }
    info!(config = %shown, pods = applied, refused, "SIGHUP: L7 config reloaded");
}
