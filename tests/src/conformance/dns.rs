//! A case's DNS server: both proxies resolve through it, so a case can count the queries a
//! DNS cluster makes over time (`dns_refresh_rate`, `dns_failure_refresh_rate`).
//!
//! Neither proxy takes a resolver address the other understands (sluice asks the system
//! resolver, Envoy c-ares; both read `/etc/resolv.conf`), so each proxy runs in a mount namespace
//! of its own in which the case's `resolv.conf` is bind-mounted over `/etc/resolv.conf`
//! ([`Dns::wrap`]). The server listens on port 53 (resolv.conf takes no port) of a loopback
//! address of its own (127.53.x.y), which needs root, as the mount does.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Deserialize;

/// A case's `dns:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// Names the server knows and the answer to an A query for each: an IPv4 address, or
    /// `SERVFAIL` (a failed resolution). Other names get NXDOMAIN, other types no records.
    pub names: BTreeMap<String, String>,
    /// `dns.NAME` counts the resolutions of NAME (its A queries, a resend counted once) within
    /// this long of its first one.
    pub window_ms: u64,
    /// Counts from this one up are observed as `N+` (for timings that are random in Envoy, whose
    /// failure backoff is jittered: only a lower bound holds for both).
    pub at_most: Option<usize>,
}

/// Resolutions by name: (when, from where) of the latest A query of each.
type Queries = Arc<Mutex<BTreeMap<String, Vec<(Instant, SocketAddr)>>>>;

/// An A query from the same socket this soon after the previous one for its name is a resend
/// within the same resolution (c-ares sends a query that got SERVFAIL again at once, 4 times in
/// all), not a new one.
const RESEND: Duration = Duration::from_millis(20);

/// The running server; dropping it stops it.
pub struct Dns {
    spec: DnsSpec,
    resolv_conf: PathBuf,
    queries: Queries,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dns {
    /// Binds port 53 on a free 127.53.x.y and writes `workdir/resolv.conf` naming it.
    pub fn start(spec: &DnsSpec, workdir: &Path) -> Dns {
        let socket = (0..200u32)
            .find_map(|i| {
                let n = std::process::id().wrapping_mul(7).wrapping_add(i * 131) % 64_000;
                let ip = Ipv4Addr::new(127, 53, (n / 250) as u8, (n % 250) as u8 + 1);
                UdpSocket::bind((ip, 53)).ok()
            })
            .unwrap_or_else(|| panic!("binding a DNS server on 127.53.x.y:53 (needs root)"));
        let ip = socket.local_addr().expect("local_addr").ip();
        let resolv_conf = workdir.join("resolv.conf");
        // One try, no search list: a query per resolution, for the name as written.
        let text = format!("nameserver {ip}\noptions attempts:1 timeout:1\n");
        std::fs::write(&resolv_conf, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", resolv_conf.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let queries = Queries::default();
        let stop = Arc::new(AtomicBool::new(false));
        let names = spec.names.clone();
        let thread = {
            let (queries, stop) = (queries.clone(), stop.clone());
            std::thread::spawn(move || serve(&socket, &names, &queries, &stop))
        };
        Dns {
            spec: spec.clone(),
            resolv_conf,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    /// Forgets the queries so far (before the next proxy starts).
    pub fn reset(&self) {
        self.queries.lock().expect("dns queries").clear();
    }

    /// `cmd` run in a mount namespace of its own where `/etc/resolv.conf` is the case's; the
    /// process keeps the pid (unshare and sh exec), so killing it kills the proxy.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(&self.resolv_conf)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// `dns.NAME` for every name of the case whose window has passed: the resolutions (A
    /// queries, resends within one counted once) within `window_ms` of the first. While the
    /// window runs the count is still moving, so it is left out.
    pub fn observe(&self, obs: &mut super::Observation) {
        let queries = self.queries.lock().expect("dns queries");
        let window = Duration::from_millis(self.spec.window_ms);
        for name in self.spec.names.keys() {
            let at = queries.get(name).map(Vec::as_slice).unwrap_or_default();
            let n = match at.first() {
                Some(&(t0, _)) if t0.elapsed() > window => at
                    .iter()
                    .filter(|(t, _)| t.duration_since(t0) <= window)
                    .count(),
                Some(_) => continue,
                None => 0,
            };
            let v = match self.spec.at_most {
                Some(max) if n >= max => format!("{max}+"),
                _ => n.to_string(),
            };
            obs.insert(format!("dns.{name}"), v);
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    socket: &UdpSocket,
    names: &BTreeMap<String, String>,
    queries: &Queries,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(q) = Question::parse(&buf[..len]) else {
            continue;
        };
        let answer = names.get(&q.name);
        if q.qtype == TYPE_A && answer.is_some() {
            let mut all = queries.lock().expect("dns queries");
            let seen = all.entry(q.name.clone()).or_default();
            let now = Instant::now();
            match seen.last_mut() {
                Some((last, at)) if *at == from && now.duration_since(*last) < RESEND => {
                    *last = now
                }
                _ => seen.push((now, from)),
            }
        }
        let reply = match answer {
            None => q.reply(RCODE_NXDOMAIN, None),
            Some(a) if a == "SERVFAIL" => q.reply(RCODE_SERVFAIL, None),
            Some(a) if q.qtype == TYPE_A => {
                let ip: Ipv4Addr = a
                    .parse()
                    .unwrap_or_else(|e| panic!("dns answer {a:?} for {}: {e}", q.name));
                q.reply(0, Some(ip))
            }
            Some(_) => q.reply(0, None),
        };
        let _ = socket.send_to(&reply, from);
    }
}

const TYPE_A: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;

/// The one question of a query, and the bytes to echo it.
struct Question<'a> {
    id: [u8; 2],
    rd: bool,
    /// Lower case, without the final dot.
    name: String,
    qtype: u16,
    /// The question section as sent (name, type, class).
    raw: &'a [u8],
}

impl<'a> Question<'a> {
    fn parse(msg: &'a [u8]) -> Option<Question<'a>> {
        let header = msg.get(..12)?;
        if header[2] & 0x80 != 0 || u16::from_be_bytes([header[4], header[5]]) != 1 {
            return None;
        }
        let mut labels = Vec::new();
        let mut i = 12;
        loop {
            let len = usize::from(*msg.get(i)?);
            i += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
            i += len;
        }
        let tail = msg.get(i..i + 4)?;
        Some(Question {
            id: [header[0], header[1]],
            rd: header[2] & 0x01 != 0,
            name: labels.join("."),
            qtype: u16::from_be_bytes([tail[0], tail[1]]),
            raw: &msg[12..i + 4],
        })
    }

    /// A response with `rcode` and, when given, one A record (TTL 0: never cached).
    fn reply(&self, rcode: u8, a: Option<Ipv4Addr>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.id);
        out.push(0x80 | 0x04 | u8::from(self.rd)); // QR, AA, RD as asked
        out.push(0x80 | rcode); // RA
        out.extend_from_slice(&[0, 1, 0, u8::from(a.is_some()), 0, 0, 0, 0]);
        out.extend_from_slice(self.raw);
        if let Some(ip) = a {
            // Name: a pointer to the question's (offset 12); type A, class IN, TTL 0, 4 bytes.
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        out
    }
}
