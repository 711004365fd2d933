//! The agent's control socket against a hostile or careless local client (issue 13, items
//! 13-15): a FIFO named as a netns is refused at once without blocking the registry; a request
//! with more descriptors than allowed is refused and none of them stays open in the agent; a
//! peer that is not root is refused even when the socket file's mode lets it connect; silent and
//! half-sent connections are closed after the idle timeout; and connections past the limit are
//! closed at once, while the agent keeps answering.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::net::UnixStream},
    time::{Duration, Instant},
};

use sluice_node::agent::{control, fd_passing};
use sluice_tests::{agent_node::status_at, agent_node::Node, require_root};

fn connect(node: &Node) -> UnixStream {
    let s = UnixStream::connect(node.ctl()).expect("connect to the control socket");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Sends one request line (with `fds` attached) and reads one answer line.
fn call_raw(node: &Node, line: &str, fds: &[i32]) -> String {
    let s = connect(node);
    fd_passing::send_with_fds(s.as_raw_fd(), format!("{line}\n").as_bytes(), fds).unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    answer
}

/// Whether the agent closed `s` (EOF) within `within`.
fn closed_by_agent(s: &mut UnixStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0))
}

#[test]
fn fifo_as_netns_is_refused_without_blocking_the_agent() {
    require_root();
    let node = Node::start("cf");
    let dir = sluice_tests::upstream::harness::TempDir::new("cffifo");
    let fifo = dir.path("netns");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let t = Instant::now();
    let answer = call_raw(
        &node,
        &format!(
            r#"{{"op":"enroll","netns":"{}","mode":"node"}}"#,
            fifo.display()
        ),
        &[],
    );
    assert!(
        answer.contains("not a namespace file"),
        "the agent names the problem: {answer}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // The registry is free: the next request is answered.
    assert!(status_at(&node.ctl()).pods.is_empty());
}

#[test]
fn too_many_descriptors_are_refused_and_none_is_kept() {
    require_root();
    let node = Node::start("cd");
    let listeners: Vec<_> = (0..fd_passing::MAX_FDS + 1)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let raw: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let before = node.fds();
    for _ in 0..5 {
        let answer = call_raw(&node, r#"{"op":"register_inbound","netns":"x"}"#, &raw);
        assert!(
            answer.contains("9 descriptors with one request; at most 8"),
            "{answer}"
        );
    }
    // Give the agent a moment to finish closing the refused connections' descriptors.
    let deadline = Instant::now() + Duration::from_secs(2);
    while node.fds() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        node.fds(),
        before,
        "45 received descriptors must all be closed"
    );
}

#[test]
fn a_non_root_peer_is_refused_even_with_a_loose_socket_mode() {
    require_root();
    let mut node = Node::start("cu");
    // A careless operator loosens the socket file's mode: the peer check still holds.
    std::fs::set_permissions(
        node.ctl(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(sluice_tests::sluice_cli::sluice_bin())
        .args(["status", "--control", &node.ctl()])
        .output()
        .expect("run setpriv");
    assert!(!out.status.success(), "uid 65534 must not get a status");
    // The agent logs who was refused (read from its stderr by a thread: waited for).
    node.wait_for_log("peer uid 65534");
    // Root still gets answers.
    assert!(status_at(&node.ctl()).pods.is_empty());
}

#[test]
fn idle_and_half_sent_connections_are_closed_and_excess_ones_refused() {
    require_root();
    let node = Node::start("ci");
    let mut held: Vec<UnixStream> = (0..control::MAX_CLIENTS).map(|_| connect(&node)).collect();
    // Half of them send part of a line and stop.
    for s in held.iter_mut().step_by(2) {
        s.write_all(br#"{"op":"sta"#).unwrap();
    }
    // Wait until the agent has taken them all (one accept loop; bounded).
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect(&node);
    assert!(
        closed_by_agent(&mut extra, Duration::from_secs(2)),
        "connection {} past the limit is closed at once",
        control::MAX_CLIENTS + 1
    );
    let t = Instant::now();
    for s in &mut held {
        let left = (control::IDLE_TIMEOUT + Duration::from_secs(3)).saturating_sub(t.elapsed());
        assert!(
            closed_by_agent(s, left.max(Duration::from_millis(1))),
            "silent or half-sent connection closed within the idle timeout"
        );
    }
    assert!(t.elapsed() < control::IDLE_TIMEOUT + Duration::from_secs(3));
    // Room again: a normal client is served.
    assert!(status_at(&node.ctl()).pods.is_empty());
}
