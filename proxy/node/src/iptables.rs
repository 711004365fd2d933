//! The iptables baseline: istio-init's nat rule set, verbatim, written inside a pod netns with
//! `iptables-restore --noflush` (and the IPv6 twin with `ip6tables-restore`), and its removal.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use crate::netns::{Netns, NetnsError};

/// Chains istio-init creates, in creation order.
pub const CHAINS: [&str; 4] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
];

/// The istio-init rule set (Istio 1.23), exactly as the seed shows it.
pub const RULES_V4: &str = "*nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";

/// The IPv6 rule set: [`RULES_V4`] with 127.0.0.6/32 -> ::6/128 and 127.0.0.1/32 -> ::1/128,
/// as istio-init does for ip6tables.
pub fn rules_v6() -> String {
    RULES_V4
        .replace("127.0.0.6/32", "::6/128")
        .replace("127.0.0.1/32", "::1/128")
}

/// IPv4 or IPv6 tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Family {
    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
}

/// Errors installing or removing the rules; each names the netns and the failing command.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The netns cannot be used.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A command failed; `output` is what it printed.
    #[error("netns {netns}: `{command}` failed: {output}")]
    Command {
        netns: String,
        command: String,
        output: String,
    },
}

/// Writes istio-init's rules (IPv4 and IPv6) into the netns. Fails, naming the command and its
/// output, when they are already installed.
pub fn install(netns_arg: &str) -> Result<(), IptablesError> {
    let ns = Netns::open(netns_arg)?;
    restore(&ns, netns_arg, Family::V4, RULES_V4)?;
    restore(&ns, netns_arg, Family::V6, &rules_v6())
}

/// Deletes exactly what [`install`] added: the two jumps and the four chains, in both families.
/// Parts that are already gone are skipped, so removal is idempotent.
pub fn remove(netns_arg: &str) -> Result<(), IptablesError> {
    let ns = Netns::open(netns_arg)?;
    for fam in [Family::V4, Family::V6] {
        let saved = run(&ns, netns_arg, fam.save(), &["-t", "nat"], None)?;
        let script = removal_script(&saved);
        if script.lines().count() > 2 {
            restore(&ns, netns_arg, fam, &script)?;
        }
    }
    Ok(())
}

/// The current nat table of the netns as `iptables-save` prints it.
pub fn save(netns_arg: &str, fam: Family) -> Result<String, IptablesError> {
    let ns = Netns::open(netns_arg)?;
    run(&ns, netns_arg, fam.save(), &["-t", "nat"], None)
}

/// The restore script removing istio-init's jumps and chains present in `saved`.
pub fn removal_script(saved: &str) -> String {
    let mut s = String::from("*nat\n");
    for (chain, jump) in [("PREROUTING", "ISTIO_INBOUND"), ("OUTPUT", "ISTIO_OUTPUT")] {
        let rule = format!("-A {chain} -p tcp -j {jump}");
        for _ in saved.lines().filter(|l| l.trim() == rule) {
            s.push_str(&format!("-D {chain} -p tcp -j {jump}\n"));
        }
    }
    let present: Vec<&str> = CHAINS
        .iter()
        .copied()
        .filter(|c| saved.lines().any(|l| l.starts_with(&format!(":{c} "))))
        .collect();
    for c in &present {
        s.push_str(&format!("-F {c}\n"));
    }
    for c in &present {
        s.push_str(&format!("-X {c}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

fn restore(ns: &Netns, netns_arg: &str, fam: Family, script: &str) -> Result<(), IptablesError> {
    run(ns, netns_arg, fam.restore(), &["--noflush"], Some(script)).map(drop)
}

/// Runs a command inside the netns (forked from a helper thread that entered it: a child
/// inherits the netns of the thread that forks it).
fn run(
    ns: &Netns,
    netns_arg: &str,
    prog: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, IptablesError> {
    let command = format!("{prog} {}", args.join(" "));
    let fail = |output: String| IptablesError::Command {
        netns: netns_arg.to_string(),
        command: command.clone(),
        output,
    };
    let out = ns
        .run(|| -> std::io::Result<std::process::Output> {
            let mut child = Command::new(prog)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut input = child.stdin.take().expect("stdin is piped");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes())?;
            }
            drop(input);
            child.wait_with_output()
        })?
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if text.is_empty() {
            text = format!("{}", out.status);
        }
        return Err(fail(text));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_rules_swap_loopback_addresses() {
        let v6 = rules_v6();
        assert!(v6.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN"));
        assert!(v6.contains("! -d ::1/128 -m owner --uid-owner 1337"));
        assert!(!v6.contains("127.0.0"));
        assert_eq!(v6.lines().count(), RULES_V4.lines().count());
    }

    #[test]
    fn removal_only_touches_what_is_there() {
        let saved =
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n\
                     :ISTIO_OUTPUT - [0:0]\n:KEEP - [0:0]\n-A PREROUTING -p tcp -j ISTIO_INBOUND\n\
                     -A OUTPUT -p tcp -j KEEP\nCOMMIT\n";
        assert_eq!(
            removal_script(saved),
            "*nat\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-F ISTIO_INBOUND\n-F ISTIO_OUTPUT\n\
             -X ISTIO_INBOUND\n-X ISTIO_OUTPUT\nCOMMIT\n"
        );
        assert_eq!(removal_script("*nat\nCOMMIT\n"), "*nat\nCOMMIT\n");
    }
}
