//! The `sluice-cni` CNI plugin binary: reads the `CNI_*` environment and the network
//! configuration on stdin, runs [`sluice_node::cni::run`], prints the result or the CNI error object.

use std::io::{Read as _, Write as _};

fn main() -> std::process::ExitCode {
    let env = sluice_node::cni::CniEnv::from_vars(|k| std::env::var(k).ok());
    let mut stdin = Vec::new();
    if env.command != "VERSION" {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            eprintln!("sluice-cni: reading stdin: {e}");
        }
    }
    let mut out = std::io::stdout().lock();
    match sluice_node::cni::run(&env, &stdin) {
        Ok(o) => {
            for w in &o.warnings {
                eprintln!("{w}");
            }
            if !o.stdout.is_empty() {
                let _ = writeln!(out, "{}", o.stdout);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let json = serde_json::to_string(&e).expect("errors always serialize");
            let _ = writeln!(out, "{json}");
            eprintln!("sluice-cni: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
