//! A listener filter's `filter_disabled` (`ListenerFilterChainMatchPredicate`): when it holds for
//! a connection, that listener filter does not run on it (istiod turns the inspectors off for
//! ports whose protocol it already knows). Only the destination port is known to a predicate
//! here, as in Envoy.

use serde_norway::Value;

use super::{path::FieldPath, ConfigError};

/// A compiled `ListenerFilterChainMatchPredicate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    /// `any_match: true`.
    Any,
    /// `destination_port_range` (`start` inclusive, `end` exclusive).
    Ports(u32, u32),
    /// `or_match.rules`.
    Or(Vec<Predicate>),
    /// `and_match.rules`.
    And(Vec<Predicate>),
    /// `not_match`.
    Not(Box<Predicate>),
}

impl Predicate {
    /// Whether the predicate holds for a connection to `port`.
    pub fn holds(&self, port: u16) -> bool {
        match self {
            Predicate::Any => true,
            Predicate::Ports(start, end) => (*start..*end).contains(&u32::from(port)),
            Predicate::Or(rules) => rules.iter().any(|r| r.holds(port)),
            Predicate::And(rules) => rules.iter().all(|r| r.holds(port)),
            Predicate::Not(r) => !r.holds(port),
        }
    }
}

/// Compiles a `filter_disabled` value at `p` (exactly one rule per message).
pub(crate) fn parse(v: &Value, p: &FieldPath) -> Result<Predicate, ConfigError> {
    let Value::Mapping(m) = v else {
        return Err(p.err("must be a mapping"));
    };
    let mut rules = m.iter();
    let (Some((k, body)), None) = (rules.next(), rules.next()) else {
        return Err(p.err("exactly one rule is required"));
    };
    let k = k.as_str().unwrap_or("");
    let fp = p.field(k);
    let list = |body: &Value| -> Result<Vec<Predicate>, ConfigError> {
        let rp = fp.field("rules");
        let rules = body
            .get("rules")
            .and_then(Value::as_sequence)
            .filter(|r| r.len() >= 2)
            .ok_or_else(|| rp.err("at least two rules are required"))?;
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| parse(r, &rp.index(i)))
            .collect()
    };
    match k {
        "any_match" => match body.as_bool() {
            Some(true) => Ok(Predicate::Any),
            _ => Err(fp.err("must be true")),
        },
        "destination_port_range" => {
            let bound = |name: &str| {
                body.get(name)
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| fp.field(name).err("required (a port)"))
            };
            let (start, end) = (bound("start")?, bound("end")?);
            if start > end {
                return Err(fp.field("end").err("must not be below start"));
            }
            Ok(Predicate::Ports(start, end))
        }
        "or_match" => Ok(Predicate::Or(list(body)?)),
        "and_match" => Ok(Predicate::And(list(body)?)),
        "not_match" => Ok(Predicate::Not(Box::new(parse(body, &fp)?))),
        _ => Err(fp.unsupported("a predicate on the destination port only (destination_port_range, or_match, and_match, not_match, any_match)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_inspector_predicates() {
        let v: Value = serde_norway::from_str(
            "{or_match: {rules: [{destination_port_range: {start: 80, end: 81}}, {not_match: {destination_port_range: {start: 1000, end: 65536}}}]}}",
        )
        .unwrap();
        let p = parse(&v, &FieldPath::root().field("filter_disabled")).unwrap();
        assert!(p.holds(80) && p.holds(999) && !p.holds(1000) && !p.holds(65535));
        let bad: Value = serde_norway::from_str("{requested_server_name: {exact: a}}").unwrap();
        let e = parse(&bad, &FieldPath::root().field("filter_disabled")).unwrap_err();
        assert_eq!(e.path(), "filter_disabled.requested_server_name");
    }
}
