//! The field inventory (docs/config-fields.txt) against Envoy 1.40's descriptors and sluice's
//! config loader, the conformance cases' `covers:` against the inventory, and the generated docs
//! (docs/config-fields.md, docs/conformance-coverage.md) against both. Fast and unprivileged.

use std::collections::BTreeSet;

use sluice_tests::{
    conformance,
    inventory::{coverage, probe, Inventory, Status, REGENERATE, ROOT_MESSAGES},
};

/// Every field of every inventoried or probed message is listed, and every listed field exists in
/// Envoy 1.40.
#[test]
fn inventory_lists_exactly_envoys_fields() {
    let inv = Inventory::load();
    let sites = probe::sites();
    let mut messages: Vec<&str> = ROOT_MESSAGES.to_vec();
    for m in inv
        .messages()
        .into_iter()
        .chain(sites.iter().map(|(m, _)| *m))
    {
        if !messages.contains(&m) {
            messages.push(m);
        }
    }
    let mut problems = Vec::new();
    let mut paste = Vec::new();
    for m in messages {
        let Some(desc) = probe::descriptor(m) else {
            problems.push(format!(
                "message envoy.{m}: not in Envoy 1.40's API (typo?)"
            ));
            continue;
        };
        let listed: BTreeSet<&str> = inv.fields_of(m).map(|f| f.field()).collect();
        let site = sites.iter().find(|(s, _)| *s == m).map(|(_, p)| p);
        for name in probe::proto_fields(&desc) {
            if listed.contains(name.as_str()) {
                continue;
            }
            // The loader's verdict, where the message has a probe site, as a starting point.
            let guess = site.map(|p| {
                let field = desc.get_field_by_name(&name).expect("field");
                if probe::loader_accepts(p, &field).0 {
                    "supported  TODO: check semantics"
                } else {
                    "rejected  TODO: why"
                }
            });
            paste.push(format!(
                "{m}.{name}  {}",
                guess.unwrap_or("rejected  TODO: why")
            ));
        }
        for f in inv.fields_of(m) {
            if desc.get_field_by_name(f.field()).is_none() {
                problems.push(format!(
                    "docs/config-fields.txt line {}: {}: Envoy 1.40's envoy.{m} has no such field",
                    f.line, f.name
                ));
            }
        }
    }
    if !paste.is_empty() {
        problems.push(format!(
            "{} fields missing from docs/config-fields.txt; add a line for each (the status shown \
             is the config loader's verdict, or `rejected` where it is not probed):\n{}",
            paste.len(),
            paste.join("\n")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The probe's base bootstrap is valid, so a rejection the probe sees is the probed field's.
#[test]
fn probe_base_config_is_valid() {
    if let Err(e) = sluice_engine::config::from_yaml_str(probe::BASE) {
        panic!("tests/src/inventory/probe.rs BASE is rejected: {e}");
    }
}

/// The probe tells a field the loader refuses from one it takes (so an agreement is meaningful).
#[test]
fn probe_tells_accepted_from_rejected() {
    let sites = probe::sites();
    let verdict = |message: &str, field: &str| {
        let (_, pointer) = sites.iter().find(|(m, _)| *m == message).expect("site");
        let desc = probe::descriptor(message).expect("descriptor");
        let field = desc.get_field_by_name(field).expect("field");
        probe::loader_accepts(pointer, &field)
    };
    let hcm = "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    for (message, field, accepted) in [
        ("config.route.v3.RouteAction", "prefix_rewrite", true),
        ("config.route.v3.RouteAction", "early_data_policy", false),
        (hcm, "use_remote_address", true),
        (hcm, "rds", false),
        ("config.cluster.v3.Cluster", "dns_lookup_family", true),
        ("config.cluster.v3.Cluster", "common_lb_config", true),
        ("config.cluster.v3.Cluster", "lrs_server", false),
    ] {
        let (got, error) = verdict(message, field);
        assert_eq!(
            got, accepted,
            "{message}.{field}: the probe says accepted={got}, want {accepted} (loader: {error:?})"
        );
    }
}

/// `supported` / `no-op` fields are accepted by the config loader and `rejected` ones refused with
/// their path, for every message with a probe site.
#[test]
fn inventory_agrees_with_the_config_loader() {
    let inv = Inventory::load();
    let mut problems = Vec::new();
    let mut probed = 0;
    for (m, pointer) in probe::sites() {
        let desc = probe::descriptor(m).unwrap_or_else(|| panic!("probe site for unknown {m}"));
        for f in inv.fields_of(m) {
            let Some(field) = desc.get_field_by_name(f.field()) else {
                continue; // reported by inventory_lists_exactly_envoys_fields
            };
            probed += 1;
            let (accepted, error) = probe::loader_accepts(&pointer, &field);
            if accepted != f.status.accepted() {
                let got = if accepted { "accepts" } else { "rejects" };
                problems.push(format!(
                    "docs/config-fields.txt line {}: {} is {} but the config loader {got} it (at {}; loader said: {})",
                    f.line,
                    f.name,
                    f.status,
                    probe::field_path(&pointer),
                    error.as_deref().unwrap_or("ok")
                ));
            }
        }
    }
    // A message without a probe site is only checked against the descriptors, so it may not
    // claim an accepted field: give it a site in tests/src/inventory/probe.rs first.
    let sites = probe::sites();
    for f in &inv.fields {
        if f.status.accepted() && !sites.iter().any(|(m, _)| *m == f.message()) {
            problems.push(format!(
                "docs/config-fields.txt line {}: {} is {}, but {} has no probe site in \
                 tests/src/inventory/probe.rs (add it to BASE and sites())",
                f.line,
                f.name,
                f.status,
                f.message()
            ));
        }
    }
    assert!(probed > 300, "only {probed} fields probed");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `covers:` entry of a case, and every field a differential test outside the suite
/// covers, names a supported inventory field (and that test exists).
#[test]
fn case_covers_name_supported_fields() {
    let inv = Inventory::load();
    let cases = conformance::load_all(&conformance::case_dir());
    let mut problems = coverage::covers_problems(&inv, &cases);
    let root = sluice_tests::inventory::docs_dir().join("..");
    problems.extend(coverage::other_tests_problems(&inv, &root));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// docs/config-fields.md and docs/conformance-coverage.md are what the inventory and the cases
/// generate.
#[test]
fn generated_docs_are_fresh() {
    let inv = Inventory::load();
    let cases = conformance::load_all(&conformance::case_dir());
    let mut stale = Vec::new();
    for (name, want) in coverage::generate(&inv, &cases) {
        let path = sluice_tests::inventory::docs_dir().join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            stale.push(format!("docs/{name}"));
        }
    }
    assert!(
        stale.is_empty(),
        "{} out of date with docs/config-fields.txt and tests/conformance/*.yaml: {REGENERATE}",
        stale.join(" and ")
    );
}

/// The statuses the inventory uses are the ones the docs explain.
#[test]
fn every_non_supported_field_says_why() {
    let inv = Inventory::load();
    let silent: Vec<String> = inv
        .fields
        .iter()
        .filter(|f| f.status != Status::Supported && f.note.starts_with("TODO"))
        .map(|f| format!("docs/config-fields.txt line {}: {}", f.line, f.name))
        .collect();
    assert!(
        silent.is_empty(),
        "fields without a reason:\n{}",
        silent.join("\n")
    );
}
