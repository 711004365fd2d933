//! Differential conformance against a real Envoy 1.40: every case in tests/conformance/ runs under
//! Envoy and under `sluice proxy` with the same YAML, and the observations must match (see
//! tests/src/conformance.rs and docs/conformance.md).
//!
//! `CONFORMANCE_CASE=<substring>` runs only matching cases; `CONFORMANCE_DUMP=1` prints every
//! observation.

use std::time::Instant;

use sluice_tests::conformance::{self, Case, Kind};

/// The brief's floor for the suite's breadth.
const MIN_CASES: usize = 40;

fn cases() -> Vec<Case> {
    let all = conformance::load_all(&conformance::case_dir());
    match std::env::var("CONFORMANCE_CASE") {
        Ok(f) => {
            let some: Vec<Case> = all.into_iter().filter(|c| c.name.contains(&f)).collect();
            assert!(!some.is_empty(), "CONFORMANCE_CASE={f:?} matches no case");
            some
        }
        Err(_) => {
            assert!(
                all.len() >= MIN_CASES,
                "only {} conformance cases, want at least {MIN_CASES}",
                all.len()
            );
            all
        }
    }
}

fn dump(case: &Case, kind: Kind, obs: &[conformance::Observation]) {
    if std::env::var_os("CONFORMANCE_DUMP").is_none() {
        return;
    }
    for (i, o) in obs.iter().enumerate() {
        eprintln!(
            "--- {} {kind} req[{i}] {} {}",
            case.name, case.requests[i].method, case.requests[i].path
        );
        for (k, v) in o {
            eprintln!("    {k}: {v:?}");
        }
    }
}

/// Every divergence a case declares is listed in the docs' "Known divergences from Envoy" section.
#[test]
fn declared_divergences_are_documented() {
    let cases = conformance::load_all(&conformance::case_dir());
    let (path, section) = conformance::divergence_docs();
    let missing = conformance::undocumented_divergences(&cases, &section);
    assert!(
        missing.is_empty(),
        "declared divergences missing from {} (one line naming `case` and `key` each):\n{}",
        path.display(),
        missing.join("\n")
    );
}

/// Every case's `expect` entries hold under the real Envoy: the cases test what they claim.
#[test]
fn cases_hold_under_envoy() {
    let started = Instant::now();
    let rt = conformance::runtime();
    let cases = cases();
    let work = conformance::workdir().join("envoy-only");
    let mut failures = Vec::new();
    for case in &cases {
        let runs = conformance::run_case(
            &rt,
            case,
            &[Kind::Envoy],
            &work.join(&case.name),
            &mut Default::default(),
        );
        match &runs[0].1 {
            Ok(obs) => {
                dump(case, Kind::Envoy, obs);
                let bad = conformance::check_expectations(case, obs);
                if !bad.is_empty() {
                    failures.push(format!(
                        "{} ({}):\n{}",
                        case.name,
                        case.description,
                        bad.join("\n")
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: envoy run failed: {e}", case.name)),
        }
    }
    eprintln!(
        "{} cases under envoy in {:.1?}",
        cases.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases do not hold under Envoy (configs in {}):\n{}",
        failures.len(),
        cases.len(),
        work.display(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// sluice answers every case exactly like Envoy, apart from divergences declared in the case file
/// (and documented in docs/conformance.md).
#[test]
fn sluice_matches_envoy() {
    let started = Instant::now();
    let bin = conformance::proxy::sluice_binary()
        .unwrap_or_else(|e| panic!("sluice_matches_envoy needs the sluice binary: {e}"));
    let help = std::process::Command::new(&bin)
        .args(["proxy", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("running {} proxy --help: {e}", bin.display()));
    assert!(
        help.status.success() && String::from_utf8_lossy(&help.stdout).contains("-c"),
        "{} has no working `proxy` subcommand, so the differential suite cannot run \
         (`sluice proxy -c envoy.yaml` is built on branch l7): {}{}",
        bin.display(),
        String::from_utf8_lossy(&help.stdout),
        String::from_utf8_lossy(&help.stderr)
    );
    let rt = conformance::runtime();
    let cases = cases();
    let work = conformance::workdir().join("differential");
    let (mut failures, mut declared) = (Vec::new(), 0);
    let mut explained = conformance::agreement::Tally::default();
    let mut by_key: std::collections::BTreeMap<
        String,
        (usize, std::collections::BTreeSet<String>),
    > = Default::default();
    for case in &cases {
        let runs = conformance::run_case(
            &rt,
            case,
            &[Kind::Envoy, Kind::Sluice],
            &work.join(&case.name),
            &mut explained,
        );
        let (envoy, sluice) = (&runs[0].1, &runs[1].1);
        let (envoy, sluice) = match (envoy, sluice) {
            (Ok(e), Ok(s)) => (e, s),
            (Err(e), _) => {
                failures.push(format!("{}: envoy run failed: {e}", case.name));
                continue;
            }
            (_, Err(s)) => {
                match case.diverge.get(conformance::SLUICE_START) {
                    Some(_) => declared += 1,
                    None => failures.push(format!("{}: sluice run failed: {s}", case.name)),
                }
                continue;
            }
        };
        dump(case, Kind::Envoy, envoy);
        dump(case, Kind::Sluice, sluice);
        let d = conformance::compare(case, envoy, sluice);
        declared += d.declared.len();
        if !d.declared.is_empty() && std::env::var_os("CONFORMANCE_DUMP").is_some() {
            eprintln!("{} declared:\n{}", case.name, d.declared.join("\n"));
        }
        for k in &d.undeclared_keys {
            let e = by_key.entry(k.clone()).or_default();
            e.0 += 1;
            e.1.insert(case.name.clone());
        }
        if !d.undeclared.is_empty() || !d.stale.is_empty() {
            let mut lines = d.undeclared;
            lines.extend(d.stale);
            failures.push(format!(
                "{} ({}):\n{}",
                case.name,
                case.description,
                lines.join("\n")
            ));
        }
    }
    eprintln!(
        "{} cases under envoy and sluice in {:.1?}, {declared} declared divergences",
        cases.len(),
        started.elapsed()
    );
    check_explain_agreement(&explained, cases.len());
    let summary: Vec<String> = by_key
        .iter()
        .map(|(k, (n, cs))| {
            let names: Vec<&str> = cs.iter().map(String::as_str).collect();
            format!(
                "  {k}: {n} differences in {} cases ({})",
                cs.len(),
                names.join(", ")
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ between Envoy and sluice (configs in {}):\n{}\n\nundeclared differences by key:\n{}",
        failures.len(),
        cases.len(),
        work.display(),
        failures.join("\n\n"),
        summary.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// Issue 12, test 4: for every request of the sluice runs, the route (virtual host, route index
/// and name, action) and cluster that sluice's admin `/explain` names are the ones its data path
/// took (see tests/src/conformance/agreement.rs).
fn check_explain_agreement(t: &conformance::agreement::Tally, cases: usize) {
    eprintln!(
        "explain agreement: {} requests compared ({} forwarded to a cluster, {} of them weighted \
         draws replayed by seed, {} also checked against the upstream that answered; {} redirects \
         or direct responses, {} no route, {} refused before routing by both); not asked: {} \
         authority-form targets, {} requests the proxy never got; {} routes chosen again by a \
         filter; {} disagreements",
        t.compared,
        t.clusters,
        t.weighted,
        t.by_backend,
        t.local,
        t.no_route,
        t.refused,
        t.not_url,
        t.unanswered,
        t.chosen_again,
        t.disagreements.len()
    );
    assert!(
        t.disagreements.is_empty(),
        "explain disagrees with the data path:\n{}",
        t.disagreements.join("\n")
    );
    // Every case sends at least one request sluice routes, unless sluice refuses the case.
    if std::env::var_os("CONFORMANCE_CASE").is_none() {
        assert!(
            t.compared >= cases.min(MIN_CASES),
            "only {} requests compared with explain over {cases} cases",
            t.compared
        );
    }
}
