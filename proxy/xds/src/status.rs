//! What the ADS client knows about its own synchronisation, for the admin's `/xds_status` and
//! `sluice proxy-status`: per resource type the last response (version, nonce, when), the last
//! ACK, the last NACK with its error, and whether a response is received but not yet answered
//! (being checked or applied); for the stream the control-plane address, connected or not since
//! when, and the last error. Updated on xDS events only (a short mutex section per event), turned
//! into JSON when the admin asks; nothing here runs on a data-path request.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde_json::{json, Value};
use sluice_engine::admin::time::rfc3339;

use crate::{convert::ResourceType, core::Core, transport::Target};

/// One response, ACK or NACK of a type.
#[derive(Debug, Clone)]
struct Event {
    version: String,
    nonce: String,
    at: SystemTime,
}

/// One resource type's state.
#[derive(Debug, Clone, Default)]
struct TypeState {
    subscribed: bool,
    resources: usize,
    response: Option<Event>,
    ack: Option<Event>,
    nack: Option<(Event, String)>,
    /// `"ACK"` or `"NACK"`: how the last response was answered; None while it is pending or
    /// when it was abandoned with its stream.
    answer: Option<&'static str>,
    pending: bool,
}

#[derive(Debug)]
struct State {
    connected: bool,
    since: SystemTime,
    streams: u64,
    last_error: Option<(String, SystemTime)>,
    /// Part of the accepted state is not applied yet (warming).
    warming: bool,
    /// The listeners and clusters that warm (`Listener "a"`).
    warming_resources: Vec<String>,
    types: BTreeMap<ResourceType, TypeState>,
}

/// The client's status; shared by the client task (writer) and the admin (reader).
#[derive(Debug)]
pub struct XdsStatus {
    node: Value,
    address: String,
    api_type: &'static str,
    state: Mutex<State>,
}

impl XdsStatus {
    /// A client of `node` (the bootstrap's `node` as JSON) to `target`, not yet connected.
    pub fn new(node: Value, target: &Target, delta: bool) -> Arc<Self> {
        Arc::new(Self {
            node,
            address: match target {
                Target::Tcp(a) => a.to_string(),
                Target::Pipe(p) => format!("unix:{}", p.display()),
                Target::Dns { host, port } => format!("{host}:{port}"),
            },
            api_type: if delta { "DELTA_GRPC" } else { "GRPC" },
            state: Mutex::new(State {
                connected: false,
                since: SystemTime::now(),
                streams: 0,
                last_error: None,
                warming: false,
                warming_resources: Vec::new(),
                types: ResourceType::ALL
                    .into_iter()
                    .map(|t| (t, TypeState::default()))
                    .collect(),
            }),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn with_type(&self, ty: ResourceType, f: impl FnOnce(&mut TypeState)) {
        self.with(|s| f(s.types.entry(ty).or_default()));
    }

    /// A stream is open (the server answered it).
    pub fn connected(&self) {
        self.with(|s| {
            s.connected = true;
            s.since = SystemTime::now();
            s.streams += 1;
        });
    }

    /// Connecting failed or the open stream ended (`error`: why). A response received but not
    /// answered on that stream is abandoned.
    pub fn disconnected(&self, error: String) {
        self.with(|s| {
            let now = SystemTime::now();
            if s.connected {
                s.connected = false;
                s.since = now;
            }
            s.last_error = Some((error, now));
            for t in s.types.values_mut() {
                t.pending = false;
            }
        });
    }

    /// Which types the client subscribes to now (LDS/CDS per the bootstrap; RDS/EDS while
    /// some name is wanted), how many resources of each it holds and whether they wait to be
    /// applied (warming).
    pub fn subscriptions(&self, core: &Core) {
        let types = core.types();
        self.with(|s| {
            s.warming = core.warming();
            s.warming_resources = core
                .warming_resources()
                .iter()
                .map(|(ty, name)| format!("{} {name:?}", ty.kind()))
                .collect();
            for (ty, t) in s.types.iter_mut() {
                t.subscribed =
                    types.contains(ty) && (Core::wildcard(*ty) || !core.wanted(*ty).is_empty());
                t.resources = core.accepted(*ty).map_or(0, BTreeMap::len);
            }
        });
    }

    /// A response of `ty` arrived; it is checked and applied next.
    pub fn received(&self, ty: ResourceType, version: &str, nonce: &str) {
        let e = event(version, nonce);
        self.with_type(ty, |t| {
            t.response = Some(e);
            t.answer = None;
            t.pending = true;
        });
    }

    /// The response `nonce` of `ty` was ACKed with `version`.
    pub fn acked(&self, ty: ResourceType, version: &str, nonce: &str) {
        let e = event(version, nonce);
        self.with_type(ty, |t| {
            t.ack = Some(e);
            t.answer = Some("ACK");
            t.pending = false;
        });
    }

    /// The response `nonce` of `ty` (version `version`) was NACKed with `error`.
    pub fn nacked(&self, ty: ResourceType, version: &str, nonce: &str, error: &str) {
        let e = event(version, nonce);
        self.with_type(ty, |t| {
            t.nack = Some((e, error.to_string()));
            t.answer = Some("NACK");
            t.pending = false;
        });
    }

    /// The `/xds_status` document (ages relative to now, so a reader needs no clock of ours).
    pub fn json(&self) -> Value {
        let now = SystemTime::now();
        let at = |t: SystemTime| {
            let ago = now.duration_since(t).unwrap_or_default().as_millis() as u64;
            (rfc3339(t), ago)
        };
        let ev = |e: &Event, what: &str| {
            let (t, ago) = at(e.at);
            json!({"version_info": e.version, "nonce": e.nonce, what: t, "ago_ms": ago})
        };
        self.with(|s| {
            let (since, since_ago) = at(s.since);
            // Envoy's subscription order: CDS, EDS, LDS, RDS (and SDS).
            let types: Vec<Value> = ResourceType::ALL
                .iter()
                .filter_map(|ty| s.types.get(ty).map(|t| (ty, t)))
                .map(|(ty, t)| {
                    json!({
                        "type": ty.short_name(),
                        "type_url": ty.type_url(),
                        "subscribed": t.subscribed,
                        "resources": t.resources,
                        "last_response": t.response.as_ref().map(|e| ev(e, "received")),
                        "last_ack": t.ack.as_ref().map(|e| ev(e, "at")),
                        "last_nack": t.nack.as_ref().map(|(e, err)| {
                            let mut v = ev(e, "at");
                            v["error"] = json!(err);
                            v
                        }),
                        "last_answer": t.answer,
                        "pending": t.pending,
                    })
                })
                .collect();
            json!({
                "node": self.node,
                "proxy_version": concat!("sluice/", env!("CARGO_PKG_VERSION")),
                "control_plane": {
                    "address": self.address,
                    "api_type": self.api_type,
                    "connected": s.connected,
                    "since": since,
                    "since_ago_ms": since_ago,
                    "streams": s.streams,
                    "last_error": s.last_error.as_ref().map(|(e, t)| {
                        let (t, ago) = at(*t);
                        json!({"message": e, "at": t, "ago_ms": ago})
                    }),
                },
                "warming": s.warming,
                "warming_resources": s.warming_resources,
                "types": types,
            })
        })
    }
}

fn event(version: &str, nonce: &str) -> Event {
    Event {
        version: version.to_string(),
        nonce: nonce.to_string(),
        at: SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty<'a>(v: &'a Value, name: &str) -> &'a Value {
        v["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
    }

    #[test]
    fn records_responses_acks_nacks_and_the_stream() {
        let s = XdsStatus::new(
            json!({"id": "n1", "cluster": "c1"}),
            &Target::Tcp("127.0.0.1:15010".parse().unwrap()),
            true,
        );
        let v = s.json();
        assert_eq!(v["node"]["id"], "n1");
        assert_eq!(v["control_plane"]["address"], "127.0.0.1:15010");
        assert_eq!(v["control_plane"]["api_type"], "DELTA_GRPC");
        assert_eq!(v["control_plane"]["connected"], false);
        assert_eq!(ty(&v, "LDS")["last_response"], Value::Null);
        let order: Vec<&Value> = v["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["type"])
            .collect();
        assert_eq!(order, ["CDS", "EDS", "LDS", "RDS", "SDS"]);

        s.connected();
        s.received(ResourceType::Listener, "1", "n-1");
        let v = s.json();
        assert_eq!(v["control_plane"]["connected"], true);
        assert_eq!(v["control_plane"]["streams"], 1);
        assert_eq!(ty(&v, "LDS")["pending"], true);
        assert_eq!(ty(&v, "LDS")["last_response"]["nonce"], "n-1");

        s.acked(ResourceType::Listener, "1", "n-1");
        s.received(ResourceType::Listener, "2", "n-2");
        s.nacked(
            ResourceType::Listener,
            "2",
            "n-2",
            "Listener \"x\": port: bad",
        );
        let v = s.json();
        let lds = ty(&v, "LDS");
        assert_eq!(lds["pending"], false);
        assert_eq!(lds["last_ack"]["version_info"], "1");
        assert_eq!(lds["last_nack"]["nonce"], "n-2");
        assert_eq!(lds["last_nack"]["error"], "Listener \"x\": port: bad");
        assert_eq!(lds["last_answer"], "NACK");
        s.received(ResourceType::Listener, "3", "n-4");
        assert_eq!(ty(&s.json(), "LDS")["last_answer"], Value::Null);
        s.acked(ResourceType::Listener, "3", "n-4");
        assert_eq!(ty(&s.json(), "LDS")["last_answer"], "ACK");

        s.received(ResourceType::Cluster, "3", "n-3");
        s.disconnected("transport error".into());
        let v = s.json();
        assert_eq!(v["control_plane"]["connected"], false);
        assert_eq!(
            v["control_plane"]["last_error"]["message"],
            "transport error"
        );
        assert_eq!(ty(&v, "CDS")["pending"], false, "abandoned with the stream");
    }
}
