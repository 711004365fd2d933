//! Unix-socket messages that carry file descriptors (`SCM_RIGHTS`): a `sluice sidecar` hands its
//! inbound listening sockets to the agent, which registers them with sk_lookup.

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors accepted with one message.
pub const MAX_FDS: usize = 8;

/// Sends `data` with `fds` attached (all bytes in one `sendmsg`; blocking sockets).
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<()>(sock, &[IoSlice::new(data)], &cmsg, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sendmsg sent {n} of {} bytes", data.len()),
        ));
    }
    Ok(())
}

/// One `recvmsg` into `buf`: the byte count and the descriptors that came with it (close-on-exec).
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
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
