//! `sluice status` at node scale: `plan.status_pods` more pods (bare netns, `lo` up, no route)
//! enrolled at once on the agent beside the bench's pods; the wall time of `status --json`, of
//! the table and of `--pod` picking one pod (each one control call, no per-pod round trip),
//! then every one of them unenrolled and removed, and the agent's pods back to what they were.

use std::time::Duration;

use anyhow::{bail, Result};

use super::{
    super::{
        paths::start::Agent,
        topology::{check_interrupted, Netns},
    },
    ctx::Ctx,
    report::Metrics,
};

pub fn run(cx: &Ctx, agent: &Agent, m: &mut Metrics) -> Result<()> {
    let n = cx.plan.status_pods;
    let before = pods_listed(cx, agent)?;
    let tag = format!("{}-st", cx.pods.tag);
    let mut made: Vec<Netns> = Vec::with_capacity(n);
    for i in 0..n {
        check_interrupted()?;
        made.push(Netns::new(format!("{tag}{i}"))?);
        cx.enroll_netns(&agent.control, &made[i].name, "node", &[])?;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (json, took) = cx.status(&agent.control)?;
    let listed = json["pods"].as_array().map_or(0, Vec::len);
    if listed != before + n {
        bail!("status lists {listed} pods, {} enrolled", before + n);
    }
    m.push("status.pods", listed as f64);
    m.push("status.json_ms", ms(took));
    let (table, took) = cx.sluice_timed(&agent.control, &["status"])?;
    m.push("status.table_ms", ms(took));
    m.push("status.table_kib", table.len() as f64 / 1024.0);
    let one = &made[n / 2].name;
    let (picked, took) = cx.sluice_timed(&agent.control, &["status", "--pod", one])?;
    m.push("status.filter_ms", ms(took));
    if !picked.contains(one.as_str()) || !picked.contains("1 pods (") {
        bail!("status --pod {one} did not list exactly that pod:\n{picked}");
    }
    let summary = table.lines().find(|l| l.contains(" pods (")).unwrap_or("");
    println!("bench --scale: status with {listed} pods: {summary}");
    for ns in &made {
        cx.sluice_timed(&agent.control, &["unenroll", "--netns", &ns.name])?;
    }
    drop(made);
    let after = pods_listed(cx, agent)?;
    if after != before {
        bail!("{after} pods listed after unenrolling, {before} before");
    }
    Ok(())
}

fn pods_listed(cx: &Ctx, agent: &Agent) -> Result<usize> {
    let (json, _) = cx.status(&agent.control)?;
    Ok(json["pods"].as_array().map_or(0, Vec::len))
}
