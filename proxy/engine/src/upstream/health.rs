//! Active HTTP health checking: one task per cluster probes every host each interval.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Weak},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use super::{pool, Cluster, HealthCheckSpec, Host};

#[derive(Default)]
struct Streak {
    ok: u32,
    fail: u32,
    seen: bool,
}

/// Runs until the cluster is dropped (config replaced).
pub async fn run(cluster: Weak<Cluster>, spec: HealthCheckSpec) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    Cluster::dns_resolved(&cluster).await;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let hosts = c.all_hosts();
        let checks = hosts.iter().map(|h| {
            let c = c.clone();
            let spec = &spec;
            async move { check(&c, h, spec).await }
        });
        let results = futures_util::future::join_all(checks).await;
        for (h, ok) in hosts.iter().zip(results) {
            if ok {
                c.stats.health_check_success.inc();
            } else {
                c.stats.health_check_failure.inc();
            }
            apply(&mut streaks, h, ok, &spec);
        }
        c.health_round_done();
        drop(c);
        tokio::time::sleep(spec.interval).await;
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
        tracing::info!(host = %h.addr, "health check: host healthy");
    }
}

async fn check(cluster: &Arc<Cluster>, host: &Host, spec: &HealthCheckSpec) -> bool {
    if spec.tcp_only {
        return matches!(
            tokio::time::timeout(spec.timeout, cluster.connector.connect(host.addr)).await,
            Ok(Ok(_))
        );
    }
    let fut = async {
        let sender = pool::connect::<Empty<Bytes>>(cluster, host.addr, true)
            .await
            .ok()?;
        let pool::Sender::H1(mut s) = sender else {
            return None;
        };
        let req = http::Request::get(spec.path.as_str())
            .header(http::header::HOST, spec.host.as_str())
            .header(http::header::USER_AGENT, "Envoy/HC")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = s.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Some(status)
    };
    match tokio::time::timeout(spec.timeout, fut).await {
        Ok(Some(status)) => spec
            .expected
            .iter()
            .any(|(lo, hi)| status >= *lo && status < *hi),
        _ => false,
    }
}
