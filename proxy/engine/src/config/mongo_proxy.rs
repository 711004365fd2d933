//! The Mongo proxy network filter (`envoy.filters.network.mongo_proxy`), which istiod puts before
//! the tcp_proxy of every port whose protocol is `mongo` (`PILOT_ENABLE_MONGO_FILTER`, on by
//! default) with only a `stat_prefix`. So configured Envoy decodes the Mongo wire protocol for
//! its `mongo.<stat_prefix>.*` statistics and passes every byte on unchanged (a decoding error
//! only stops the decoding), so it is accepted as a no-op; what would change the traffic or
//! write metadata (a `delay` fault, `emit_dynamic_metadata`, an access log) is rejected. One
//! effect is not reproduced: while its listener drains, Envoy closes a legacy OP_QUERY
//! connection after a reply with no query outstanding (`cx_drain_close`); sluice keeps it
//! until the drain time ends.

use serde::Deserialize;
use serde_norway::Value;

use super::{path::FieldPath, raw::typed_config, ConfigError};

/// The filter's type URL.
pub(crate) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMongoProxy {
    stat_prefix: Option<String>,
    access_log: Option<String>,
    delay: Option<Value>,
    emit_dynamic_metadata: Option<bool>,
    #[serde(default)]
    commands: Vec<String>,
}

/// Checks the filter's `typed_config` at `p`.
pub(crate) fn check(tc: &Value, p: &FieldPath) -> Result<(), ConfigError> {
    let m: RawMongoProxy = typed_config(tc, p, TYPE)?;
    if m.stat_prefix.as_deref().is_none_or(str::is_empty) {
        return Err(p.field("stat_prefix").err("required"));
    }
    if m.access_log.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(p.field("access_log").unsupported("the Mongo operation log"));
    }
    if m.delay.is_some() {
        return Err(p
            .field("delay")
            .unsupported("fault injection on Mongo traffic"));
    }
    if m.emit_dynamic_metadata == Some(true) {
        return Err(p
            .field("emit_dynamic_metadata")
            .unsupported("true: no filter reads Mongo metadata here"));
    }
    // `commands` only selects what dynamic metadata carries.
    let _ = m.commands;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<(), ConfigError> {
        let v: Value = serde_norway::from_str(yaml).unwrap();
        check(&v, &FieldPath::root().field("typed_config"))
    }

    #[test]
    fn istiods_mongo_filter_is_a_no_op_and_faults_are_refused() {
        let t = "'@type': type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy";
        run(&format!(
            "{{{t}, stat_prefix: 'outbound|27017||mongo.db.svc'}}"
        ))
        .unwrap();
        let e = run(&format!(
            "{{{t}, stat_prefix: m, delay: {{fixed_delay: 1s}}}}"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("typed_config.delay"), "{e}");
        let e = run(&format!("{{{t}}}")).unwrap_err();
        assert!(e.to_string().contains("stat_prefix"), "{e}");
    }
}
