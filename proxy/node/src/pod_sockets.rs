//! A pod's capture sockets — 127.0.0.1 and ::1 on the outbound port (15001), 0.0.0.0 and [::]
//! (v6-only) on the inbound port (15006) — made in one place for the agent's node-mode bind
//! ([`PodSockets::bind_in`]), the sidecar's bind ([`PodSockets::bind_here`]) and the sockets an
//! old agent hands over in an upgrade ([`PodSockets::adopt`]), and served in one place
//! ([`PodSockets::serve`]). The served set keeps its listeners, so an upgrade duplicates them
//! from here ([`ServedSockets::duplicates`]) instead of searching the process's descriptors.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
};

use tokio::task::JoinHandle;

use crate::{
    drain::Drain,
    listener::{self, ConnectionHandler, Direction, ListenerContext},
    netns::{bind_tcp_here, Netns, NetnsError},
};

/// The four listening sockets of one pod, bound, not served yet.
#[derive(Debug)]
pub struct PodSockets {
    sockets: Vec<(SocketAddr, Direction, TcpListener)>,
}

/// A listener's context and the handler of its connections.
pub type Serving = (Arc<ListenerContext>, Arc<dyn ConnectionHandler>);

impl PodSockets {
    /// The four addresses, outbound first.
    pub fn addresses(outbound_port: u16, inbound_port: u16) -> [(SocketAddr, Direction); 4] {
        [
            (
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), outbound_port),
                Direction::Outbound,
            ),
            (
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), outbound_port),
                Direction::Outbound,
            ),
            (
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), inbound_port),
                Direction::Inbound,
            ),
            (
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), inbound_port),
                Direction::Inbound,
            ),
        ]
    }

    /// Binds all four with `bind`: either all of them or none (the bound ones close on error).
    fn bind_with<E>(
        outbound_port: u16,
        inbound_port: u16,
        mut bind: impl FnMut(SocketAddr) -> Result<TcpListener, E>,
    ) -> Result<Self, E> {
        let mut sockets = Vec::with_capacity(4);
        for (addr, dir) in Self::addresses(outbound_port, inbound_port) {
            sockets.push((addr, dir, bind(addr)?));
        }
        Ok(Self { sockets })
    }

    /// The agent (node mode): binds inside `netns` on a helper thread.
    pub fn bind_in(
        netns: &Netns,
        outbound_port: u16,
        inbound_port: u16,
    ) -> Result<Self, NetnsError> {
        Self::bind_with(outbound_port, inbound_port, |a| netns.bind_tcp(a))
    }

    /// The sidecar: binds in the calling thread's netns (it entered the pod's). The error names
    /// the address that could not be bound.
    pub fn bind_here(
        outbound_port: u16,
        inbound_port: u16,
    ) -> Result<Self, (SocketAddr, io::Error)> {
        Self::bind_with(outbound_port, inbound_port, |a| {
            bind_tcp_here(a).map_err(|e| (a, e))
        })
    }

    /// Listening sockets handed over by an old agent (non-blocking for tokio).
    pub fn adopt(sockets: Vec<(SocketAddr, Direction, OwnedFd)>) -> io::Result<Self> {
        let sockets = sockets
            .into_iter()
            .map(|(addr, dir, fd)| {
                let l = TcpListener::from(fd);
                l.set_nonblocking(true)?;
                Ok((addr, dir, l))
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { sockets })
    }

    /// The inbound sockets (registered with sk_lookup, or handed to the agent by a sidecar).
    pub fn inbound(&self) -> impl Iterator<Item = &TcpListener> {
        self.sockets
            .iter()
            .filter(|(_, d, _)| *d == Direction::Inbound)
            .map(|(_, _, l)| l)
    }

    /// Serves every socket until [`ServedSockets::close`]: outbound ones with `outbound`'s
    /// context and handler, inbound ones with `inbound`'s. Needs a tokio runtime.
    pub fn serve(self, outbound: &Serving, inbound: &Serving) -> io::Result<ServedSockets> {
        let (drain, _) = Drain::new();
        let mut sockets = Vec::with_capacity(self.sockets.len());
        let mut tasks = Vec::with_capacity(self.sockets.len());
        for (addr, dir, l) in self.sockets {
            let (ctx, handler) = match dir {
                Direction::Outbound => outbound,
                Direction::Inbound => inbound,
            };
            let l = Arc::new(tokio::net::TcpListener::from_std(l)?);
            // `serve` instruments itself with a root `listener` span.
            tasks.push(tokio::spawn(listener::serve(
                l.clone(),
                ctx.clone(),
                handler.clone(),
                drain.watch(),
            )));
            sockets.push((addr, dir, l));
        }
        Ok(ServedSockets {
            sockets,
            drain,
            tasks,
        })
    }
}

/// A pod's sockets being served: the accept loops and the listeners they accept on.
#[derive(Debug)]
pub struct ServedSockets {
    sockets: Vec<(SocketAddr, Direction, Arc<tokio::net::TcpListener>)>,
    drain: Drain,
    tasks: Vec<JoinHandle<()>>,
}

impl ServedSockets {
    /// The bound addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(a, _, _)| *a).collect()
    }

    /// Duplicates of every listening socket (the upgrade hand-over): same kernel sockets, same
    /// accept queues, so the next agent accepts where this one stops.
    pub fn duplicates(&self) -> io::Result<Vec<(SocketAddr, Direction, OwnedFd)>> {
        self.sockets
            .iter()
            .map(|(a, d, l)| Ok((*a, *d, l.as_fd().try_clone_to_owned()?)))
            .collect()
    }

    /// Stops accepting on the inbound sockets (`inbound_only`) or on all, and closes them now
    /// (a sidecar's `/drain_listeners`); connections in flight keep running. The rest stay
    /// served until [`close`](Self::close). Returns how many sockets closed.
    pub async fn stop(&mut self, inbound_only: bool) -> usize {
        let mut stopped = 0;
        let mut i = 0;
        while i < self.sockets.len() {
            if inbound_only && self.sockets[i].1 != Direction::Inbound {
                i += 1;
                continue;
            }
            // The accept loop owns the other reference to the listener: once it has ended, the
            // socket is closed (and an inbound one has left the sk_lookup SockHash).
            self.sockets.swap_remove(i);
            let task = self.tasks.swap_remove(i);
            task.abort();
            let _ = task.await;
            stopped += 1;
        }
        stopped
    }

    /// Stops accepting and waits until the sockets are closed (so the ports can be bound again;
    /// a closed inbound socket leaves the sk_lookup SockHash by itself). Connections in flight
    /// keep running to their end.
    pub async fn close(self) {
        let Self {
            sockets,
            drain,
            tasks,
        } = self;
        drop(sockets);
        drain.signal();
        for t in tasks {
            let _ = t.await;
        }
    }
}
