//! CI check of the soak (issue 13): `cargo xtask soak --minutes 2` — h1, h2, WebSocket, TCP and
//! the abusive clients through the node agent, L7 reloads and pod churn — must pass its own
//! verdict (no well-behaved error, RSS within 10% of minute 1, no fd or thread growth), and
//! every kind of client must have been exercised.

use std::{path::Path, process::Command};

#[test]
fn soak_two_minutes_passes() {
    sluice_tests::require_root();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::env::temp_dir().join(format!("sl-soak-smoke-{}", std::process::id()));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(root)
        .args(["xtask", "soak", "--minutes", "2", "--out"])
        .arg(&out)
        .status()
        .expect("running cargo xtask soak");
    let text = std::fs::read_to_string(out.join("soak.json")).unwrap_or_default();
    assert!(
        st.success(),
        "cargo xtask soak --minutes 2 failed ({st}): {text}"
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("soak.json is JSON");
    assert_eq!(report["verdict"], "pass", "{text}");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "start + 2 minutes: {text}");
    let last = &rows[2];
    for kind in ["h1_keepalive", "h1_close", "websocket", "tcp"] {
        let ok = last["clients"]["good"][kind]["ok"].as_u64().unwrap_or(0);
        assert!(ok > 0, "{kind}: no successful exchange");
    }
    let ops = &last["ops"];
    for k in ["h2_ok", "churn_ok", "reloads_applied", "reloads_rejected"] {
        assert!(ops[k].as_u64().unwrap_or(0) > 0, "{k} = 0: {ops}");
    }
    for kind in [
        "never_sends",
        "slowloris",
        "bad_chunked_body",
        "connection_nominates",
        "upgrade_h2c",
        "h2_rapid_reset",
        "h2_ping_flood",
    ] {
        assert!(
            last["clients"]["abuse"][kind].is_object(),
            "abusive client {kind} never ran"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
