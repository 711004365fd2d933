//! Health checks against a raw upstream: the connection is kept from check to check, and until
//! the cluster has traffic they come every `no_traffic_interval`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::testing::serve;

#[tokio::test]
async fn checks_reuse_one_connection_at_the_no_traffic_interval() {
    let (up, conns, heads) =
        recording_server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let config = checked_config(up, 1);
    let (server, _front) = serve(config, None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heads = heads.lock().expect("heads").clone();
    assert!(heads.len() >= 3, "only {} checks: {heads:?}", heads.len());
    assert!(heads.iter().all(|h| h.starts_with("get /hc ")), "{heads:?}");
    assert!(
        heads.iter().all(|h| !h.contains("connection:")),
        "no connection header, as Envoy: {heads:?}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one kept connection");
    // The checker's connection is not traffic: the 60 s interval has not taken over.
    let rt = server.runtime();
    let a = rt.clusters.get("a").expect("cluster a");
    assert_eq!(a.stats.upstream_cx_total.get(), 0);
    // Nor does it count as an active connection or take a circuit breaker's slot (Envoy's
    // checker connections are outside the resource manager).
    assert_eq!(a.stats.upstream_cx_active.get(), 0);
    let slots = &a.resources[crate::config::RoutingPriority::Default].connections;
    assert_eq!(slots.load(Ordering::SeqCst), 0);
}

/// Envoy draws `initial_jitter` per host (`onInitialInterval`): six hosts' first checks are
/// spread over the jitter, not made together after one wait.
#[tokio::test]
async fn initial_jitter_is_drawn_per_host() {
    let (up, _conns, heads) =
        recording_server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let config = health_checked_config(up, 6, "initial_jitter: 0.4s, no_traffic_interval: 60s");
    // Sampled from before the server starts: it waits for the first checks before serving.
    let sampler = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut firsts = Vec::new();
        while start.elapsed() < Duration::from_millis(700) {
            let n = heads.lock().expect("heads").len();
            while firsts.len() < n {
                firsts.push(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        firsts
    });
    let (_server, _front) = serve(config, None).await;
    let firsts = sampler.await.expect("sampler");
    assert_eq!(firsts.len(), 6, "one first check per host: {firsts:?}");
    let spread = firsts[5] - firsts[0];
    assert!(
        spread >= Duration::from_millis(60),
        "first checks at {firsts:?}"
    );
}

fn spec(unhealthy: u32, healthy: u32) -> super::HealthCheckSpec {
    let d = Duration::from_secs;
    super::HealthCheckSpec {
        intervals: crate::config::HealthCheckIntervals {
            interval: d(10),
            unhealthy: d(2),
            unhealthy_edge: d(1),
            healthy_edge: d(3),
            no_traffic: d(60),
            no_traffic_healthy: d(90),
        },
        reuse_connection: true,
        jitter: Default::default(),
        timeout: d(1),
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
        path: "/hc".into(),
        host: "c".into(),
        expected: vec![(200, 201)],
        retriable: vec![(503, 504)],
        method: http::Method::GET,
        headers: Default::default(),
        tcp_only: false,
        tcp_send: Vec::new(),
        tcp_receive: Vec::new(),
        http_body: Default::default(),
        grpc: None,
        http2: false,
        event_log: None,
    }
}

#[test]
fn a_bad_status_fails_a_host_at_once_and_no_answer_takes_the_threshold() {
    use super::{judge, Streak, Verdict};
    let spec = spec(3, 2);
    let bad = Verdict::BadStatus {
        retriable: false,
        status: 500,
    };
    let retriable = Verdict::BadStatus {
        retriable: true,
        status: 503,
    };
    // The first result decides, whatever the thresholds.
    let mut s = Streak::default();
    assert_eq!(judge(&mut s, true, Verdict::Network, &spec), (false, false));
    let mut s = Streak::default();
    assert_eq!(judge(&mut s, false, Verdict::Pass, &spec), (true, false));
    // A healthy host: no answer twice is pending, the third fails it.
    assert_eq!(judge(&mut s, true, Verdict::Network, &spec), (true, true));
    assert_eq!(judge(&mut s, true, retriable, &spec), (true, true));
    assert_eq!(judge(&mut s, true, Verdict::Network, &spec), (false, false));
    // Unhealthy: one pass is pending, the second brings it back.
    assert_eq!(judge(&mut s, false, Verdict::Pass, &spec), (false, true));
    assert_eq!(judge(&mut s, false, Verdict::Pass, &spec), (true, false));
    // A status outside expected and retriable statuses fails it at once.
    assert_eq!(judge(&mut s, true, bad, &spec), (false, false));
    assert_eq!(judge(&mut s, false, bad, &spec), (false, false));
}

#[test]
fn the_next_interval_follows_envoys_choice() {
    let i = spec(3, 2).intervals;
    let d = Duration::from_secs;
    // (passed, pending, traffic)
    assert_eq!(i.next(true, false, true), d(10));
    assert_eq!(i.next(false, false, true), d(2));
    assert_eq!(i.next(false, true, true), d(1));
    assert_eq!(i.next(true, true, true), d(3));
    assert_eq!(i.next(true, false, false), d(90));
    assert_eq!(i.next(true, true, false), d(60));
    assert_eq!(i.next(false, false, false), d(60));
}

#[test]
fn payloads_are_found_in_order_not_necessarily_together() {
    use super::payloads_found;
    let want = [b"+PO".to_vec(), b"NG".to_vec()];
    assert!(payloads_found(&want, b"+PONG\r\n"));
    assert!(payloads_found(&want, b"x+POyyNG"));
    assert!(!payloads_found(&want, b"NG+PO"));
    assert!(!payloads_found(&want, b"+PON"));
    assert!(payloads_found(&[], b""));
}

/// Two endpoints on one address are two hosts, each checked on its own: a server that answers
/// 503 makes both unhealthy.
#[tokio::test]
async fn two_hosts_on_one_address_are_each_checked() {
    let no = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
    let (up, _, _) = recording_server(no).await;
    let config = checked_config(up, 2);
    let (server, _front) = serve(config, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rt = server.runtime();
    let hosts = rt.clusters.get("a").expect("cluster a").all_hosts();
    assert_eq!(hosts.len(), 2, "both endpoints are hosts");
    assert!(
        hosts.iter().all(|h| !h.hc_healthy.load(Ordering::Relaxed)),
        "each host failed its own check"
    );
}

/// A raw HTTP/1 server on loopback answering every request head with `answer`: its address,
/// the connections it accepted and the request heads it got (lower-cased).
async fn recording_server(
    answer: &'static [u8],
) -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<String>>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let (count, seen) = (conns.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock()
                            .expect("heads")
                            .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (up, conns, heads)
}

/// A config routing to cluster `a` with `endpoints` endpoints on `up`, HTTP-checked on `/hc`
/// every 50 ms until it has traffic.
fn checked_config(up: std::net::SocketAddr, endpoints: usize) -> crate::config::Bootstrap {
    health_checked_config(up, endpoints, "no_traffic_interval: 0.05s")
}

/// One cluster of `endpoints` endpoints at `up`, HTTP health checked (`/hc`, thresholds 1, a
/// 60 s interval) with the health check's further `fields`.
fn health_checked_config(
    up: std::net::SocketAddr,
    endpoints: usize,
    fields: &str,
) -> crate::config::Bootstrap {
    let endpoint = format!(
        "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
        up.ip(),
        up.port()
    );
    let yaml = crate::testing::bootstrap_yaml(&[("/", "a")], &[("a", up)])
        .replace(&endpoint, &endpoint.repeat(endpoints))
        .replace(
            "    connect_timeout: 1s\n",
            &format!(
                "    connect_timeout: 1s\n    health_checks: [{{ timeout: 1s, interval: 60s, \
                 {fields}, unhealthy_threshold: 1, healthy_threshold: 1, \
                 http_health_check: {{ path: /hc }} }}]\n"
            ),
        );
    crate::config::from_yaml_str(&yaml).expect("valid health check config")
}
