//! One resource type's sync word from the proxy's own `/xds_status`, in istioctl's words:
//! `NOT SENT` (not subscribed, or nothing received), `SYNCED` (the last response was ACKed),
//! `STALE (Never Acknowledged)` / `STALE` (a response not yet answered, or the control plane is
//! disconnected), and sluice's `NACK` (the last response was rejected). Pure.

use serde_json::Value;

/// The sync state of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Not subscribed, or no response received yet.
    NotSent,
    /// The last response was ACKed and the stream is up.
    Synced,
    /// A response is not answered yet, or the control plane is disconnected.
    Stale,
    /// A response is not answered yet and none was ever ACKed.
    NeverAcked,
    /// The last response was NACKed.
    Nack,
}

impl Sync {
    /// istioctl's word (plus `NACK`).
    pub fn word(self) -> &'static str {
        match self {
            Sync::NotSent => "NOT SENT",
            Sync::Synced => "SYNCED",
            Sync::Stale => "STALE",
            Sync::NeverAcked => "STALE (Never Acknowledged)",
            Sync::Nack => "NACK",
        }
    }
}

/// The state of the type entry `t` of `/xds_status` while the stream is `connected`.
pub fn of(t: &Value, connected: bool) -> Sync {
    let subscribed = t["subscribed"].as_bool().unwrap_or(false);
    if !subscribed || t["last_response"].is_null() {
        return Sync::NotSent;
    }
    let never_acked = t["last_ack"].is_null();
    match (connected, t["last_answer"].as_str()) {
        (false, _) => Sync::Stale,
        (true, Some("NACK")) => Sync::Nack,
        (true, Some("ACK")) => Sync::Synced,
        _ if never_acked => Sync::NeverAcked,
        _ => Sync::Stale,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{of, Sync};

    #[test]
    fn words_from_the_client_state() {
        let resp = json!({"version_info": "2", "nonce": "5"});
        let ack = json!({"version_info": "1", "nonce": "4"});
        let t = |sub: bool, r: &serde_json::Value, a: &serde_json::Value, answer: &str| {
            json!({"subscribed": sub, "last_response": r, "last_ack": a,
                "last_answer": if answer.is_empty() { serde_json::Value::Null } else { json!(answer) }})
        };
        let null = serde_json::Value::Null;
        let cases = [
            (t(false, &resp, &ack, "ACK"), true, Sync::NotSent),
            (t(true, &null, &null, ""), true, Sync::NotSent),
            (t(true, &null, &null, ""), false, Sync::NotSent),
            (t(true, &resp, &ack, "ACK"), true, Sync::Synced),
            (t(true, &resp, &ack, "ACK"), false, Sync::Stale),
            (t(true, &resp, &ack, "NACK"), true, Sync::Nack),
            (t(true, &resp, &ack, "NACK"), false, Sync::Stale),
            (t(true, &resp, &ack, ""), true, Sync::Stale),
            (t(true, &resp, &null, ""), true, Sync::NeverAcked),
        ];
        for (i, (v, connected, want)) in cases.iter().enumerate() {
            assert_eq!(
                of(v, *connected),
                *want,
                "case {i}: {v} connected={connected}"
            );
        }
        assert_eq!(Sync::NeverAcked.word(), "STALE (Never Acknowledged)");
        assert_eq!(Sync::NotSent.word(), "NOT SENT");
    }
}
