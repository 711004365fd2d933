//! Socket options a cluster sets on its upstream connections:
//! `upstream_connection_options.tcp_keepalive` (`SO_KEEPALIVE` with `TCP_KEEPCNT`,
//! `TCP_KEEPIDLE`, `TCP_KEEPINTVL` for the values that are set, as Envoy).

use std::{io, time::Duration};

use socket2::{SockRef, TcpKeepalive as Params};

use crate::config::TcpKeepalive;

/// Turns keepalive on for `sock` with the values `k` sets (unset ones keep the kernel's).
pub fn apply_keepalive<'s, S>(sock: &'s S, k: &TcpKeepalive) -> io::Result<()>
where
    SockRef<'s>: From<&'s S>,
{
    let mut p = Params::new();
    if let Some(n) = k.probes {
        p = p.with_retries(n);
    }
    if let Some(t) = k.time {
        p = p.with_time(Duration::from_secs(u64::from(t)));
    }
    if let Some(t) = k.interval {
        p = p.with_interval(Duration::from_secs(u64::from(t)));
    }
    // Sets SO_KEEPALIVE, then only the parameters given.
    SockRef::from(sock).set_tcp_keepalive(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_values_reach_the_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let k = TcpKeepalive {
            probes: Some(7),
            time: Some(42),
            interval: Some(3),
        };
        apply_keepalive(&c, &k).expect("setsockopt");
        let s = SockRef::from(&c);
        assert!(s.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(s.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 7);
        assert_eq!(
            s.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            Duration::from_secs(42)
        );
        assert_eq!(
            s.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn unset_values_keep_the_kernel_defaults() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let before = SockRef::from(&c)
            .tcp_keepalive_time()
            .expect("TCP_KEEPIDLE");
        apply_keepalive(&c, &TcpKeepalive::default()).expect("setsockopt");
        let s = SockRef::from(&c);
        assert!(s.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(s.tcp_keepalive_time().expect("TCP_KEEPIDLE"), before);
    }
}
