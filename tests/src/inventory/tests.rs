//! The inventory's parser and the coverage report on small inputs.

use super::{coverage, Inventory, Status};
use crate::conformance::Case;

const TEXT: &str = "# comment\n\
    config.route.v3.Route.match  supported\n\
    config.route.v3.Route.decorator  rejected  no tracing\n\
    config.route.v3.Route.metadata  no-op  kept for /config_dump only\n";

fn case(name: &str, covers: &[&str]) -> Case {
    let mut c: Case = serde_norway::from_str(&format!(
        "description: d\ncovers: {covers:?}\nroute_config: {{}}\nrequests: []\n"
    ))
    .expect("case YAML");
    c.name = name.into();
    c
}

#[test]
fn parses_lines_with_status_and_note() {
    let inv = Inventory::parse(TEXT).unwrap();
    assert_eq!(inv.fields.len(), 3);
    let f = inv.get("config.route.v3.Route.decorator").unwrap();
    assert_eq!(
        (f.message(), f.field()),
        ("config.route.v3.Route", "decorator")
    );
    assert_eq!(
        (f.status, f.note.as_str(), f.line),
        (Status::Rejected, "no tracing", 3)
    );
    assert_eq!(inv.messages(), ["config.route.v3.Route"]);
}

#[test]
fn parse_errors_name_the_line() {
    for (text, want) in [
        ("a.B.c  maybe", "line 1: status \"maybe\""),
        (
            "a.B.c  rejected",
            "line 1: a.B.c: a rejected field needs a note",
        ),
        ("envoy.a.B.c  supported", "line 1: \"envoy.a.B.c\""),
        (
            "a.B.c  supported\na.B.c  supported",
            "line 2: a.B.c is listed twice",
        ),
    ] {
        let err = Inventory::parse(text).unwrap_err();
        assert!(
            err.starts_with(want),
            "{text:?}: got {err:?}, want {want:?}"
        );
    }
}

#[test]
fn covers_must_name_supported_inventory_fields() {
    let inv = Inventory::parse(TEXT).unwrap();
    let cases = [
        case("good", &["config.route.v3.Route.match"]),
        case("unknown", &["config.route.v3.Route.nope"]),
        case("rejected", &["config.route.v3.Route.decorator"]),
    ];
    let problems = coverage::covers_problems(&inv, &cases);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("unknown.yaml") && problems[0].contains("not in"));
    assert!(problems[1].contains("rejected.yaml") && problems[1].contains("is rejected"));
}

#[test]
fn report_lists_cases_per_field_and_gaps() {
    let text = format!("{TEXT}config.route.v3.Route.name  supported\n");
    let inv = Inventory::parse(&text).unwrap();
    let report = coverage::report(&inv, &[case("c1", &["config.route.v3.Route.match"])]);
    assert!(report.contains("Of the 2 fields"), "{report}");
    assert!(
        report.contains("- `config.route.v3.Route.name`"),
        "{report}"
    );
    assert!(report.contains("| `match` | `c1` |"), "{report}");
}

#[test]
fn report_names_differential_tests_outside_the_suite() {
    let t = &coverage::OTHER_TESTS[0];
    let inv = Inventory::parse(&format!("{TEXT}{}  supported\n", t.covers[0])).unwrap();
    let report = coverage::report(&inv, &[case("c1", &["config.route.v3.Route.match"])]);
    // The field's cell names the test (beside any other that covers it too).
    assert!(report.contains(&format!("::{}`", t.test)), "{report}");
    assert!(report.contains("and 0 are\ngaps"), "{report}");
}
