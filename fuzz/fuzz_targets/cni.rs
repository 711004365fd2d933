//! The CNI plugin's input: the `CNI_*` environment and the network configuration on stdin.
//!
//! Input: `KEY=VALUE` lines (the environment), a NUL byte, then stdin. VERSION and unknown
//! commands run the plugin's real entry (`cni::run`); ADD, DEL, CHECK, STATUS and GC would call
//! the agent's socket, so for them the target runs what precedes that call (ADD's checks and its
//! enroll request, validated as the agent validates it) and never touches a socket.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sluice_node::cni::{
    self,
    config::{CniEnv, NetConf, MAX_CONTAINER_ID},
};

fuzz_target!(|data: &[u8]| {
    let (env_part, stdin) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // The environment a runtime can pass is text; lossy like a shell would not be, but every
    // byte sequence still becomes some environment.
    let vars: BTreeMap<String, String> = String::from_utf8_lossy(env_part)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = CniEnv::from_vars(|k| vars.get(k).cloned());
    if let Ok(id) = env.container_id() {
        assert!(!id.is_empty() && id.len() <= MAX_CONTAINER_ID);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
    }
    let talks_to_agent = matches!(
        env.command.as_str(),
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC"
    );
    if !talks_to_agent {
        match cni::run(&env, stdin) {
            Ok(out) => assert!(out.stdout.is_empty() || out.stdout.starts_with('{')),
            Err(e) => {
                let _ = serde_json::to_string(&e).expect("errors serialize");
            }
        }
        return;
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => {
            assert!(e.msg.starts_with("network configuration"));
            return;
        }
    };
    let _ = conf.control();
    let (Ok(id), Some(netns)) = (env.container_id(), env.netns.as_deref()) else {
        return;
    };
    let spec = cni::enroll_spec(&env, &conf, netns, id);
    let _ = spec.validate().map_err(|e| e.to_string());
});
