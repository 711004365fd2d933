//! Tables for the trace decision (the values Envoy 1.40 gave in the `tracing_*` conformance
//! cases).

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::route::FractionalPercent;

fn pct(numerator: u32, denominator: u32) -> FractionalPercent {
    FractionalPercent {
        numerator,
        denominator,
    }
}

fn tracing(random: u32, overall: u32, client: u32) -> Tracing {
    Tracing {
        sampling: Sampling {
            client: pct(client, 100),
            random: pct(random, 10_000),
            overall: pct(overall, 10_000),
        },
        egress: false,
        provider: None,
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

/// The forwarded id's reason character (`-` when the id is unchanged).
fn reason(t: &Tracing, rid: RequestIdExtension, pairs: &[(&'static str, &str)]) -> char {
    let d = decide(Some(t), rid, None, &headers(pairs), || 0);
    d.new_id
        .map_or('-', |v| char::from(v.as_bytes()[REASON_AT]))
}

#[test]
fn the_id_integer_is_strtoull_of_the_first_eight_characters() {
    for (id, want) in [
        ("00000001-0000-4000-8000-000000001388", Some(1)),
        ("0000000A-x", Some(10)),
        ("ffffffff", Some(0xffff_ffff)),
        ("0x00000f", Some(15)),
        ("  -00001", Some(1u64.wrapping_neg())),
        ("+0000010", Some(16)),
        ("0000001", None),
        ("0000000g", None),
        ("0x------", None),
        ("        ", None),
    ] {
        assert_eq!(id_integer(id.as_bytes()), want, "{id}");
    }
}

#[test]
fn random_sampling_reads_the_id_modulo_ten_thousand() {
    let t = tracing(5000, 10_000, 100);
    let rid = RequestIdExtension::default();
    let id = |first: &str| format!("{first}-0000-4000-8000-000000001388");
    assert_eq!(reason(&t, rid, &[("x-request-id", &id("00000001"))]), '9');
    assert_eq!(reason(&t, rid, &[("x-request-id", &id("00001388"))]), '-');
    assert_eq!(reason(&t, rid, &[("x-request-id", &id("00002710"))]), '9');
    assert_eq!(reason(&t, rid, &[("x-request-id", &id("ffffffff"))]), '-');
    // An id that is no UUID decides, but carries nothing.
    assert_eq!(reason(&t, rid, &[("x-request-id", "00000001")]), '-');
}

#[test]
fn client_forced_then_overall_caps_every_reason() {
    let rid = RequestIdExtension::default();
    let id = "00001388-0000-4000-8000-000000000001";
    let t = tracing(0, 10_000, 100);
    assert_eq!(
        reason(&t, rid, &[("x-request-id", id), ("x-client-trace-id", "1")]),
        'b'
    );
    assert_eq!(
        reason(
            &tracing(0, 10_000, 0),
            rid,
            &[("x-request-id", id), ("x-client-trace-id", "1")]
        ),
        '-'
    );
    let capped = tracing(10_000, 0, 100);
    assert_eq!(reason(&capped, rid, &[("x-request-id", id)]), '-');
    let traced = "00001388-0000-a000-8000-000000000001";
    assert_eq!(reason(&capped, rid, &[("x-request-id", traced)]), '4');
    // Already traced: kept as it is.
    assert_eq!(reason(&t, rid, &[("x-request-id", traced)]), '-');
}

#[test]
fn the_uuid_extension_options_turn_the_rewrite_off() {
    let t = tracing(10_000, 10_000, 100);
    let id = [("x-request-id", "00000001-0000-4000-8000-000000001388")];
    let no_pack = RequestIdExtension {
        pack_trace_reason: false,
        use_request_id_for_trace_sampling: true,
    };
    assert_eq!(reason(&t, no_pack, &id), '-');
    let no_sampling = RequestIdExtension {
        pack_trace_reason: true,
        use_request_id_for_trace_sampling: false,
    };
    assert_eq!(reason(&t, no_sampling, &id), '-');
}

#[test]
fn an_external_kept_id_loses_its_reason() {
    let mut h = headers(&[("x-request-id", "00000001-0000-7000-8000-000000001388")]);
    clear_external_reason(RequestIdExtension::default(), &mut h);
    assert_eq!(h["x-request-id"], "00000001-0000-4000-8000-000000001388");
    let mut short = headers(&[("x-request-id", "my-id")]);
    clear_external_reason(RequestIdExtension::default(), &mut short);
    assert_eq!(short["x-request-id"], "my-id");
}

#[test]
fn no_tracing_decides_nothing() {
    let h = headers(&[("x-request-id", "00000001-0000-4000-8000-000000001388")]);
    let d = decide(None, RequestIdExtension::default(), None, &h, || 0);
    assert!(d.new_id.is_none());
    let mut resp = headers(&[(DECORATOR_OPERATION, "up")]);
    d.apply_response(&mut resp);
    assert_eq!(resp[DECORATOR_OPERATION], "up");
}
