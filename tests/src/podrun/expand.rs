//! A container's environment resolved as the kubelet does (value, fieldRef from the pod's
//! downward-API values, configMapKeyRef from the manifest's ConfigMaps) and `$(VAR)` expansion
//! in env values, command and args (`$$` escapes, an undefined `$(VAR)` stays as written).

use std::collections::HashMap;

use super::manifest::{Container, EnvSource};

/// Resolves `c.env` in order (a value may refer to variables defined before it).
pub fn resolve_env(
    c: &Container,
    fields: &HashMap<&str, String>,
    config_maps: &HashMap<String, HashMap<String, String>>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, src) in &c.env {
        let value = match src {
            EnvSource::Value(v) => expand(v, &out),
            EnvSource::Field(path) => fields
                .get(path.as_str())
                .unwrap_or_else(|| {
                    panic!(
                        "container {}: env {name}: fieldRef {path} has no value on this node",
                        c.name
                    )
                })
                .clone(),
            EnvSource::ConfigMap { name: cm, key } => config_maps
                .get(cm)
                .and_then(|d| d.get(key))
                .unwrap_or_else(|| {
                    panic!(
                        "container {}: env {name}: ConfigMap {cm} has no key {key}",
                        c.name
                    )
                })
                .clone(),
        };
        out.retain(|(n, _)| n != name);
        out.push((name.clone(), value));
    }
    out
}

/// Kubelet `$(VAR)` expansion of `s` with `env`.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let var = &inner[..end];
                    match env.iter().rev().find(|(n, _)| n == var) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&format!("$({var})")),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn kubelet_expansion() {
        let env = vec![("A".to_string(), "x".to_string())];
        for (input, want) in [
            ("--a=$(A)", "--a=x"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$(A)$(A)", "xx"),
            ("a$b", "a$b"),
            ("$(A", "$(A"),
        ] {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }
}
