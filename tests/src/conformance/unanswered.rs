//! A loopback port that never answers a connect: a listener with a backlog of 0 holding one
//! connection (the harness's own) that is never accepted, so the kernel drops every further SYN
//! and a proxy's connect to it hangs until the proxy's `connect_timeout`. Nothing leaves loopback.

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
};

/// The listener and the connection filling its accept queue; dropping it closes both.
pub struct Unanswered {
    listener: TcpListener,
    _filler: TcpStream,
}

impl Unanswered {
    /// Binds 127.0.0.1 on an ephemeral port, shrinks the backlog to 0 and fills it.
    pub fn start() -> Unanswered {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding the unanswered port on 127.0.0.1:0: {e}"));
        // listen() again on a listening socket sets its backlog: with 0, one queued connection
        // fills the accept queue, and Linux drops a SYN while the queue is full.
        // SAFETY: a valid listening socket descriptor owned by `listener`.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(
            rc,
            0,
            "listen(backlog 0) on the unanswered port: {}",
            std::io::Error::last_os_error()
        );
        let addr = listener.local_addr().expect("local_addr");
        let _filler = TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("filling the accept queue of {addr}: {e}"));
        Unanswered { listener, _filler }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("local_addr").port()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_connect_hangs_until_its_timeout() {
        let u = Unanswered::start();
        let addr = ([127, 0, 0, 1], u.port()).into();
        let err = TcpStream::connect_timeout(&addr, Duration::from_millis(300))
            .expect_err("a connect to the unanswered port completes");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    }
}
