//! The kernel's keepalive timer on the proxy's upstream connection, read from /proc/net/tcp
//! (a case's `upstream_keepalive`): what `upstream_connection_options.tcp_keepalive` sets.

use std::net::SocketAddrV4;

/// Ticks per second of the `tm->when` column (USER_HZ).
const TICKS_PER_SECOND: u64 = 100;

/// The timer of the TCP socket `local` -> `remote` in this netns: `off` (no timer),
/// `keepalive in Ns` (rounded to the second), another timer by its number, or `no socket`.
pub fn observe(local: SocketAddrV4, remote: SocketAddrV4) -> String {
    let table = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_else(|e| panic!("reading /proc/net/tcp: {e}"));
    timer(&table, local, remote)
}

fn hex(a: SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(a.ip().octets()),
        a.port()
    )
}

fn timer(table: &str, local: SocketAddrV4, remote: SocketAddrV4) -> String {
    let (l, r) = (hex(local), hex(remote));
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != l || f[2] != r {
            continue;
        }
        let (tr, when) = f[5].split_once(':').unwrap_or(("", ""));
        let when = u64::from_str_radix(when, 16).unwrap_or(0);
        return match tr {
            "00" => "off".into(),
            "02" => format!(
                "keepalive in {}s",
                (when + TICKS_PER_SECOND / 2) / TICKS_PER_SECOND
            ),
            other => format!("timer {other}"),
        };
    }
    "no socket".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_socket_and_reads_its_timer() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when\n\
           0: 0100007F:D03E 0100007F:5C8A 01 00000000:00000000 02:00000BAE 00000000\n\
           1: 0100007F:D03F 0100007F:5C8A 01 00000000:00000000 00:00000000 00000000\n";
        let at = |p| SocketAddrV4::new([127, 0, 0, 1].into(), p);
        assert_eq!(timer(table, at(0xD03E), at(0x5C8A)), "keepalive in 30s");
        assert_eq!(timer(table, at(0xD03F), at(0x5C8A)), "off");
        assert_eq!(timer(table, at(0xD040), at(0x5C8A)), "no socket");
    }
}
