//! Envoy's extraction rules (its `span_context_extractor_test.cc` cases, restated).

use http::{HeaderMap, HeaderValue};

use super::*;

fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, HeaderValue::from_str(v).unwrap());
    }
    m
}

const T: &str = "0000000000000001";
const S: &str = "0000000000000002";
const P: &str = "0000000000000003";

#[test]
fn the_single_header_decides_the_flag_at_its_lengths_only() {
    for (b3, want) in [
        ("0", Some(false)),
        ("1", Some(true)),
        ("d", Some(true)),
        ("x", None),
        (&*format!("{T}-{S}"), None),
        (&*format!("{T}-{S}-0"), Some(false)),
        (&*format!("{T}-{S}-d-{P}"), Some(true)),
        (&*format!("{T}{T}-{S}-1"), Some(true)),
        (&*format!("{T}{T}-{S}-0-{P}"), Some(false)),
    ] {
        // `x-b3-sampled` is not read when `b3` is there.
        assert_eq!(
            sampled(&h(&[("b3", b3), ("x-b3-sampled", "1")]), false),
            want,
            "{b3}"
        );
    }
}

#[test]
fn x_b3_sampled_is_true_only_as_1_or_true() {
    for (v, want) in [
        ("1", true),
        ("true", true),
        ("0", false),
        ("True", false),
        ("d", false),
    ] {
        assert_eq!(
            sampled(&h(&[("x-b3-sampled", v)]), false),
            Some(want),
            "{v}"
        );
    }
    assert_eq!(sampled(&h(&[]), true), None);
}

#[test]
fn multi_headers_give_ids_and_a_32_digit_trace_splits() {
    let c = context(
        &h(&[
            ("x-b3-traceid", &format!("{P}{T}")),
            ("x-b3-spanid", S),
            ("x-b3-parentspanid", P),
        ]),
        false,
        true,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.high, c.trace, c.id, c.parent, c.sampled),
        (3, 1, 2, 3, true)
    );
    // Short ids parse as strtoull does; only one of the pair is no context.
    let c = context(
        &h(&[("x-b3-traceid", "a"), ("x-b3-spanid", "0xb")]),
        false,
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!((c.high, c.trace, c.id, c.parent), (0, 10, 11, 0));
    assert_eq!(context(&h(&[("x-b3-traceid", T)]), false, true), Ok(None));
    assert_eq!(
        context(
            &h(&[("x-b3-traceid", "xyz"), ("x-b3-spanid", S)]),
            false,
            true
        ),
        Err(Malformed)
    );
    assert_eq!(
        context(
            &h(&[
                ("x-b3-traceid", T),
                ("x-b3-spanid", S),
                ("x-b3-parentspanid", "q")
            ]),
            false,
            true
        ),
        Err(Malformed)
    );
}

#[test]
fn single_header_forms_and_refusals() {
    let ok = |b3: &str| context(&h(&[("b3", b3)]), false, true);
    let c = ok(&format!("{T}{T}-{S}-1-{P}")).unwrap().unwrap();
    assert_eq!((c.high, c.trace, c.id, c.parent), (1, 1, 2, 3));
    let c = ok(&format!("{T}-{S}")).unwrap().unwrap();
    assert_eq!((c.high, c.trace, c.id, c.parent), (0, 1, 2, 0));
    assert_eq!(ok("1"), Ok(None));
    for bad in [
        String::new(),
        "x".into(),
        format!("{T}-"),
        format!("{T}-{S}-"),
        format!("{T}-{S}-2"),
        format!("{T}-{S}-1{P}"),
        format!("{T}-{S}-{P}"),
        format!("{T}-{S}-1-{P}0"),
        format!("{T}x{S}"),
        format!("{T}-{S}-1-{P}-{P}"),
    ] {
        assert_eq!(ok(&bad), Err(Malformed), "{bad}");
    }
}

#[test]
fn traceparent_only_with_the_w3c_option() {
    let tp = format!("00-{P}{T}-{S}-01");
    assert_eq!(context(&h(&[("traceparent", &tp)]), false, false), Ok(None));
    let c = context(&h(&[("traceparent", &tp)]), true, false)
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.high, c.trace, c.id, c.parent, c.sampled),
        (3, 1, 2, 0, true)
    );
    assert_eq!(sampled(&h(&[("traceparent", &tp)]), true), Some(true));
    // Invalid: all-zero parent id, wrong length: no context, not an error.
    let zero = format!("00-{P}{T}-0000000000000000-01");
    assert_eq!(
        context(&h(&[("traceparent", &zero)]), true, false),
        Ok(None)
    );
    assert_eq!(
        context(&h(&[("traceparent", "00-1-2-01")]), true, false),
        Ok(None)
    );
    // B3 comes first.
    let c = context(
        &h(&[
            ("traceparent", &tp),
            ("x-b3-traceid", T),
            ("x-b3-spanid", P),
        ]),
        true,
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(c.id, 3);
}
