//! Kernel-level tests of inbound capture (sk_lookup) through `sluice_node::bpf::Datapath`.
//!
//! A client netns dials the server pod over a veth. The test plays the inbound proxy (a listener
//! on 15006 inside the pod, registered with `set_inbound_listener`) and the app (a listener on the
//! app port); the proxy forwards to the app from 127.0.0.6 / ::6 with `SO_MARK = PROXY_MARK`,
//! like the real passthrough. Run as root: `cargo test -p sluice-tests --test inbound`.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use sluice_common::{flags, Counter, NetnsPolicy, PROXY_MARK};
use sluice_node::bpf::Datapath;
use sluice_tests::{
    datapath::{Fixture, LoadSite},
    inbound::{
        accept, accept_within, assert_idle, send, sk_lookup_links, sk_lookup_links_gone,
        InboundFixture, ProxyPod,
    },
    sock::{connect_from, listen_reuseport, listen_v6},
    Netns,
};

const APP_PORT: u16 = 8080;

fn passthrough_v4() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(127, 0, 0, 6).into(), 0)
}

fn passthrough_v6() -> SocketAddr {
    SocketAddr::new(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(), 0)
}

/// The proxy's forward to the app: from the passthrough source, marked (so connect4/6 leave it).
fn forward(s: &InboundFixture, to: SocketAddr) -> TcpStream {
    let src = if to.is_ipv4() {
        passthrough_v4()
    } else {
        passthrough_v6()
    };
    s.pod.run(move || {
        connect_from(src, to, Some(PROXY_MARK))
            .unwrap_or_else(|e| panic!("forward {src} -> {to}: {e}"))
    })
}

fn add_v6_passthrough(s: &InboundFixture) {
    s.pod
        .ns
        .ip(&["-6", "addr", "add", "::6/128", "dev", "lo", "nodad"]);
}

#[test]
fn captures_ipv4_and_the_app_sees_127_0_0_6() {
    let mut s = InboundFixture::new("ib4", Fixture::node_policy());
    let app = s.listen("0.0.0.0:8080");
    let proxy = s.listen("0.0.0.0:15006");
    let cookie = s.pod.cookie();
    s.f.dp().set_inbound_listener(cookie, &proxy).unwrap();
    let before = s.f.dp().counters().unwrap();

    let dst = s.pod_v4(APP_PORT);
    let mut client = s.dial(dst).expect("client connect to the pod");
    let (mut down, peer) = accept(&proxy, "inbound listener");
    assert_eq!(
        down.local_addr().unwrap(),
        dst,
        "the accepted socket's local address is the original destination"
    );
    assert_eq!(peer, client.local_addr().unwrap(), "peer is the client");
    assert_idle(&app, "app (connection must go through the proxy)");

    let mut up = forward(&s, down.local_addr().unwrap());
    let (mut app_conn, app_peer) = accept(&app, "app");
    assert_eq!(
        app_peer.ip(),
        Ipv4Addr::new(127, 0, 0, 6),
        "app sees the passthrough source"
    );
    assert_idle(&proxy, "proxy (127.0.0.6 must not loop back)");

    send(&mut client, &mut down, b"hello");
    send(&mut up, &mut app_conn, b"hello");
    send(&mut app_conn, &mut up, b"world");
    send(&mut down, &mut client, b"world");

    let after = s.f.dp().counters().unwrap();
    let delta = |c| after.get(c) - before.get(c);
    assert_eq!(delta(Counter::InboundCaptured), 1);
    assert!(
        delta(Counter::SkipLoopback) >= 1,
        "127.0.0.6 skip not counted"
    );
    assert_eq!(delta(Counter::InboundNoListener), 0);
}

#[test]
fn captures_ipv6_and_a_dual_stack_listener_takes_ipv4() {
    let mut s = InboundFixture::new("ib6", Fixture::node_policy());
    add_v6_passthrough(&s);
    let cookie = s.pod.cookie();
    let app = s
        .pod
        .run(|| listen_v6(APP_PORT, false).expect("app on [::]:8080"));
    let proxy4 = s.listen("0.0.0.0:15006");
    let proxy6 = s
        .pod
        .run(|| listen_v6(15006, true).expect("[::]:15006 v6only"));
    s.f.dp().set_inbound_listener(cookie, &proxy4).unwrap();
    s.f.dp().set_inbound_listener(cookie, &proxy6).unwrap();

    // IPv6 lands on the AF_INET6 listener, with the original destination as local address.
    let dst6 = s.pod_v6(APP_PORT);
    let mut client = s.dial(dst6).expect("client connect over IPv6");
    let (mut down, _) = accept(&proxy6, "IPv6 inbound listener");
    assert_eq!(down.local_addr().unwrap(), dst6);
    assert_idle(&proxy4, "IPv4 listener");
    let mut up = forward(&s, dst6);
    let (mut app_conn, app_peer) = accept(&app, "app over IPv6");
    assert_eq!(app_peer.ip(), Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6));
    assert_idle(&proxy6, "proxy (::6 must not loop back)");
    send(&mut client, &mut down, b"v6 in");
    send(&mut up, &mut app_conn, b"v6 in");
    send(&mut app_conn, &mut up, b"v6 out");
    send(&mut down, &mut client, b"v6 out");

    // IPv4 lands on the AF_INET listener.
    let dst4 = s.pod_v4(APP_PORT);
    let _c4 = s.dial(dst4).expect("client connect over IPv4");
    let (down4, _) = accept(&proxy4, "IPv4 inbound listener");
    assert_eq!(down4.local_addr().unwrap(), dst4);
    assert_idle(&proxy6, "IPv6 listener");

    // Only a dual-stack [::]:15006 registered: it takes IPv4 as well.
    drop((proxy4, proxy6));
    assert_eq!(
        s.f.dp().entries_for(cookie).unwrap(),
        2,
        "closed listeners leave the map"
    );
    let dual = s
        .pod
        .run(|| listen_v6(15006, false).expect("[::]:15006 dual-stack"));
    s.f.dp().set_inbound_listener(cookie, &dual).unwrap();
    let _c4 = s.dial(dst4).expect("client connect over IPv4");
    let (down4, _) = accept(&dual, "dual-stack inbound listener");
    let local = down4.local_addr().unwrap();
    assert_eq!(
        SocketAddr::new(local.ip().to_canonical(), local.port()),
        dst4,
        "v4-mapped original destination"
    );
}

#[test]
fn excluded_ports_go_straight_to_the_app() {
    let mut policy = Fixture::node_policy();
    policy.n_exclude_inbound_ports = 1;
    policy.exclude_inbound_ports[0] = 9090;
    let mut s = InboundFixture::new("ibx", policy);
    let cookie = s.pod.cookie();
    let proxy = s.listen("0.0.0.0:15006");
    s.f.dp().set_inbound_listener(cookie, &proxy).unwrap();
    let before = s.f.dp().counters().unwrap();
    // Istio's own ports, the pod's addition, the outbound listener port.
    let excluded = [15008, 15090, 15021, 15020, 9090, 15001];
    for port in excluded {
        let app = s.listen(&format!("0.0.0.0:{port}"));
        let _c = s.dial(s.pod_v4(port)).expect("connect to an excluded port");
        let (conn, _) = accept(&app, &format!("app on excluded port {port}"));
        assert_eq!(conn.local_addr().unwrap(), s.pod_v4(port));
        assert_idle(&proxy, &format!("proxy for excluded port {port}"));
    }
    // A direct connection to the inbound port reaches its listener the ordinary way.
    let _c = s.dial(s.pod_v4(15006)).unwrap();
    let (conn, _) = accept(&proxy, "inbound port dialled directly");
    assert_eq!(conn.local_addr().unwrap(), s.pod_v4(15006));
    let after = s.f.dp().counters().unwrap();
    assert_eq!(
        after.get(Counter::InboundSkipPort) - before.get(Counter::InboundSkipPort),
        excluded.len() as u64 + 1
    );
    assert_eq!(
        after.get(Counter::InboundCaptured),
        before.get(Counter::InboundCaptured)
    );
    // Any other port is captured.
    let app = s.listen("0.0.0.0:8080");
    let _c = s.dial(s.pod_v4(APP_PORT)).unwrap();
    accept(&proxy, "proxy for port 8080");
    assert_idle(&app, "app on 8080");
}

#[test]
fn passthrough_and_loopback_sources_are_never_captured() {
    let mut s = InboundFixture::new("ibl", Fixture::node_policy());
    add_v6_passthrough(&s);
    let cookie = s.pod.cookie();
    let app4 = s.listen("0.0.0.0:8080");
    let app6 = s.pod.run(|| listen_v6(APP_PORT, true).unwrap());
    let proxy4 = s.listen("0.0.0.0:15006");
    let proxy6 = s.pod.run(|| listen_v6(15006, true).unwrap());
    s.f.dp().set_inbound_listener(cookie, &proxy4).unwrap();
    s.f.dp().set_inbound_listener(cookie, &proxy6).unwrap();
    let before = s.f.dp().counters().unwrap();
    let pod4 = s.pod_v4(APP_PORT);
    let pod6 = s.pod_v6(APP_PORT);
    let cases: [(SocketAddr, SocketAddr, &TcpListener); 5] = [
        (passthrough_v4(), pod4, &app4),
        ("127.0.0.1:0".parse().unwrap(), pod4, &app4),
        (
            "127.0.0.9:0".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
            &app4,
        ),
        (passthrough_v6(), pod6, &app6),
        (
            "[::1]:0".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
            &app6,
        ),
    ];
    for (src, dst, app) in cases {
        let _c = s.pod.run(move || {
            connect_from(src, dst, Some(PROXY_MARK))
                .unwrap_or_else(|e| panic!("{src} -> {dst}: {e}"))
        });
        let (_, peer) = accept(app, &format!("app for {src} -> {dst}"));
        assert_eq!(peer.ip(), src.ip(), "{src} -> {dst}");
        assert_idle(&proxy4, &format!("proxy4 for {src} -> {dst}"));
        assert_idle(&proxy6, &format!("proxy6 for {src} -> {dst}"));
    }
    let after = s.f.dp().counters().unwrap();
    assert_eq!(
        after.get(Counter::InboundCaptured),
        before.get(Counter::InboundCaptured)
    );
    assert!(after.get(Counter::SkipLoopback) - before.get(Counter::SkipLoopback) >= 5);
}

#[test]
fn netns_not_enrolled_or_off_is_untouched() {
    for enrolled_off in [false, true] {
        let mut s = InboundFixture::new("ibn", Fixture::node_policy());
        let cookie = s.pod.cookie();
        if enrolled_off {
            let mut p = Fixture::node_policy();
            p.mode = sluice_common::mode::OFF;
            s.f.dp().set_policy(cookie, &p).unwrap();
        } else {
            s.f.dp().remove_netns(cookie).unwrap();
            // sk_lookup linked, listener registered, but no policy at all.
            s.f.dp().attach_inbound(cookie, s.pod.ns.file()).unwrap();
        }
        let proxy = s.listen("0.0.0.0:15006");
        s.f.dp().set_inbound_listener(cookie, &proxy).unwrap();
        let app = s.listen("0.0.0.0:8080");
        let _c = s.dial(s.pod_v4(APP_PORT)).unwrap();
        accept(&app, &format!("app (mode off: {enrolled_off})"));
        assert_idle(&proxy, &format!("proxy (mode off: {enrolled_off})"));
    }
}

#[test]
fn without_a_listener_fail_closed_resets_and_fail_open_goes_to_the_app() {
    for fail_open in [false, true] {
        let policy = NetnsPolicy {
            flags: if fail_open { flags::FAIL_OPEN } else { 0 },
            ..Fixture::node_policy()
        };
        let mut s = InboundFixture::new("ibf", policy);
        let cookie = s.pod.cookie();
        let app = s.listen("0.0.0.0:8080");
        let before = s.f.dp().counters().unwrap().get(Counter::InboundNoListener);
        let check = |s: &InboundFixture, what: &str| {
            let r = s.dial(s.pod_v4(APP_PORT));
            if fail_open {
                r.unwrap_or_else(|e| panic!("fail-open, {what}: {e}"));
                accept(&app, &format!("app, fail-open, {what}"));
            } else {
                let e = r.expect_err("fail-closed: the connection must be refused");
                assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{what}: {e}");
                assert_idle(&app, &format!("app, fail-closed, {what}"));
            }
        };
        check(&s, "never registered");
        // A registered listener that closes leaves the map by itself: same outcome.
        let proxy = s.listen("0.0.0.0:15006");
        s.f.dp().set_inbound_listener(cookie, &proxy).unwrap();
        assert_eq!(s.f.dp().entries_for(cookie).unwrap(), 3);
        drop(proxy);
        assert_eq!(s.f.dp().entries_for(cookie).unwrap(), 2);
        check(&s, "listener closed");
        let after = s.f.dp().counters().unwrap().get(Counter::InboundNoListener);
        assert_eq!(after - before, 2, "fail_open {fail_open}");
    }
}

#[test]
fn detach_and_remove_netns_leave_nothing() {
    let mut s = InboundFixture::new("ibd", Fixture::node_policy());
    let cookie = s.pod.cookie();
    let app = s.listen("0.0.0.0:8080");
    let proxy4 = s.listen("0.0.0.0:15006");
    let proxy6 = s.pod.run(|| listen_v6(15006, true).unwrap());
    s.f.dp().set_inbound_listener(cookie, &proxy4).unwrap();
    s.f.dp().set_inbound_listener(cookie, &proxy6).unwrap();
    let captured = |s: &InboundFixture| {
        let _c = s.dial(s.pod_v4(APP_PORT)).unwrap();
        match accept_within(&proxy4, Duration::from_millis(500)) {
            Some(_) => {
                assert_idle(&app, "app while captured");
                true
            }
            None => {
                accept(&app, "app while not captured");
                false
            }
        }
    };
    assert_eq!(sk_lookup_links(&s.pod.ns).len(), 1);
    assert_eq!(s.f.dp().inbound_netns(), vec![cookie]);
    // policy + link + 2 listeners
    assert_eq!(s.f.dp().entries_for(cookie).unwrap(), 4);
    s.f.dp().attach_inbound(cookie, s.pod.ns.file()).unwrap();
    assert_eq!(sk_lookup_links(&s.pod.ns).len(), 1, "attach is idempotent");
    assert!(captured(&s));

    assert!(s.f.dp().detach_inbound(cookie).unwrap());
    assert!(sk_lookup_links_gone(&s.pod.ns), "link left after detach");
    assert!(!s.f.dp().detach_inbound(cookie).unwrap());
    assert_eq!(s.f.dp().entries_for(cookie).unwrap(), 3);
    assert!(!captured(&s));

    s.f.dp().attach_inbound(cookie, s.pod.ns.file()).unwrap();
    assert!(captured(&s));
    assert_eq!(s.f.dp().remove_netns(cookie).unwrap(), 4);
    assert_eq!(s.f.dp().entries_for(cookie).unwrap(), 0);
    assert!(
        sk_lookup_links_gone(&s.pod.ns),
        "link left after remove_netns"
    );
    assert_eq!(
        s.f.dp().map_sizes().unwrap()[5],
        0,
        "listener map not empty"
    );
    assert!(s.f.dp().inbound_netns().is_empty());
    assert!(!captured(&s));

    // Dropping the data path detaches a link too.
    s.f.dp()
        .set_policy(cookie, &Fixture::node_policy())
        .unwrap();
    s.f.dp().attach_inbound(cookie, s.pod.ns.file()).unwrap();
    s.f.dp().set_inbound_listener(cookie, &proxy4).unwrap();
    assert!(captured(&s));
    s.f.drop_datapath();
    assert!(sk_lookup_links_gone(&s.pod.ns), "link left after drop");
    assert!(!captured(&s));
}

#[test]
fn bad_netns_fd_and_bad_listeners_are_rejected() {
    let mut s = InboundFixture::new("ibe", Fixture::node_policy());
    let cookie = s.pod.cookie();
    s.f.dp().detach_inbound(cookie).unwrap();
    let e =
        s.f.dp()
            .attach_inbound(cookie, s.client.file())
            .unwrap_err()
            .to_string();
    assert!(e.contains("the fd is netns"), "{e}");
    assert!(sk_lookup_links_gone(&s.client));
    type MakeSocket = Box<dyn Fn(&InboundFixture) -> std::os::fd::OwnedFd>;
    let cases: [(&str, MakeSocket); 4] = [
        (
            "belongs to netns",
            Box::new(|s| {
                s.client
                    .run(|| TcpListener::bind("0.0.0.0:15006").unwrap())
                    .into()
            }),
        ),
        (
            "is not TCP",
            Box::new(|s| {
                s.pod
                    .run(|| std::net::UdpSocket::bind("0.0.0.0:15006").unwrap())
                    .into()
            }),
        ),
        (
            "not listening",
            Box::new(|s| {
                s.pod
                    .run(|| {
                        let l = TcpListener::bind("127.0.0.1:8081").unwrap();
                        let c = TcpStream::connect("127.0.0.1:8081").unwrap();
                        drop(l);
                        c
                    })
                    .into()
            }),
        ),
        (
            "inbound_port is 15006",
            Box::new(|s| s.listen("0.0.0.0:15007").into()),
        ),
    ];
    for (want, make) in cases {
        let sock = make(&s);
        let e =
            s.f.dp()
                .set_inbound_listener(cookie, &sock)
                .unwrap_err()
                .to_string();
        assert!(e.contains(want), "want {want:?} in: {e}");
    }
    assert_eq!(s.f.dp().entries_for(cookie).unwrap(), 1, "only the policy");
}

#[test]
fn persisted_inbound_capture_is_adopted_by_the_next_agent() {
    let site = LoadSite::new("ibp");
    let p = ProxyPod::new("ibp", APP_PORT);
    let cookie = p.pod.cookie();
    let link_pin = p.link_pin(&site.pins);

    let mut dp = site.load();
    p.enroll(&mut dp);
    let (mut est_client, mut est_proxy) = p.captured("first agent");
    let links = sk_lookup_links(&p.pod);
    assert_eq!(links.len(), 1);
    let prog_of = |id: u32| {
        sluice_tests::run_cmd("bpftool", &["link", "show", "id", &id.to_string()])
            .split_whitespace()
            .skip_while(|w| *w != "prog")
            .nth(1)
            .map(str::to_string)
            .expect("prog id in bpftool link show")
    };
    let first_prog = prog_of(links[0]);

    dp.persist().unwrap();
    assert!(
        link_pin.exists(),
        "sk_lookup link not pinned at {}",
        link_pin.display()
    );
    assert_eq!(
        sk_lookup_links(&p.pod),
        links,
        "link gone without a Datapath"
    );
    let _gap = p.captured("no agent running");

    let mut dp = site.load();
    assert!(!link_pin.exists(), "pin not taken over");
    assert_eq!(sk_lookup_links(&p.pod), links, "the same link, adopted");
    assert_ne!(
        prog_of(links[0]),
        first_prog,
        "new agent's program not swapped in"
    );
    assert_eq!(dp.inbound_netns(), vec![cookie]);
    assert_eq!(
        dp.entries_for(cookie).unwrap(),
        3,
        "policy + link + listener"
    );
    let _new = p.captured("second agent");
    send(&mut est_client, &mut est_proxy, b"still here");
    send(&mut est_proxy, &mut est_client, b"both ways");

    assert_eq!(dp.remove_netns(cookie).unwrap(), 3);
    assert!(sk_lookup_links_gone(&p.pod));
    site.unload(dp);
}

#[test]
fn adoption_drops_links_of_pods_deleted_while_no_agent_ran() {
    let site = LoadSite::new("iba");
    let gone = Netns::new("iba");
    let kept = Netns::new("iba");
    let (gone_cookie, kept_cookie) = (gone.cookie(), kept.cookie());
    let mut dp = site.load();
    for (ns, cookie) in [(&gone, gone_cookie), (&kept, kept_cookie)] {
        dp.set_policy(cookie, &Fixture::node_policy()).unwrap();
        dp.attach_inbound(cookie, ns.file()).unwrap();
    }
    let gone_link = sk_lookup_links(&gone);
    assert_eq!(gone_link.len(), 1);
    dp.persist().unwrap();
    let gone_ino = gone.inode();
    drop(gone);
    // The kernel detaches a netns link when its namespace is cleaned up (asynchronously).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = sluice_tests::run_cmd(
            "bpftool",
            &["link", "show", "id", &gone_link[0].to_string()],
        );
        if !shown.contains(&format!("netns_ino {gone_ino}")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "netns link not auto-detached after the netns was deleted:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut dp = Datapath::load(&site.opts()).expect("load adopts what it can");
    assert_eq!(
        dp.inbound_netns(),
        vec![kept_cookie],
        "only the live pod's link is adopted"
    );
    assert_eq!(sk_lookup_links(&kept).len(), 1);
    assert!(!site.links_pinned(), "pins left in links/");
    dp.remove_netns(gone_cookie).unwrap();
    dp.remove_netns(kept_cookie).unwrap();
    assert!(sk_lookup_links_gone(&kept));
    site.unload(dp);
}

#[test]
fn registering_a_new_listener_hands_over_and_removing_it_falls_back_to_policy() {
    // Mode switch node <-> sidecar: the new owner binds 15006 next to the old one
    // (SO_REUSEPORT) and registers its socket; every new connection goes to exactly that socket
    // (not one of the reuseport group by hash), and the old owner's connections keep flowing.
    let mut s = InboundFixture::new("ibh", Fixture::node_policy());
    let cookie = s.pod.cookie();
    let app = s.listen("0.0.0.0:8080");
    let any = "0.0.0.0:15006".parse().unwrap();
    let old = s.pod.run(move || listen_reuseport(any).unwrap());
    s.f.dp().set_inbound_listener(cookie, &old).unwrap();
    let mut c1 = s.dial(s.pod_v4(APP_PORT)).unwrap();
    let (mut d1, _) = accept(&old, "old listener");
    let new = s.pod.run(move || listen_reuseport(any).unwrap());
    s.f.dp().set_inbound_listener(cookie, &new).unwrap();
    assert_eq!(
        s.f.dp().entries_for(cookie).unwrap(),
        3,
        "one listener per family"
    );
    let mut conns = Vec::new();
    for i in 0..8 {
        conns.push(s.dial(s.pod_v4(APP_PORT)).unwrap());
        let (d, _) = accept(&new, &format!("new listener, connection {i}"));
        assert_eq!(d.local_addr().unwrap(), s.pod_v4(APP_PORT));
        assert_idle(&old, "old listener after the hand-over");
    }
    send(&mut c1, &mut d1, b"old connection still flows");
    send(&mut d1, &mut c1, b"both ways");

    assert_eq!(s.f.dp().remove_inbound_listener(cookie).unwrap(), 1);
    let e = s
        .dial(s.pod_v4(APP_PORT))
        .expect_err("fail-closed without a listener");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    assert_idle(&app, "app");
    assert_idle(&new, "unregistered listener");
}
