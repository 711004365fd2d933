//! The agent's workers (proxy/engine/src/workers.rs): `sluice agent --workers 2 --pod-workers 1`
//! runs two worker threads; pods enrolled in turn are placed on different workers, as `sluice
//! status` shows (per pod and pods per worker); a node-mode L7 pod is served on its worker; a pod
//! that leaves releases its place.

use std::time::{Duration, Instant};

use sluice_tests::{agent_node::Node, l7_pods::L7Pods, sluice_cli::sluice_ok, Netns};

/// The names of the agent's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the agent's /proc task dir")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn pods_are_placed_on_the_agents_workers_and_served_there() {
    let p = L7Pods::new("wk");
    let node = Node::start_with(
        "wk",
        &["--config", &p.cfg, "--workers", "2", "--pod-workers", "1"],
    );
    let names = thread_names(node.pid());
    for w in ["sluice-worker-0", "sluice-worker-1"] {
        assert!(names.iter().any(|n| n == w), "no thread {w}: {names:?}");
    }

    let other = Netns::new("wk-b");
    node.enroll(&p.client, &[]);
    node.enroll(&other, &[]);
    let (a, b) = (node.pod(&p.client).workers, node.pod(&other).workers);
    assert_eq!((a.len(), b.len()), (1, 1), "one worker each: {a:?} {b:?}");
    assert_ne!(a, b, "two pods enrolled in turn share a worker");
    assert_eq!(node.status().pods_per_worker, vec![1, 1]);
    let table = sluice_ok(&["status", "--control", &node.ctl()]);
    assert!(table.contains("pods per worker 1/1"), "{table}");

    // Served through its worker (the L7 engine's route rewrite shows in the upstream's view).
    let body = p.get_svc(&node);
    assert!(body.contains("line=GET /v2/api/items HTTP/1.1"), "{body}");

    // Leaving releases the place.
    node.unenroll(&other);
    let t = Instant::now();
    while node.status().pods_per_worker.iter().sum::<usize>() != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the unenrolled pod still holds its worker: {:?}",
            node.status().pods_per_worker
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
