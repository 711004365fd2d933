//! Active HTTP health checking: one task per cluster probes every host each interval (the
//! jitter drawn per round, where Envoy draws it per host), on one
//! connection per host kept from check to check (Envoy's default `reuse_connection`) until a
//! check fails or times out.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Weak},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;

use super::{pool, Cluster, HealthCheckSpec, Host};
use crate::config::RoutingPriority;

/// A host's kept health check connection.
type Conn = http1::SendRequest<Empty<Bytes>>;

#[derive(Default)]
struct Streak {
    ok: u32,
    fail: u32,
    seen: bool,
}

/// Runs until the cluster is dropped (config replaced).
pub async fn run(cluster: Weak<Cluster>, spec: HealthCheckSpec) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    let mut conns: HashMap<SocketAddr, Conn> = HashMap::new();
    Cluster::dns_resolved(&cluster).await;
    tokio::time::sleep(spec.jitter.initial_wait()).await;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let hosts = c.all_hosts();
        let checks = hosts.iter().map(|h| {
            let c = c.clone();
            let spec = &spec;
            let kept = conns.remove(&h.addr);
            async move { check(&c, h, spec, kept).await }
        });
        // A removed host's connection is not put back: dropping it closes it.
        let results = futures_util::future::join_all(checks).await;
        conns.clear();
        for (h, (ok, conn)) in hosts.iter().zip(results) {
            if let Some(conn) = conn {
                conns.insert(h.addr, conn);
            }
            if ok {
                c.stats.health_check_success.inc();
            } else {
                c.stats.health_check_failure.inc();
            }
            apply(&mut streaks, h, ok, &spec);
            // `successful_active_health_check_uneject_host`: a passing check of a host that
            // passes its health checks brings it back from an outlier ejection at once.
            let healthy = ok && h.hc_healthy.load(Ordering::Relaxed);
            if healthy && c.spec.outlier.is_some_and(|o| o.uneject_on_health_check) {
                super::outlier::uneject(&c, h);
            }
        }
        c.remove_failed_pending();
        c.health_round_done();
        // Envoy's checker picks the next interval as it schedules it: `no_traffic_interval`
        // until the cluster has opened an upstream connection of its own (the checker's are
        // not counted).
        let wait = spec.jitter.apply(if c.stats.upstream_cx_total.get() > 0 {
            spec.interval
        } else {
            spec.no_traffic_interval
        });
        drop(c);
        tokio::time::sleep(wait).await;
    }
}

fn apply(streaks: &mut HashMap<SocketAddr, Streak>, h: &Host, ok: bool, spec: &HealthCheckSpec) {
    let s = streaks.entry(h.addr).or_default();
    let first = !s.seen;
    s.seen = true;
    if ok {
        s.ok += 1;
        s.fail = 0;
    } else {
        s.fail += 1;
        s.ok = 0;
    }
    let healthy = h.hc_healthy.load(Ordering::Relaxed);
    // The first result decides at once (Envoy: a fresh host leaves the initial state on its first check).
    if healthy && !ok && (first || s.fail >= spec.unhealthy_threshold.max(1)) {
        h.hc_healthy.store(false, Ordering::Relaxed);
        tracing::info!(host = %h.addr, "health check: host unhealthy");
    } else if !healthy && ok && (first || s.ok >= spec.healthy_threshold.max(1)) {
        h.hc_healthy.store(true, Ordering::Relaxed);
        h.healthy_since.store(super::now_ms(), Ordering::Relaxed);
        tracing::info!(host = %h.addr, "health check: host healthy");
    }
}

/// One check of `host`: whether it passed, and the connection to keep for the next one (HTTP
/// checks that got a response; a timed out or failed check drops it, which closes it).
async fn check(
    cluster: &Arc<Cluster>,
    host: &Host,
    spec: &HealthCheckSpec,
    kept: Option<Conn>,
) -> (bool, Option<Conn>) {
    if spec.tcp_only {
        // Connect only: nothing is written, so an upstream_proxy_protocol socket sends no
        // header either (Envoy's writes its header with the first bytes; a TCP check without
        // a payload has none: test proxy_protocol_interop).
        let ok = matches!(
            tokio::time::timeout(spec.timeout, cluster.connector.connect(host.addr)).await,
            Ok(Ok(_))
        );
        return (ok, None);
    }
    let fut = async {
        let mut s = match reusable(kept).await {
            Some(s) => s,
            None => {
                let (purpose, prio) = (pool::Purpose::HealthCheck, RoutingPriority::Default);
                let to = (host.addr, host.transport, None);
                match pool::connect::<Empty<Bytes>>(cluster, to, purpose, prio).await {
                    Ok(pool::Sender::H1(s, _)) => s,
                    _ => return None,
                }
            }
        };
        let mut req = http::Request::builder()
            .method(spec.method.clone())
            .uri(spec.path.as_str())
            .header(http::header::HOST, spec.host.as_str())
            .header(http::header::USER_AGENT, "Envoy/HC")
            .body(Empty::<Bytes>::new())
            .ok()?;
        spec.headers.apply(req.headers_mut());
        // As Envoy's HTTP/1 encoder: a POST / PUT / ... check says `content-length: 0`.
        pool::add_empty_content_length(&mut req);
        let resp = s.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Some((status, s))
    };
    match tokio::time::timeout(spec.timeout, fut).await {
        Ok(Some((status, s))) => {
            let ok = spec
                .expected
                .iter()
                .any(|(lo, hi)| status >= *lo && status < *hi);
            (ok, Some(s))
        }
        _ => (false, None),
    }
}

/// The kept connection, unless the host closed it (or answered `connection: close`) since.
async fn reusable(kept: Option<Conn>) -> Option<Conn> {
    let mut s = kept?;
    s.ready().await.ok()?;
    Some(s)
}

#[cfg(test)]
mod tests;
