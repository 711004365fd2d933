//! Switching a pod's mode live (`sluice enroll --mode X` on an enrolled pod): node <-> sidecar
//! <-> off, all six transitions, under traffic. A long-lived connection opened before each switch
//! (one outbound, one inbound) keeps flowing until it is closed; a new connection after the
//! switch is served by the new owner (the agent, the `sluice sidecar` process, or nobody).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sluice_tests::{
    agent_node::Node,
    ns_server::NsServer,
    sluice_cli::{exchange, EchoPeerServer, SluiceProcess},
    Netns, Veth,
};

/// A TCP echo server on a thread in a netns (one thread per connection).
fn stream_echo(ns: &Netns, addr: SocketAddr) -> NsServer {
    NsServer::start(ns, addr, |mut s, _| {
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            loop {
                match s.read(&mut b) {
                    Ok(0) => break,
                    Ok(n) => {
                        if s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break,
                }
            }
        });
    })
}

/// A connection opened from inside `ns`, pinged round trip.
struct Long(TcpStream, &'static str);

impl Long {
    fn open(ns: &Netns, dst: SocketAddr, what: &'static str) -> Self {
        let s = ns.run(move || TcpStream::connect_timeout(&dst, Duration::from_secs(5)));
        let s = s.unwrap_or_else(|e| panic!("{what}: connect {dst}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut l = Self(s, what);
        l.ping("hello");
        l
    }

    /// Sends `msg` and reads the echo (retrying the sk_msg spurious `EAGAIN`).
    fn ping(&mut self, msg: &str) {
        self.0
            .write_all(msg.as_bytes())
            .unwrap_or_else(|e| panic!("{}: send {msg:?}: {e}", self.1));
        let mut got = Vec::new();
        let start = Instant::now();
        let mut b = [0u8; 256];
        while got.len() < msg.len() {
            match self.0.read(&mut b) {
                Ok(0) => panic!("{}: closed before the echo of {msg:?}", self.1),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && start.elapsed() < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{}: echo of {msg:?}: {e}", self.1),
            }
        }
        assert_eq!(got, msg.as_bytes(), "{}", self.1);
    }
}

/// `accepted` events of `listener` in a sluice log.
fn accepted(log: &str, listener: &str) -> usize {
    let tag = format!("listener=\"{listener}\"");
    log.lines()
        .filter(|l| l.contains(&tag) && l.contains(" accepted "))
        .count()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Node,
    Sidecar,
    Off,
}

struct World {
    node: Node,
    pod: Netns,
    peer: Netns,
    peer_ip: IpAddr,
    out_app: EchoPeerServer,
    in_app: EchoPeerServer,
    out_echo: NsServer,
    in_echo: NsServer,
    sidecar: Option<SluiceProcess>,
}

impl World {
    fn owner_counts(&self) -> (usize, usize, usize, usize) {
        let a = self.node.agent_log();
        let s = self.sidecar.as_ref().map(|s| s.log()).unwrap_or_default();
        (
            accepted(&a, "outbound"),
            accepted(&a, "inbound"),
            accepted(&s, "outbound"),
            accepted(&s, "inbound"),
        )
    }

    /// Switches to `to`, handing the listeners over in the order that frees the ports first.
    fn switch(&mut self, from: Mode, to: Mode) {
        let name = match to {
            Mode::Node => "node",
            Mode::Sidecar => "sidecar",
            Mode::Off => "off",
        };
        if from == Mode::Sidecar {
            // The sidecar closes its listeners at once and keeps serving what is open.
            let s = self.sidecar.as_mut().unwrap();
            s.sigterm();
            s.wait_for_log("listeners closed", Duration::from_secs(5));
        }
        let out = self.node.enroll(&self.pod, &["--mode", name]);
        assert!(out.contains(&format!("mode={name}")), "{out}");
        if to == Mode::Sidecar {
            let ctl = self.node.ctl();
            let s = SluiceProcess::sidecar_with(
                &self.pod,
                1337,
                Some(&self.node.cgroup),
                &["--agent-control", &ctl],
            );
            self.sidecar = Some(s);
            let s = self.sidecar.as_mut().unwrap();
            s.wait_for_log("inbound listeners registered", Duration::from_secs(5));
        }
    }

    /// New connections in both directions are served by `mode`'s owner.
    fn check_new(&mut self, mode: Mode) {
        let before = self.owner_counts();
        let out = exchange(&self.pod, self.out_app.addr, 1000, None);
        assert!(out.answer.contains("bytes=1000"), "{out:?}");
        let inb = exchange(&self.peer, self.in_app.addr, 1000, None);
        let via_proxy = inb.answer.starts_with("peer=127.0.0.6:");
        let after = self.owner_counts();
        let delta = (
            after.0 - before.0,
            after.1 - before.1,
            after.2.saturating_sub(before.2),
            after.3.saturating_sub(before.3),
        );
        match mode {
            Mode::Node => {
                assert!(via_proxy, "{inb:?}");
                assert_eq!(delta, (1, 1, 0, 0), "node mode: the agent serves");
            }
            Mode::Sidecar => {
                assert!(via_proxy, "{inb:?}");
                assert_eq!(delta, (0, 0, 1, 1), "sidecar mode: the sidecar serves");
            }
            Mode::Off => {
                assert!(
                    inb.answer.starts_with(&format!("peer={}:", self.peer_ip)),
                    "off: inbound direct: {inb:?}"
                );
                assert!(
                    !out.local.ip().is_loopback(),
                    "off: outbound not captured: {out:?}"
                );
                assert_eq!(delta, (0, 0, 0, 0), "off: nobody proxies");
            }
        }
    }
}

#[test]
fn mode_switches_live_under_traffic() {
    let node = Node::start("ms");
    let pod = Netns::new("msp");
    let peer = Netns::new("msq");
    let veth = Veth::new("ms", &pod, &peer);
    let (pod_ip, peer_ip): (IpAddr, IpAddr) = (veth.a_v4.into(), veth.b_v4.into());
    let mut w = World {
        out_app: EchoPeerServer::start(&peer, SocketAddr::new(peer_ip, 0)),
        in_app: EchoPeerServer::start(&pod, SocketAddr::new(pod_ip, 0)),
        out_echo: stream_echo(&peer, SocketAddr::new(peer_ip, 0)),
        in_echo: stream_echo(&pod, SocketAddr::new(pod_ip, 0)),
        node,
        pod,
        peer,
        peer_ip,
        sidecar: None,
    };
    let _in_cgroup = w.node.cgroup.enter_process();
    w.node.enroll(&w.pod, &["--mode", "node"]);
    w.check_new(Mode::Node);
    // All six transitions: node->sidecar->node->off->sidecar->off->node.
    let steps = [
        (Mode::Node, Mode::Sidecar),
        (Mode::Sidecar, Mode::Node),
        (Mode::Node, Mode::Off),
        (Mode::Off, Mode::Sidecar),
        (Mode::Sidecar, Mode::Off),
        (Mode::Off, Mode::Node),
    ];
    for (from, to) in steps {
        let t = Instant::now();
        let mut out_long = Long::open(&w.pod, w.out_echo.addr, "outbound long-lived");
        let mut in_long = Long::open(&w.peer, w.in_echo.addr, "inbound long-lived");
        w.switch(from, to);
        for i in 0..3 {
            out_long.ping(&format!("after {from:?}->{to:?} #{i}"));
            in_long.ping(&format!("after {from:?}->{to:?} #{i}"));
        }
        w.check_new(to);
        // The old connections still work after the new owner took new ones; then they end.
        out_long.ping("last");
        in_long.ping("last");
        drop((out_long, in_long));
        if from == Mode::Sidecar {
            let mut s = w.sidecar.take().unwrap();
            assert!(
                s.wait_exit(Duration::from_secs(5)).is_some(),
                "the old sidecar exits once its connections end:\n{}",
                s.log()
            );
        }
        eprintln!("{from:?} -> {to:?}: {:?}", t.elapsed());
    }
}
