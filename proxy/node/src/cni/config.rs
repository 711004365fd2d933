//! The CNI exec environment (`CNI_*` variables) and the network configuration on stdin.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use super::{CniError, ErrorCode};
use crate::agent::protocol::DEFAULT_CONTROL;

/// The `CNI_*` environment a runtime sets for one plugin call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`: ADD, DEL, CHECK, VERSION, STATUS or GC.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: path of the pod's network namespace.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, split at `;` into `KEY=VALUE` pairs.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`.
    pub path: Option<String>,
}

impl CniEnv {
    /// Reads the variables through `get` (`std::env::var` in the binary).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let args = nonempty("CNI_ARGS")
            .map(|a| parse_args(&a))
            .unwrap_or_default();
        Self {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS"),
            ifname: nonempty("CNI_IFNAME"),
            args,
            path: nonempty("CNI_PATH"),
        }
    }

    /// A required variable, or error code 4 naming it.
    pub fn require<'a>(&self, name: &str, v: &'a Option<String>) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnv,
                format!("{name} is required for {}", self.command),
                "",
            )
        })
    }
}

/// Longest container id accepted (runtimes use 64 hex characters; the spec sets no bound).
pub const MAX_CONTAINER_ID: usize = 1024;

impl CniEnv {
    /// `CNI_CONTAINERID`, required and valid as the CNI spec (and libcni) define it: not empty,
    /// an alphanumeric first, then alphanumerics, `_`, `-` and `.` only, at most
    /// [`MAX_CONTAINER_ID`] characters. It goes into the agent's records and log lines, so
    /// newlines, spaces or megabytes never get there.
    pub fn container_id(&self) -> Result<&str, CniError> {
        let id = self.require("CNI_CONTAINERID", &self.container_id)?;
        let bad = |why: &str| {
            let shown: String = id.chars().take(64).collect();
            CniError::new(
                ErrorCode::InvalidEnv,
                format!("CNI_CONTAINERID is invalid: {why}"),
                format!("{shown:?}{}", if id.len() > 64 { "..." } else { "" }),
            )
        };
        if id.len() > MAX_CONTAINER_ID {
            return Err(bad(&format!(
                "{} characters, at most {MAX_CONTAINER_ID}",
                id.len()
            )));
        }
        let mut chars = id.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Err(bad("must start with a letter or digit"));
        }
        if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c))) {
            return Err(bad(&format!(
                "{c:?} is not allowed (letters, digits, '_', '-', '.')"
            )));
        }
        Ok(id)
    }
}

/// `K8S_POD_NAME=a;K8S_POD_NAMESPACE=b;IgnoreUnknown=1` -> map (pieces without `=` are skipped).
pub fn parse_args(args: &str) -> BTreeMap<String, String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A list option given either as `"22,8080"` or as `[22, 8080]` / `["10.0.0.0/8"]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ListOpt {
    /// Comma separated text.
    Text(String),
    /// JSON array of numbers or strings.
    Items(Vec<serde_json::Value>),
}

impl ListOpt {
    /// The comma-separated form `EnrollSpec` takes.
    pub fn joined(&self) -> String {
        match self {
            ListOpt::Text(t) => t.clone(),
            ListOpt::Items(v) => v
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// The network configuration the runtime writes to stdin (one plugin of a conflist, with
/// `name`, `cniVersion` and `prevResult` filled in), with sluice's options.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The spec version the runtime speaks.
    pub cni_version: String,
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// Plugin type (`sluice-cni`).
    #[serde(default, rename = "type")]
    pub plugin_type: String,
    /// Result of the previous plugins in the chain; printed back unchanged on ADD.
    #[serde(default)]
    pub prev_result: Option<serde_json::Value>,
    /// Runtime-supplied values (`podAnnotations`, or `sluice.io/mode` directly).
    #[serde(default)]
    pub runtime_config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Agent control socket (default /run/sluice/agent.sock).
    #[serde(default)]
    pub control: Option<PathBuf>,
    /// Default mode for pods without a `sluice.io/mode` annotation (node, sidecar, off).
    #[serde(default)]
    pub mode: Option<String>,
    /// Agent unreachable on ADD: succeed with a warning (pod runs uncaptured) instead of failing.
    #[serde(default)]
    pub fail_open: bool,
    /// Kubernetes namespaces never enrolled (e.g. kube-system): ADD passes the result through.
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Outbound destination ports never captured.
    #[serde(default)]
    pub exclude_outbound_ports: Option<ListOpt>,
    /// Only these outbound ports are captured.
    #[serde(default)]
    pub include_outbound_ports: Option<ListOpt>,
    /// Outbound destination CIDRs never captured.
    #[serde(default)]
    pub exclude_outbound_cidrs: Option<ListOpt>,
    /// Only destinations in these CIDRs are captured.
    #[serde(default)]
    pub include_outbound_cidrs: Option<ListOpt>,
    /// Inbound ports never captured (default 15008,15090,15021,15020).
    #[serde(default)]
    pub exclude_inbound_ports: Option<ListOpt>,
    /// sk_msg fast path: on or off (default off, see `sluice enroll --fast-path`).
    #[serde(default)]
    pub fast_path: Option<String>,
    /// l7 or l4 for node-mode pods (see `sluice enroll --engine`); a pod's
    /// `sluice.io/engine` annotation (runtimeConfig `podAnnotations`) wins.
    #[serde(default)]
    pub engine: Option<String>,
}

/// The pod annotation (or CNI_ARGS key) choosing a pod's mode.
pub const MODE_ANNOTATION: &str = "sluice.io/mode";
/// The pod annotation choosing the engine of a node-mode pod (l7 | l4).
pub const ENGINE_ANNOTATION: &str = "sluice.io/engine";
/// CNI_ARGS spelling of the same (runtimes pass `KEY=VALUE` args; `/` is awkward there).
pub const MODE_ARG: &str = "SLUICE_MODE";

impl NetConf {
    /// Parses stdin; a decode error is code 6, naming the field.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let de = &mut serde_json::Deserializer::from_slice(stdin);
        serde_path_to_error::deserialize(de).map_err(|e| {
            CniError::new(
                ErrorCode::DecodeFailure,
                format!("network configuration: {}: {}", e.path(), e.inner()),
                "",
            )
        })
    }

    /// The agent socket.
    pub fn control(&self) -> PathBuf {
        self.control
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL))
    }

    /// The pod's mode: runtimeConfig (`podAnnotations."sluice.io/mode"` or `"sluice.io/mode"`),
    /// then CNI_ARGS (`sluice.io/mode=` or `SLUICE_MODE=`), then the config's `mode`.
    pub fn mode_for(&self, env: &CniEnv) -> Option<String> {
        self.annotation(MODE_ANNOTATION)
            .or_else(|| env.args.get(MODE_ANNOTATION).cloned())
            .or_else(|| env.args.get(MODE_ARG).cloned())
            .or_else(|| self.mode.clone())
    }

    /// The pod's engine: runtimeConfig (`podAnnotations."sluice.io/engine"` or
    /// `"sluice.io/engine"`), then the config's `engine`.
    pub fn engine_for(&self) -> Option<String> {
        self.annotation(ENGINE_ANNOTATION)
            .or_else(|| self.engine.clone())
    }

    /// A pod annotation passed in runtimeConfig (`podAnnotations.KEY`, or `KEY` itself).
    fn annotation(&self, key: &str) -> Option<String> {
        let rc = self.runtime_config.as_ref()?;
        rc.get("podAnnotations")
            .and_then(|a| a.get(key))
            .or_else(|| rc.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> CniEnv {
        CniEnv {
            command: "ADD".into(),
            container_id: Some(id.to_string()),
            ..CniEnv::default()
        }
    }

    #[test]
    fn container_ids_are_checked_like_the_spec() {
        let long = "a".repeat(64);
        for ok in ["c1", "0f3e2a", "pod_1-a.b", long.as_str()] {
            assert_eq!(with_id(ok).container_id().unwrap(), ok);
        }
        let huge = format!("{}\nINJECTED", "a".repeat(10_000));
        for (bad, why) in [
            (huge.as_str(), "10009 characters"),
            ("abc\ndef", "'\\n' is not allowed"),
            ("-abc", "must start with a letter or digit"),
            ("a b", "' ' is not allowed"),
            ("a/b", "'/' is not allowed"),
        ] {
            let e = with_id(bad).container_id().unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidEnv as u32, "{bad:?}");
            assert!(e.msg.contains(why), "{bad:?}: {}", e.msg);
            assert!(e.details.len() < 100, "details are bounded: {}", e.details);
        }
        let missing = CniEnv {
            command: "ADD".into(),
            ..CniEnv::default()
        };
        assert!(missing.container_id().unwrap_err().msg.contains("required"));
    }

    #[test]
    fn args_and_mode_precedence() {
        let env = CniEnv::from_vars(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_ARGS" => Some(
                "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop;SLUICE_MODE=sidecar"
                    .into(),
            ),
            "CNI_NETNS" => Some(String::new()),
            _ => None,
        });
        assert_eq!(env.args["K8S_POD_NAME"], "web-0");
        assert_eq!(env.netns, None, "empty means unset");
        let mut conf = NetConf::parse(br#"{"cniVersion":"1.0.0","mode":"off"}"#).unwrap();
        assert_eq!(conf.mode_for(&env).as_deref(), Some("sidecar"));
        conf.runtime_config =
            serde_json::from_str(r#"{"podAnnotations":{"sluice.io/mode":"node"}}"#).unwrap();
        assert_eq!(conf.mode_for(&env).as_deref(), Some("node"));
        let plain = CniEnv::default();
        conf.runtime_config = None;
        assert_eq!(conf.mode_for(&plain).as_deref(), Some("off"));
    }

    #[test]
    fn lists_as_text_or_arrays() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","excludeOutboundPorts":[22,8080],"excludeOutboundCidrs":"10.0.0.0/8"}"#,
        )
        .unwrap();
        assert_eq!(conf.exclude_outbound_ports.unwrap().joined(), "22,8080");
        assert_eq!(conf.exclude_outbound_cidrs.unwrap().joined(), "10.0.0.0/8");
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","failOpen":"yes"}"#).unwrap_err();
        assert_eq!(err.code, 6);
        assert!(err.msg.contains("failOpen"), "{}", err.msg);
    }
}
