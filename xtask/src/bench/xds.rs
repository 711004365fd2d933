//! `cargo xtask bench --xds`: builds sluice and the `xds-bench` driver (tests crate: it reuses the
//! test suite's ADS server and resource builders) with the bench's cargo profile and runs it;
//! the driver prints the report and writes <out>/xds.md and xds.json.

use anyhow::{bail, Context as _, Result};

use super::{cargo_build, target_dir, BenchArgs};

pub(crate) fn run(a: &BenchArgs) -> Result<()> {
    let bin_dir = target_dir().join(if a.profile == "dev" {
        "debug"
    } else {
        a.profile.as_str()
    });
    let sluice = match &a.sluice {
        Some(p) => p.canonicalize()?,
        None => {
            cargo_build("sluice", &a.profile)?;
            bin_dir.join("sluice")
        }
    };
    cargo_build("sluice-tests", &a.profile)?;
    let out = a.out.clone().unwrap_or_else(|| target_dir().join("bench"));
    let mut cmd = std::process::Command::new(bin_dir.join("xds-bench"));
    cmd.arg("--sluice").arg(&sluice).arg("--out").arg(&out);
    if a.quick {
        cmd.args(["--reps", "1", "--vhosts", "50", "--clusters", "100"]);
    } else if let Some(r) = a.reps {
        cmd.args(["--reps", &r.to_string()]);
    }
    let st = cmd.status().context("running xds-bench")?;
    if !st.success() {
        bail!("xds-bench failed ({st})");
    }
    Ok(())
}
