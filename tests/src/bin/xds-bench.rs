//! `xds-bench`: the xDS scale benchmark (run by `cargo xtask bench --xds`; see
//! `sluice_tests::xds_bench`). Prints a Markdown report and writes it, with the raw samples as
//! JSON, to `--out`.

use std::{path::PathBuf, time::Duration, time::Instant};

use clap::Parser;
use serde_json::json;
use sluice_tests::{
    conformance::proxy::envoy_binary,
    sluice_cli::sluice_bin,
    upstream::{harness::free_port, TestUpstream},
    xds_bench::{full, small, wait_acks, wait_serving, BenchProxy, Scale, Which},
    xds_script::bootstrap,
    xds_server::{XdsServer, EDS},
};

#[derive(Parser, Debug)]
#[command(about = "Times a mesh-sized xDS push to sluice and to Envoy on the same server")]
struct Args {
    /// The sluice binary (default: $SLUICE_BIN, else target/debug/sluice).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// The Envoy binary (default: the one the conformance suite uses).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Samples per proxy and API.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// ADS flavours: sotw, delta.
    #[arg(long, value_delimiter = ',', default_value = "sotw,delta")]
    api: Vec<String>,
    #[arg(long, default_value_t = 500)]
    vhosts: usize,
    #[arg(long, default_value_t = 10)]
    routes_per_vhost: usize,
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Output directory for xds.md and xds.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// EDS-only changes timed per sample after the first (c1's endpoints move back and forth),
    /// pooled over the samples for the goal's percentiles.
    #[arg(long, default_value_t = 20)]
    eds_changes: usize,
}

/// One run of one proxy: everything in milliseconds, RSS in KiB.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    full_acked_ms: f64,
    full_serving_ms: f64,
    eds_acked_ms: f64,
    eds_serving_ms: f64,
    eds_send_to_ack_ms: f64,
    /// Server send -> ACK of each further EDS-only change.
    eds_more_send_to_ack_ms: Vec<f64>,
    eds_types_resent: Vec<String>,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

const LIMIT: Duration = Duration::from_secs(120);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn sample(
    which: Which,
    bin: &std::path::Path,
    api: &str,
    scale: Scale,
    eds_changes: usize,
) -> Sample {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..scale.endpoints.clamp(1, 10) {
        a.push(TestUpstream::start("a").await);
        b.push(TestUpstream::start("b").await);
    }
    let a_ports: Vec<u16> = a.iter().map(TestUpstream::port).collect();
    let b_ports: Vec<u16> = b.iter().map(TestUpstream::port).collect();
    let (port, admin) = (free_port(), free_port());
    let server = XdsServer::start().await;
    server.skip_unchanged_types(true);
    let v1 = small(port, &a_ports);
    server.set(v1.clone());
    let api_type = if api == "delta" { "DELTA_GRPC" } else { "GRPC" };
    let proxy = BenchProxy::start(which, bin, &bootstrap(admin, server.addr, api_type), admin);
    wait_serving(port, "a", Instant::now(), LIMIT);
    let rss_before_kib = proxy.rss_kib();

    // The full push.
    let v2 = full("2", scale, port, &a_ports, &b_ports);
    let types: Vec<String> = v2
        .changed_types(&v1)
        .into_iter()
        .map(String::from)
        .collect();
    let t0 = Instant::now();
    server.set(v2.clone());
    let probe = tokio::task::spawn_blocking(move || wait_serving(port, "b", t0, LIMIT));
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let (full_acked, _) = wait_acks(&server, &types, "2", t0, LIMIT).await;
    let full_serving = probe.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = proxy.rss_kib();

    // An EDS-only change: c1's endpoints move to the `a` upstreams.
    let v3 = full("3", scale, port, &a_ports, &a_ports);
    assert_eq!(
        v3.changed_types(&v2),
        [EDS],
        "the EDS-only change changes EDS only"
    );
    let t0 = Instant::now();
    server.set(v3);
    let probe = tokio::task::spawn_blocking(move || wait_serving(port, "a", t0, LIMIT));
    let (eds_acked, each) = wait_acks(&server, &[EDS], "3", t0, LIMIT).await;
    let eds_serving = probe.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let eds_types_resent = server
        .ack_times()
        .iter()
        .filter(|t| t.version == "3")
        .map(|t| sluice_tests::xds_bench::short(&t.type_url).to_string())
        .collect();
    // More EDS-only changes, one at a time: c1 moves to the `b` upstreams and back.
    let mut more = Vec::with_capacity(eds_changes);
    for k in 0..eds_changes {
        let version = (4 + k).to_string();
        let c1 = if k % 2 == 0 { &b_ports } else { &a_ports };
        server.set(full(&version, scale, port, &a_ports, c1));
        let (_, each) = wait_acks(&server, &[EDS], &version, Instant::now(), LIMIT).await;
        more.push(ms(each[0].1));
    }
    drop(proxy);
    Sample {
        full_acked_ms: ms(full_acked),
        full_serving_ms: ms(full_serving),
        eds_acked_ms: ms(eds_acked),
        eds_serving_ms: ms(eds_serving),
        eds_send_to_ack_ms: ms(each[0].1),
        eds_more_send_to_ack_ms: more,
        eds_types_resent,
        rss_before_kib,
        rss_after_kib,
    }
}

/// (median, min, max).
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scale = Scale {
        vhosts: args.vhosts.max(1),
        routes_per_vhost: args.routes_per_vhost.max(1),
        clusters: args.clusters.max(2),
        endpoints: args.endpoints.max(1),
    };
    let sluice = args.sluice.clone().unwrap_or_else(sluice_bin);
    let envoy = args
        .envoy
        .clone()
        .unwrap_or_else(|| envoy_binary().to_path_buf());
    let rt = tokio::runtime::Runtime::new()?;
    let mut samples: Vec<(String, Which, Sample)> = Vec::new();
    for rep in 0..args.reps.max(1) {
        for api in &args.api {
            anyhow::ensure!(
                api == "sotw" || api == "delta",
                "--api: {api}: sotw or delta"
            );
            // Alternate who goes first, so neither always gets the quieter machine.
            let order = if rep % 2 == 0 {
                [Which::Sluice, Which::Envoy]
            } else {
                [Which::Envoy, Which::Sluice]
            };
            for which in order {
                let bin = if which == Which::Sluice {
                    &sluice
                } else {
                    &envoy
                };
                let s = rt.block_on(sample(which, bin, api, scale, args.eds_changes));
                eprintln!("rep {rep} {api} {which:?}: {s:?}");
                samples.push((api.clone(), which, s));
            }
        }
    }
    let report = report(&args, scale, &samples);
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("xds.md"), &report)?;
        let raw: Vec<_> = samples
            .iter()
            .map(|(api, w, s)| json!({"api": api, "proxy": format!("{w:?}"), "sample": s}))
            .collect();
        std::fs::write(out.join("xds.json"), serde_json::to_string_pretty(&raw)?)?;
        eprintln!("wrote {}/xds.md and xds.json", out.display());
    }
    Ok(())
}

fn report(args: &Args, scale: Scale, samples: &[(String, Which, Sample)]) -> String {
    type Metric = (&'static str, fn(&Sample) -> f64);
    let metrics: [Metric; 7] = [
        ("full push: sent -> every type ACKed (ms)", |s| {
            s.full_acked_ms
        }),
        (
            "full push: sent -> probe served by the new config (ms)",
            |s| s.full_serving_ms,
        ),
        ("EDS-only change: sent -> ACK (ms)", |s| s.eds_acked_ms),
        (
            "EDS-only change: sent -> probe on the new endpoints (ms)",
            |s| s.eds_serving_ms,
        ),
        (
            "EDS-only change: server send -> ACK of the EDS response (ms)",
            |s| s.eds_send_to_ack_ms,
        ),
        ("RSS before the push (MiB)", |s| {
            s.rss_before_kib as f64 / 1024.0
        }),
        ("RSS after the push (MiB)", |s| {
            s.rss_after_kib as f64 / 1024.0
        }),
    ];
    let mut r = format!(
        "# xDS scale: sluice vs Envoy on one management server\n\n\
         {} virtual hosts x {} routes = {} routes, {} EDS clusters x {} endpoints = {} endpoints; \
         one listener (RDS). Both proxies with one worker (`TOKIO_WORKER_THREADS=1 sluice proxy`, \
         `envoy --concurrency 1`), one after the other, {} samples each; median (min-max).\n\
         Command: `cargo xtask bench --xds` (binary `xds-bench`).\n",
        scale.vhosts,
        scale.routes_per_vhost,
        scale.vhosts * scale.routes_per_vhost,
        scale.clusters,
        scale.endpoints,
        scale.clusters * scale.endpoints,
        args.reps
    );
    for api in &args.api {
        let of = |w: Which| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|(a, x, _)| a == api && *x == w)
                .map(|(_, _, s)| s)
                .collect()
        };
        let (s, e) = (of(Which::Sluice), of(Which::Envoy));
        if s.is_empty() || e.is_empty() {
            continue;
        }
        r +=
            &format!(
            "\n## {}\n\n| metric | sluice | Envoy 1.40 | sluice / Envoy |\n|---|---:|---:|---:|\n",
            if api == "delta" { "Delta ADS" } else { "State-of-the-world ADS" }
        );
        let mut med = Vec::new();
        for (name, f) in &metrics {
            let (sm, sl, sh) = stats(s.iter().map(|x| f(x)).collect());
            let (em, el, eh) = stats(e.iter().map(|x| f(x)).collect());
            med.push((sm, em));
            r += &format!(
                "| {name} | {sm:.1} ({sl:.1}-{sh:.1}) | {em:.1} ({el:.1}-{eh:.1}) | {:.2} |\n",
                sm / em
            );
        }
        // Every EDS-only change of every sample, pooled: the goal's median and tail.
        let pooled = |v: &[&Sample]| -> Vec<f64> {
            let mut all: Vec<f64> = v
                .iter()
                .flat_map(|x| {
                    std::iter::once(x.eds_send_to_ack_ms)
                        .chain(x.eds_more_send_to_ack_ms.iter().copied())
                })
                .collect();
            all.sort_by(f64::total_cmp);
            all
        };
        let (sp, ep) = (pooled(&s), pooled(&e));
        let pct = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        r += &format!(
            "| EDS-only changes, all {} pooled: server send -> ACK p50 / p90 / max (ms) | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.2} |\n",
            sp.len(),
            pct(&sp, 0.5),
            pct(&sp, 0.9),
            pct(&sp, 1.0),
            pct(&ep, 0.5),
            pct(&ep, 0.9),
            pct(&ep, 1.0),
            pct(&sp, 0.5) / pct(&ep, 0.5)
        );
        let resent = |v: &[&Sample]| v[0].eds_types_resent.join(",");
        r += &format!(
            "\nTypes pushed for the EDS-only change: sluice {}, Envoy {} (the server sends a type \
             only when its resources changed).\n\nGoals:\n\
             - full push served in at most Envoy's time: {:.1} vs {:.1} ms: {}\n\
             - EDS-only change under 5 ms, from the response leaving the server to its ACK (sent \
             once the new endpoints serve), p90 of all {} changes: {:.1} ms (p50 {:.1} ms; the \
             first change of a sample: {:.1} ms, from the server's push call {:.1} ms, \
             end-to-end probe, polled every 2 ms, {:.1} ms): {}\n\
             - RSS at most half of Envoy's: {:.1} vs {:.1} MiB: {}\n",
            resent(&s),
            resent(&e),
            med[1].0,
            med[1].1,
            verdict(med[1].0 <= med[1].1),
            sp.len(),
            pct(&sp, 0.9),
            pct(&sp, 0.5),
            med[4].0,
            med[2].0,
            med[3].0,
            verdict(pct(&sp, 0.9) < 5.0),
            med[6].0,
            med[6].1,
            verdict(med[6].0 <= med[6].1 / 2.0),
        );
    }
    r
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
