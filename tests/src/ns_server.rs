//! A TCP server on a thread inside a netns: one handler call per accepted connection.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::Netns;

/// A listener on a thread inside a netns that hands every accepted connection (made blocking)
/// and its peer address to a handler, on that thread. Stopped and joined on drop.
pub struct NsServer {
    /// Bound address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NsServer {
    /// Binds `addr` (port 0 picks one) inside `ns` and serves with `handler` until dropped. A
    /// handler that must not hold up the next accept spawns its own thread.
    pub fn start<F>(ns: &Netns, addr: SocketAddr, mut handler: F) -> Self
    where
        F: FnMut(TcpStream, SocketAddr) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("server bind {addr}: {e}"));
            l.set_nonblocking(true).expect("nonblocking listener");
            tx.send(l.local_addr().expect("local addr"))
                .expect("send addr");
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, peer)) => {
                        s.set_nonblocking(false).expect("blocking stream");
                        handler(s, peer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server did not start");
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
