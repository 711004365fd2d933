//! ORIGINAL_DST hosts made on demand and dropped by the `cleanup_interval` sweep.

use std::{sync::Arc, time::Duration};

use crate::upstream::{from_config::cluster_spec, Cluster, LbContext};

/// An ORIGINAL_DST cluster swept every 50 ms.
fn cluster() -> Arc<Cluster> {
    let yaml = crate::testing::bootstrap_yaml(&[("/", "svc")], &[])
        + "  - name: svc\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    cleanup_interval: 0.05s\n";
    let b = crate::config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let spec = cluster_spec(b.cluster("svc").expect("svc"));
    Cluster::build(spec, &crate::server::stats::StatsStore::default()).expect("cluster")
}

fn pick(c: &Cluster, port: u16) -> Arc<crate::upstream::Host> {
    let ctx = LbContext {
        hash: None,
        orig_dst: Some(([127, 0, 0, 1], port).into()),
    };
    c.choose_host(&ctx).expect("a host for the destination")
}

#[tokio::test]
async fn original_dst_hosts_go_when_unused_and_unpooled() {
    let c = cluster();
    drop(pick(&c, 1));
    let held = pick(&c, 2);
    assert_eq!(c.all_hosts().len(), 2);
    // Picked again: the same host.
    assert!(Arc::ptr_eq(&held, &pick(&c, 2)));
    // A few sweeps later the unused host is gone; the one a request still holds stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left: Vec<_> = c.all_hosts().iter().map(|h| h.addr.port()).collect();
    assert_eq!(left, [2]);
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.all_hosts().is_empty());
}
