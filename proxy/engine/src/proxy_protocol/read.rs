//! Reading a connection's PROXY header: peek until [`super::parse`] decides, then consume
//! exactly the header, so protocol detection and the connection's filter chain see the bytes
//! after it.

use std::time::Duration;

use std::{io::ErrorKind, os::fd::AsRawFd};

use nix::sys::socket::{recv, MsgFlags};
use tokio::{
    io::{AsyncReadExt, Interest},
    net::TcpStream,
};

use super::parse::{parse, Accept, Header, Parsed};

/// What became of the connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A header, consumed.
    Header(Header),
    /// No header, allowed; nothing consumed.
    Absent,
    /// A disallowed version, a malformed header or none where one is required: close.
    Refused(Parsed),
    /// Nothing decisive within the listener filters' timeout.
    TimedOut,
    /// The client closed or the socket failed first.
    Closed,
}

/// Peeks at `stream` until its first bytes decide, for at most `timeout` (`None`: no limit),
/// and consumes the header when there is one. Woken by the socket only: a peek that finds
/// nothing new clears its readiness, so a client that stalls mid-header costs no wake-up.
pub async fn read_header(
    stream: &mut TcpStream,
    accept: Accept,
    timeout: Option<Duration>,
) -> Outcome {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut buf = vec![0u8; 232];
    let mut last = 0;
    loop {
        let ready = stream.readable();
        let ready = match deadline {
            Some(d) => match tokio::time::timeout_at(d, ready).await {
                Ok(r) => r,
                Err(_) => return Outcome::TimedOut,
            },
            None => ready.await,
        };
        if ready.is_err() {
            return Outcome::Closed;
        }
        let fd = stream.as_raw_fd();
        let peeked = stream.try_io(Interest::READABLE, || {
            let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
            let n = recv(fd, &mut buf, flags).map_err(std::io::Error::from)?;
            // Nothing new since the last peek: wait for the socket's next readiness.
            if n == last && n > 0 && n < buf.len() {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match peeked {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Ok(0) | Err(_) => return Outcome::Closed,
            Ok(n) => n,
        };
        last = n;
        match parse(&buf[..n], accept) {
            Parsed::Header(h) => {
                let mut rest = h.len;
                let mut sink = [0u8; 512];
                while rest > 0 {
                    let take = rest.min(sink.len());
                    match stream.read(&mut sink[..take]).await {
                        Ok(0) | Err(_) => return Outcome::Closed,
                        Ok(k) => rest -= k,
                    }
                }
                return Outcome::Header(h);
            }
            Parsed::Absent => return Outcome::Absent,
            Parsed::More { need } => {
                if need > buf.len() {
                    buf.resize(need, 0);
                }
            }
            refused => return Outcome::Refused(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn consumes_the_header_and_leaves_the_rest() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // The header in two writes, the second after a pause.
            c.write_all(b"PROXY TCP4 10.1.2.3 ").await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(b"10.9.9.9 40000 80\r\nhello").await.unwrap();
            c
        });
        let (mut s, _) = l.accept().await.unwrap();
        let out = read_header(&mut s, Accept::default(), Some(Duration::from_secs(5))).await;
        assert!(
            matches!(out, Outcome::Header(Header { len: 39, .. })),
            "{out:?}"
        );
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        drop(client.await);
    }

    #[tokio::test]
    async fn times_out_on_a_partial_header() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"PROXY TCP4").await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let out = read_header(&mut s, Accept::default(), Some(Duration::from_millis(100))).await;
        assert_eq!(out, Outcome::TimedOut);
    }
}
