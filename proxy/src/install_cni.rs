//! `sluice install-cni` arguments and their mapping onto `sluice_node::cni::install`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use sluice_node::cni::install::{self, InstallOptions, OnExit};

/// `sluice install-cni` options. Defaults are the DaemonSet's mount points; every one can come
/// from the ConfigMap through the environment variable named beside it.
#[derive(clap::Args)]
pub struct InstallCniArgs {
    /// The host's CNI bin dir as mounted in the container.
    #[arg(long, env = "SLUICE_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// The host's CNI conf dir as mounted in the container.
    #[arg(
        long,
        env = "SLUICE_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    cni_conf_dir: PathBuf,
    /// The sluice-cni binary to copy (default: `sluice-cni` beside this binary).
    #[arg(long)]
    plugin_binary: Option<PathBuf>,
    /// sluice-cni's options as a JSON object (control, mode, failOpen, excludeNamespaces, ...).
    #[arg(long, env = "SLUICE_CNI_PLUGIN_OPTIONS", default_value = "{}")]
    plugin_options: String,
    /// Held shared by every running installer of the node; `--on-exit auto` uninstalls only
    /// when no other installer holds it.
    #[arg(long, default_value = "/run/sluice/install-cni.lock")]
    lock_file: PathBuf,
    /// On SIGTERM: auto (uninstall unless another installer runs: an upgrade), keep, uninstall.
    #[arg(long, env = "SLUICE_CNI_ON_EXIT", value_enum, default_value = "auto")]
    on_exit: OnExitArg,
    /// Serve `/healthz/ready` (200 while sluice-cni is installed, else 503 with the reason) and
    /// `/healthz/live` here; the DaemonSet uses 0.0.0.0:15022 (the agent has 15021).
    #[arg(long, env = "SLUICE_CNI_HEALTH_ADDR")]
    health_addr: Option<std::net::SocketAddr>,
    /// Install once and exit (no watching).
    #[arg(long, conflicts_with = "uninstall")]
    once: bool,
    /// Remove sluice-cni's entry from every config and the binary, then exit.
    #[arg(long)]
    uninstall: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnExitArg {
    Auto,
    Keep,
    Uninstall,
}

pub fn run(a: InstallCniArgs) -> Result<()> {
    if a.uninstall {
        return Ok(install::uninstall(&a.cni_bin_dir, &a.cni_conf_dir)?);
    }
    let plugin_binary = match a.plugin_binary {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("sluice-cni"),
    };
    let opts = InstallOptions {
        bin_dir: a.cni_bin_dir,
        conf_dir: a.cni_conf_dir,
        plugin_binary,
        entry: install::entry_from_options(&a.plugin_options)?,
        lock_file: a.lock_file,
        on_exit: match a.on_exit {
            OnExitArg::Auto => OnExit::Auto,
            OnExitArg::Keep => OnExit::Keep,
            OnExitArg::Uninstall => OnExit::Uninstall,
        },
        health: a.health_addr,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    Ok(rt.block_on(install::run(opts, a.once))?)
}
