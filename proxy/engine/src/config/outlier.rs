//! A cluster's `outlier_detection`, validated with Envoy's bounds. What istiod makes of a
//! DestinationRule's `outlierDetection` loads: `enforcing_success_rate: 0` (and, with
//! `splitExternalLocalOriginErrors`, `enforcing_local_origin_success_rate: 0`), the consecutive
//! 5xx and gateway-error thresholds with `enforcing_*` 0 or 100.

use super::{path::FieldPath, raw_cluster::RawOutlierDetection, ConfigError, OutlierDetection};

/// The typed outlier detection of `raw` (`p` is `...outlier_detection`).
pub(crate) fn parse(
    raw: &RawOutlierDetection,
    p: &FieldPath,
) -> Result<OutlierDetection, ConfigError> {
    let d = OutlierDetection::default();
    let percent = |v: Option<u32>, name: &str, default: u32| match v {
        Some(n) if n > 100 => Err(p.field(name).err("must be at most 100")),
        v => Ok(v.unwrap_or(default)),
    };
    // Success-rate ejection is not implemented: only its disabled form loads.
    for (v, name) in [
        (raw.enforcing_success_rate, "enforcing_success_rate"),
        (
            raw.enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
        ),
    ] {
        if v.is_some_and(|n| n != 0) {
            return Err(p.field(name).err(
                "not supported other than 0 (success-rate ejection is not implemented; istiod sends 0)",
            ));
        }
    }
    Ok(OutlierDetection {
        consecutive_5xx: raw.consecutive_5xx.unwrap_or(d.consecutive_5xx),
        interval: raw.interval.map_or(d.interval, |x| x.0),
        base_ejection_time: raw.base_ejection_time.map_or(d.base_ejection_time, |x| x.0),
        max_ejection_percent: percent(
            raw.max_ejection_percent,
            "max_ejection_percent",
            d.max_ejection_percent,
        )?,
        max_ejection_time: raw.max_ejection_time.map_or(d.max_ejection_time, |x| x.0),
        enforcing_consecutive_5xx: percent(
            raw.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx",
            d.enforcing_consecutive_5xx,
        )?,
        consecutive_gateway_failure: raw
            .consecutive_gateway_failure
            .unwrap_or(d.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure: percent(
            raw.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
            d.enforcing_consecutive_gateway_failure,
        )?,
        split_local_origin: raw.split_external_local_origin_errors.unwrap_or(false),
        consecutive_local_origin_failure: raw
            .consecutive_local_origin_failure
            .unwrap_or(d.consecutive_local_origin_failure),
        enforcing_consecutive_local_origin_failure: percent(
            raw.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
            d.enforcing_consecutive_local_origin_failure,
        )?,
    })
}
