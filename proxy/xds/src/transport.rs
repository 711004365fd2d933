//! The channel to the management server: plaintext HTTP/2 over TCP (the ADS cluster's first
//! `socket_address` endpoint) or a unix socket (its `pipe` endpoint), and the reconnect backoff
//! (jittered exponential, 100 ms doubling up to 15 s). With a CA ([`Credentials`], node mode's
//! `--xds-ca`) the TCP connection is TLS (rustls, ALPN h2, chain and name verified); with a
//! bootstrap whose ADS cluster has a `transport_socket`, it is that cluster's TLS, as Envoy
//! would originate it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use hyper_util::rt::TokioIo;
use sluice_engine::{
    config::{Bootstrap, EndpointAddress},
    upstream::tls::TlsOrigin,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::credentials::Credentials;

/// Where the ADS server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` (an IP endpoint of the ADS cluster).
    Tcp(SocketAddr),
    /// A unix socket path (the ADS cluster's `pipe` endpoint).
    Pipe(PathBuf),
    /// A `google_grpc` target's host name, resolved on every connect (IPv4 first), so a
    /// control plane that moves is followed and a name that does not resolve yet is retried.
    Dns {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

impl Target {
    /// The ADS cluster's first endpoint (a pipe first, else an IP endpoint).
    pub fn from_bootstrap(b: &Bootstrap) -> Result<Self, String> {
        let d = b
            .dynamic_resources
            .as_ref()
            .ok_or("the bootstrap has no dynamic_resources")?;
        if let Some(p) = d.ads.pipes.first() {
            return Ok(Target::Pipe(p.clone()));
        }
        let cluster = b
            .cluster(&d.ads.cluster_name)
            .ok_or_else(|| format!("ADS cluster {:?} not found", d.ads.cluster_name))?;
        cluster
            .endpoints
            .iter()
            .find_map(|e| match &e.address {
                EndpointAddress::Ip(a) => Some(Target::Tcp(*a)),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "ADS cluster {:?} has no IP or pipe endpoint (host names are not supported for the ADS cluster yet)",
                    d.ads.cluster_name
                )
            })
    }
}

impl Target {
    /// A gRPC target URI (`host:port`, `dns:host:port`, `dns:///host:port`, `ipv4:a.b.c.d:port`,
    /// `ipv6:[::1]:port`, `unix:path`, `unix:///path`) and its host (the name a TLS server's
    /// certificate must carry; empty for unix). A host name is resolved now (IPv4 first).
    pub fn from_target_uri(uri: &str) -> Result<(Self, String), String> {
        let bad = |why: &str| format!("target_uri {uri:?}: {why}");
        if let Some(path) = uri.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad("empty unix socket path"));
            }
            return Ok((Target::Pipe(path.into()), String::new()));
        }
        let hostport = ["dns:///", "dns:", "ipv4:", "ipv6:"]
            .iter()
            .find_map(|p| uri.strip_prefix(p))
            .unwrap_or(uri);
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let target = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Target::Tcp(SocketAddr::new(ip, port)),
            Err(_) => Target::Dns {
                host: host.clone(),
                port,
            },
        };
        Ok((target, host))
    }

    /// The address to connect to now: a [`Target::Dns`] name resolved (IPv4 first).
    async fn resolved(&self) -> Result<Target, String> {
        let Target::Dns { host, port } = self else {
            return Ok(self.clone());
        };
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .collect();
        addrs.sort_by_key(SocketAddr::is_ipv6);
        addrs
            .first()
            .map(|a| Target::Tcp(*a))
            .ok_or_else(|| format!("resolve {host}: no address"))
    }
}

/// Connects a gRPC channel to `target`, over TLS when `creds` has a CA or the ADS cluster's TLS.
pub async fn connect(target: &Target, creds: &Credentials) -> Result<Channel, String> {
    let target = &target.resolved().await?;
    if let Some(origin) = creds.cluster_tls()? {
        return connect_cluster_tls(target, origin).await;
    }
    let tls = creds.tls()?;
    match (target, tls) {
        (Target::Tcp(addr), Some((config, name))) => {
            let addr = *addr;
            let connector = tokio_rustls::TlsConnector::from(config);
            Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let (connector, name) = (connector.clone(), name.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        tcp.set_nodelay(true)?;
                        let tls = connector.connect(name, tcp).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(tls))
                    }
                }))
                .await
                .map_err(|e| format!("connect {addr} (TLS): {e}"))
        }
        (Target::Pipe(path), Some(_)) => Err(format!(
            "TLS over the unix socket {} is not supported",
            path.display()
        )),
        (Target::Tcp(addr), None) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect {addr}: {e}")),
        (Target::Pipe(path), None) => {
            let path = path.clone();
            let shown = path.display().to_string();
            Endpoint::from_static("http://localhost")
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(s))
                    }
                }))
                .await
                .map_err(|e| format!("connect unix:{shown}: {e}"))
        }
        (Target::Dns { host, .. }, _) => Err(format!("{host} not resolved")),
    }
}

/// TLS from the bootstrap's ADS cluster (`transport_socket`), over TCP.
async fn connect_cluster_tls(target: &Target, origin: TlsOrigin) -> Result<Channel, String> {
    let addr = match target {
        Target::Tcp(addr) => *addr,
        Target::Pipe(path) => {
            return Err(format!(
                "TLS over the unix socket {} is not supported",
                path.display()
            ))
        }
        Target::Dns { host, .. } => return Err(format!("{host} not resolved")),
    };
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let origin = origin.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (tls, _h2) = origin.connect(tcp, false, None).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("connect {addr} (TLS): {e}"))
}

/// The wait before reconnect attempt `attempt` (0-based): uniformly random in
/// `[cap/2, cap]` with `cap = min(100 ms * 2^attempt, 15 s)`.
pub fn backoff(attempt: u32) -> Duration {
    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(15);
    let cap = BASE
        .checked_mul(1u32 << attempt.min(16))
        .unwrap_or(MAX)
        .min(MAX);
    let ms = cap.as_millis() as u64;
    Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_uris_as_grpc_names_them() {
        let t = |u: &str| Target::from_target_uri(u).unwrap();
        let ip = |a: &str| Target::Tcp(a.parse().unwrap());
        assert_eq!(
            t("127.0.0.1:15012"),
            (ip("127.0.0.1:15012"), "127.0.0.1".into())
        );
        assert_eq!(
            t("ipv4:10.0.0.1:15010"),
            (ip("10.0.0.1:15010"), "10.0.0.1".into())
        );
        assert_eq!(t("ipv6:[::1]:15010"), (ip("[::1]:15010"), "::1".into()));
        let dns = Target::Dns {
            host: "istiod.istio-system.svc".into(),
            port: 15012,
        };
        for u in [
            "istiod.istio-system.svc:15012",
            "dns:istiod.istio-system.svc:15012",
            "dns:///istiod.istio-system.svc:15012",
        ] {
            assert_eq!(t(u), (dns.clone(), "istiod.istio-system.svc".into()), "{u}");
        }
        assert_eq!(
            t("unix:///run/xds.sock").0,
            Target::Pipe("/run/xds.sock".into())
        );
        assert_eq!(
            t("unix:relative.sock").0,
            Target::Pipe("relative.sock".into())
        );
        for bad in ["istiod", "istiod:port", ":15012", "unix:"] {
            let e = Target::from_target_uri(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_when_connecting() {
        let t = Target::Dns {
            host: "localhost".into(),
            port: 15010,
        };
        assert_eq!(
            t.resolved().await.unwrap(),
            Target::Tcp("127.0.0.1:15010".parse().unwrap())
        );
    }

    #[test]
    fn backoff_grows_jittered_and_caps_at_15s() {
        for a in 0..40 {
            let d = backoff(a);
            let cap = Duration::from_millis(100 * (1u64 << a.min(16))).min(Duration::from_secs(15));
            assert!(d <= cap && d >= cap / 2, "attempt {a}: {d:?} vs {cap:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(30) >= Duration::from_millis(7500));
    }
}
