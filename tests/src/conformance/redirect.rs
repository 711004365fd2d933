//! A case's redirected port: an iptables `nat OUTPUT` REDIRECT of 127.0.0.1:`{{redirected_port}}`
//! to the listener while the case runs, so the proxy sees a connection whose original
//! destination (`SO_ORIGINAL_DST`) is another address, as behind Istio's capture
//! (`use_original_dst`, `bind_to_port: false`). The rule names only that one free port; it needs
//! root and is deleted when the guard drops.

use std::process::Command;

/// The installed rule; dropping it deletes it.
pub struct Redirect {
    rule: Vec<String>,
}

impl Redirect {
    /// REDIRECT locally sent TCP to 127.0.0.1:`from` to 127.0.0.1:`to`.
    pub fn install(from: u16, to: u16) -> Redirect {
        let rule: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &from.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to.to_string(),
        ]
        .map(String::from)
        .into();
        iptables("-A", &rule).unwrap_or_else(|e| panic!("{e} (the redirected port needs root)"));
        Redirect { rule }
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        if let Err(e) = iptables("-D", &self.rule) {
            eprintln!("warning: {e}");
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", op])
        .args(rule)
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "iptables -t nat {op} {}: {}",
        rule.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
