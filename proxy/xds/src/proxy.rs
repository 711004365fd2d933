//! `sluice proxy -c bootstrap.yaml`: a bootstrap with `dynamic_resources` starts the server on
//! its static resources (the ADS cluster among them, `/ready` 503) and runs the ADS client,
//! which applies every accepted configuration through `Server::apply`; any other bootstrap runs
//! the engine's file-driven proxy unchanged.

use std::time::Instant;

use sluice_engine::{
    config,
    server::{self, cli::ProxyArgs, Server, ServerError, StartOptions},
};

use crate::{client, core::Core};

/// Runs `sluice proxy` until SIGINT/SIGTERM (blocking).
pub fn run(args: ProxyArgs) -> Result<(), ServerError> {
    // /config_dump prints resources as Envoy does (proto3 canonical JSON).
    sluice_engine::admin::set_canonicalizer(crate::convert::canonical);
    // Anything but a valid ADS bootstrap (including an invalid file) takes the file-driven path,
    // which reports errors exactly as it always has.
    let bootstrap = match config::load_file(&args.config_path) {
        Ok(b) if b.dynamic_resources.is_some() => b,
        _ => return server::run(args),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(run_ads(args, bootstrap))
}

async fn run_ads(args: ProxyArgs, bootstrap: config::Bootstrap) -> Result<(), ServerError> {
    server::init_tracing(&args.log_level);
    let source = server::source_json(&args.config_path);
    let dynamic = bootstrap.dynamic_resources.clone().expect("checked by run");
    let cfg = client::ClientConfig::from_bootstrap(&bootstrap).map_err(|message| {
        config::ConfigError::Field {
            file: Some(args.config_path.display().to_string()),
            path: "dynamic_resources.ads_config".into(),
            message,
            line: None,
            column: None,
        }
    })?;
    // No file reload: the configuration comes from the management server.
    let opts = StartOptions {
        drain_time: args.drain_time(),
        ..StartOptions::default()
    };
    let server = Server::start_with(bootstrap, source.clone(), None, opts).await?;
    tracing::info!(config = %args.config_path.display(), target = ?cfg.target, delta = cfg.delta, "sluice proxy started (ADS)");
    let core = Core::new(source, dynamic, Instant::now());
    let task = tokio::spawn(client::run(server, cfg, core));
    server::wait_for_shutdown().await?;
    task.abort();
    tracing::info!("sluice proxy shutting down");
    Ok(())
}
