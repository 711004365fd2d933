//! Self-test of the namespaced harness: namespaces, veth, cgroups, pins, children, cleanup.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
};

use sluice_tests::{require_root, Cgroup, Netns, PinDir, Veth};

#[test]
fn netns_veth_cgroup_and_cleanup() {
    require_root();
    let (a_name, cg_path, pin_path);
    {
        let a = Netns::new("kh");
        let b = Netns::new("kh");
        let veth = Veth::new("kh", &a, &b);
        let cg = Cgroup::new("kh");
        let pins = PinDir::new("kh");
        a_name = a.name().to_string();
        cg_path = cg.path().to_path_buf();
        pin_path = pins.path().to_path_buf();

        assert_ne!(a.cookie(), b.cookie(), "two namespaces share a cookie");
        assert_ne!(a.cookie(), 0);

        // No default route: a connect to a service VIP fails at once.
        let err = a
            .run(|| TcpStream::connect("10.96.0.10:80").unwrap_err())
            .raw_os_error();
        assert_eq!(err, Some(libc::ENETUNREACH));

        // TCP across the veth, IPv4 and IPv6.
        for (listen, target) in [
            (SocketAddr::from((veth.b_v4, 0)), veth.b_v4.to_string()),
            (SocketAddr::from((veth.b_v6, 0)), format!("[{}]", veth.b_v6)),
        ] {
            let port = b.run(move || {
                let l = TcpListener::bind(listen).expect("bind in b");
                let port = l.local_addr().unwrap().port();
                std::thread::spawn(move || {
                    let (mut s, _) = l.accept().unwrap();
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).unwrap();
                    s.write_all(&buf).unwrap();
                });
                port
            });
            let echoed = a.run(move || {
                let mut s =
                    TcpStream::connect(format!("{target}:{port}")).expect("connect over veth");
                s.write_all(b"hello").unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                buf
            });
            assert_eq!(&echoed, b"hello");
        }
        assert!(a.link_stats(&veth.a_name).tx_bytes > 0);

        // A child in netns + cgroup sees both.
        let out = a
            .command("sh", Some(&cg))
            .args(["-c", "cat /proc/self/cgroup; ip -o link show lo"])
            .output()
            .expect("spawn child");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let rel = cg_path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            text.contains(&format!("0::/{rel}")),
            "child not in cgroup: {text}"
        );

        // The test process can enter and leave the cgroup.
        {
            let _inside = cg.enter_process();
            assert!(cg.pids().contains(&std::process::id()));
        }
        assert!(!cg.pids().contains(&std::process::id()));
    }
    let list = sluice_tests::run_cmd("ip", &["netns", "list"]);
    assert!(!list.contains(&a_name), "netns {a_name} left behind");
    assert!(
        !cg_path.exists(),
        "cgroup {} left behind",
        cg_path.display()
    );
    assert!(
        !pin_path.exists(),
        "pin dir {} left behind",
        pin_path.display()
    );
}
