//! Turns raw samples into the report: per-path medians with min-max over the interleaved
//! repetitions, latency added over `direct` and ratios computed per repetition (same run), the
//! goals met or missed, machine facts; markdown and JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::paths::PathKind;

/// One measured number.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub path: &'static str,
    pub rep: u32,
    pub metric: String,
    pub value: f64,
}

/// Median, min and max of a set of repetitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let m = s.len();
        let median = if m % 2 == 1 {
            s[m / 2]
        } else {
            (s[m / 2 - 1] + s[m / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: s[0],
            max: s[m - 1],
            n: m,
        })
    }
}

/// All samples, indexed by (path, metric) -> rep -> value.
pub struct Results {
    pub samples: Vec<Sample>,
    by: BTreeMap<(String, String), BTreeMap<u32, f64>>,
}

impl Results {
    pub fn new(samples: Vec<Sample>) -> Self {
        let mut by: BTreeMap<(String, String), BTreeMap<u32, f64>> = BTreeMap::new();
        for s in &samples {
            by.entry((s.path.to_string(), s.metric.clone()))
                .or_default()
                .insert(s.rep, s.value);
        }
        Results { samples, by }
    }

    pub fn stat(&self, path: PathKind, metric: &str) -> Option<Stat> {
        let v: Vec<f64> = self.reps(path, metric).values().copied().collect();
        Stat::of(&v)
    }

    fn reps(&self, path: PathKind, metric: &str) -> BTreeMap<u32, f64> {
        self.by
            .get(&(path.name().to_string(), metric.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// `f(a_rep, b_rep)` for every repetition where both paths have the metric (same run pairs).
    pub fn paired(
        &self,
        metric: &str,
        a: PathKind,
        b: PathKind,
        f: impl Fn(f64, f64) -> f64,
    ) -> Option<Stat> {
        let (ra, rb) = (self.reps(a, metric), self.reps(b, metric));
        let v: Vec<f64> = ra
            .iter()
            .filter_map(|(r, x)| rb.get(r).map(|y| f(*x, *y)))
            .collect();
        Stat::of(&v)
    }

    /// Latency added over direct, per repetition.
    pub fn added(&self, path: PathKind, metric: &str) -> Option<Stat> {
        self.paired(metric, path, PathKind::Direct, |x, d| x - d)
    }

    /// Ratio of `a` to `b`'s added latency over direct, per repetition.
    pub fn added_ratio(&self, metric: &str, a: PathKind, b: PathKind) -> Option<Stat> {
        let (ra, rb, rd) = (
            self.reps(a, metric),
            self.reps(b, metric),
            self.reps(PathKind::Direct, metric),
        );
        let v: Vec<f64> = ra
            .iter()
            .filter_map(|(r, x)| {
                let (y, d) = (rb.get(r)?, rd.get(r)?);
                Some((x - d) / (y - d))
            })
            .collect();
        Stat::of(&v)
    }
}

/// Formats "median (min-max)" with `dec` decimals.
pub fn cell(s: Option<Stat>, dec: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 => format!("{:.dec$}", s.median),
        Some(s) => format!("{:.dec$} ({:.dec$}-{:.dec$})", s.median, s.min, s.max),
    }
}

/// One goal of the issue and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn goal(goal: &str, measured: String, met: Option<bool>) -> Goal {
    Goal {
        goal: goal.into(),
        measured,
        met,
    }
}

/// Evaluates the goals on medians of per-repetition values.
pub fn goals(r: &Results, open_key: &str, sweep: &[&str]) -> Vec<Goal> {
    use PathKind::*;
    let mut g = Vec::new();
    let p50 = format!("{open_key}.p50_us");
    let p99 = format!("{open_key}.p99_us");
    let r50 = r.added_ratio(&p50, EbpfSidecar, IptablesSluice);
    let r99 = r.added_ratio(&p99, EbpfSidecar, IptablesSluice);
    g.push(goal(
        "eBPF added latency p50 and p99 at 1k rps <= 0.8x iptables (same proxy: sluice sidecar)",
        format!("p50 {} x, p99 {} x", cell(r50, 2), cell(r99, 2)),
        r50.zip(r99)
            .map(|(a, b)| a.median <= 0.8 && b.median <= 0.8),
    ));
    let e99 = r.added_ratio(&p99, EbpfNodeL7, IptablesEnvoy);
    let e99_l4 = r.added_ratio(&p99, EbpfNode, IptablesEnvoy);
    g.push(goal(
        "sluice eBPF (node) added p99 <= 0.5x iptables+Envoy's (judged on the L7 node path)",
        format!("L7 node {} x; L4 node {} x", cell(e99, 2), cell(e99_l4, 2)),
        e99.or(e99_l4).map(|s| s.median <= 0.5),
    ));
    // The subject is sluice's eBPF path against Istio's (iptables + Envoy): judged on
    // the node agent running Envoy's own config (L7). Behind the same iptables capture, the L7
    // engine and the L4 sidecar show the proxies alone.
    let vs_envoy = |metric: &str, f: fn(f64, f64) -> f64| {
        let ebpf = r.paired(metric, EbpfNodeL7, IptablesEnvoy, f);
        let l7 = r.paired(metric, IptablesSluiceL7, IptablesEnvoy, f);
        let l4 = r.paired(metric, IptablesSluice, IptablesEnvoy, f);
        let txt = format!(
            "eBPF L7 node (same config) {} x; behind the same iptables capture: L7 `sluice proxy` {} x, L4 `sluice sidecar` {} x",
            cell(ebpf, 2),
            cell(l7, 2),
            cell(l4, 2)
        );
        (ebpf, txt)
    };
    let (tp, txt) = vs_envoy("wrk.h1.rps", |a, b| a / b);
    let (_, cap_txt) = vs_envoy("wrk.h1.req_per_cpu_s", |a, b| a / b);
    g.push(goal(
        "one-worker max throughput >= 1.5x Envoy at concurrency 1 (HTTP/1.1 wrk req/s; sluice's eBPF path vs iptables+Envoy)",
        format!(
            "req/s: {txt}. Requests per proxy CPU-second in the same runs (what one dedicated proxy core carries; req/s also counts wrk, nginx and the kernel on the shared cores): {cap_txt}"
        ),
        tp.map(|s| s.median >= 1.5),
    ));
    let cpu = format!("{open_key}.cpu_ms_per_1k");
    let (c, txt) = vs_envoy(&cpu, |a, b| a / b);
    g.push(goal(
        "CPU per 1000 requests <= 0.5x Envoy's (sluice's eBPF path vs iptables+Envoy)",
        txt,
        c.map(|s| s.median <= 0.5),
    ));
    let rss_key = format!("{open_key}.rss_kib");
    let mut rss_txt = Vec::new();
    let mut rss_ok = Some(true);
    for p in [
        IptablesSluice,
        IptablesSluiceL7,
        EbpfSidecar,
        EbpfNode,
        EbpfNoFast,
    ] {
        match r.stat(p, &rss_key) {
            Some(s) => {
                rss_txt.push(format!("{} {:.1} MiB", p.name(), s.max / 1024.0));
                rss_ok = rss_ok.map(|ok| ok && s.max <= 20.0 * 1024.0);
            }
            None => rss_ok = None,
        }
    }
    g.push(goal(
        "RSS <= 20 MiB at 1k rps (every sluice proxy process, worst repetition)",
        rss_txt.join(", "),
        rss_ok,
    ));
    let ch = r.paired("churn.cps", EbpfSidecar, IptablesSluice, |a, b| a / b);
    let ct = r.stat(EbpfSidecar, "churn.conntrack_per_conn");
    g.push(goal(
        "new-connection rate through eBPF >= 1.5x iptables (sluice sidecar both), 0 conntrack entries by capture",
        format!(
            "{} x, conntrack entries per connection: eBPF {}, iptables {}; proxy CPU per connection: eBPF {} µs, iptables {} µs",
            cell(ch, 2),
            cell(ct, 2),
            cell(r.stat(IptablesSluice, "churn.conntrack_per_conn"), 2),
            cell(r.stat(EbpfSidecar, "churn.cpu_us_per_conn"), 1),
            cell(r.stat(IptablesSluice, "churn.cpu_us_per_conn"), 1),
        ),
        ch.zip(ct).map(|(a, b)| a.median >= 1.5 && b.max == 0.0),
    ));
    let hop = r.paired(&p50, EbpfNode, Direct, |x, d| (x - d) / d);
    g.push(goal(
        "added p50 per proxy hop <= 3x the direct round trip p50 (eBPF node)",
        format!("{} x", cell(hop, 2)),
        hop.map(|s| s.median <= 3.0),
    ));
    let bulk = r.paired("iperf.gbps", EbpfNode, Direct, |a, b| a / b);
    let enomem = r.stat(EbpfNode, "iperf.enomem").map_or(0, |s| s.n);
    g.push(goal(
        "bulk throughput via eBPF with fast path >= 0.8x direct (iperf3, node mode)",
        if enomem > 0 {
            format!("{} x; iperf3 ENOMEM in {enomem} runs", cell(bulk, 2))
        } else {
            format!("{} x", cell(bulk, 2))
        },
        if enomem > 0 {
            Some(false)
        } else {
            bulk.map(|s| s.median >= 0.8)
        },
    ));
    let mut txt = Vec::new();
    let mut ok = Some(true);
    for p in sweep {
        let m = format!("sweep.{p}.rps");
        match r.paired(&m, EbpfNode, EbpfNoFast, |a, b| a / b) {
            Some(s) => {
                txt.push(format!("{p}: {:.2} x", s.median));
                ok = ok.map(|o| o && s.median >= 1.0);
            }
            None => ok = None,
        }
    }
    g.push(goal(
        "fast path on never slower than off (wrk req/s, payload sweep, node mode, on/off per size)",
        txt.join(", "),
        ok,
    ));
    g
}

/// Open-loop workloads as (key, title).
pub fn open_title(rate: u64, conns: u64) -> (String, String) {
    (
        format!("open.{rate}x{conns}"),
        format!("Open loop {rate} rps, {conns} connections (HTTP/1.1 keep-alive, 1 KiB)"),
    )
}

/// The markdown report.
pub fn markdown(
    r: &Results,
    header: &str,
    paths: &[PathKind],
    open: &[(u64, u64)],
    sweep: &[&str],
    goals: &[Goal],
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{header}");
    let two: Vec<PathKind> = paths.iter().copied().filter(|p| p.two_hop()).collect();
    let paths: Vec<PathKind> = paths.iter().copied().filter(|p| !p.two_hop()).collect();
    for &(rate, conns) in open {
        let (k, title) = open_title(rate, conns);
        let _ = writeln!(o, "\n### {title}\n\nLatency in µs, median (min-max) over repetitions; *added* = path minus `direct` in the same repetition.\n");
        let _ = writeln!(
            o,
            "| path | p50 | p90 | p99 | p99.9 | added p50 | added p99 | achieved rps | errors |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        for &p in &paths {
            let m = |s: &str| r.stat(p, &format!("{k}.{s}"));
            let (a50, a99) = if p == PathKind::Direct {
                ("-".into(), "-".into())
            } else {
                (
                    cell(r.added(p, &format!("{k}.p50_us")), 0),
                    cell(r.added(p, &format!("{k}.p99_us")), 0),
                )
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.name(),
                cell(m("p50_us"), 0),
                cell(m("p90_us"), 0),
                cell(m("p99_us"), 0),
                cell(m("p999_us"), 0),
                a50,
                a99,
                cell(m("achieved_rps"), 0),
                cell(m("errors"), 0),
            );
        }
    }
    let (k0, _) = open_title(open[0].0, open[0].1);
    let _ = writeln!(o, "\n### Throughput, churn, bulk, proxy cost\n\nClosed loop with one proxy worker: wrk (HTTP/1.1, 1 thread, 64 connections, 1 KiB), h2load (h2c, 1 thread, 16 connections x 10 streams). Churn: new TCP connections per second, one request each, 32 concurrent; conntrack entries counted over 500 sequential connections after a flush of the client pod's table. Proxy CPU (the agent in node mode) is read from /proc around each run: per 1000 requests and RSS during the {k0} run, peak RSS (VmHWM) at the end of the path's run, requests per proxy CPU-second during wrk (the proxy's own capacity on a dedicated core, independent of the client and server sharing the cores), CPU per new connection during churn.\n");
    let _ = writeln!(o, "| path | HTTP/1.1 req/s | req / proxy CPU-s (wrk) | HTTP/2 req/s | new conn/s | proxy CPU µs / new conn | conntrack entries / conn | iperf3 Gbit/s | proxy CPU ms / 1000 req | proxy RSS MiB | proxy peak RSS MiB |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|");
    for &p in &paths {
        let rss = mib(r.stat(p, &format!("{k0}.rss_kib")));
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            cell(r.stat(p, "wrk.h1.rps"), 0),
            cell(r.stat(p, "wrk.h1.req_per_cpu_s"), 0),
            cell(r.stat(p, "h2.rps"), 0),
            cell(r.stat(p, "churn.cps"), 0),
            cell(r.stat(p, "churn.cpu_us_per_conn"), 1),
            cell(r.stat(p, "churn.conntrack_per_conn"), 2),
            match (r.stat(p, "iperf.gbps"), r.stat(p, "iperf.enomem")) {
                (g, None) => cell(g, 2),
                (g, Some(e)) => format!("{} (ENOMEM in {} of the runs)", cell(g, 2), e.n),
            },
            cell(r.stat(p, &format!("{k0}.cpu_ms_per_1k")), 1),
            cell(rss, 1),
            cell(mib(r.stat(p, "peak_rss_kib")), 1),
        );
    }
    let _ = writeln!(
        o,
        "\n### Payload sweep (wrk req/s, 1 thread, 16 connections)\n"
    );
    let _ = writeln!(o, "| path | {} |", sweep.join(" | "));
    let _ = writeln!(o, "|---|{}", "---|".repeat(sweep.len()));
    for &p in &paths {
        let cells: Vec<String> = sweep
            .iter()
            .map(|s| cell(r.stat(p, &format!("sweep.{s}.rps")), 0))
            .collect();
        let _ = writeln!(o, "| {} | {} |", p.name(), cells.join(" | "));
    }
    let _ = writeln!(
        o,
        "\n### Goals\n\n| goal | measured (median over repetitions) | met |\n|---|---|---|"
    );
    for g in goals {
        let met = match g.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(o, "| {} | {} | {met} |", g.goal, g.measured);
    }
    if let Some(line) = two_hop_summary(r, &k0) {
        let _ = writeln!(o, "\n{line}");
    }
    if !two.is_empty() {
        two_hop_section(&mut o, r, &two, &k0);
    }
    o
}

/// KiB to MiB.
fn mib(s: Option<Stat>) -> Option<Stat> {
    s.map(|s| Stat {
        median: s.median / 1024.0,
        min: s.min / 1024.0,
        max: s.max / 1024.0,
        n: s.n,
    })
}

/// The two-hop paths' table (client sidecar + server sidecar).
fn two_hop_section(o: &mut String, r: &Results, two: &[PathKind], k: &str) {
    let _ = writeln!(o, "\n### Two hops (client sidecar + server sidecar)\n\nIstio's deployment: the same proxy and capture in the client pod (outbound, 15001) and in the server pod (inbound, 15006, delivered to nginx from 127.0.0.6). Latency of the {k} open-loop run in µs, median (min-max); *added* = path minus `direct`, *server hop* = path minus its one-hop twin, both in the same repetition. Throughput: wrk HTTP/1.1 (1 thread, 64 connections, 1 KiB) and churn (new connections/s, 32 concurrent). Proxy CPU and RSS: both proxies summed. Not run on these paths (time budget): h2load, iperf3, payload sweep, conntrack count.\n");
    let _ = writeln!(o, "| path | p50 | p99 | p99.9 | added p50 | added p99 | server hop p50 | server hop p99 | HTTP/1.1 req/s | new conn/s | proxy CPU ms / 1000 req | proxy RSS MiB | errors |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &p in two {
        let m = |s: &str| format!("{k}.{s}");
        let hop = |s: &str| r.paired(&m(s), p, p.one_hop(), |x, y| x - y);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            cell(r.stat(p, &m("p50_us")), 0),
            cell(r.stat(p, &m("p99_us")), 0),
            cell(r.stat(p, &m("p999_us")), 0),
            cell(r.added(p, &m("p50_us")), 0),
            cell(r.added(p, &m("p99_us")), 0),
            cell(hop("p50_us"), 0),
            cell(hop("p99_us"), 0),
            cell(r.stat(p, "wrk.h1.rps"), 0),
            cell(r.stat(p, "churn.cps"), 0),
            cell(r.stat(p, &m("cpu_ms_per_1k")), 1),
            cell(mib(r.stat(p, &m("rss_kib"))), 1),
            cell(r.stat(p, &m("errors")), 0),
        );
    }
}

/// One line comparing the two-hop paths' added p50/p99 at the first open-loop workload: eBPF
/// against iptables (same proxy: `sluice sidecar`) and against iptables + Envoy, as per-repetition
/// ratios. None when no two-hop path ran.
pub fn two_hop_summary(r: &Results, k: &str) -> Option<String> {
    use PathKind::*;
    let (p50, p99) = (format!("{k}.p50_us"), format!("{k}.p99_us"));
    let mut parts = Vec::new();
    for p in [TwoHopEbpfSidecar, TwoHopIptablesSluice, TwoHopIptablesEnvoy] {
        if let (Some(a), Some(b)) = (r.added(p, &p50), r.added(p, &p99)) {
            parts.push(format!(
                "{} {:+.0} / {:+.0} µs",
                p.name(),
                a.median,
                b.median
            ));
        }
    }
    if parts.is_empty() {
        return None;
    }
    let ratio = |b: PathKind| {
        format!(
            "p50 {} x, p99 {} x",
            cell(r.added_ratio(&p50, TwoHopEbpfSidecar, b), 2),
            cell(r.added_ratio(&p99, TwoHopEbpfSidecar, b), 2)
        )
    };
    Some(format!(
        "**Two hops** ({k}, added p50 / p99 over direct, medians): {}. 2-hop eBPF / 2-hop iptables+sluice: {}; 2-hop eBPF / 2-hop iptables+envoy: {}.",
        parts.join("; "),
        ratio(TwoHopIptablesSluice),
        ratio(TwoHopIptablesEnvoy)
    ))
}
