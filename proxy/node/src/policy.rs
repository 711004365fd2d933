//! Enrollment requests: parsing and validating the user's strings into a [`NetnsPolicy`].
//!
//! Pure (no tokio, no aya): every value is checked before any state is touched, and an error
//! names the option and the value that was rejected.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_common::{flags, mode, Cidr, NetnsPolicy, MAX_CIDRS, MAX_PORTS, PROXY_UID};

/// Inbound ports never captured by default (istio-init's list: HBONE, Prometheus, health, metrics).
pub const DEFAULT_EXCLUDE_INBOUND_PORTS: [u16; 4] = [15008, 15090, 15021, 15020];

/// Capture mode of a pod, as the CLI and the control protocol spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The agent serves the pod's listeners in-process.
    Node,
    /// A `sluice sidecar` process inside the pod owns the listeners.
    Sidecar,
    /// Nothing is captured.
    Off,
}

impl Mode {
    /// The `sluice_common::mode` byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Mode::Node => mode::NODE,
            Mode::Sidecar => mode::SIDECAR,
            Mode::Off => mode::OFF,
        }
    }

    /// Lower-case name (`node`, `sidecar`, `off`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Node => "node",
            Mode::Sidecar => "sidecar",
            Mode::Off => "off",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s {
            "node" => Ok(Mode::Node),
            "sidecar" => Ok(Mode::Sidecar),
            "off" => Ok(Mode::Off),
            other => Err(PolicyError::Mode(other.to_string())),
        }
    }
}

/// A rejected enrollment value. Every variant names the option and the offending text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// `--mode` is not one of node, sidecar, off.
    #[error("unknown mode {0:?} (expected node, sidecar or off)")]
    Mode(String),
    /// An element of a port list is not a port number in 1..=65535.
    #[error(
        "{option}: malformed port {value:?} in {list:?} (expected comma-separated numbers 1-65535)"
    )]
    Port {
        option: &'static str,
        list: String,
        value: String,
    },
    /// An element of a CIDR list is not `addr/len` (or a bare address).
    #[error(
        "{option}: malformed CIDR {value:?} in {list:?} (expected e.g. 10.0.0.0/8 or fd00::/8)"
    )]
    Cidr {
        option: &'static str,
        list: String,
        value: String,
    },
    /// A list is longer than the kernel's fixed-size array.
    #[error("{option}: {count} entries in {list:?}, at most {max} are supported")]
    TooMany {
        option: &'static str,
        list: String,
        count: usize,
        max: usize,
    },
    /// `--fast-path` is not on or off.
    #[error("--fast-path: {0:?} is not on or off")]
    FastPath(String),
    /// `--engine` is not l4 or l7.
    #[error("--engine: {0:?} is not l4 or l7")]
    Engine(String),
}

/// What `sluice enroll` sends to the agent: the user's strings, validated on both ends with
/// [`EnrollSpec::validate`] (the CLI to fail fast, the agent because it trusts no client).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollSpec {
    /// `--netns`: a name under /run/netns or a path.
    pub netns: String,
    /// `--mode`: node, sidecar or off (default node).
    #[serde(default)]
    pub mode: Option<String>,
    /// `--exclude-outbound-ports`, comma separated.
    #[serde(default)]
    pub exclude_outbound_ports: Option<String>,
    /// `--include-outbound-ports`, comma separated (empty: every port).
    #[serde(default)]
    pub include_outbound_ports: Option<String>,
    /// `--exclude-outbound-cidrs`, comma separated.
    #[serde(default)]
    pub exclude_outbound_cidrs: Option<String>,
    /// `--include-outbound-cidrs`, comma separated (empty: every destination).
    #[serde(default)]
    pub include_outbound_cidrs: Option<String>,
    /// `--exclude-inbound-ports`, comma separated (default 15008,15090,15021,15020).
    #[serde(default)]
    pub exclude_inbound_ports: Option<String>,
    /// `--fast-path`: on or off (default on).
    #[serde(default)]
    pub fast_path: Option<String>,
    /// `--engine`: l7 (default: the agent's L7 config when it has one) or l4 (the L4
    /// passthrough for this pod even when the agent has an L7 config). Node mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// `--exempt-uid`: sockets of uid/gid 1337 are not captured (Istio sidecar behaviour).
    #[serde(default)]
    pub exempt_uid: bool,
    /// `--fail-open`: while no proxy listens in the pod, connections go direct instead of failing.
    #[serde(default)]
    pub fail_open: bool,
    /// Who the pod is (container id, pod name/namespace), sent by the CNI plugin; shown by
    /// `sluice status` and used by CNI DEL/CHECK to find the pod by container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodIdentity>,
}

/// A pod as the container runtime names it (CNI_CONTAINERID, K8S_POD_NAME, K8S_POD_NAMESPACE).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodIdentity {
    /// The runtime's container (sandbox) id: the key of CNI ADD/DEL/CHECK.
    pub container_id: String,
    /// Kubernetes pod name, when the runtime passed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Kubernetes pod namespace, when the runtime passed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
}

/// A validated enrollment: the mode and the policy to write for the pod's netns cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enrollment {
    /// Capture mode.
    pub mode: Mode,
    /// The kernel policy.
    pub policy: NetnsPolicy,
}

impl Enrollment {
    /// Whether the agent serves this pod with its L4 passthrough even when it has an L7 config.
    pub fn l4_only(&self) -> bool {
        self.policy.flags & flags::L4_ONLY != 0
    }
}

impl EnrollSpec {
    /// Parses every field; the first bad one is returned, nothing else happens.
    pub fn validate(&self) -> Result<Enrollment, PolicyError> {
        let mode = match &self.mode {
            Some(m) => m.parse()?,
            None => Mode::Node,
        };
        let mut p = NetnsPolicy::zeroed();
        p.mode = mode.as_u8();
        p.fast_path = match self.fast_path.as_deref() {
            // Off unless asked for: a socket in the SockHash gets the kernel's tcp_bpf receive
            // path, whose blocking reads can return a spurious EAGAIN after a wakeup (some
            // applications treat it as an error), so the fast path is opt-in per pod. (Its old
            // reason, ENOMEM for a bulk writer, is gone: the per-socket budget throttles it.)
            None | Some("off") => 0,
            Some("on") => 1,
            Some(other) => return Err(PolicyError::FastPath(other.to_string())),
        };
        p.outbound_port = sluice_common::OUTBOUND_PORT;
        p.inbound_port = sluice_common::INBOUND_PORT;
        if self.fail_open {
            p.flags |= flags::FAIL_OPEN;
        }
        match self.engine.as_deref() {
            None | Some("l7") => {}
            Some("l4") => p.flags |= flags::L4_ONLY,
            Some(other) => return Err(PolicyError::Engine(other.to_string())),
        }
        if self.exempt_uid {
            p.flags |= flags::EXEMPT_UID;
            p.exempt_uid = PROXY_UID;
            p.exempt_gid = PROXY_UID;
        }
        p.n_exclude_outbound_ports = fill_ports(
            "--exclude-outbound-ports",
            self.exclude_outbound_ports.as_deref(),
            &mut p.exclude_outbound_ports,
        )?;
        p.n_include_outbound_ports = fill_ports(
            "--include-outbound-ports",
            self.include_outbound_ports.as_deref(),
            &mut p.include_outbound_ports,
        )?;
        p.n_exclude_inbound_ports = match self.exclude_inbound_ports.as_deref() {
            Some(list) => fill_ports(
                "--exclude-inbound-ports",
                Some(list),
                &mut p.exclude_inbound_ports,
            )?,
            None => {
                let d = DEFAULT_EXCLUDE_INBOUND_PORTS;
                p.exclude_inbound_ports[..d.len()].copy_from_slice(&d);
                d.len() as u8
            }
        };
        p.n_exclude_outbound_cidrs = fill_cidrs(
            "--exclude-outbound-cidrs",
            self.exclude_outbound_cidrs.as_deref(),
            &mut p.exclude_outbound_cidrs,
        )?;
        p.n_include_outbound_cidrs = fill_cidrs(
            "--include-outbound-cidrs",
            self.include_outbound_cidrs.as_deref(),
            &mut p.include_outbound_cidrs,
        )?;
        Ok(Enrollment { mode, policy: p })
    }
}

fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn fill_ports(
    option: &'static str,
    list: Option<&str>,
    out: &mut [u16; MAX_PORTS],
) -> Result<u8, PolicyError> {
    let Some(list) = list else { return Ok(0) };
    let mut n = 0;
    for item in items(list) {
        let port: u16 = match item.parse() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(PolicyError::Port {
                    option,
                    list: list.to_string(),
                    value: item.to_string(),
                })
            }
        };
        if n == MAX_PORTS {
            return Err(PolicyError::TooMany {
                option,
                list: list.to_string(),
                count: items(list).count(),
                max: MAX_PORTS,
            });
        }
        out[n] = port;
        n += 1;
    }
    Ok(n as u8)
}

/// Parses `addr/len` or a bare address into a [`Cidr`] (IPv4 stored v4-mapped).
pub fn parse_cidr(text: &str) -> Option<Cidr> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let mut c = Cidr::zeroed();
    match addr {
        IpAddr::V4(v4) => {
            let len: u8 = match len {
                Some(l) => l.parse().ok().filter(|l| *l <= 32)?,
                None => 32,
            };
            c.addr = v4.to_ipv6_mapped().octets();
            c.prefix_len = len + 96;
        }
        IpAddr::V6(v6) => {
            let len: u8 = match len {
                Some(l) => l.parse().ok().filter(|l| *l <= 128)?,
                None => 128,
            };
            c.addr = v6.octets();
            c.prefix_len = len;
        }
    }
    Some(c)
}

fn fill_cidrs(
    option: &'static str,
    list: Option<&str>,
    out: &mut [Cidr; MAX_CIDRS],
) -> Result<u8, PolicyError> {
    let Some(list) = list else { return Ok(0) };
    let mut n = 0;
    for item in items(list) {
        let cidr = parse_cidr(item).ok_or_else(|| PolicyError::Cidr {
            option,
            list: list.to_string(),
            value: item.to_string(),
        })?;
        if n == MAX_CIDRS {
            return Err(PolicyError::TooMany {
                option,
                list: list.to_string(),
                count: items(list).count(),
                max: MAX_CIDRS,
            });
        }
        out[n] = cidr;
        n += 1;
    }
    Ok(n as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EnrollSpec {
        EnrollSpec {
            netns: "pod".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_istio() {
        let e = spec().validate().unwrap();
        assert_eq!(e.mode, Mode::Node);
        let p = e.policy;
        assert_eq!((p.mode, p.fast_path, p.flags), (mode::NODE, 0, 0));
        assert_eq!((p.outbound_port, p.inbound_port), (15001, 15006));
        assert_eq!(p.n_exclude_inbound_ports, 4);
        assert_eq!(&p.exclude_inbound_ports[..4], &[15008, 15090, 15021, 15020]);
        assert_eq!(p.n_exclude_outbound_ports, 0);
    }

    #[test]
    fn lists_and_flags() {
        let mut s = spec();
        s.mode = Some("sidecar".into());
        s.exclude_outbound_ports = Some("22, 8080".into());
        s.include_outbound_cidrs = Some("10.0.0.0/8,fd00::/8,192.168.1.1".into());
        s.fast_path = Some("off".into());
        s.exempt_uid = true;
        s.fail_open = true;
        let p = s.validate().unwrap().policy;
        assert_eq!(p.mode, mode::SIDECAR);
        assert_eq!(p.fast_path, 0);
        assert_eq!(
            (p.flags, p.exempt_uid, p.exempt_gid),
            (flags::EXEMPT_UID | flags::FAIL_OPEN, 1337, 1337)
        );
        assert_eq!(&p.exclude_outbound_ports[..2], &[22, 8080]);
        assert_eq!(p.n_include_outbound_cidrs, 3);
        let c = p.include_outbound_cidrs[0];
        assert_eq!(c.prefix_len, 104);
        assert!(c.contains(
            &"10.96.0.10"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped()
                .octets()
        ));
        assert_eq!(p.include_outbound_cidrs[1].prefix_len, 8);
        assert_eq!(p.include_outbound_cidrs[2].prefix_len, 128);
    }

    #[test]
    fn bad_values_name_themselves() {
        type Case = (fn(&mut EnrollSpec), &'static str);
        let cases: &[Case] = &[
            (|s| s.mode = Some("turbo".into()), "\"turbo\""),
            (
                |s| s.exclude_outbound_ports = Some("80,http".into()),
                "\"http\"",
            ),
            (|s| s.include_outbound_ports = Some("0".into()), "\"0\""),
            (
                |s| s.exclude_inbound_ports = Some("70000".into()),
                "\"70000\"",
            ),
            (
                |s| s.exclude_outbound_cidrs = Some("10.0.0.0/33".into()),
                "\"10.0.0.0/33\"",
            ),
            (
                |s| s.include_outbound_cidrs = Some("nope".into()),
                "\"nope\"",
            ),
            (|s| s.fast_path = Some("maybe".into()), "\"maybe\""),
            (
                |s| {
                    s.exclude_outbound_ports = Some(
                        (1..=17)
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                },
                "at most 16",
            ),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle}");
        }
    }
}
