//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_tcp_*`), kept across config reloads like the Envoy counters of [`super::stats`].
//!
//! Cost: the label values a config knows (reporter, destination service, port of an Istio
//! cluster name) pick a series when a config version is built ([`IstioMetrics::requests`] under a
//! lock, at build time only); a request adds to its series' lock-free [`table::Table`] keyed by
//! what only the request knows (response code, flags, protocol, port). Nothing per request
//! locks or allocates; the text is made at scrape time ([`encode`]).

pub mod encode;
mod table;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

pub use self::table::BUCKETS_MS;
use self::table::{Key, Table};
use crate::http::local_reply::Flag;

/// Series per store (requests and TCP each); later label sets are folded into the series whose
/// destination is `"overflow"`.
pub const MAX_SERIES: usize = 1024;

/// Istio's `reporter`: which side of the request this proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reporter {
    /// The client's proxy (outbound listeners).
    Source,
    /// The server's proxy (inbound listeners).
    Destination,
}

impl Reporter {
    /// From a listener's `traffic_direction` (INBOUND: destination, OUTBOUND: source); without
    /// one, Istio's names decide: `virtualInbound` and `inbound*` listeners are inbound.
    pub fn of_listener(direction: Option<&str>, name: &str) -> Self {
        match direction {
            Some("INBOUND") => Self::Destination,
            Some("OUTBOUND") => Self::Source,
            _ if name == "virtualInbound" || name.starts_with("inbound") => Self::Destination,
            _ => Self::Source,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

/// The destination labels a cluster name gives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    /// `destination_service` (the service's FQDN).
    pub service: String,
    /// `destination_service_name`.
    pub name: String,
    /// `destination_service_namespace`.
    pub namespace: String,
    /// `destination_port` when the cluster name carries it.
    pub port: Option<u16>,
}

const UNKNOWN: &str = "unknown";

impl Destination {
    /// Nothing known (no route, no cluster, a cluster name that is not Istio's).
    pub fn unknown() -> Self {
        Self::named(UNKNOWN, None)
    }

    pub(crate) fn named(what: &str, port: Option<u16>) -> Self {
        Self {
            service: what.into(),
            name: what.into(),
            namespace: what.into(),
            port,
        }
    }

    /// From an Istio cluster name, `outbound|80|subset|svc.ns.svc.cluster.local` (or
    /// `inbound|8080||`): the FQDN, its first label as the name and its second as the namespace
    /// when it is a Kubernetes `<name>.<ns>.svc.<domain>` host, and the port. Other names give
    /// [`Destination::unknown`].
    pub fn of_cluster(cluster: &str) -> Self {
        let mut parts = cluster.split('|');
        let (Some(dir), Some(port), Some(_subset), Some(host), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Self::unknown();
        };
        if dir != "outbound" && dir != "inbound" {
            return Self::unknown();
        }
        let port = port.parse().ok();
        if host.is_empty() {
            return Self::named(UNKNOWN, port);
        }
        let labels: Vec<&str> = host.split('.').collect();
        let (name, namespace) = match labels.as_slice() {
            [name, ns, "svc", ..] => (*name, *ns),
            _ => (host, UNKNOWN),
        };
        Self {
            service: host.into(),
            name: name.into(),
            namespace: namespace.into(),
            port,
        }
    }
}

/// The HTTP requests of one (reporter, destination).
#[derive(Debug, Default)]
pub struct RequestSeries {
    port: Option<u16>,
    table: OnceLock<Table>,
}

impl RequestSeries {
    /// Counts one request: the response code (0 when none was sent), Envoy's flag, whether it
    /// was gRPC, the port it was sent to (used when the cluster name gives none), its duration.
    pub fn record(&self, code: u16, flag: Flag, grpc: bool, dst_port: u16, took: Duration) {
        let port = self.port.unwrap_or(dst_port);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.table
            .get_or_init(Table::default)
            .record(Key::new(code, flag, grpc, port), micros);
    }
}

/// The TCP connections of one (reporter, destination).
#[derive(Debug, Default)]
pub struct TcpSeries {
    port: Option<u16>,
    /// `istio_tcp_connections_opened_total`.
    pub opened: AtomicU64,
    /// `istio_tcp_connections_closed_total`.
    pub closed: AtomicU64,
    /// `istio_tcp_sent_bytes_total` (downstream to upstream).
    pub sent: AtomicU64,
    /// `istio_tcp_received_bytes_total` (upstream to downstream).
    pub received: AtomicU64,
}

impl TcpSeries {
    /// A connection to the upstream opened.
    pub fn open(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// It closed after `sent` bytes to the upstream and `received` back.
    pub fn close(&self, sent: u64, received: u64) {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.received.fetch_add(received, Ordering::Relaxed);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The request series of every cluster of one config version as one reporter sees them, built
/// once per version and shared by its HTTP connection managers.
#[derive(Debug)]
pub struct ClusterSeries {
    by_cluster: HashMap<String, Arc<RequestSeries>>,
    unknown: Arc<RequestSeries>,
}

impl ClusterSeries {
    /// The series of each cluster in `names` (see [`Destination::of_cluster`]).
    pub fn build<'a>(
        names: impl IntoIterator<Item = &'a str>,
        m: &IstioMetrics,
        reporter: Reporter,
    ) -> Self {
        Self {
            by_cluster: names
                .into_iter()
                .map(|n| {
                    (
                        n.to_string(),
                        m.requests(reporter, Destination::of_cluster(n)),
                    )
                })
                .collect(),
            unknown: m.requests(reporter, Destination::unknown()),
        }
    }

    /// The series of requests sent to `cluster`.
    pub fn of(&self, cluster: &str) -> &Arc<RequestSeries> {
        self.by_cluster.get(cluster).unwrap_or(&self.unknown)
    }

    /// The series of requests that reached no cluster.
    pub fn unknown(&self) -> &Arc<RequestSeries> {
        &self.unknown
    }
}

type SeriesKey = (Reporter, Destination);

/// Every series of one server, shared by all its config versions.
#[derive(Debug, Default)]
pub struct IstioMetrics {
    requests: Mutex<BTreeMap<SeriesKey, Arc<RequestSeries>>>,
    tcp: Mutex<BTreeMap<SeriesKey, Arc<TcpSeries>>>,
}

fn series<T>(
    map: &Mutex<BTreeMap<SeriesKey, Arc<T>>>,
    reporter: Reporter,
    dest: Destination,
    make: impl Fn(Option<u16>) -> T,
) -> Arc<T> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    let key = if m.len() >= MAX_SERIES && !m.contains_key(&(reporter, dest.clone())) {
        (reporter, Destination::named("overflow", None))
    } else {
        (reporter, dest)
    };
    let port = key.1.port;
    m.entry(key).or_insert_with(|| Arc::new(make(port))).clone()
}

impl IstioMetrics {
    /// The request series of `dest` as seen by `reporter` (config build time only).
    pub fn requests(&self, reporter: Reporter, dest: Destination) -> Arc<RequestSeries> {
        series(&self.requests, reporter, dest, |port| RequestSeries {
            port,
            table: OnceLock::new(),
        })
    }

    /// The TCP series of `dest` as seen by `reporter` (config build time only).
    pub fn tcp(&self, reporter: Reporter, dest: Destination) -> Arc<TcpSeries> {
        series(&self.tcp, reporter, dest, |port| TcpSeries {
            port,
            ..TcpSeries::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_cluster_names_give_the_service_and_others_unknown() {
        let d = Destination::of_cluster("outbound|80||sample-service.default.svc.cluster.local");
        assert_eq!(d.service, "sample-service.default.svc.cluster.local");
        assert_eq!(
            (d.name.as_str(), d.namespace.as_str()),
            ("sample-service", "default")
        );
        assert_eq!(d.port, Some(80));
        let d = Destination::of_cluster("outbound|443||api.example.com");
        assert_eq!(
            (d.name.as_str(), d.namespace.as_str()),
            ("api.example.com", "unknown")
        );
        let d = Destination::of_cluster("inbound|8080||");
        assert_eq!((d.service.as_str(), d.port), ("unknown", Some(8080)));
        assert_eq!(Destination::of_cluster("svc"), Destination::unknown());
        assert_eq!(Destination::of_cluster("a|b|c|d|e"), Destination::unknown());
    }

    #[test]
    fn series_are_shared_by_label_set_and_capped() {
        let m = IstioMetrics::default();
        let a = m.requests(Reporter::Source, Destination::unknown());
        let b = m.requests(Reporter::Source, Destination::unknown());
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..MAX_SERIES + 5 {
            let name = format!("outbound|80||s{i}.ns.svc.cluster.local");
            m.requests(Reporter::Destination, Destination::of_cluster(&name));
        }
        assert_eq!(m.requests.lock().unwrap().len(), MAX_SERIES + 1);
    }

    #[test]
    fn reporter_follows_traffic_direction_then_istio_names() {
        assert_eq!(
            Reporter::of_listener(Some("INBOUND"), "x"),
            Reporter::Destination
        );
        assert_eq!(
            Reporter::of_listener(None, "virtualInbound"),
            Reporter::Destination
        );
        assert_eq!(
            Reporter::of_listener(None, "virtualOutbound"),
            Reporter::Source
        );
        assert_eq!(
            Reporter::of_listener(Some("OUTBOUND"), "inbound_x"),
            Reporter::Source
        );
    }
}
