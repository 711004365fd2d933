//! Socket calls the tests make the way a proxy or app would: SO_ORIGINAL_DST, marked connects.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `getsockopt(SOL_IP, SO_ORIGINAL_DST)`: the call a proxy makes behind iptables REDIRECT.
pub fn orig_dst_v4(sock: &impl AsRawFd) -> io::Result<SocketAddrV4> {
    // SAFETY: zeroed sockaddr_in is valid; getsockopt writes at most `len` bytes.
    unsafe {
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut sin as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(
            sin.sin_family as i32,
            libc::AF_INET,
            "SO_ORIGINAL_DST family"
        );
        Ok(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ))
    }
}

/// `getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)`.
pub fn orig_dst_v6(sock: &impl AsRawFd) -> io::Result<SocketAddrV6> {
    // SAFETY: zeroed sockaddr_in6 is valid; getsockopt writes at most `len` bytes.
    unsafe {
        let mut sin6: libc::sockaddr_in6 = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IP6T_SO_ORIGINAL_DST,
            (&mut sin6 as *mut libc::sockaddr_in6).cast(),
            &mut len,
        );
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(
            sin6.sin6_family as i32,
            libc::AF_INET6,
            "IP6T_SO_ORIGINAL_DST family"
        );
        Ok(SocketAddrV6::new(
            Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
            0,
            0,
        ))
    }
}

/// A blocking TCP connect, optionally with `SO_MARK` set first (as the proxy marks its
/// upstream sockets).
pub fn connect_raw(addr: SocketAddr, mark: Option<u32>) -> io::Result<OwnedFd> {
    connect_marked(None, addr, mark)
}

/// A blocking TCP connect from `src` (bound first, like the proxy's inbound passthrough binding
/// 127.0.0.6 / ::6) to `dst`, optionally with `SO_MARK` set.
pub fn connect_from(src: SocketAddr, dst: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    connect_marked(Some(src), dst, mark).map(TcpStream::from)
}

/// Socket, `SO_MARK` (when given), bind to `src` (when given), blocking connect to `dst`.
fn connect_marked(
    src: Option<SocketAddr>,
    dst: SocketAddr,
    mark: Option<u32>,
) -> io::Result<OwnedFd> {
    let fd = tcp_socket(dst)?;
    if let Some(mark) = mark {
        // SO_MARK takes a u32; c_int has its size, the cast keeps the bits.
        set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int)?;
    }
    if let Some(src) = src {
        sockaddr_call(&fd, src, libc::bind)?;
    }
    sockaddr_call(&fd, dst, libc::connect)?;
    Ok(fd)
}

/// A new `SOCK_STREAM` socket of `addr`'s family.
fn tcp_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a plain socket syscall; the fd is owned right after creation.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `setsockopt(level, opt, &v)` with an int value.
fn set_int_opt(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` outlives the call and the length is its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// The signature `bind(2)` and `connect(2)` share.
type SockaddrCall =
    unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int;

/// `bind` or `connect` (`call`) of `fd` with `addr`.
fn sockaddr_call(fd: &OwnedFd, addr: SocketAddr, call: SockaddrCall) -> io::Result<()> {
    let (sa, len) = sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr of `len` bytes for the socket's family.
    check(unsafe {
        call(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
}

/// `Ok` for a syscall's 0, the last OS error otherwise.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `sockaddr_in` / `sockaddr_in6` for `addr`, with its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_storage is valid, and it is large enough for either family.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 =
                    &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }
}

/// A TCP listener on `[::]:port` with `IPV6_V6ONLY` set to `v6only` (std leaves it to the
/// `net.ipv6.bindv6only` sysctl).
pub fn listen_v6(port: u16, v6only: bool) -> io::Result<TcpListener> {
    listen_with(
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
        &[(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v6only.into())],
    )
}

/// A TCP listener on `addr` with `SO_REUSEPORT`, so a second owner can bind the same port
/// while the first still listens (a listener hand-over).
pub fn listen_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_with(addr, &[(libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)])
}

/// A TCP listener on `addr` with `SO_REUSEADDR` and the given (level, option, value) set first.
fn listen_with(
    addr: SocketAddr,
    opts: &[(libc::c_int, libc::c_int, libc::c_int)],
) -> io::Result<TcpListener> {
    let fd = tcp_socket(addr)?;
    let reuse = [(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)];
    for &(level, opt, v) in reuse.iter().chain(opts) {
        set_int_opt(&fd, level, opt, v)?;
    }
    sockaddr_call(&fd, addr, libc::bind)?;
    // SAFETY: listen on a socket we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    Ok(TcpListener::from(fd))
}
