//! The demo's metrics line: the `istio_requests_total` series of the agent's scrape endpoint
//! (`sluice agent --metrics-addr`) that counted the Kubeflow request.

use std::process::Command;

use anyhow::{bail, Result};

use super::step;

/// A free loopback address for `--metrics-addr` (bound, then released).
pub fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// Prints the `istio_requests_total` lines the agent serves on `addr`.
pub fn show(addr: &str) -> Result<()> {
    let url = format!("http://{addr}/stats/prometheus");
    step(&format!(
        "the metrics line that counted it: curl {url} | grep istio_requests_total"
    ));
    let o = Command::new("curl")
        .args(["-sS", "-m", "5", &url])
        .output()?;
    if !o.status.success() {
        bail!("curl {url}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    if lines.is_empty() {
        bail!("no istio_requests_total series at {url}:\n{text}");
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
