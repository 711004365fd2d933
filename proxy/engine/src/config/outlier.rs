//! A cluster's `outlier_detection`, validated with Envoy's bounds (percents at most 100).
//! istiod's shape of a DestinationRule's `outlierDetection`: `enforcing_success_rate: 0` (and,
//! with `splitExternalLocalOriginErrors`, `enforcing_local_origin_success_rate: 0`), the
//! consecutive 5xx and gateway-error thresholds with `enforcing_*` 0 or 100.

use super::{
    path::FieldPath, raw_cluster::RawOutlierDetection, ConfigError, FailurePercentageEjection,
    OutlierDetection, SuccessRateEjection,
};

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
    let sr = SuccessRateEjection::default();
    let fp = FailurePercentageEjection::default();
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
        success_rate: SuccessRateEjection {
            minimum_hosts: raw.success_rate_minimum_hosts.unwrap_or(sr.minimum_hosts),
            request_volume: raw.success_rate_request_volume.unwrap_or(sr.request_volume),
            stdev_factor: raw.success_rate_stdev_factor.unwrap_or(sr.stdev_factor),
            enforcing: percent(
                raw.enforcing_success_rate,
                "enforcing_success_rate",
                sr.enforcing,
            )?,
            enforcing_local_origin: percent(
                raw.enforcing_local_origin_success_rate,
                "enforcing_local_origin_success_rate",
                sr.enforcing_local_origin,
            )?,
        },
        failure_percentage: FailurePercentageEjection {
            threshold: percent(
                raw.failure_percentage_threshold,
                "failure_percentage_threshold",
                fp.threshold,
            )?,
            minimum_hosts: raw
                .failure_percentage_minimum_hosts
                .unwrap_or(fp.minimum_hosts),
            request_volume: raw
                .failure_percentage_request_volume
                .unwrap_or(fp.request_volume),
            enforcing: percent(
                raw.enforcing_failure_percentage,
                "enforcing_failure_percentage",
                fp.enforcing,
            )?,
            enforcing_local_origin: percent(
                raw.enforcing_failure_percentage_local_origin,
                "enforcing_failure_percentage_local_origin",
                fp.enforcing_local_origin,
            )?,
        },
        uneject_on_health_check: raw
            .successful_active_health_check_uneject_host
            .unwrap_or(true),
        max_ejection_time_jitter: raw
            .max_ejection_time_jitter
            .map_or(Default::default(), |x| x.0),
        always_eject_one_host: raw.always_eject_one_host.unwrap_or(false),
    })
}
