//! Reading a proxy's admin interface: a plain HTTP/1.1 GET (Content-Length or chunked
//! answers, as sluice and Envoy send them) of `/config_dump?include_eds` and, for endpoints,
//! `/clusters?format=json`; a node-mode pod's admin is asked through the agent (`target`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

use super::{
    target::{get_json_from_agent, Target},
    Inputs, View,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `path` from the admin `target` names and parses the JSON body: `HOST:PORT`, or a
/// node-mode pod (`NAMESPACE/NAME`, a netns name or path) through the agent (see
/// [`super::target`]).
pub fn get_json(target: &str, path: &str) -> anyhow::Result<Value> {
    match Target::parse(target) {
        Target::Admin(addr) => get_json_at(addr, path),
        pod => get_json_from_agent(&pod, path),
    }
}

/// GETs `path` from the admin listening at `target` (`HOST:PORT`).
fn get_json_at(target: &str, path: &str) -> anyhow::Result<Value> {
    let addr: SocketAddr = target
        .to_socket_addrs()
        .with_context(|| format!("admin address {target:?}: expected HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("admin address {target:?}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connect to the admin at {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("send GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("read GET {path} from {addr}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path} from {addr}: no HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| anyhow!("GET {path} from {addr}: bad chunked body"))?;
    }
    if status != "200" {
        bail!(
            "GET {path} from {addr}: status {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path} from {addr}: not JSON"))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// What `view` needs from the admin at `target`.
pub fn inputs(target: &str, view: View) -> anyhow::Result<Inputs> {
    let dump = get_json(target, "/config_dump?include_eds")?;
    let clusters = match view {
        View::Endpoint => Some(get_json(target, "/clusters?format=json")?),
        _ => None,
    };
    Ok(Inputs { dump, clusters })
}
