//! Kernel-level tests of the eBPF data path through `sluice_node::bpf::Datapath`.
//!
//! No agent: the test plays the proxy itself (listeners on 127.0.0.1:15001 and [::1]:15001 inside
//! the pod netns) from inside the test cgroup, and plays the app from the same netns. Run as root:
//! `cargo test -p sluice-tests --test datapath`.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream},
};

use sluice_common::{flags, mode, Cidr, Counter, NetnsPolicy, PROXY_MARK, PROXY_UID};
use sluice_tests::{
    datapath::{Fixture, LoadSite, Pod, VIP4, VIP6},
    sock::{connect_raw, orig_dst_v4, orig_dst_v6},
};
use sluice_tests::{require_root, run_cmd, Netns, Veth};

#[test]
fn captures_ipv4_and_reports_original_destination() {
    let mut f = Fixture::new("kd4");
    let pod = f.enroll_pod(Fixture::node_policy());
    let before = f.dp().counters().unwrap();
    let (app_peer, app_local, orig, accepted_peer) = pod.run(|| {
        let l = TcpListener::bind("127.0.0.1:15001").expect("bind 127.0.0.1:15001 in pod");
        let app = TcpStream::connect(VIP4).expect("connect to the VIP is captured");
        let (conn, peer) = l.accept().unwrap();
        (
            app.peer_addr().unwrap(),
            app.local_addr().unwrap(),
            orig_dst_v4(&conn),
            peer,
        )
    });
    assert_eq!(
        orig.expect("SO_ORIGINAL_DST on the accepted socket"),
        "10.96.0.10:80".parse::<SocketAddrV4>().unwrap()
    );
    assert_eq!(
        app_peer,
        VIP4.parse().unwrap(),
        "getpeername must show the original destination"
    );
    assert_eq!(
        accepted_peer, app_local,
        "the proxy accepted the app's connection"
    );
    let after = f.dp().counters().unwrap();
    for c in [
        Counter::Captured,
        Counter::OrigDstAnswered,
        Counter::PeernameRestored,
    ] {
        assert!(after.get(c) > before.get(c), "counter {c:?} did not rise");
    }
    f.wait_entries(pod.cookie(), 1);
}

#[test]
fn captures_ipv6_and_v4_mapped() {
    let mut f = Fixture::new("kd6");
    let pod = f.enroll_pod(Fixture::node_policy());
    let (l6, l4) = pod.run(|| {
        (
            TcpListener::bind("[::1]:15001").expect("bind [::1]:15001 in pod"),
            TcpListener::bind("127.0.0.1:15001").expect("bind 127.0.0.1:15001 in pod"),
        )
    });
    let mapped_vip = SocketAddrV6::new(Ipv4Addr::new(10, 96, 0, 10).to_ipv6_mapped(), 80, 0, 0);
    // IPv6 lands on [::1]; an AF_INET6 socket dialing ::ffff:10.96.0.10 lands on 127.0.0.1.
    for (what, target, listener) in [
        ("ipv6", VIP6.parse::<SocketAddr>().unwrap(), &l6),
        ("v4-mapped", SocketAddr::V6(mapped_vip), &l4),
    ] {
        let mut app =
            pod.run(move || TcpStream::connect(target).unwrap_or_else(|e| panic!("{what}: {e}")));
        let (mut proxy, _) = listener.accept().unwrap();
        assert_eq!(app.peer_addr().unwrap(), target, "{what}: getpeername");
        let orig = if what == "ipv6" {
            SocketAddr::V6(orig_dst_v6(&proxy).expect("IP6T_SO_ORIGINAL_DST"))
        } else {
            SocketAddr::V4(orig_dst_v4(&proxy).expect("SO_ORIGINAL_DST for v4-mapped"))
        };
        let want: SocketAddr = if what == "ipv6" {
            target
        } else {
            VIP4.parse().unwrap()
        };
        assert_eq!(orig, want, "{what}: original destination");
        // Both directions over the fast path.
        let before = f.dp().counters().unwrap().get(Counter::FastPathBytes);
        app.write_all(&[7u8; 4096]).unwrap();
        let mut buf = [0u8; 4096];
        read_exact_retry(&mut proxy, &mut buf);
        proxy.write_all(&buf).unwrap();
        read_exact_retry(&mut app, &mut buf);
        assert_eq!(buf, [7u8; 4096]);
        let carried = f.dp().counters().unwrap().get(Counter::FastPathBytes) - before;
        assert_eq!(carried, 8192, "{what}: fast path carried {carried} bytes");
    }
}

#[test]
fn refused_capture_leaves_no_entries_behind() {
    let mut f = Fixture::new("kdc");
    let pod = f.enroll_pod(Fixture::node_policy());
    // Captured, but nobody listens on 15001: the connect is refused and the socket closes from
    // SYN_SENT, without ever reaching ESTABLISHED.
    let err = pod.run(|| TcpStream::connect(VIP4).unwrap_err().raw_os_error());
    assert_eq!(err, Some(libc::ECONNREFUSED));
    assert!(f.dp().counters().unwrap().get(Counter::Captured) >= 1);
    f.wait_entries(pod.cookie(), 1);
}

#[test]
fn fail_open_goes_direct_when_no_listener() {
    let mut f = Fixture::new("kdo");
    let pod = f.enroll_pod(NetnsPolicy {
        flags: flags::FAIL_OPEN,
        ..Fixture::node_policy()
    });
    // Nobody listens: the connect is left alone (no route: ENETUNREACH, not ECONNREFUSED).
    for target in [VIP4, VIP6] {
        let err = pod.run(move || TcpStream::connect(target).unwrap_err().raw_os_error());
        assert_eq!(
            err,
            Some(libc::ENETUNREACH),
            "{target} captured without a listener"
        );
    }
    assert_eq!(f.dp().counters().unwrap().get(Counter::SkipNoListener), 2);
    // With listeners it is captured as usual.
    let (v4, v6) = pod.run(|| {
        let l4 = TcpListener::bind("127.0.0.1:15001").unwrap();
        let l6 = TcpListener::bind("[::1]:15001").unwrap();
        let _a = TcpStream::connect(VIP4).unwrap();
        let _b = TcpStream::connect(VIP6).unwrap();
        (
            orig_dst_v4(&l4.accept().unwrap().0),
            orig_dst_v6(&l6.accept().unwrap().0),
        )
    });
    assert_eq!(v4.unwrap(), VIP4.parse::<SocketAddrV4>().unwrap());
    assert_eq!(v6.unwrap(), VIP6.parse::<SocketAddrV6>().unwrap());
}

#[test]
fn netns_not_enrolled_or_off_is_untouched() {
    let mut f = Fixture::new("kdn");
    let _enrolled = f.enroll_pod(Fixture::node_policy());
    let stranger = Netns::new("kdn");
    let off = f.enroll_pod(NetnsPolicy {
        mode: mode::OFF,
        ..Fixture::node_policy()
    });
    for ns in [&stranger, &off.ns] {
        assert_not_captured(ns, &format!("netns {}", ns.name()));
    }
}

#[test]
fn exclusions_leave_connections_alone() {
    let mut f = Fixture::new("kdx");
    let mut excl_port = Fixture::node_policy();
    excl_port.n_exclude_outbound_ports = 1;
    excl_port.exclude_outbound_ports[0] = 80;
    let mut incl_port = Fixture::node_policy();
    incl_port.n_include_outbound_ports = 1;
    incl_port.include_outbound_ports[0] = 8080;
    let mut excl_cidr = Fixture::node_policy();
    excl_cidr.n_exclude_outbound_cidrs = 1;
    excl_cidr.exclude_outbound_cidrs[0] = cidr4([10, 96, 0, 0], 16);
    let mut incl_cidr = Fixture::node_policy();
    incl_cidr.n_include_outbound_cidrs = 1;
    incl_cidr.include_outbound_cidrs[0] = cidr4([10, 97, 0, 0], 16);
    for (what, policy, counter) in [
        ("excluded port", excl_port, Counter::SkipPort),
        ("port not in the include list", incl_port, Counter::SkipPort),
        ("excluded CIDR", excl_cidr, Counter::SkipCidr),
        ("CIDR not in the include list", incl_cidr, Counter::SkipCidr),
    ] {
        let pod = f.enroll_pod(policy);
        let before = f.dp().counters().unwrap().get(counter);
        assert_not_captured(&pod.ns, what);
        assert!(
            f.dp().counters().unwrap().get(counter) > before,
            "{what}: {counter:?} did not rise"
        );
    }

    // Only TCP is captured: a UDP connect to the VIP finds no route.
    let pod = f.enroll_pod(Fixture::node_policy());
    let before = f.dp().counters().unwrap().get(Counter::SkipNotTcp);
    let err = pod.run(|| {
        let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        u.connect(VIP4).unwrap_err().raw_os_error()
    });
    assert_eq!(err, Some(libc::ENETUNREACH), "a UDP socket was captured");
    assert!(f.dp().counters().unwrap().get(Counter::SkipNotTcp) > before);

    // Loopback destinations go where they were sent.
    let pod = f.enroll_pod(Fixture::node_policy());
    let before = f.dp().counters().unwrap().get(Counter::SkipLoopback);
    pod.run(|| {
        let proxy = TcpListener::bind("127.0.0.1:15001").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let local = TcpListener::bind("127.0.0.1:0").unwrap();
        let app = TcpStream::connect(local.local_addr().unwrap()).unwrap();
        let (_, peer) = local.accept().unwrap();
        assert_eq!(peer, app.local_addr().unwrap());
        assert!(
            proxy.accept().is_err(),
            "loopback connect reached the proxy"
        );
    });
    assert!(f.dp().counters().unwrap().get(Counter::SkipLoopback) > before);
}

#[test]
fn excluded_cidr_reaches_the_real_peer_over_veth() {
    let mut f = Fixture::new("kdv");
    let peer = Netns::new("kdv");
    let mut policy = Fixture::node_policy();
    let pod = f.enroll_pod(policy);
    let veth = Veth::new("kv", &pod.ns, &peer);
    let target = SocketAddr::from((veth.b_v4, 8080));
    let _server = peer.run(move || TcpListener::bind(target).unwrap());
    // Not excluded: captured, the proxy gets it with the veth peer as original destination.
    let orig = pod.run(move || {
        let l = TcpListener::bind("127.0.0.1:15001").unwrap();
        let _app = TcpStream::connect(target).unwrap();
        orig_dst_v4(&l.accept().unwrap().0)
    });
    assert_eq!(orig.unwrap(), SocketAddrV4::new(veth.b_v4, 8080));
    // Excluded: goes straight to the peer.
    policy.n_exclude_outbound_cidrs = 1;
    let [a, b, c, _] = veth.b_v4.octets();
    policy.exclude_outbound_cidrs[0] = cidr4([a, b, c, 0], 24);
    f.dp().set_policy(pod.cookie(), &policy).unwrap();
    let peer_seen = pod.run(move || {
        let _l = TcpListener::bind("127.0.0.1:15001").unwrap();
        TcpStream::connect(target).unwrap().peer_addr().unwrap()
    });
    assert_eq!(peer_seen, target);
}

#[test]
fn proxy_marked_socket_is_not_captured() {
    let mut f = Fixture::new("kdm");
    let pod = f.enroll_pod(Fixture::node_policy());
    let before = f.dp().counters().unwrap().get(Counter::SkipProxy);
    let (marked, unmarked) = pod.run(|| {
        let _l = TcpListener::bind("127.0.0.1:15001").unwrap();
        (
            connect_raw(VIP4.parse().unwrap(), Some(PROXY_MARK))
                .err()
                .and_then(|e| e.raw_os_error()),
            connect_raw(VIP4.parse().unwrap(), Some(PROXY_MARK + 1)).map(|_| ()),
        )
    });
    assert_eq!(
        marked,
        Some(libc::ENETUNREACH),
        "the proxy's own socket was captured"
    );
    unmarked.expect("a socket with another mark is captured");
    assert!(f.dp().counters().unwrap().get(Counter::SkipProxy) > before);
}

#[test]
fn uid_1337_is_captured_unless_policy_exempts_it() {
    let mut f = Fixture::new("kdu");
    const APP: &str = "import socket\ns = socket.socket()\ntry:\n    s.connect(('10.96.0.10', 80))\n    print('connected', s.getpeername())\nexcept OSError as e:\n    print('errno', e.errno)\n";
    let run_app = |f: &Fixture, pod: &Pod| {
        let l = pod.run(|| {
            let l = TcpListener::bind("127.0.0.1:15001").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let out = pod
            .ns
            .command_as("python3", Some(&f.cg), Some((PROXY_UID, PROXY_UID)))
            .args(["-c", APP])
            .output()
            .expect("spawn python3 as uid 1337");
        assert!(
            out.status.success(),
            "python3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let accepted = l.accept().ok().map(|(s, _)| orig_dst_v4(&s));
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            accepted,
        )
    };

    let node = f.enroll_pod(Fixture::node_policy());
    let (out, accepted) = run_app(&f, &node);
    assert_eq!(
        out, "connected ('10.96.0.10', 80)",
        "uid 1337 escaped capture in node mode"
    );
    assert_eq!(
        accepted.expect("proxy accepted").unwrap(),
        VIP4.parse::<SocketAddrV4>().unwrap()
    );

    let sidecar = f.enroll_pod(NetnsPolicy {
        mode: mode::SIDECAR,
        flags: flags::EXEMPT_UID,
        exempt_uid: PROXY_UID,
        exempt_gid: PROXY_UID,
        ..Fixture::node_policy()
    });
    let (out, accepted) = run_app(&f, &sidecar);
    assert_eq!(
        out,
        format!("errno {}", libc::ENETUNREACH),
        "exempt uid was captured"
    );
    assert!(accepted.is_none());
}

/// What one [`transfer_both_ways`] observed.
struct Transfer {
    /// Bytes counted on `lo` (rx + tx) during the transfer.
    lo_bytes: u64,
    /// Blocking reads that returned EAGAIN (the kernel's tcp_bpf receive path can wake a
    /// reader without data, e.g. on a write-space wakeup of the same socket).
    spurious_eagain: usize,
}

/// 1 MiB each way at once, each side half-closing after its last byte, checked byte for byte.
fn transfer_both_ways(pod: &Pod) -> Transfer {
    const LEN: usize = 1 << 20;
    let pattern = |seed: u8| {
        (0..LEN)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
    };
    let lo_before = pod.ns.link_stats("lo");
    let eagain = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let eagain2 = eagain.clone();
    pod.run(move || {
        let l = TcpListener::bind("127.0.0.1:15001").unwrap();
        let app = TcpStream::connect(VIP4).unwrap();
        let (proxy, _) = l.accept().unwrap();
        let mut threads = Vec::new();
        for (sock, seed) in [(app, 1u8), (proxy, 2u8)] {
            let mut w = sock.try_clone().unwrap();
            threads.push(std::thread::spawn(move || {
                w.write_all(&pattern(seed)).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
                Vec::new()
            }));
            let mut r = sock;
            let eagain = eagain2.clone();
            threads.push(std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            eagain.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => panic!("read: {e}"),
                    }
                }
                got
            }));
        }
        let results: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // results: [app writer, app reader, proxy writer, proxy reader]
        assert!(
            results[1] == pattern(2),
            "app received corrupted/short data ({} bytes)",
            results[1].len()
        );
        assert!(
            results[3] == pattern(1),
            "proxy received corrupted/short data ({} bytes)",
            results[3].len()
        );
    });
    let lo_after = pod.ns.link_stats("lo");
    Transfer {
        lo_bytes: (lo_after.rx_bytes - lo_before.rx_bytes)
            + (lo_after.tx_bytes - lo_before.tx_bytes),
        spurious_eagain: eagain.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[test]
fn fast_path_moves_bytes_outside_the_stack_and_can_be_switched_off() {
    let mut f = Fixture::new("kdf");
    let pod = f.enroll_pod(Fixture::node_policy());
    let before = f.dp().counters().unwrap();
    let on = transfer_both_ways(&pod);
    let after = f.dp().counters().unwrap();
    let fast_bytes = after.get(Counter::FastPathBytes) - before.get(Counter::FastPathBytes);
    let fast_msgs = after.get(Counter::FastPathMsgs) - before.get(Counter::FastPathMsgs);
    eprintln!(
        "fast path on: sk_msg {fast_bytes} bytes in {fast_msgs} msgs, lo {} bytes, {} spurious EAGAIN",
        on.lo_bytes, on.spurious_eagain
    );
    assert!(
        fast_bytes >= 2 << 20,
        "sk_msg carried only {fast_bytes} bytes"
    );
    assert!(
        on.lo_bytes < 64 << 10,
        "lo counted {} bytes with the fast path on",
        on.lo_bytes
    );
    f.wait_entries(pod.cookie(), 1);

    let mut policy = Fixture::node_policy();
    policy.fast_path = 0;
    f.dp().set_policy(pod.cookie(), &policy).unwrap();
    let before = f.dp().counters().unwrap();
    let off = transfer_both_ways(&pod);
    let after = f.dp().counters().unwrap();
    eprintln!(
        "fast path off: lo {} bytes, {} spurious EAGAIN",
        off.lo_bytes, off.spurious_eagain
    );
    assert_eq!(
        after.get(Counter::FastPathBytes),
        before.get(Counter::FastPathBytes)
    );
    assert!(
        off.lo_bytes >= 2 * (2 << 20),
        "lo counted only {} bytes with the fast path off",
        off.lo_bytes
    );
    assert_eq!(
        off.spurious_eagain, 0,
        "fast path off must leave the sockets plain TCP sockets"
    );
    f.wait_entries(pod.cookie(), 1);
}

#[test]
fn fast_path_switched_off_mid_connection_keeps_byte_order() {
    let mut f = Fixture::new("kds");
    let pod = f.enroll_pod(Fixture::node_policy());
    let (l, mut app, mut proxy) = captured_via_proxy(&pod);
    let chunk = |i: u8| vec![i; 32 << 10];
    app.write_all(&chunk(1)).unwrap();
    let fast_before = f.dp().counters().unwrap().get(Counter::FastPathBytes);
    assert!(
        fast_before >= 32 << 10,
        "first chunk did not take the fast path"
    );
    let mut off = Fixture::node_policy();
    off.fast_path = 0;
    f.dp().set_policy(pod.cookie(), &off).unwrap();
    app.write_all(&chunk(2)).unwrap();
    let miss = f.dp().counters().unwrap().get(Counter::FastPathMiss);
    assert!(miss >= 1, "second chunk was not sent through the stack");
    // Back on: this connection stays on the stack (switching back could reorder bytes).
    f.dp()
        .set_policy(pod.cookie(), &Fixture::node_policy())
        .unwrap();
    app.write_all(&chunk(3)).unwrap();
    app.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        f.dp().counters().unwrap().get(Counter::FastPathBytes),
        fast_before
    );
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match proxy.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let want: Vec<u8> = [chunk(1), chunk(2), chunk(3)].concat();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bytes arrived out of order");
    drop((l, app, proxy));
    f.wait_entries(pod.cookie(), 1);
}

#[test]
fn remove_netns_deletes_every_entry_of_the_cookie() {
    let mut f = Fixture::new("kdr");
    let pod = f.enroll_pod(Fixture::node_policy());
    let other = f.enroll_pod(Fixture::node_policy());
    let (l, app, conn) = pod.run(|| {
        let l = TcpListener::bind("127.0.0.1:15001").unwrap();
        let app = TcpStream::connect(VIP4).unwrap();
        let (conn, _) = l.accept().unwrap();
        (l, app, conn)
    });
    // policy + orig by socket + orig by tuple + both SockHash ends.
    assert_eq!(f.dp().entries_for(pod.cookie()).unwrap(), 5);
    let removed = f.dp().remove_netns(pod.cookie()).unwrap();
    assert_eq!(removed, 5);
    assert_eq!(f.dp().entries_for(pod.cookie()).unwrap(), 0);
    assert!(f
        .dp()
        .policies()
        .unwrap()
        .iter()
        .all(|(c, _)| *c != pod.cookie()));
    assert_eq!(
        f.dp().entries_for(other.cookie()).unwrap(),
        1,
        "another netns lost its entries"
    );
    drop((l, app, conn));
    // Not enrolled any more: untouched.
    let err = pod.run(|| TcpStream::connect(VIP4).unwrap_err().raw_os_error());
    assert_eq!(err, Some(libc::ENETUNREACH));
}

#[test]
fn fifty_cookies_set_and_removed_leave_maps_as_they_were() {
    let mut f = Fixture::new("kd50");
    let start = f.dp().map_sizes().unwrap();
    let start_policies = f.dp().policies().unwrap().len();
    let cookies: Vec<u64> = (0..50).map(|i| 0x51ce_0000_0000 + i).collect();
    for (i, c) in cookies.iter().enumerate() {
        let mut p = Fixture::node_policy();
        p.fast_path = (i % 2) as u8;
        f.dp().set_policy(*c, &p).unwrap();
    }
    assert_eq!(f.dp().policies().unwrap().len(), start_policies + 50);
    assert_eq!(f.dp().policy(cookies[7]).unwrap().unwrap().fast_path, 1);
    for c in &cookies {
        assert_eq!(f.dp().remove_netns(*c).unwrap(), 1);
        assert_eq!(f.dp().entries_for(*c).unwrap(), 0);
    }
    assert_eq!(f.dp().map_sizes().unwrap(), start);
    assert_eq!(f.dp().policies().unwrap().len(), start_policies);
}

#[test]
fn invalid_policy_is_rejected_naming_the_field() {
    let mut f = Fixture::new("kdi");
    let mut p = Fixture::node_policy();
    p.n_exclude_outbound_ports = 17;
    let err = f.dp().set_policy(1, &p).unwrap_err().to_string();
    assert!(err.contains("n_exclude_outbound_ports"), "{err}");
    let err = f
        .dp()
        .set_policy(
            1,
            &NetnsPolicy {
                outbound_port: 0,
                ..Fixture::node_policy()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("outbound_port"), "{err}");
    assert_eq!(f.dp().entries_for(1).unwrap(), 0);
}

#[test]
fn dropping_the_datapath_detaches_every_program() {
    require_root();
    let mut f = Fixture::new("kdd");
    let pod = f.enroll_pod(Fixture::node_policy());
    let cg = f.cg.path().to_path_buf();
    let shown = run_cmd("bpftool", &["cgroup", "show", cg.to_str().unwrap()]);
    for hook in [
        "connect4",
        "connect6",
        "sock_ops",
        "getsockopt",
        "getpeername4",
        "getpeername6",
    ] {
        assert!(
            shown.contains(hook),
            "{hook} not attached to {}:\n{shown}",
            cg.display()
        );
    }
    let pins = f.pins.entries();
    assert!(
        pins.contains(&"sluice_policy_v1".to_string()),
        "maps not pinned: {pins:?}"
    );
    f.drop_datapath();
    let shown = run_cmd("bpftool", &["cgroup", "show", cg.to_str().unwrap()]);
    assert!(
        shown.trim().is_empty(),
        "programs still attached after drop:\n{shown}"
    );
    assert_not_captured(&pod.ns, "after dropping the data path");
    // The pins outlive the programs (agent restart), until the pin dir is removed.
    assert!(f.pins.entries().contains(&"sluice_policy_v1".to_string()));
}

#[test]
fn reload_on_the_same_pins_keeps_policies_and_capture() {
    let site = LoadSite::new("kdp");
    let pod = Netns::new("kdp");
    let cookie = pod.cookie();
    let mut dp = site.load();
    dp.set_policy(cookie, &Fixture::node_policy()).unwrap();
    drop(dp);
    // A new agent finds the enrolled pod in the pinned map and captures again.
    let dp = site.load();
    assert_eq!(dp.policy(cookie).unwrap(), Some(Fixture::node_policy()));
    let _inside = site.cg.enter_process();
    let orig = pod.run(|| {
        let l = TcpListener::bind("127.0.0.1:15001").unwrap();
        let _app = TcpStream::connect(VIP4).unwrap();
        orig_dst_v4(&l.accept().unwrap().0)
    });
    assert_eq!(orig.unwrap(), VIP4.parse::<SocketAddrV4>().unwrap());
    drop(_inside);
    site.unload(dp);
}

#[test]
fn persisted_datapath_keeps_capturing_until_the_next_agent_takes_over() {
    let site = LoadSite::new("kdq");
    let pod = Netns::new("kdq");
    let cookie = pod.cookie();
    let cg_path = site.cg.path().to_str().unwrap().to_string();
    let attached = || {
        run_cmd("bpftool", &["cgroup", "show", &cg_path])
            .lines()
            .filter(|l| l.contains("sluice_"))
            .count()
    };
    let capture_works = |pod: &Netns| {
        pod.run(|| {
            let l = TcpListener::bind("127.0.0.1:15001").unwrap();
            let _app = TcpStream::connect(VIP4).unwrap();
            orig_dst_v4(&l.accept().unwrap().0).unwrap()
        })
    };
    // sk_msg attaches to the SockHash, sk_lookup to pod netns.
    let cgroup_hooks = sluice_node::bpf::HOOKS
        .iter()
        .filter(|h| matches!(h.target, sluice_node::bpf::Target::Cgroup(_)))
        .count();
    let _inside = site.cg.enter_process();

    let mut dp = site.load();
    dp.set_policy(cookie, &Fixture::node_policy()).unwrap();
    dp.persist().unwrap();
    // No Datapath in this process any more, still captured.
    assert_eq!(attached(), cgroup_hooks, "persisted programs not attached");
    assert_eq!(capture_works(&pod), VIP4.parse::<SocketAddrV4>().unwrap());

    // The next agent attaches its own and releases the pinned ones.
    let dp = site.load();
    assert_eq!(
        attached(),
        cgroup_hooks,
        "old and new programs both attached"
    );
    assert!(!site.links_pinned());
    assert_eq!(capture_works(&pod), VIP4.parse::<SocketAddrV4>().unwrap());
    // Fast path still works with the new sk_msg on the shared SockHash.
    let before = dp.counters().unwrap().get(Counter::FastPathBytes);
    pod.run(|| {
        let l = TcpListener::bind("127.0.0.1:15001").unwrap();
        let mut app = TcpStream::connect(VIP4).unwrap();
        let (mut proxy, _) = l.accept().unwrap();
        app.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        read_exact_retry(&mut proxy, &mut buf);
        assert_eq!(&buf, b"ping");
    });
    assert_eq!(
        dp.counters().unwrap().get(Counter::FastPathBytes) - before,
        4
    );
    site.unload(dp);
    assert_eq!(attached(), 0, "programs left after unload");
}

#[test]
fn established_connections_survive_dropping_the_datapath() {
    let mut f = Fixture::new("kde");
    let pod = f.enroll_pod(Fixture::node_policy());
    let (l, mut app, mut proxy) = captured_via_proxy(&pod);
    app.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    read_exact_retry(&mut proxy, &mut buf);
    assert_eq!(&buf, b"before");
    f.drop_datapath();
    app.write_all(b"after!").unwrap();
    read_exact_retry(&mut proxy, &mut buf);
    assert_eq!(&buf, b"after!");
    proxy.write_all(b"back").unwrap();
    let mut back = [0u8; 4];
    read_exact_retry(&mut app, &mut back);
    assert_eq!(&back, b"back");
    drop((l, app, proxy));
}

/// Inside `ns`, with the test's proxy listening on 127.0.0.1:15001, a connect to [`VIP4`] is
/// not captured: it fails with `ENETUNREACH` (a pod has no route to it). `what` names the case.
fn assert_not_captured(ns: &Netns, what: &str) {
    let err = ns.run(|| {
        let _l = TcpListener::bind("127.0.0.1:15001").unwrap();
        TcpStream::connect(VIP4).unwrap_err().raw_os_error()
    });
    assert_eq!(
        err,
        Some(libc::ENETUNREACH),
        "{what}: connection to {VIP4} was captured"
    );
}

/// Inside `pod`: the test's proxy listener on 127.0.0.1:15001 and an app connection to [`VIP4`]
/// captured onto it; returns (listener, app side, proxy side).
fn captured_via_proxy(pod: &Pod) -> (TcpListener, TcpStream, TcpStream) {
    pod.run(|| {
        let l = TcpListener::bind("127.0.0.1:15001").unwrap();
        let app = TcpStream::connect(VIP4).unwrap();
        let (proxy, _) = l.accept().unwrap();
        (l, app, proxy)
    })
}

/// `read_exact` that retries the spurious EAGAIN a blocking read can get on a SockHash socket.
fn read_exact_retry(s: &mut TcpStream, buf: &mut [u8]) {
    let mut off = 0;
    while off < buf.len() {
        match s.read(&mut buf[off..]) {
            Ok(0) => panic!("EOF after {off} bytes"),
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn cidr4(octets: [u8; 4], len: u8) -> Cidr {
    let mut c = Cidr::zeroed();
    c.addr = Ipv4Addr::from(octets).to_ipv6_mapped().octets();
    c.prefix_len = len + 96;
    c
}
