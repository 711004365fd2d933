//! Command-line arguments of `sluice proxy` (mirrors `envoy -c`).

use std::{path::PathBuf, time::Duration};

/// `sluice proxy -c envoy.yaml`: run the Envoy-compatible proxy.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Envoy v3 static bootstrap YAML (reloaded on SIGHUP or when the file changes).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: PathBuf,
    /// tracing filter for the proxy's own logs (stderr), e.g. `info`, `sluice=debug`.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// How often the config file's mtime is checked, in milliseconds (0 disables; SIGHUP still
    /// reloads).
    #[arg(long = "reload-poll-ms", default_value_t = 1000)]
    pub reload_poll_ms: u64,
    /// Envoy's `--drain-time-s`: how long the open connections of a listener that was removed
    /// (or re-bound to a new address) may stay once its drain starts; whatever is still open
    /// then is closed.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,
}

impl ProxyArgs {
    /// `--drain-time-s`.
    pub fn drain_time(&self) -> Duration {
        Duration::from_secs(self.drain_time_s)
    }

    /// The mtime poll interval, if enabled.
    pub fn reload_poll(&self) -> Option<Duration> {
        (self.reload_poll_ms > 0).then(|| Duration::from_millis(self.reload_poll_ms))
    }
}
