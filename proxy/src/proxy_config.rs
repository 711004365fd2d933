//! `sluice proxy-config listener|route|cluster|endpoint|secret|all TARGET [-o short|json|yaml]`:
//! istioctl's `proxy-config` views (its columns, wording, order and filters) over the admin
//! interface's `/config_dump` (and `/clusters?format=json` for endpoints). TARGET is an admin
//! address (`127.0.0.1:15000`); `-f FILE` reads a saved dump instead — sluice's or Envoy's.
//! The views are pure functions from the dump's JSON to text ([`render`]).

mod cluster;
mod dump;
mod endpoint;
pub(crate) mod fetch;
mod listener;
mod route;
mod secret;
mod table;
mod target;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde_json::Value;

/// istioctl's tabwriter layout (shared with `proxy-status`).
pub(crate) use self::table::render as render_table;

/// Which view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Listeners: ADDRESSES / PORT / MATCH / DESTINATION.
    Listener,
    /// Routes: NAME / VHOST NAME / DOMAINS / MATCH / VIRTUAL SERVICE.
    Route,
    /// Clusters: SERVICE FQDN / PORT / SUBSET / DIRECTION / TYPE / DESTINATION RULE.
    Cluster,
    /// Endpoints: ENDPOINT / STATUS / OUTLIER CHECK / CLUSTER.
    Endpoint,
    /// Secrets: RESOURCE NAME / TYPE / STATUS / VALID CERT / SERIAL NUMBER / NOT AFTER /
    /// NOT BEFORE.
    Secret,
    /// Everything (istioctl's `all`).
    All,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// istioctl's table.
    Short,
    /// The selected resources as JSON.
    Json,
    /// The selected resources as YAML.
    Yaml,
}

/// `sluice proxy-config` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// listener, route, cluster, endpoint, secret or all.
    #[arg(value_enum)]
    pub view: View,
    /// The proxy's admin address (e.g. 127.0.0.1:15000), a node-mode pod as NAMESPACE/NAME or
    /// its netns name or path (asked through the agent at $SLUICE_CONTROL, default
    /// /run/sluice/agent.sock); or use --file.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub target: Option<String>,
    /// A saved `/config_dump` (for `endpoint`: also a `/clusters?format=json` answer).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Short)]
    pub output: Output,
    /// Routes: only the route configuration of this name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Clusters, listeners, endpoints: only this port.
    #[arg(long, default_value_t = 0)]
    pub port: u32,
    /// Clusters: substring of the service FQDN.
    #[arg(long, default_value = "")]
    pub fqdn: String,
    /// Clusters: inbound or outbound.
    #[arg(long, default_value = "")]
    pub direction: String,
    /// Clusters: substring of the subset.
    #[arg(long, default_value = "")]
    pub subset: String,
    /// Listeners, endpoints: only this address.
    #[arg(long, default_value = "")]
    pub address: String,
    /// Listeners: HTTP, TCP or HTTP+TCP.
    #[arg(long = "type", default_value = "")]
    pub kind: String,
    /// Endpoints: only this cluster.
    #[arg(long, default_value = "")]
    pub cluster: String,
    /// Endpoints: only this health status.
    #[arg(long, default_value = "")]
    pub status: String,
    /// `all`: a `------ X INFO ------` line before each section.
    #[arg(long)]
    pub with_headers: bool,
}

/// The inputs of a view: the config dump (with EDS) and, for endpoints, the clusters JSON.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `/config_dump?include_eds`.
    pub dump: Value,
    /// `/clusters?format=json`, when read from an admin or given as the file.
    pub clusters: Option<Value>,
}

/// Runs the command: fetches or reads the inputs and prints the view.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let inputs = match (&args.file, &args.target) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", f.display()))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a JSON config dump: {e}", f.display()))?;
            if v.get("cluster_statuses").is_some() {
                Inputs {
                    dump: Value::Null,
                    clusters: Some(v),
                }
            } else {
                Inputs {
                    dump: v,
                    clusters: None,
                }
            }
        }
        (None, Some(t)) => fetch::inputs(t, args.view)?,
        (None, None) => anyhow::bail!("proxy-config needs a TARGET admin address or --file"),
    };
    print!("{}", render(args, &inputs)?);
    Ok(())
}

fn json_text(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8_lossy(&out).into_owned() + "\n"
}

fn structured(v: Value, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Yaml => serde_norway::to_string(&v)?,
        _ => json_text(&v),
    })
}

/// The view's text for `inputs` (pure: the golden tests call it on saved dumps).
pub fn render(args: &Args, inputs: &Inputs) -> anyhow::Result<String> {
    let d = &inputs.dump;
    let lf = listener::Filter {
        address: args.address.clone(),
        port: args.port,
        kind: args.kind.clone(),
    };
    let cf = cluster::Filter {
        fqdn: args.fqdn.clone(),
        port: args.port,
        subset: args.subset.clone(),
        direction: args.direction.clone(),
    };
    let ef = endpoint::Filter {
        address: args.address.clone(),
        port: args.port,
        cluster: args.cluster.clone(),
        status: args.status.clone(),
    };
    let need = |what: &str, v: Vec<Value>| -> anyhow::Result<Vec<Value>> {
        if v.is_empty() {
            anyhow::bail!("no {what} found");
        }
        Ok(v)
    };
    let short = args.output == Output::Short;
    match args.view {
        View::Listener => {
            let ls = need("listeners", dump::listeners(d))?;
            if short {
                return Ok(table::render(&listener::rows(&ls, &lf, false), 1));
            }
            structured(
                Value::Array(ls.into_iter().filter(|l| lf.verify(l)).collect()),
                args.output,
            )
        }
        View::Route => {
            let rs = need("routes", dump::routes(d))?;
            if short {
                return Ok(table::render(&route::rows(&rs, &args.name, false), 5));
            }
            let rs = route::sorted(rs)
                .into_iter()
                .filter(|r| route::verify(&args.name, r));
            structured(Value::Array(rs.collect()), args.output)
        }
        View::Cluster => {
            let cs = need("clusters", dump::clusters(d))?;
            if short {
                return Ok(table::render(&cluster::rows(&cs, &cf, false), 5));
            }
            let cs = cluster::sorted(cs).into_iter().filter(|c| cf.verify(c));
            structured(Value::Array(cs.collect()), args.output)
        }
        View::Endpoint => {
            let eps = match &inputs.clusters {
                Some(c) => endpoint::from_clusters_json(c),
                None => endpoint::from_dump(d),
            };
            if short {
                return Ok(table::render(&endpoint::rows(&eps, &ef), 5));
            }
            let statuses = inputs
                .clusters
                .as_ref()
                .map_or(Value::Null, |c| c["cluster_statuses"].clone());
            structured(statuses, args.output)
        }
        View::Secret => {
            if short {
                return Ok(secret_table(d));
            }
            let s = dump::message(d, "SecretsConfigDump")
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no secrets found"))?;
            structured(s, args.output)
        }
        View::All => {
            if !short {
                return structured(d.clone(), args.output);
            }
            all(args, d, &lf, &cf, &ef)
        }
    }
}

fn all(
    args: &Args,
    d: &Value,
    lf: &listener::Filter,
    cf: &cluster::Filter,
    ef: &endpoint::Filter,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let header = |out: &mut String, s: &str| {
        if args.with_headers {
            out.push_str(&format!("------ {s} ------\n\n"));
        }
    };
    header(&mut out, "BOOTSTRAP INFO");
    out.push_str(&bootstrap_summary(d));
    out.push('\n');
    header(&mut out, "CLUSTER INFO");
    let cs = dump::clusters(d);
    if cs.is_empty() {
        anyhow::bail!("no clusters found");
    }
    out.push_str(&table::render(&cluster::rows(&cs, cf, true), 5));
    out.push('\n');
    header(&mut out, "LISTENER INFO");
    let ls = dump::listeners(d);
    if ls.is_empty() {
        anyhow::bail!("no listeners found");
    }
    out.push_str(&table::render(&listener::rows(&ls, lf, true), 1));
    out.push('\n');
    header(&mut out, "ROUTE INFO");
    let rs = dump::routes(d);
    if rs.is_empty() {
        anyhow::bail!("no routes found");
    }
    out.push_str(&table::render(&route::rows(&rs, &args.name, true), 5));
    out.push('\n');
    header(&mut out, "SECRET INFO");
    out.push_str(&secret_table(d));
    out.push('\n');
    header(&mut out, "ENDPOINTS INFO");
    out.push_str(&table::render(
        &endpoint::dump_rows(&endpoint::from_dump(d), ef),
        5,
    ));
    Ok(out)
}

/// istioctl's secret summary: the table, or its sentence without dynamic secrets.
fn secret_table(d: &Value) -> String {
    match secret::rows(d) {
        Some(rows) => table::render(&rows, 5),
        None => "No active or warming secrets found.\n".into(),
    }
}

/// istioctl's bootstrap summary: Istio versions from the node metadata, the proxy's version
/// from `user_agent_build_version`.
fn bootstrap_summary(d: &Value) -> String {
    let node =
        dump::message(d, "BootstrapConfigDump").map_or(&Value::Null, |b| &b["bootstrap"]["node"]);
    let mut rows = Vec::new();
    let md = &node["metadata"];
    if let Some(v) = md["ISTIO_VERSION"].as_str() {
        rows.push(vec!["Istio Version:".to_string(), v.to_string()]);
    }
    if let Some(v) = md["ISTIO_PROXY_SHA"].as_str() {
        let sha = v.split_once(':').map_or(v, |(_, s)| s);
        rows.push(vec!["Istio Proxy Version:".to_string(), sha.to_string()]);
    }
    let bv = &node["user_agent_build_version"];
    let n = |k: &str| bv["version"][k].as_u64().unwrap_or(0);
    let mut v = format!("{}.{}.{}", n("major_number"), n("minor_number"), n("patch"));
    let m = &bv["metadata"];
    for (key, sep) in [
        ("build.label", "-"),
        ("revision.status", "/"),
        ("build.type", "/"),
        ("ssl.version", "/"),
    ] {
        if let Some(x) = m[key].as_str() {
            v.push_str(sep);
            v.push_str(x);
        }
    }
    rows.push(vec!["Envoy Version:".to_string(), v]);
    table::render(&rows, 1)
}
