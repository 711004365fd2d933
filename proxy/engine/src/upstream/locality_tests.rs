use std::{collections::HashMap, net::SocketAddr, sync::atomic::AtomicUsize};

use super::*;
use crate::{
    config::{ClusterOptions, EndpointHealth},
    upstream::{lb, HostSet, LbContext, LbKind},
};

/// One level's hosts: (locality rank, locality weight, host weight, health).
fn level(spec: &[(u32, u32, u32, EndpointHealth)]) -> Vec<(Arc<Host>, HostMeta)> {
    spec.iter()
        .enumerate()
        .map(|(i, (loc, lw, w, health))| {
            let addr: SocketAddr = format!("10.0.{loc}.{}:80", i + 1).parse().unwrap();
            (
                Host::new(addr, *w),
                HostMeta {
                    priority: 0,
                    health: *health,
                    locality: *loc,
                    locality_weight: *lw,
                    canary: false,
                },
            )
        })
        .collect()
}

const H: EndpointHealth = EndpointHealth::Healthy;
const U: EndpointHealth = EndpointHealth::Unhealthy;

/// Picks `n` hosts through the balancer and counts them by host index.
fn counts(kind: &LbKind, set: &HostSet, opts: &ClusterOptions, n: usize) -> Vec<usize> {
    let rr = AtomicUsize::new(0);
    let mut by: HashMap<SocketAddr, usize> = HashMap::new();
    for i in 0..n {
        let ctx = LbContext {
            hash: Some(lb::hash_bytes(format!("k{i}").as_bytes())),
            orig_dst: None,
        };
        if let Some(h) = lb::choose(kind, set, &rr, &ctx, opts) {
            *by.entry(h.addr).or_default() += 1;
        }
    }
    set.hosts
        .iter()
        .map(|h| by.get(&h.addr).copied().unwrap_or(0))
        .collect()
}

fn locality_opts() -> ClusterOptions {
    ClusterOptions {
        locality_weighted_lb: true,
        ..Default::default()
    }
}

#[test]
fn effective_weight_is_weight_times_capped_availability() {
    // (weight, eligible, counted, factor) -> effective weight; 1 of 2 at 140 % keeps 0.7.
    let table = [
        ((3, 1, 2, 140), 2.1),
        ((3, 2, 3, 200), 3.0),
        ((3, 0, 2, 140), 0.0),
        ((0, 2, 2, 140), 0.0),
        ((5, 0, 0, 140), 0.0),
    ];
    for ((w, e, c, f), want) in table {
        let got = effective_weight(w, e, c, f);
        assert!((got - want).abs() < 1e-12, "{w} {e}/{c} at {f}: {got}");
    }
}

#[test]
fn localities_take_their_weight_and_hosts_round_robin_inside() {
    // a (weight 1, one host), b (weight 3, two hosts): per 8 picks a 2, b1 3, b2 3.
    let set = HostSet::build(
        &LbKind::RoundRobin,
        level(&[(0, 1, 1, H), (1, 3, 1, H), (1, 3, 1, H)]),
        true,
    );
    assert_eq!(
        counts(&LbKind::RoundRobin, &set, &locality_opts(), 80),
        vec![20, 30, 30]
    );
    // Without locality_weighted_lb_config the hosts share alike.
    let flat = HostSet::build(
        &LbKind::RoundRobin,
        level(&[(0, 1, 1, H), (1, 3, 1, H), (1, 3, 1, H)]),
        false,
    );
    assert_eq!(
        counts(&LbKind::RoundRobin, &flat, &ClusterOptions::default(), 81),
        vec![27, 27, 27]
    );
}

#[test]
fn a_partly_healthy_locality_loses_weight_and_an_unhealthy_one_gets_nothing() {
    let opts = ClusterOptions {
        overprovisioning_factor: 100,
        ..locality_opts()
    };
    // a (weight 1, two hosts), b (weight 4, one of two healthy: 4 x 1/2 = 2), c (weight 9,
    // no healthy host).
    let set = HostSet::build(
        &LbKind::RoundRobin,
        level(&[
            (0, 1, 1, H),
            (0, 1, 1, H),
            (1, 4, 1, H),
            (1, 4, 1, U),
            (2, 9, 1, U),
            (2, 9, 1, U),
        ]),
        true,
    );
    // Level health 3/6 x 100 % is under 100, but no panic (share 50 % >= 50 %).
    assert_eq!(
        counts(&LbKind::RoundRobin, &set, &opts, 60),
        vec![10, 10, 40, 0, 0, 0]
    );
    // An outlier ejection changes the eligible hosts: the schedule is rebuilt (a alone; panic
    // off, as 2 of 6 healthy would be under the threshold).
    set.hosts[2]
        .ejected_until
        .store(crate::upstream::now_ms() + 60_000, Ordering::Relaxed);
    let opts = ClusterOptions {
        healthy_panic_threshold: 0.0,
        ..opts
    };
    assert_eq!(
        counts(&LbKind::RoundRobin, &set, &opts, 20),
        vec![10, 10, 0, 0, 0, 0]
    );
}

#[test]
fn localities_without_weight_get_nothing_unless_none_has_weight() {
    // b has no weight: a takes everything, with every policy.
    for kind in [
        LbKind::RoundRobin,
        LbKind::Random,
        LbKind::LeastRequest { choice_count: 2 },
    ] {
        let set = HostSet::build(&kind, level(&[(0, 2, 1, H), (1, 0, 1, H)]), true);
        assert_eq!(
            counts(&kind, &set, &locality_opts(), 20),
            vec![20, 0],
            "{kind:?}"
        );
    }
    // No locality has weight: the level's healthy hosts serve (Envoy has no scheduler).
    let set = HostSet::build(
        &LbKind::RoundRobin,
        level(&[(0, 0, 1, H), (1, 0, 1, H)]),
        true,
    );
    assert_eq!(
        counts(&LbKind::RoundRobin, &set, &locality_opts(), 20),
        vec![10, 10]
    );
}

#[test]
fn the_schedule_is_kept_while_the_eligible_hosts_stay_the_same() {
    let meta: Vec<HostMeta> = level(&[(0, 1, 1, H), (1, 1, 1, H)])
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let hosts: Vec<Arc<Host>> = level(&[(0, 1, 1, H), (1, 1, 1, H)])
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    let loc = LocalityLevel::build(&meta);
    fn all(_: usize) -> bool {
        true
    }
    fn first(i: usize) -> bool {
        i == 0
    }
    let view = |eligible: &'static dyn Fn(usize) -> bool| LevelView {
        hosts: &hosts,
        eligible,
        counted: &all,
        overprovisioning_factor: 140,
    };
    let get = |which, eligible| {
        loc.schedule(which, &view(eligible))
            .as_ref()
            .cloned()
            .expect("a schedule")
    };
    let a = get(Eligible::Healthy, &all);
    let b = get(Eligible::Healthy, &all);
    assert!(Arc::ptr_eq(&a, &b));
    let c = get(Eligible::Healthy, &first);
    assert!(!Arc::ptr_eq(&a, &c));
    // Degraded hosts have their own schedule.
    let d = get(Eligible::Degraded, &all);
    assert!(!Arc::ptr_eq(&a, &d));
}

#[test]
fn hashing_tables_share_by_locality_weight_and_skip_weightless_localities() {
    let hosts = level(&[(0, 1, 1, H), (1, 3, 1, H), (1, 3, 3, H), (2, 0, 1, H)]);
    let meta: Vec<HostMeta> = hosts.iter().map(|(_, m)| *m).collect();
    let hs: Vec<Arc<Host>> = hosts.iter().map(|(h, _)| h.clone()).collect();
    let loc = LocalityLevel::build(&meta);
    let (members, weights) = hashing_weights(&loc, &hs, &|_| true);
    assert_eq!(members, vec![0, 1, 2]);
    let want = [0.25, 0.75 / 4.0, 0.75 * 3.0 / 4.0];
    for (w, x) in weights.iter().zip(want) {
        assert!((w - x).abs() < 1e-12, "{weights:?}");
    }
    for kind in [
        LbKind::RingHash {
            min_ring_size: 1024,
            max_ring_size: lb::MAX_RING_SIZE,
        },
        LbKind::Maglev { table_size: 65537 },
    ] {
        let set = HostSet::build(&kind, hosts.clone(), true);
        let c = counts(&kind, &set, &locality_opts(), 4000);
        assert_eq!(c[3], 0, "{kind:?} {c:?}");
        assert!((800..1200).contains(&c[0]), "{kind:?} {c:?}");
        assert!((2000..2500).contains(&c[2]), "{kind:?} {c:?}");
        // Every locality without weight: an empty table, no host (Envoy's 503).
        let set = HostSet::build(&kind, level(&[(0, 0, 1, H), (1, 0, 1, H)]), true);
        assert_eq!(counts(&kind, &set, &locality_opts(), 10), vec![0, 0]);
    }
}

#[test]
fn an_endpoint_update_rebuilds_the_localities() {
    let yaml = |wa: u32, wb: u32| {
        crate::testing::bootstrap_yaml(&[("/", "svc")], &[])
            + &format!(
            "  - name: svc\n    type: STATIC\n    common_lb_config: {{locality_weighted_lb_config: {{}}}}\n    load_assignment:\n      cluster_name: svc\n      endpoints:\n      - locality: {{zone: a}}\n        load_balancing_weight: {wa}\n        lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 10.0.0.1, port_value: 80}}}}}}}}]\n      - locality: {{zone: b}}\n        load_balancing_weight: {wb}\n        lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 10.0.0.2, port_value: 80}}}}}}}}]\n"
        )
    };
    let spec = |wa, wb| {
        let b = crate::config::from_yaml_str(&yaml(wa, wb)).unwrap_or_else(|e| panic!("{e}"));
        crate::upstream::from_config::cluster_spec(b.cluster("svc").expect("svc"))
    };
    let stats = crate::server::stats::StatsStore::default();
    let cluster = crate::upstream::Cluster::build(spec(1, 3), &stats).expect("cluster");
    let share = || {
        let mut a = 0;
        for _ in 0..80 {
            let h = cluster.choose_host(&LbContext::default()).expect("host");
            a += usize::from(h.addr.ip().to_string() == "10.0.0.1");
        }
        a
    };
    assert_eq!(share(), 20);
    // EDS swaps the weights: the same hosts, new localities' schedule.
    let before = cluster.all_hosts();
    cluster.replace_endpoints(&spec(3, 1));
    assert_eq!(share(), 60);
    assert!(Arc::ptr_eq(&before[0], &cluster.all_hosts()[0]));
}
