//! `sluice explain TARGET URL` against a running `sluice proxy` (its admin's `/explain`): the
//! same text and JSON as `sluice explain -c` on the file it runs, the live config version after
//! a reload, and a 400 naming the parameter for a bad query. (The agreement of `/explain` with
//! what the data path really does is checked on every conformance case: tests/conformance.rs.)

use std::time::{Duration, Instant};

use sluice_tests::{
    admin_run::{get, start},
    sluice_cli::sluice_ok,
};

const URL: &str = "http://10.0.0.9:8080/notebook/default/sample-service/tree?x=1";

fn explain(args: &[&str]) -> String {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    sluice_ok(&all)
}

#[test]
fn explain_on_a_running_proxy_is_explain_on_its_config() {
    let p = start("kubeflow_gateway.yaml", false);
    let cfg = p.config();
    let cfg = cfg.to_str().expect("utf-8 path");
    let opts = ["-H", "x-user: u1", "-X", "POST"];
    for out in [["-o", "text"], ["-o", "json"]] {
        let live = explain(&[&[p.admin.as_str(), URL][..], &opts, &out].concat());
        let file = explain(&[&["-c", cfg, URL][..], &opts, &out].concat());
        assert_eq!(live, file, "{out:?}: live (left) and -c (right) differ");
    }
    let text = explain(&[p.admin.as_str(), URL]);
    for want in [
        "listener      0.0.0.0_8080",
        "* route   #0 prefix \"/notebook/default/sample-service/\": matched",
        "path        /notebook/default/sample-service/tree?x=1 -> /tree?x=1",
        "request     x-kubeflow-userid: user@example.com",
        "cluster       outbound|80||sample-service.default.svc.cluster.local",
        "endpoint    127.0.0.21:8888",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }

    // The live version: after a reload, /explain answers from the new config.
    let new = std::fs::read_to_string(p.config())
        .expect("read config")
        .replace("prefix_rewrite: /", "prefix_rewrite: /lab/");
    std::fs::write(p.config(), new).expect("write config");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(p.pid()).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP sluice");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = explain(&[p.admin.as_str(), URL]);
        if text.contains("-> /lab/tree?x=1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/explain still shows the old config 10 s after SIGHUP:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_explain_queries_are_400_naming_the_parameter() {
    let p = start("kubeflow_gateway.yaml", false);
    for (q, status, names) in [
        ("", 400, "url= is required"),
        ("url=http://h:8080/&seed=x", 400, "seed \"x\""),
        (
            "url=http://h:8080/&header=nocolon",
            400,
            "header \"nocolon\"",
        ),
        (
            "url=http://h:8080/&listener=nope",
            400,
            "no listener named nope",
        ),
        (
            "url=http://h:8080/&verb=GET",
            400,
            "unknown parameter \"verb\"",
        ),
        ("url=%2Fno-host", 400, "url \"/no-host\""),
        ("url=http://h:9/", 404, "no listener takes h:9"),
    ] {
        let (got, body) = get(&p.admin, "GET", &format!("/explain?{q}"));
        assert_eq!(got, status, "/explain?{q}: {body}");
        assert!(
            body.contains(names),
            "/explain?{q}: want {names:?} in {body:?}"
        );
    }
    let (got, body) = get(&p.admin, "GET", "/explain?url=http://h:8080/");
    assert_eq!(got, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["route"]["decision"]["action"], "no_route", "{body}");
}
