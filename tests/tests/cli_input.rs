//! Bad input to the `sluice` CLI: a missing netns, an unknown mode, a malformed port list or CIDR
//! is refused with a message naming the value, and nothing changes.

use sluice_tests::{
    require_root, run_cmd,
    sluice_cli::{sluice_err, ControlSocket},
    Netns, PinDir,
};

#[test]
fn bad_input_is_named_and_changes_nothing() {
    require_root();
    let pod = Netns::new("bad");
    let missing = format!("{}-missing", pod.name());
    // No agent listens here: a refusal must come from validation, before any contact.
    let control = "/nonexistent/sluice-test/agent.sock";
    let ss_before = pod.run(|| run_cmd("ss", &["-tlnH"]));

    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["enroll", "--netns", &missing],
            vec![format!("/run/netns/{missing}")],
        ),
        (
            vec!["enroll", "--netns", pod.name(), "--mode", "turbo"],
            vec!["unknown mode \"turbo\"".into()],
        ),
        (
            vec![
                "enroll",
                "--netns",
                pod.name(),
                "--exclude-outbound-ports",
                "80,http",
            ],
            vec!["--exclude-outbound-ports".into(), "\"http\"".into()],
        ),
        (
            vec![
                "enroll",
                "--netns",
                pod.name(),
                "--include-outbound-ports",
                "70000",
            ],
            vec!["--include-outbound-ports".into(), "\"70000\"".into()],
        ),
        (
            vec![
                "enroll",
                "--netns",
                pod.name(),
                "--exclude-outbound-cidrs",
                "10.0.0.0/33",
            ],
            vec!["--exclude-outbound-cidrs".into(), "\"10.0.0.0/33\"".into()],
        ),
        (
            vec!["enroll", "--netns", pod.name(), "--fast-path", "maybe"],
            vec!["\"maybe\"".into()],
        ),
        (
            vec!["iptables", "install", "--netns", &missing],
            vec![format!("/run/netns/{missing}")],
        ),
        (
            vec!["sidecar", "--netns", &missing],
            vec![format!("/run/netns/{missing}")],
        ),
    ];
    for (mut args, needles) in cases {
        if args[0] == "enroll" {
            args.extend(["--control", control]);
        }
        let err = sluice_err(&args);
        for n in &needles {
            assert!(
                err.contains(n.as_str()),
                "`sluice {}`: {err:?} should name {n}",
                args.join(" ")
            );
        }
        assert!(
            !err.contains("control socket"),
            "validated after contacting the agent: {err}"
        );
    }
    // Nothing changed in the pod: no listener, no rules.
    assert_eq!(pod.run(|| run_cmd("ss", &["-tlnH"])), ss_before);
    let nat = pod.run(|| run_cmd("iptables-save", &["-t", "nat"]));
    assert!(!nat.contains("ISTIO"), "{nat}");
}

/// `sluice agent --cgroup` on a directory outside the cgroup v2 hierarchy is refused naming it,
/// before anything is pinned, attached or bound.
#[test]
fn agent_refuses_a_cgroup_that_is_not_cgroup_v2() {
    require_root();
    let pins = PinDir::new("bcg");
    let control = ControlSocket::new();
    let not_cgroup = std::env::temp_dir();
    let err = sluice_err(&[
        "agent",
        "--cgroup",
        not_cgroup.to_str().unwrap(),
        "--pin-dir",
        pins.path().to_str().unwrap(),
        "--control",
        &control.arg(),
    ]);
    assert!(
        err.contains(&format!(
            "{} is not a cgroup v2 directory",
            not_cgroup.display()
        )),
        "{err}"
    );
    assert!(pins.entries().is_empty(), "pinned: {:?}", pins.entries());
    assert!(!control.path().exists(), "control socket created");
}
