//! The scale bench's pods: one server netns with a bridge (`sb0`, the server's address, nginx)
//! and N pod netns, each with one veth whose other end is a port of that bridge. Addresses come
//! from 10.250.0.0/16 (every netns is ours, so the range cannot clash with the host); no netns
//! gets a default route, the pods only reach the bridge's subnet. Everything is removed on drop.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::super::topology::{
    check_interrupted, join_cgroup, run, start_nginx, start_nginx_on, Cgroup, Netns, Proc, TempDir,
    HTTP_PORT,
};

/// The bridge inside the server netns (the CNI churn pods join it too).
pub const BRIDGE: &str = "sb0";
/// The bridge's own MAC, set once: a bridge without one takes the lowest MAC of its ports,
/// so every CNI ADD/DEL of the churn could change the server's MAC under the pods' ARP caches
/// (stale entries, TCP retransmits with backoff: multi-second stalls of the busy pods).
const BRIDGE_MAC: &str = "02:00:0a:fa:00:01";
/// Prefix of every pod subnet address; the server is `.0.1`.
pub const NET: &str = "10.250";
/// The static pods use 10.250.1.0 .. 10.250.7.255; the CNI churn pods get 10.250.8.0/21 from
/// host-local.
pub const CHURN_RANGE: (&str, &str) = ("10.250.8.1", "10.250.15.254");

/// The noisy neighbour's own server (a second nginx at nice 19 on the server's address): the
/// quiet pod's nginx does not serve the neighbour's requests, so what the quiet pod still
/// shares with it is the agent.
pub const NOISY_PORT: u16 = 8081;
const NOISY_H2_PORT: u16 = 8082;

/// One pod: its netns.
pub struct Pod {
    pub ns: Netns,
}

/// The whole scale topology. Field order is drop order: nginx, pods, server, cgroup, files.
pub struct Pods {
    _nginx: Proc,
    _noisy_nginx: Proc,
    pub pods: Vec<Pod>,
    pub server: Netns,
    pub cgroup: Cgroup,
    pub dir: TempDir,
    pub server_ip: String,
    /// Name prefix of every netns of this run (pods `<tag>-p<i>`, server `<tag>-s`).
    pub tag: String,
}

/// `ip -batch` with `lines` (in netns `ns` when given).
fn ip_batch(ns: Option<&str>, lines: &str) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(n) = ns {
        c.args(["-n", n]);
    }
    let mut child = c
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("ip -batch")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(lines.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Pods {
    /// The server netns with nginx and `n` pods wired to its bridge.
    pub fn new(n: usize) -> Result<Self> {
        let pid = std::process::id();
        let tag = format!("sl-scale-{pid}");
        let dir = TempDir::new(PathBuf::from(format!("/tmp/{tag}")))?;
        let cgroup = Cgroup::new(&tag)?;
        let server = Netns::new(format!("{tag}-s"))?;
        let server_ip = format!("{NET}.0.1");
        ip_batch(
            Some(&server.name),
            &format!(
                "link add {BRIDGE} type bridge\nlink set {BRIDGE} address {BRIDGE_MAC}\n\
                 addr add {server_ip}/16 dev {BRIDGE}\nlink set {BRIDGE} up\n"
            ),
        )?;
        server.exec("sysctl", &["-qw", "net.core.somaxconn=4096"])?;
        let nginx = start_nginx(&server, &dir.path, &server_ip)?;
        let noisy_dir = dir.path.join("noisy");
        fs::create_dir_all(&noisy_dir)?;
        let noisy_nginx = start_nginx_on(
            &server,
            &noisy_dir,
            &server_ip,
            NOISY_PORT,
            NOISY_H2_PORT,
            19,
        )?;
        let mut pods = Vec::with_capacity(n);
        for i in 0..n {
            check_interrupted()?;
            pods.push(Self::pod(&tag, &server.name, i)?);
        }
        let p = Pods {
            _nginx: nginx,
            _noisy_nginx: noisy_nginx,
            pods,
            server,
            cgroup,
            dir,
            server_ip,
            tag,
        };
        p.server.wait_listen(HTTP_PORT, Duration::from_secs(5))?;
        p.server.wait_listen(NOISY_PORT, Duration::from_secs(5))?;
        Ok(p)
    }

    /// Pod `i`: netns `<tag>-p<i>`, veth `eth0` <-> `v<i>` (a port of the bridge), address
    /// 10.250.<1 + i/250>.<1 + i%250>/16, no routes but the subnet's.
    pub fn pod(tag: &str, server: &str, i: usize) -> Result<Pod> {
        let ns = Netns::new(format!("{tag}-p{i}"))?;
        let ip = format!("{NET}.{}.{}", 1 + i / 250, 1 + i % 250);
        let host = format!("v{i}");
        run(
            "ip",
            &[
                "link", "add", &host, "netns", server, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.name,
            ],
        )?;
        ip_batch(
            Some(server),
            &format!("link set {host} master {BRIDGE}\nlink set {host} up\n"),
        )?;
        ip_batch(
            Some(&ns.name),
            &format!("addr add {ip}/16 dev eth0\nlink set eth0 up\n"),
        )?;
        Ok(Pod { ns })
    }

    /// A log file in the bench directory.
    pub fn log(&self, name: &str) -> Result<(PathBuf, fs::File)> {
        let p = self.dir.path.join(name);
        let f = fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
        Ok((p, f))
    }

    /// `prog` inside pod `i`'s netns and the bench cgroup (so connect4 sees it).
    pub fn in_pod(&self, i: usize, prog: &Path) -> Command {
        let mut c = self.pods[i].ns.command(&prog.to_string_lossy(), None);
        join_cgroup(&mut c, self.cgroup.procs_file());
        c
    }
}
