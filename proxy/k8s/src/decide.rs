//! The capture decision: a pod and its namespace (as the API server returns them) -> whether the
//! agent captures the pod, in which mode and with which enrollment options. Pure: no I/O, no
//! clock; the reconcile loop calls it on every pass.
//!
//! Istio's vocabulary, read the way Istio's sidecar injector reads it, so an Istio user changes
//! nothing:
//! - Namespace selection (first that applies): label `sluice.io/dataplane-mode` = `node` |
//!   `sidecar` (captured, that mode by default) | `off` (never); label `istio-injection` =
//!   `enabled` (captured) or anything else (never: Istio's webhook only matches `enabled`);
//!   label `istio.io/rev` (a revision-labelled namespace is captured); otherwise only pods
//!   labelled `sidecar.istio.io/inject: "true"` (Istio's object selector: the label, exactly
//!   `true`).
//! - Pod opt-out: label `sidecar.istio.io/inject` (preferred, as in Istio) or else the
//!   annotation of the same name; `y`, `yes`, `true`, `on` (any case) or empty keep the pod
//!   captured, any other value opts it out (Istio reads those as false).
//! - Mode: pod annotation `sluice.io/mode` (node | sidecar | off), else the namespace's
//!   `sluice.io/dataplane-mode`, else the agent's default. `off` stays enrolled with capture
//!   off, so switching back is a live mode switch.
//! - `traffic.sidecar.istio.io/*` annotations become enrollment options; what the agent's
//!   policy cannot express is an [`DecideError::Unsupported`] naming the annotation, never
//!   dropped.
//! - Never captured: hostNetwork pods, finished pods (Succeeded/Failed), the agent's own
//!   namespace and the namespaces Istio never injects (kube-system, kube-public,
//!   kube-node-lease, local-path-storage).

use k8s_openapi::api::core::v1::{Namespace, Pod};
use sluice_node::policy::{EnrollSpec, Mode, PolicyError};

/// Namespace label choosing sluice's data plane mode for the namespace.
pub const NS_DATAPLANE_MODE: &str = "sluice.io/dataplane-mode";
/// Istio's namespace injection label.
pub const NS_ISTIO_INJECTION: &str = "istio-injection";
/// Istio's revision label (a namespace carrying it is injected by that revision).
pub const NS_ISTIO_REV: &str = "istio.io/rev";
/// Istio's pod label and annotation choosing injection.
pub const POD_INJECT: &str = "sidecar.istio.io/inject";
/// sluice's pod annotation choosing the mode.
pub const POD_MODE: &str = "sluice.io/mode";
/// sluice's pod annotation choosing what serves a node-mode pod: l7 (the agent's L7 config, the
/// default) or l4 (the passthrough).
pub const POD_ENGINE: &str = "sluice.io/engine";
/// Prefix of Istio's traffic annotations.
pub const TRAFFIC_PREFIX: &str = "traffic.sidecar.istio.io/";

/// Namespaces Istio's injector never injects (its `IgnoredNamespaces`).
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// What the decision needs besides the two objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The agent's own namespace (`POD_NAMESPACE`): never captured.
    pub own_namespace: Option<String>,
    /// Mode of a captured pod with no `sluice.io/mode` and no namespace mode.
    pub default_mode: Mode,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            own_namespace: None,
            default_mode: Mode::Node,
        }
    }
}

/// The outcome for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
// One per pod and pass, never stored in bulk: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Enroll the pod with this mode and these options.
    Capture(Capture),
    /// Leave the pod uncaptured (unenroll it if enrolled); the reason names the label,
    /// annotation or field that decided.
    Skip(String),
}

/// A captured pod's enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// node, sidecar or off.
    pub mode: Mode,
    /// The enrollment options (`netns` and `pod` empty: the reconcile fills them in).
    pub spec: EnrollSpec,
    /// Which label selected the pod (for logs).
    pub selected_by: String,
}

/// A pod whose labels or annotations cannot be honoured. The reconcile leaves such a pod as it
/// is (the running state stays, as for any rejected configuration) and logs this.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The value is not valid for its key.
    #[error("{object}: {key}={value:?}: {reason}")]
    Malformed {
        /// `pod NS/NAME` or `namespace NS`.
        object: String,
        /// The label or annotation.
        key: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The value is valid for Istio but the agent's policy cannot express it yet.
    #[error("{object}: {key}={value:?} is not supported: {reason}")]
    Unsupported {
        /// `pod NS/NAME` or `namespace NS`.
        object: String,
        /// The annotation.
        key: String,
        /// Its value.
        value: String,
        /// What the agent cannot do.
        reason: String,
    },
}

/// `NAMESPACE/NAME` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Decides capture for `pod` in `ns`.
pub fn decide(pod: &Pod, ns: &Namespace, settings: &Settings) -> Result<Decision, DecideError> {
    let skip = |why: String| Ok(Decision::Skip(why));
    let pod_obj = format!("pod {}", pod_key(pod));
    let ns_name = ns.metadata.name.as_deref().unwrap_or("");
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return skip("hostNetwork pod: it shares the node's network namespace".into());
    }
    if settings.own_namespace.as_deref() == Some(ns_name) {
        return skip(format!("namespace {ns_name} is the agent's own"));
    }
    if IGNORED_NAMESPACES.contains(&ns_name) {
        return skip(format!(
            "namespace {ns_name} is never captured (as in Istio)"
        ));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if let Some(p @ ("Succeeded" | "Failed")) = phase {
        return skip(format!("pod phase {p}: nothing runs"));
    }
    let ns_obj = format!("namespace {ns_name}");
    let ns_label = |k: &str| label(ns.metadata.labels.as_ref(), k);
    let pod_label = |k: &str| label(pod.metadata.labels.as_ref(), k);
    let pod_annotation = |k: &str| label(pod.metadata.annotations.as_ref(), k);

    // Namespace selection.
    let mut ns_mode = None;
    let selected_by = if let Some(v) = ns_label(NS_DATAPLANE_MODE) {
        let m = parse_mode(&ns_obj, NS_DATAPLANE_MODE, v)?;
        if m == Mode::Off {
            return skip(format!("{ns_obj} has {NS_DATAPLANE_MODE}=off"));
        }
        ns_mode = Some(m);
        format!("{ns_obj} label {NS_DATAPLANE_MODE}={v}")
    } else if let Some(v) = ns_label(NS_ISTIO_INJECTION) {
        if v != "enabled" {
            return skip(format!("{ns_obj} has {NS_ISTIO_INJECTION}={v}"));
        }
        format!("{ns_obj} label {NS_ISTIO_INJECTION}=enabled")
    } else if let Some(v) = ns_label(NS_ISTIO_REV) {
        format!("{ns_obj} label {NS_ISTIO_REV}={v}")
    } else if pod_label(POD_INJECT) == Some("true") {
        format!("pod label {POD_INJECT}=true")
    } else {
        return skip(format!(
            "{ns_obj} has no {NS_ISTIO_INJECTION}=enabled, {NS_ISTIO_REV} or {NS_DATAPLANE_MODE} \
             label and the pod no {POD_INJECT}=true label"
        ));
    };

    // Pod opt-out: the label wins over the annotation, as in Istio.
    let inject = match (pod_label(POD_INJECT), pod_annotation(POD_INJECT)) {
        (Some(v), _) => Some(("label", v)),
        (None, Some(v)) => Some(("annotation", v)),
        (None, None) => None,
    };
    if let Some((kind, v)) = inject {
        let truthy = ["y", "yes", "true", "on", ""].contains(&v.to_ascii_lowercase().as_str());
        if !truthy {
            return skip(format!("pod {kind} {POD_INJECT}={v}"));
        }
    }

    let mode = match pod_annotation(POD_MODE) {
        Some(v) => parse_mode(&pod_obj, POD_MODE, v)?,
        None => ns_mode.unwrap_or(settings.default_mode),
    };
    let spec = traffic_options(&pod_obj, pod, mode)?;
    Ok(Decision::Capture(Capture {
        mode,
        spec,
        selected_by,
    }))
}

fn label<'a>(
    map: Option<&'a std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    map.and_then(|m| m.get(key)).map(String::as_str)
}

fn parse_mode(object: &str, key: &str, value: &str) -> Result<Mode, DecideError> {
    value.parse().map_err(|_| DecideError::Malformed {
        object: object.into(),
        key: key.into(),
        value: value.into(),
        reason: "expected node, sidecar or off".into(),
    })
}

/// One `traffic.sidecar.istio.io/*` annotation and the enrollment field it fills.
#[derive(Clone, Copy)]
enum Field {
    ExcludeOutboundPorts,
    ExcludeInboundPorts,
    ExcludeOutboundCidrs,
    IncludeOutboundCidrs,
}

impl Field {
    fn slot(self, spec: &mut EnrollSpec) -> &mut Option<String> {
        match self {
            Field::ExcludeOutboundPorts => &mut spec.exclude_outbound_ports,
            Field::ExcludeInboundPorts => &mut spec.exclude_inbound_ports,
            Field::ExcludeOutboundCidrs => &mut spec.exclude_outbound_cidrs,
            Field::IncludeOutboundCidrs => &mut spec.include_outbound_cidrs,
        }
    }
}

/// The traffic annotations into enrollment options: checked one by one with the agent's own
/// validation, so an error names the annotation.
fn traffic_options(object: &str, pod: &Pod, mode: Mode) -> Result<EnrollSpec, DecideError> {
    let mut spec = EnrollSpec {
        mode: Some(mode.name().to_string()),
        ..Default::default()
    };
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return Ok(spec);
    };
    let unsupported = |key: &str, value: &str, reason: &str| DecideError::Unsupported {
        object: object.into(),
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    if let Some(engine) = annotations.get(POD_ENGINE) {
        let one = EnrollSpec {
            engine: Some(engine.clone()),
            ..Default::default()
        };
        if let Err(e) = one.validate() {
            return Err(DecideError::Malformed {
                object: object.into(),
                key: POD_ENGINE.into(),
                value: engine.clone(),
                reason: e.to_string(),
            });
        }
        spec.engine = one.engine;
    }
    let include_ranges = annotations.get(&format!("{TRAFFIC_PREFIX}includeOutboundIPRanges"));
    let all_destinations = include_ranges.is_none_or(|r| has_wildcard(r));
    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(TRAFFIC_PREFIX) else {
            continue;
        };
        let field =
            match name {
                "excludeOutboundPorts" => Field::ExcludeOutboundPorts,
                "excludeInboundPorts" => Field::ExcludeInboundPorts,
                "excludeOutboundIPRanges" => Field::ExcludeOutboundCidrs,
                "includeOutboundIPRanges" if has_wildcard(value) => continue,
                "includeOutboundIPRanges" if value.trim().is_empty() => {
                    return Err(unsupported(
                        key,
                        value,
                        "capturing no outbound destination cannot be expressed (an empty include \
                     list means every destination to the agent); use sluice.io/mode: off",
                    ))
                }
                "includeOutboundIPRanges" => Field::IncludeOutboundCidrs,
                "includeInboundPorts" if has_wildcard(value) => continue,
                "includeInboundPorts" => {
                    return Err(unsupported(
                        key,
                        value,
                        "the agent captures every inbound port but excludeInboundPorts; a list of \
                     ports to capture (or none) cannot be expressed yet",
                    ))
                }
                // Istio: these ports are captured whatever the destination IP; with every
                // destination captured that adds nothing.
                "includeOutboundPorts" if all_destinations => continue,
                "includeOutboundPorts" => return Err(unsupported(
                    key,
                    value,
                    "capturing these ports outside includeOutboundIPRanges cannot be expressed \
                     (the agent's include lists must both match)",
                )),
                _ => {
                    return Err(unsupported(
                        key,
                        value,
                        "sluice does not honour this annotation",
                    ))
                }
            };
        let mut one = EnrollSpec::default();
        *field.slot(&mut one) = Some(value.clone());
        if let Err(e) = one.validate() {
            return Err(match e {
                PolicyError::TooMany { count, max, .. } => unsupported(
                    key,
                    value,
                    &format!("{count} entries, the agent's policy holds at most {max}"),
                ),
                other => DecideError::Malformed {
                    object: object.into(),
                    key: key.clone(),
                    value: value.clone(),
                    reason: other.to_string(),
                },
            });
        }
        *field.slot(&mut spec) = Some(value.clone());
    }
    Ok(spec)
}

fn has_wildcard(list: &str) -> bool {
    list.split(',').any(|i| i.trim() == "*")
}

#[cfg(test)]
#[path = "decide/tests.rs"]
mod tests;
