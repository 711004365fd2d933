//! A finished span as one Zipkin v2 JSON object (Envoy's `JsonV2Serializer`): its ids as hex,
//! `kind`, `name` (left out when empty), `timestamp` and `duration` in µs as bare integers, the
//! local endpoint (`serviceName` left out when empty, the address, port 0), the tags (a later
//! one of a name wins), `"shared": true` on a shared server span, and the `ss` / `cr`
//! annotation at its end.

use std::fmt::Write;

use super::{hex16, trace_hex, Kind, Local, Span};

/// `span`, `duration_us` long, ended at `end_us`, reported by `local`.
pub(super) fn span(span: &Span, local: &Local, duration_us: u64, end_us: u64) -> String {
    let mut o = String::with_capacity(512);
    let hex = |v| String::from_utf8_lossy(&hex16(v)).into_owned();
    let _ = write!(
        o,
        r#"{{"traceId":"{}","id":"{}","#,
        trace_hex(&span.ids),
        hex(span.ids.id)
    );
    if span.ids.parent != 0 {
        let _ = write!(o, r#""parentId":"{}","#, hex(span.ids.parent));
    }
    let (kind, end) = match span.kind {
        Kind::Server => ("SERVER", "ss"),
        Kind::Client => ("CLIENT", "cr"),
    };
    let _ = write!(o, r#""kind":"{kind}","#);
    if !span.name.is_empty() {
        o.push_str(r#""name":"#);
        string(&mut o, &span.name);
        o.push(',');
    }
    let _ = write!(
        o,
        r#""timestamp":{},"duration":{duration_us},"localEndpoint":{{"#,
        span.timestamp_us
    );
    if !local.cluster.is_empty() {
        o.push_str(r#""serviceName":"#);
        string(&mut o, &local.cluster);
        o.push(',');
    }
    let family = if local.address.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    };
    let _ = write!(o, r#""{family}":"{}","port":0}}"#, local.address);
    let all: Vec<(&str, &str)> = span
        .tags
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(span.custom.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    let mut first = true;
    for (i, (k, v)) in all.iter().enumerate() {
        // A later tag of the same name wins.
        if all[i + 1..].iter().any(|(later, _)| later == k) {
            continue;
        }
        o.push_str(if first { r#","tags":{"# } else { "," });
        first = false;
        string(&mut o, k);
        o.push(':');
        string(&mut o, v);
    }
    if !first {
        o.push('}');
    }
    if span.shared {
        o.push_str(r#","shared":true"#);
    }
    let _ = write!(
        o,
        r#","annotations":[{{"value":"{end}","timestamp":{end_us}}}]}}"#
    );
    o
}

/// `s` as a JSON string.
fn string(o: &mut String, s: &str) {
    o.push_str(&serde_json::Value::from(s).to_string());
}
