//! Scrape-time exposition of the Istio metrics of one server (`/stats/prometheus`, the sidecar's
//! 15090) or of many (the node agent's endpoint, each pod's series labelled `pod` and
//! `namespace`), in Prometheus' text format through `prometheus-client`'s [`Collector`]. Series
//! with the same labels in several servers of one target (a pod's outbound and inbound servers)
//! are summed.

use std::{collections::BTreeMap, sync::atomic::Ordering, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{counter::ConstCounter, MetricType},
    registry::Registry,
};

use super::{table::BUCKETS_MS, IstioMetrics, Reporter};

/// The servers of one scrape target and the labels their series get.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Put first on every series (node mode: `pod`, `namespace`).
    pub labels: Vec<(&'static str, String)>,
    /// The workload's namespace when known: `source_workload_namespace` on series this proxy
    /// reports as source, `destination_workload_namespace` on those it reports as destination.
    pub workload_namespace: Option<String>,
    /// The servers' metrics.
    pub metrics: Vec<Arc<IstioMetrics>>,
    /// At most this many label sets per family for this target (0: no cap); the others are
    /// summed into one series whose destination, protocol, code and flags read `overflow`.
    pub max_series: usize,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Requests {
    count: u64,
    buckets: [u64; BUCKETS_MS.len() + 1],
    sum_us: u64,
}

#[derive(Debug, Default)]
struct Tcp {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

/// The aggregated series of a scrape.
#[derive(Debug, Default)]
struct Snapshot {
    requests: BTreeMap<Labels, Requests>,
    tcp: BTreeMap<Labels, Tcp>,
}

fn base(t: &Target, reporter: Reporter, d: &super::Destination, port: Option<u16>) -> Labels {
    let mut l = t.labels.clone();
    l.push(("reporter", reporter.as_str().into()));
    if let Some(ns) = &t.workload_namespace {
        let key = match reporter {
            Reporter::Source => "source_workload_namespace",
            Reporter::Destination => "destination_workload_namespace",
        };
        l.push((key, ns.clone()));
    }
    l.push(("destination_service", d.service.clone()));
    l.push(("destination_service_name", d.name.clone()));
    l.push(("destination_service_namespace", d.namespace.clone()));
    l.push((
        "destination_port",
        port.map_or_else(|| "unknown".into(), |p| p.to_string()),
    ));
    l
}

impl Snapshot {
    fn take(targets: &[Target]) -> Self {
        let mut s = Self::default();
        for t in targets {
            let mut seen = Seen::default();
            for m in &t.metrics {
                s.add(t, m, &mut seen);
            }
        }
        s
    }

    fn add(&mut self, t: &Target, m: &IstioMetrics, seen: &mut Seen) {
        let requests = m.requests.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((reporter, dest), series) in requests {
            let Some(table) = series.table.get() else {
                continue;
            };
            for (key, slot) in table.used() {
                let (port, protocol, code, flags) = match key.parts() {
                    Some((code, flag, grpc, port)) => (
                        Some(port),
                        if grpc { "grpc" } else { "http" },
                        code.to_string(),
                        flag.as_str(),
                    ),
                    None => (series.port, "unknown", "overflow".into(), "-"),
                };
                let mut l = base(t, reporter, &dest, port);
                l.push(("request_protocol", protocol.into()));
                l.push(("response_code", code));
                l.push(("response_flags", flags.into()));
                let l = seen.cap(&self.requests, l, t, reporter, false);
                let r = self.requests.entry(l).or_default();
                r.count += slot.count.load(Ordering::Relaxed);
                r.sum_us += slot.sum_us.load(Ordering::Relaxed);
                for (sum, b) in r.buckets.iter_mut().zip(&slot.buckets) {
                    *sum += b.load(Ordering::Relaxed);
                }
            }
        }
        let tcp = m.tcp.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((reporter, dest), series) in tcp {
            let mut l = base(t, reporter, &dest, series.port);
            l.push(("request_protocol", "tcp".into()));
            let l = seen.cap(&self.tcp, l, t, reporter, true);
            let c = self.tcp.entry(l).or_default();
            c.opened += series.opened.load(Ordering::Relaxed);
            c.closed += series.closed.load(Ordering::Relaxed);
            c.sent += series.sent.load(Ordering::Relaxed);
            c.received += series.received.load(Ordering::Relaxed);
        }
    }
}

/// The label sets one target has put in each family so far.
#[derive(Debug, Default)]
struct Seen {
    requests: usize,
    tcp: usize,
}

impl Seen {
    /// `labels`, or the target's overflow labels when `labels` is new to `family` and the
    /// target is at its cap.
    fn cap<T>(
        &mut self,
        family: &BTreeMap<Labels, T>,
        labels: Labels,
        t: &Target,
        reporter: Reporter,
        tcp: bool,
    ) -> Labels {
        if family.contains_key(&labels) {
            return labels;
        }
        let n = if tcp {
            &mut self.tcp
        } else {
            &mut self.requests
        };
        if t.max_series == 0 || *n < t.max_series {
            *n += 1;
            return labels;
        }
        let overflow = super::Destination::named("overflow", None);
        let mut l = base(t, reporter, &overflow, None);
        l.push((
            "request_protocol",
            if tcp { "tcp" } else { "overflow" }.into(),
        ));
        if !tcp {
            l.push(("response_code", "overflow".into()));
            l.push(("response_flags", "overflow".into()));
        }
        l
    }
}

/// The [`Collector`] of a scrape: reads the counters when encoded.
#[derive(Debug)]
struct Scrape(Vec<Target>);

fn counters<T>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &BTreeMap<Labels, T>,
    value: impl Fn(&T) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(value(v)).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Snapshot::take(&self.0);
        counters(
            &mut enc,
            "istio_requests",
            "Requests handled, by response code",
            &s.requests,
            |r| r.count,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "istio_request_duration_milliseconds",
                "Request duration until the response headers, milliseconds",
                None,
                MetricType::Histogram,
            )?;
            for (labels, r) in &s.requests {
                let buckets: Vec<(f64, u64)> = BUCKETS_MS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(r.buckets.iter().copied())
                    .collect();
                m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                    r.sum_us as f64 / 1000.0,
                    r.count,
                    &buckets,
                    None,
                )?;
            }
        }
        counters(
            &mut enc,
            "istio_tcp_connections_opened",
            "TCP connections opened",
            &s.tcp,
            |t| t.opened,
        )?;
        counters(
            &mut enc,
            "istio_tcp_connections_closed",
            "TCP connections closed",
            &s.tcp,
            |t| t.closed,
        )?;
        counters(
            &mut enc,
            "istio_tcp_sent_bytes",
            "Bytes sent to the upstream over TCP",
            &s.tcp,
            |t| t.sent,
        )?;
        counters(
            &mut enc,
            "istio_tcp_received_bytes",
            "Bytes received from the upstream over TCP",
            &s.tcp,
            |t| t.received,
        )
    }
}

/// Prometheus' text exposition (format 0.0.4) of `targets`.
pub fn text(targets: Vec<Target>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(targets)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{http::local_reply::Flag, server::istio::Destination};

    #[test]
    fn two_servers_of_a_pod_are_summed_and_labelled() {
        let (a, b) = (
            Arc::new(IstioMetrics::default()),
            Arc::new(IstioMetrics::default()),
        );
        let dest = || Destination::of_cluster("outbound|80||web.shop.svc.cluster.local");
        for m in [&a, &b] {
            let s = m.requests(Reporter::Source, dest());
            s.record(200, Flag::None, false, 9999, Duration::from_millis(3));
        }
        a.requests(Reporter::Destination, Destination::unknown())
            .record(
                503,
                Flag::NoHealthyUpstream,
                true,
                8080,
                Duration::from_millis(30),
            );
        let t = a.tcp(Reporter::Source, dest());
        t.open();
        t.close(10, 20);
        let text = text(vec![Target {
            labels: vec![("pod", "p1".into()), ("namespace", "shop".into())],
            workload_namespace: Some("shop".into()),
            metrics: vec![a, b],
            max_series: 0,
        }]);
        let want = r#"istio_requests_total{pod="p1",namespace="shop",reporter="source",source_workload_namespace="shop",destination_service="web.shop.svc.cluster.local",destination_service_name="web",destination_service_namespace="shop",destination_port="80",request_protocol="http",response_code="200",response_flags="-"} 2"#;
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains(r#"destination_workload_namespace="shop",destination_service="unknown",destination_service_name="unknown",destination_service_namespace="unknown",destination_port="8080",request_protocol="grpc",response_code="503",response_flags="UH"} 1"#),
            "{text}"
        );
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
        assert!(
            text.contains(r#"response_flags="-",le="5.0"} 2"#)
                || text.contains(r#"response_flags="-",le="5"} 2"#),
            "{text}"
        );
        assert!(text.contains("istio_tcp_sent_bytes_total{"), "{text}");
        assert!(text.contains(r#"request_protocol="tcp"} 10"#), "{text}");
    }

    #[test]
    fn a_target_over_its_cap_folds_new_label_sets_into_one_series() {
        let m = Arc::new(IstioMetrics::default());
        let s = m.requests(Reporter::Source, Destination::unknown());
        for code in [200, 201, 202, 203] {
            s.record(code, Flag::None, false, 80, Duration::from_millis(1));
        }
        let text = text(vec![Target {
            metrics: vec![m],
            max_series: 2,
            ..Target::default()
        }]);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(r#"response_code="overflow""#) && l.ends_with("} 2")),
            "{text}"
        );
    }
}
