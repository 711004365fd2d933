//! A request sent in the background (`background: true`): the case's next request goes out
//! while this one is in flight at its upstream (balancing by active requests), and this one is
//! observed once the next has been answered.

use std::{
    net::SocketAddr,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    agreement::{LogCursor, Taken},
    client::{self, Response},
    observe,
    upstream::{Recorded, Upstreams},
    Observation, REQUEST_TIMEOUT,
};

/// One request as the case sends it, owned (it goes to another thread).
pub struct Owned {
    /// Method token.
    pub method: String,
    /// Target.
    pub path: String,
    /// Host header.
    pub host: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<String>,
}

/// A background request in flight.
pub struct Held {
    /// Its index in the case.
    pub index: usize,
    /// What was sent (for the explain agreement check).
    pub sent: Owned,
    /// The proxy's route lines logged for it (sluice).
    pub taken: Vec<Taken>,
    thread: JoinHandle<Result<Response, String>>,
    recorded: Vec<Recorded>,
}

/// Sends `req` on its own thread and returns once an upstream got it (or after the request
/// timeout), with what the upstreams recorded and the route lines logged so far.
pub fn send(
    index: usize,
    addr: SocketAddr,
    sent: Owned,
    ups: &Upstreams,
    lines: Option<&mut LogCursor>,
) -> Held {
    let (method, path, host, headers, body) = (
        sent.method.clone(),
        sent.path.clone(),
        sent.host.clone(),
        sent.headers.clone(),
        sent.body.clone(),
    );
    let thread = std::thread::spawn(move || {
        let req = client::Request {
            method: &method,
            path: &path,
            host: host.as_deref(),
            headers: &headers,
            body: body.as_deref().map(str::as_bytes),
            http10: false,
            preamble: None,
        };
        client::send(addr, &req, REQUEST_TIMEOUT)
    });
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut recorded = Vec::new();
    while recorded.is_empty() && Instant::now() < deadline && !thread.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
        recorded.extend(ups.take());
    }
    Held {
        index,
        sent,
        taken: lines.map(LogCursor::taken).unwrap_or_default(),
        thread,
        recorded,
    }
}

/// A background request answered.
pub struct Done {
    /// Its index in the case.
    pub index: usize,
    /// What was sent.
    pub sent: Owned,
    /// The proxy's route lines logged for it (sluice).
    pub taken: Vec<Taken>,
    /// Its observation.
    pub obs: Observation,
}

impl Held {
    /// Waits for the response and observes it with the upstream requests recorded when it was
    /// sent (or, had the response come first, since).
    pub fn finish(self, ups: &Upstreams) -> Done {
        let Held {
            index,
            sent,
            taken,
            thread,
            mut recorded,
        } = self;
        let resp = thread
            .join()
            .unwrap_or_else(|_| Err("the background client panicked".into()));
        if recorded.is_empty() {
            recorded.extend(ups.take());
        }
        Done {
            index,
            sent,
            taken,
            obs: observe(resp, recorded),
        }
    }
}
