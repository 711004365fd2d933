//! The `sluice` binary: agent, CLI and proxy.
fn main() -> anyhow::Result<()> {
    Ok(())
}
