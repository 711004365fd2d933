//! Unix-socket messages that carry file descriptors (`SCM_RIGHTS`): a `sluice sidecar` hands its
//! inbound listening sockets to the agent, which registers them with sk_lookup; an old agent
//! hands every node-mode listening socket to its successor (graceful upgrade).

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors accepted with one control request (more are refused and closed).
pub const MAX_FDS: usize = 8;
/// The kernel's limit of descriptors in one message (`SCM_MAX_FD`): every receive has room for
/// this many, so a control message is never truncated with descriptors already installed and
/// then lost to the process (a leak).
const SCM_MAX_FD: usize = 253;
/// Most descriptors sent or accepted with one hand-over message (the kernel caps SCM_RIGHTS at
/// 253 per message).
pub const MAX_FDS_PER_MSG: usize = 250;

/// One `sendmsg` of `data` with `fds` attached (`MSG_NOSIGNAL`); returns the bytes sent, which
/// may be fewer than `data.len()` (the descriptors went with the first of them).
pub fn send_some(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        sock,
        &[IoSlice::new(data)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

/// Sends `data` with `fds` attached (all bytes in one `sendmsg`; blocking sockets).
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let n = send_some(sock, data, fds)?;
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sendmsg sent {n} of {} bytes", data.len()),
        ));
    }
    Ok(())
}

/// One non-blocking `recvmsg` into `buf`: the byte count and every descriptor that came with it
/// (close-on-exec, owned: dropped ones are closed). The caller enforces [`MAX_FDS`].
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    recv_into(sock, buf, &mut space, MsgFlags::MSG_DONTWAIT)
}

/// One `recvmsg` into `buf` that blocks as the socket does, accepting up to
/// [`MAX_FDS_PER_MSG`] descriptors (the hand-over).
pub fn recv_many_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    recv_into(sock, buf, &mut space, MsgFlags::empty())
}

fn recv_into(
    sock: RawFd,
    buf: &mut [u8],
    space: &mut Vec<u8>,
    flags: MsgFlags,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(space),
        MsgFlags::MSG_CMSG_CLOEXEC | flags,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors in this process for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsRawFd as _, unix::net::UnixStream};

    use super::*;

    #[test]
    fn descriptors_travel_with_the_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let line = b"{\"op\":\"register_inbound\",\"netns\":\"p\"}\n";
        send_with_fds(a.as_raw_fd(), line, &[l.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 256];
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], line);
        assert_eq!(fds.len(), 1);
        // The received fd is the same listening socket.
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), l.local_addr().unwrap());
        // Nothing more: a non-blocking receive says so instead of waiting.
        let e = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn many_descriptors_arrive_whole_as_owned_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let ls: Vec<_> = (0..40)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let raw: Vec<RawFd> = ls.iter().map(|l| l.as_raw_fd()).collect();
        send_with_fds(a.as_raw_fd(), b"x\n", &raw).unwrap();
        let mut buf = [0u8; 16];
        // Room for the kernel's maximum: nothing is truncated, so every descriptor the kernel
        // installed is owned (and closed when the caller drops it, as the agent does past 8).
        let (_, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        let got: Vec<_> = fds
            .into_iter()
            .map(|fd| std::net::TcpListener::from(fd).local_addr().unwrap())
            .collect();
        let want: Vec<_> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
        assert_eq!(got, want);
    }
}
