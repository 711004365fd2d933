//! A veth pair joining two network namespaces, with IPv4 and IPv6 addresses on each end.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{next_id, run_cmd_quiet, Netns};

/// A veth pair between two namespaces: end `a` has `.1` / `::1`, end `b` has `.2` / `::2`, in
/// `10.250.<n>.0/24` and `fd00:51ce:<n>::/64` (IPv6 with `nodad`, usable at once). Only the
/// connected routes exist; there is still no default route. Removed on drop.
pub struct Veth {
    /// Interface name in namespace `a`.
    pub a_name: String,
    /// Interface name in namespace `b`.
    pub b_name: String,
    /// Namespace holding end `a` (by name, for cleanup).
    a_netns: String,
    pub a_v4: Ipv4Addr,
    pub b_v4: Ipv4Addr,
    pub a_v6: Ipv6Addr,
    pub b_v6: Ipv6Addr,
}

impl Veth {
    /// Creates the pair. `tag` (at most 3 characters) starts the interface names, which must fit
    /// in 15 characters: `<tag><pid>-<n>a` / `...b`.
    pub fn new(tag: &str, a: &Netns, b: &Netns) -> Self {
        let n = next_id();
        let pid = std::process::id();
        let a_name = format!("{tag}{pid}-{n}a");
        let b_name = format!("{tag}{pid}-{n}b");
        assert!(
            a_name.len() <= 15,
            "veth name {a_name} longer than 15 characters: shorten the tag"
        );
        let subnet = (n % 250) as u8;
        let veth = Self {
            a_v4: Ipv4Addr::new(10, 250, subnet, 1),
            b_v4: Ipv4Addr::new(10, 250, subnet, 2),
            a_v6: Ipv6Addr::new(0xfd00, 0x51ce, subnet as u16, 0, 0, 0, 0, 1),
            b_v6: Ipv6Addr::new(0xfd00, 0x51ce, subnet as u16, 0, 0, 0, 0, 2),
            a_netns: a.name().to_string(),
            a_name,
            b_name,
        };
        crate::run_cmd(
            "ip",
            &[
                "link",
                "add",
                &veth.a_name,
                "netns",
                a.name(),
                "type",
                "veth",
                "peer",
                "name",
                &veth.b_name,
                "netns",
                b.name(),
            ],
        );
        for (ns, ifname, v4, v6) in [
            (a, &veth.a_name, veth.a_v4, veth.a_v6),
            (b, &veth.b_name, veth.b_v4, veth.b_v6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting one end removes both; the namespace may already be gone (that removes it too).
        run_cmd_quiet("ip", &["-n", &self.a_netns, "link", "del", &self.a_name]);
    }
}
