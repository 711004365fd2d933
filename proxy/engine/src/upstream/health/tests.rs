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
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(ok).await.is_err() {
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
    let yaml = crate::testing::bootstrap_yaml(&[("/", "a")], &[("a", up)]).replace(
        "    connect_timeout: 1s\n",
        "    connect_timeout: 1s\n    health_checks: [{ timeout: 1s, interval: 60s, \
         no_traffic_interval: 0.05s, unhealthy_threshold: 1, healthy_threshold: 1, \
         http_health_check: { path: /hc } }]\n",
    );
    let config = crate::config::from_yaml_str(&yaml).expect("valid health check config");
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
}
