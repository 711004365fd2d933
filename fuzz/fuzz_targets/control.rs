//! The agent's control protocol decoder: newline-delimited JSON requests as the control loop
//! splits and decodes them (`protocol::decode_request`), each enroll validated as the agent
//! validates it; and the response decoder the CLI, the CNI plugin and a graceful upgrade use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_node::agent::protocol::{decode_request, Request, Response};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        match decode_request(line) {
            Ok(req) => {
                if let Request::Enroll(spec) = &req {
                    let _ = spec.validate();
                }
                // What the agent accepted survives its own encoding unchanged.
                let wire = serde_json::to_string(&req).expect("requests serialize");
                assert_eq!(decode_request(wire.as_bytes()).as_ref(), Ok(&req));
            }
            Err(message) => assert!(message.starts_with("malformed request")),
        }
        if let Ok(text) = std::str::from_utf8(line) {
            if let Ok(resp) = serde_json::from_str::<Response>(text.trim_end()) {
                let wire = serde_json::to_string(&resp).expect("responses serialize");
                assert_eq!(serde_json::from_str::<Response>(&wire).ok(), Some(resp));
            }
        }
    }
});
