//! `--perf`: samples the proxy processes with `perf record` (call graphs) while the wrk and churn
//! and iperf3 workloads run, keeps each `perf.data` under `<out>/perf/`, and sums every profile up for the
//! report: where the proxy's CPU went (kernel, the proxy's own code, libc) and the top symbols.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// Sampling frequency (Hz): enough samples in a 3 s run, little overhead on a 2-core machine.
const FREQ: &str = "999";
/// Symbols listed per profile.
const TOP: usize = 8;

/// A `perf record` attached to the proxy processes.
pub struct Recording {
    child: Child,
    file: PathBuf,
    label: String,
}

/// Starts sampling `pids` into `<dir>/<label>.data`.
pub fn start(dir: &Path, label: &str, pids: &[u32]) -> Result<Recording> {
    fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let file = dir.join(format!("{}.data", label.replace(['/', ':', '+', ' '], "_")));
    let pid_list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let child = Command::new("perf")
        .args(["record", "-g", "-F", FREQ, "-p", &pid_list.join(","), "-o"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record (install linux-perf: cargo xtask setup)")?;
    // perf needs a moment to open its events before the workload starts.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Recording {
        child,
        file,
        label: label.into(),
    })
}

impl Recording {
    /// Stops sampling (SIGINT, as Ctrl-C would) and sums the profile up.
    pub fn finish(mut self) -> Result<Summary> {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let st = self.child.wait()?;
        if !self.file.exists() {
            bail!("perf record for {} wrote nothing ({st})", self.label);
        }
        summarize(&self.label, &self.file)
    }
}

/// One profile, summed up.
pub struct Summary {
    pub label: String,
    pub file: PathBuf,
    /// Share of samples per object (kernel, proxy binary, libc, ...), largest first.
    pub by_object: Vec<(f64, String)>,
    /// The top symbols (self time), largest first.
    pub top: Vec<(f64, String)>,
    /// Self time in netfilter (conntrack, NAT, iptables): the iptables capture's kernel cost.
    pub netfilter: f64,
    /// Self time in the eBPF capture (programs, sockmap, tcp_bpf): its kernel cost.
    pub ebpf: f64,
}

/// Symbol prefixes of netfilter's conntrack, NAT and iptables code.
const NETFILTER: [&str; 8] = [
    "nf_",
    "__nf_",
    "nft_",
    "ipt_",
    "iptable_",
    "ipv4_conntrack",
    "ipv6_conntrack",
    "xt_",
];
/// Symbol prefixes of the eBPF capture: the programs, their maps and the sockmap/tcp_bpf paths.
const EBPF: [&str; 10] = [
    "bpf_prog_",
    "__cgroup_bpf",
    "cgroup_bpf",
    "sock_hash",
    "sock_map",
    "sk_psock",
    "tcp_bpf",
    "bpf_sk",
    "sk_msg",
    "htab_",
];

fn summarize(label: &str, file: &Path) -> Result<Summary> {
    let report = |sort: &str| -> Result<Vec<(f64, String)>> {
        let out = Command::new("perf")
            .args([
                "report",
                "--no-children",
                "--stdio",
                "-g",
                "none",
                "--sort",
                sort,
                "-i",
            ])
            .arg(file)
            .stderr(Stdio::null())
            .output()
            .context("running perf report")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let (pct, rest) = l.split_once('%')?;
                let pct: f64 = pct.trim().parse().ok()?;
                // "dso [k] symbol - -": the trailing dashes are empty sort columns.
                let words: Vec<&str> = rest.split_whitespace().filter(|w| *w != "-").collect();
                Some((pct, words.join(" ")))
            })
            .collect())
    };
    let by_object = report("dso")?;
    let mut top = report("dso,symbol")?;
    let share = |prefixes: &[&str]| -> f64 {
        top.iter()
            .filter(|(_, name)| {
                let sym = name.rsplit(' ').next().unwrap_or("");
                prefixes.iter().any(|p| sym.starts_with(p))
            })
            .fold(0.0, |acc, (pct, _)| acc + pct)
    };
    let netfilter = share(&NETFILTER);
    let ebpf = share(&EBPF);
    top.truncate(TOP);
    Ok(Summary {
        label: label.into(),
        file: file.to_path_buf(),
        by_object,
        top,
        netfilter,
        ebpf,
    })
}

/// The report section listing every profile.
pub fn markdown(profiles: &[Summary]) -> String {
    let mut o = String::from(
        "\n### Profiles (`--perf`: perf record -g of the proxy processes during wrk, churn and iperf3)\n\n\
         Self time per object and the top symbols; the `perf.data` files are kept beside the report \
         (`perf report -i <file>` for call graphs).\n",
    );
    for p in profiles {
        let objects: Vec<String> = p
            .by_object
            .iter()
            .filter(|(pct, _)| *pct >= 1.0)
            .map(|(pct, name)| format!("{name} {pct:.1}%"))
            .collect();
        let top: Vec<String> = p
            .top
            .iter()
            .map(|(pct, name)| format!("`{name}` {pct:.1}%"))
            .collect();
        let _ = write!(
            o,
            "\n- **{}** ({}): {}; capture in the kernel: netfilter {:.1}%, eBPF {:.1}%\n  - top: {}\n",
            p.label,
            p.file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            objects.join(", "),
            p.netfilter,
            p.ebpf,
            top.join(", ")
        );
    }
    o
}
