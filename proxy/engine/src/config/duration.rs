//! protobuf `Duration` as Envoy's YAML spells it: `"0.25s"`, `"15s"`, or `{seconds, nanos}`.

use std::{fmt, time::Duration};

use serde::{
    de::{self, MapAccess, Visitor},
    Deserialize, Deserializer,
};

/// protobuf's Duration limit (about 10,000 years), Envoy's bound for every duration field. Far
/// enough for any timer, near enough that `Instant + d` and `d.as_millis()` never overflow.
pub(crate) const MAX_SECONDS: u64 = 315_576_000_000;

/// Envoy's bound for a duration it reads as milliseconds (`DurationUtil::
/// durationToMilliseconds`: the seconds that fit an i64 of nanoseconds, about 292 years;
/// istiod's "no cleanup" value).
pub(crate) const MAX_MILLIS_SECONDS: u64 = 9_223_372_035;

/// A non-negative protobuf Duration, within [`MAX_SECONDS`] in either form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PbDuration(pub(crate) Duration);

/// Parses `"<seconds>[.<fraction>]s"` (proto3 JSON form, up to 9 fraction digits).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. \"0.25s\" or \"15s\"");
    let body = s.strip_suffix('s').ok_or_else(bad)?;
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    in_range(secs, nanos).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The one range check both forms go through.
fn in_range(secs: u64, nanos: u32) -> Result<Duration, String> {
    if secs > MAX_SECONDS || nanos >= 1_000_000_000 {
        return Err(format!(
            "out of range (at most {MAX_SECONDS} seconds, nanos below 1000000000)"
        ));
    }
    Ok(Duration::new(secs, nanos))
}

impl<'de> Deserialize<'de> for PbDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PbDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"0.25s\" or {seconds, nanos}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PbDuration, E> {
                parse_duration(v).map(PbDuration).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PbDuration, A::Error> {
                let mut seconds: Option<u64> = None;
                let mut nanos: Option<u32> = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "seconds" => seconds = Some(map.next_value()?),
                        "nanos" => nanos = Some(map.next_value()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["seconds", "nanos"]))
                        }
                    }
                }
                let (secs, nanos) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
                in_range(secs, nanos).map(PbDuration).map_err(|e| {
                    de::Error::custom(format!(
                        "invalid duration {{seconds: {secs}, nanos: {nanos}}}: {e}"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_duration_strings() {
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["15", "s", "-1s", "1.5ms", "1.0000000001s", "abc", ".5s"] {
            assert!(parse_duration(bad).is_err(), "{bad} must be rejected");
        }
        assert!(parse_duration("315576000000s").is_ok());
        assert!(parse_duration("315576000001s").is_err());
        assert!(parse_duration("18446744073709551615s").is_err());
    }
}
