//! `sluice explain TARGET|-c envoy.yaml URL [-H 'name: value'] [-X METHOD]`: how a running
//! proxy's live config (its admin's `/explain`) or a config file routes a request, step by step
//! (listener, filter chain, virtual hosts, routes, rewrites, header changes, cluster,
//! endpoints). The trace comes from `sluice_engine::explain`, which runs the data path's own
//! matching; this module parses the command line and renders the trace (one renderer for both
//! sources: the admin's JSON is read back into the same types).

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{anyhow, bail, Result};
use sluice_engine::{
    explain::{Explanation, Request},
    route::explain::{Decision, ForwardTrace, RouteTrace},
};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Readable steps.
    Text,
    /// The trace as JSON.
    Json,
}

/// `sluice explain` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Explain on this Envoy v3 bootstrap (`sluice proxy -c` / `sluice agent --config`)
    /// instead of a running proxy.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// `TARGET URL`, or `URL` with `-c`. TARGET is a running proxy's admin address
    /// (`HOST:PORT`; its live config is explained through `/explain`); URL is the request
    /// (`http://host:port/path?query`), whose port picks the listener.
    #[arg(value_name = "[TARGET] URL", num_args = 1..=2, required = true)]
    pub positional: Vec<String>,
    /// A request header, `name: value`; repeatable (`Host` overrides the URL's authority).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The request method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// Explain on this listener instead of the one the URL's address reaches.
    #[arg(long)]
    pub listener: Option<String>,
    /// The random draw for weighted clusters (the data path draws a fresh one per request).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Send the request as HTTP/1.0 (as curl's `--http1.0`).
    #[arg(long = "http1.0")]
    pub http10: bool,
    /// The client's IP address (RBAC principals, `x-forwarded-for`); default 127.0.0.1.
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `sluice explain`.
pub fn run(args: &Args) -> Result<()> {
    let ex = match (&args.config, args.positional.as_slice()) {
        (Some(config), [url]) => {
            let boot = sluice_engine::config::load_file(config)
                .map_err(|e| anyhow!("loading {}: {e}", config.display()))?;
            let mut req = Request::from_url(
                url,
                &args.method,
                &args.headers,
                args.listener.clone(),
                args.seed,
            )?;
            req.http10 = args.http10;
            req.source = args.source;
            sluice_engine::explain::explain(&boot, &req)?
        }
        (None, [target, url]) => {
            let mut q = sluice_engine::admin::explain::path(
                url,
                &args.method,
                &args.headers,
                args.listener.as_deref(),
                args.seed,
            );
            if args.http10 {
                q.push_str("&version=HTTP/1.0");
            }
            if let Some(ip) = args.source {
                q.push_str(&format!("&source={ip}"));
            }
            let v = crate::proxy_config::fetch::get_json(target, &q)?;
            serde_json::from_value(v)
                .map_err(|e| anyhow!("{target}: /explain answered an unknown shape: {e}"))?
        }
        (Some(_), _) => bail!("with -c FILE give only the URL (not a TARGET)"),
        (None, _) => bail!("give TARGET URL (a running proxy's admin HOST:PORT), or -c FILE URL"),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&ex)?),
        Output::Text => print!("{}", render(&ex)),
    }
    Ok(())
}

/// The readable form of an explanation.
pub fn render(ex: &Explanation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "request       {}", ex.request);
    let _ = writeln!(
        s,
        "listener      {} ({}): {}",
        ex.listener.name, ex.listener.address, ex.listener.why
    );
    let c = &ex.filter_chain;
    let _ = writeln!(
        s,
        "filter chain  #{}{} {}: {}",
        c.index,
        c.name.as_ref().map_or(String::new(), |n| format!(" {n}")),
        c.filter,
        c.why
    );
    let network_denied = ex
        .authorization
        .iter()
        .any(|a| a.denied && a.filter.starts_with("network "));
    if network_denied {
        render_authz(&mut s, ex);
    }
    if let Some(r) = &ex.refused {
        let _ = writeln!(s, "refused       {r} (before routing)");
    }
    if let Some(r) = &ex.route {
        render_route(&mut s, r);
    }
    if !network_denied {
        render_authz(&mut s, ex);
    }
    if let Some(t) = &ex.tcp_cluster {
        let _ = writeln!(s, "tcp_proxy     -> {t}");
    }
    if let Some(c) = &ex.cluster {
        let _ = writeln!(s, "cluster       {} ({})", c.name, c.kind);
        for e in &c.endpoints {
            let _ = writeln!(s, "  endpoint    {e}");
        }
    }
    s
}

/// The RBAC filters' verdicts, in order (a denial ends the request there).
fn render_authz(s: &mut String, ex: &Explanation) {
    for a in &ex.authorization {
        let _ = writeln!(
            s,
            "authz         {} ({}): {}",
            a.filter,
            a.rules,
            a.enforced.as_deref().unwrap_or("no rules: allowed")
        );
        if let Some(sh) = &a.shadow {
            let _ = writeln!(s, "  shadow      {sh} (counted only)");
        }
        if a.denied {
            let what = match a.filter.starts_with("network ") {
                true => "the connection is closed",
                false => "403 RBAC: access denied (the route above is not taken)",
            };
            let _ = writeln!(s, "  denied      {what}");
        }
    }
}

fn render_route(s: &mut String, r: &RouteTrace) {
    let _ = writeln!(
        s,
        "route config  {} (host \"{}\")",
        r.route_config,
        r.host.as_deref().unwrap_or("-")
    );
    for v in &r.virtual_hosts {
        let mark = if v.chosen { "*" } else { " " };
        let why = v.why.as_deref().map_or(String::new(), |w| format!(": {w}"));
        let _ = writeln!(
            s,
            "  {mark} vhost   {} [{}]{why}",
            v.name,
            v.domains.join(", ")
        );
    }
    for rt in &r.routes {
        let mark = if rt.matched { "*" } else { " " };
        let name = rt
            .name
            .as_deref()
            .map_or(String::new(), |n| format!(" {n}"));
        let _ = writeln!(
            s,
            "  {mark} route   #{}{name} {}: {}",
            rt.index, rt.r#match, rt.result
        );
    }
    match &r.decision {
        Decision::NoRoute { why } => {
            let _ = writeln!(s, "decision      no route: {why}");
        }
        Decision::Redirect { status, location } => {
            let _ = writeln!(s, "decision      redirect {status} -> {location}");
        }
        Decision::DirectResponse { status, body } => {
            let _ = writeln!(
                s,
                "decision      direct response {status} {}",
                body.as_deref().unwrap_or("")
            );
        }
        Decision::Forward(f) => render_forward(s, f),
    }
}

fn render_forward(s: &mut String, f: &ForwardTrace) {
    let _ = writeln!(
        s,
        "decision      forward to {} ({})",
        f.cluster.as_deref().unwrap_or("- (header absent: 503 NC)"),
        f.cluster_from
    );
    if let Some(draw) = f.draw {
        for w in &f.weights {
            let hit = if (w.range.0..w.range.1).contains(&draw) {
                "  <- draw"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  weight      {} {} [{}, {}){hit}",
                w.name, w.weight, w.range.0, w.range.1
            );
        }
        let _ = writeln!(s, "  draw        {draw}");
    }
    match &f.rewritten_path {
        Some(p) => {
            let _ = writeln!(s, "  path        {} -> {p}", f.path);
        }
        None => {
            let _ = writeln!(s, "  path        {} (unchanged)", f.path);
        }
    }
    if let Some(h) = &f.host_rewrite {
        let _ = writeln!(s, "  host        -> {h}");
    }
    for (k, v) in &f.request_headers_set {
        let _ = writeln!(s, "  request     {k}: {v}");
    }
    for k in &f.request_headers_removed {
        let _ = writeln!(s, "  request     -{k}");
    }
    for (k, v) in &f.response_headers_set {
        let _ = writeln!(s, "  response    {k}: {v}");
    }
    for k in &f.response_headers_removed {
        let _ = writeln!(s, "  response    -{k}");
    }
    let timeout = f
        .timeout_ms
        .map_or("disabled".to_string(), |t| format!("{t} ms"));
    let retries = f
        .retries
        .map_or(String::new(), |r| format!(", {r} retries"));
    let _ = writeln!(s, "  timeout     {timeout}{retries}");
}
