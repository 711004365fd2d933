//! The `sluice` binary: agent, CLI and proxy.
use clap::Parser;

/// sluice: eBPF transparent redirection and an Envoy-style proxy.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the Envoy-compatible proxy: `sluice proxy -c envoy.yaml`.
    Proxy(sluice::proxy::cli::ProxyArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Proxy(args) => sluice::proxy::run(args)?,
    }
    Ok(())
}
