//! `sluice proxy-status [TARGET ...] [-o short|json]`: istioctl's proxy-status table (NAME,
//! CLUSTER, CDS, LDS, EDS, RDS, ECDS, ISTIOD, VERSION) for each proxy, computed from the
//! proxy's own xDS client state (admin `/xds_status`) rather than from the control plane's
//! view as istioctl does. TARGET is whatever `proxy-config` accepts (an admin address, a
//! node-mode pod as `NAMESPACE/NAME` or its netns); the default is `127.0.0.1:15000`. A NACKed type shows `NACK`, and the rejected version and error
//! follow the table; a disconnected control plane shows every received type `STALE` and
//! `(disconnected ... ago)` after its address. The views are pure functions of the JSON.

mod sync;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::{json, Value};

use crate::proxy_config::{fetch::get_json, render_table};

/// The admin every sidecar serves.
const DEFAULT_TARGET: &str = "127.0.0.1:15000";
/// The columns' types, in istioctl's order (ECDS: sluice never subscribes to it).
const TYPES: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];
/// istioctl's header (`ISTIOD`: here the control plane's address).
const HEADER: [&str; 9] = [
    "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION",
];

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// istioctl's table.
    Short,
    /// One object per proxy: the columns, the NACKs and the raw `/xds_status`.
    Json,
}

/// `sluice proxy-status` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Proxies to ask: admin addresses (HOST:PORT), node-mode pods as NAMESPACE/NAME or their
    /// netns name or path (asked through the agent at $SLUICE_CONTROL, default
    /// /run/sluice/agent.sock); default 127.0.0.1:15000.
    pub targets: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Short)]
    pub output: Output,
}

/// Runs the command: asks every target, prints the view; fails if any target could not be read
/// (after printing the others).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let targets = if args.targets.is_empty() {
        vec![DEFAULT_TARGET.to_string()]
    } else {
        args.targets.clone()
    };
    let mut statuses = Vec::new();
    let mut failed = Vec::new();
    for t in &targets {
        match fetch(t) {
            Ok(v) => statuses.push((t.clone(), v)),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !statuses.is_empty() || failed.is_empty() {
        print!("{}", render(&statuses, args.output));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", failed.join("; "))
    }
}

fn fetch(target: &str) -> anyhow::Result<Value> {
    get_json(target, "/xds_status").map_err(|e| {
        if format!("{e:#}").contains("status 404") {
            anyhow::anyhow!("{target}: the admin has no /xds_status (Envoy, or a sluice before it)")
        } else {
            e
        }
    })
}

/// The view of `(target, /xds_status)` pairs.
pub fn render(statuses: &[(String, Value)], output: Output) -> String {
    let mut rows: Vec<Row> = statuses.iter().map(|(t, v)| Row::of(t, v)).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    match output {
        Output::Json => {
            let all: Vec<Value> = rows.iter().map(Row::json).collect();
            serde_json::to_string_pretty(&all).unwrap_or_default() + "\n"
        }
        Output::Short => {
            let mut table = vec![HEADER.map(String::from).to_vec()];
            table.extend(rows.iter().map(Row::cells));
            let mut out = render_table(&table, 5);
            let nacks: Vec<String> = rows.iter().flat_map(Row::nack_lines).collect();
            if !nacks.is_empty() {
                out.push('\n');
                for l in nacks {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// One proxy's line.
struct Row<'a> {
    target: &'a str,
    name: String,
    cluster: String,
    /// CDS, LDS, EDS, RDS.
    types: [sync::Sync; 4],
    control_plane: String,
    version: String,
    /// `(type, version, error)` of each NACKed type.
    nacks: Vec<(&'static str, String, String)>,
    raw: &'a Value,
}

impl<'a> Row<'a> {
    fn of(target: &'a str, v: &'a Value) -> Self {
        let node = &v["node"];
        let cp = &v["control_plane"];
        let connected = cp["connected"].as_bool().unwrap_or(false);
        let entry = |ty: &str| {
            v["types"]
                .as_array()
                .and_then(|a| a.iter().find(|t| t["type"] == ty))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let types = TYPES.map(|ty| sync::of(&entry(ty), connected));
        let nacks = TYPES
            .iter()
            .zip(types)
            .filter(|(_, s)| *s == sync::Sync::Nack)
            .map(|(ty, _)| {
                let n = &entry(ty)["last_nack"];
                (*ty, str_of(&n["version_info"]), str_of(&n["error"]))
            })
            .collect();
        let metadata = &node["metadata"];
        Row {
            target,
            // `node.id`; a config without one (a node-mode pod's) is named by its TARGET.
            name: Some(str_of(&node["id"]))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| target.to_string()),
            // istioctl's CLUSTER is the proxy's CLUSTER_ID; without it, node.cluster.
            cluster: Some(str_of(&metadata["CLUSTER_ID"]))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| str_of(&node["cluster"])),
            types,
            control_plane: control_plane(v),
            version: Some(str_of(&metadata["ISTIO_VERSION"]))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| str_of(&v["proxy_version"])),
            nacks,
            raw: v,
        }
    }

    fn cells(&self) -> Vec<String> {
        let mut c = vec![self.name.clone(), self.cluster.clone()];
        c.extend(self.types.iter().map(|s| s.word().to_string()));
        c.push(sync::Sync::NotSent.word().into()); // ECDS
        c.push(self.control_plane.clone());
        c.push(self.version.clone());
        c
    }

    fn nack_lines(&self) -> Vec<String> {
        self.nacks
            .iter()
            .map(|(ty, version, error)| {
                format!("{} {ty} NACK of version {version:?}: {error}", self.name)
            })
            .collect()
    }

    fn json(&self) -> Value {
        let mut o = json!({
            "target": self.target,
            "name": self.name,
            "cluster": self.cluster,
            "ECDS": sync::Sync::NotSent.word(),
            "control_plane": self.control_plane,
            "version": self.version,
            "nacks": self.nacks.iter().map(|(ty, v, e)| json!({"type": ty, "version_info": v, "error": e})).collect::<Vec<_>>(),
            "xds_status": self.raw,
        });
        for (ty, s) in TYPES.iter().zip(self.types) {
            o[*ty] = json!(s.word());
        }
        o
    }
}

/// The ISTIOD column: the control plane's address, and whether the stream is down.
fn control_plane(v: &Value) -> String {
    if v["static"] == true {
        return "(static config)".into();
    }
    let cp = &v["control_plane"];
    let addr = str_of(&cp["address"]);
    if cp["connected"] == true {
        return addr;
    }
    if cp["streams"].as_u64().unwrap_or(0) == 0 {
        return format!("{addr} (never connected)");
    }
    let ago = Duration::from_millis(cp["since_ago_ms"].as_u64().unwrap_or(0));
    format!("{addr} (disconnected {} ago)", age(ago))
}

/// `850ms`, `12s`, `3m4s`, `2h5m` (as kubectl and istioctl print ages).
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}
