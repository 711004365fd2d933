//! Worker scaling: the agent with `--workers 1` and then `--workers 2` (fresh agent each, the
//! first `plan.worker_pods` pods enrolled in node mode), one wrk per pod (one thread, 8
//! connections) at the same time; aggregate requests/s and the agent's CPU per request. Run for
//! the L4 passthrough and the L7 engine, workers interleaved over `plan.reps` repetitions.

use anyhow::Result;

use super::{super::profile, ctx::Ctx, procstat, report::Metrics};

pub fn run(cx: &Ctx, m: &mut Metrics) -> Result<()> {
    let n = cx.plan.worker_pods;
    let secs = cx.plan.worker_secs;
    let pods: Vec<usize> = (0..n).collect();
    for rep in 0..cx.plan.reps {
        for l7 in [false, true] {
            let engine = if l7 { "l7" } else { "l4" };
            let mut rps = [0.0; 2];
            let mut per_cpu = [0.0; 2];
            for (w, slot) in [1u32, 2].into_iter().zip(rps.iter_mut()) {
                let mut agent = cx.agent(l7, Some(w))?;
                for &i in &pods {
                    cx.enroll(&agent.control, i, "node")?;
                }
                m.push(
                    &format!("workers.{engine}.probe_errors"),
                    cx.probe(&pods)? as f64,
                );
                let pid = agent.run.pid();
                let rec = match &cx.perf {
                    Some(dir) if rep == 0 => Some(profile::start(
                        dir,
                        &format!("scale-workers-{engine}-w{w}"),
                        &[pid],
                    )?),
                    _ => None,
                };
                let c0 = procstat::cpu_secs(pid)?;
                let s0 = procstat::switches(pid)?;
                let runs = pods
                    .iter()
                    .map(|&i| cx.wrk_start(i, 8, secs))
                    .collect::<Result<Vec<_>>>()?;
                let total: f64 = runs
                    .into_iter()
                    .map(|r| cx.wrk_wait(r, secs))
                    .sum::<Result<f64>>()?;
                let cpu = procstat::cpu_secs(pid)? - c0;
                let switches = procstat::switches(pid)? - s0;
                if let Some(r) = rec {
                    cx.profiles.borrow_mut().push(r.finish()?);
                }
                agent.run.check_alive()?;
                let key = format!("workers.{engine}.w{w}");
                let requests = total * secs.ceil();
                m.push(&format!("{key}.rps"), total);
                m.push(&format!("{key}.cpu_pct"), cpu / secs.ceil() * 100.0);
                m.push(&format!("{key}.cpu_us_per_req"), cpu * 1e6 / requests);
                m.push(&format!("{key}.req_per_cpu_s"), requests / cpu.max(1e-9));
                m.push(
                    &format!("{key}.switches_per_req"),
                    switches as f64 / requests,
                );
                per_cpu[w as usize - 1] = requests / cpu.max(1e-9);
                *slot = total;
            }
            m.push(&format!("workers.{engine}.ratio"), rps[1] / rps[0]);
            m.push(
                &format!("workers.{engine}.capacity_ratio"),
                2.0 * per_cpu[1] / per_cpu[0],
            );
        }
    }
    Ok(())
}
