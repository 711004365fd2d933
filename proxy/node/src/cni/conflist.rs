//! Pure CNI network-configuration edits for `sluice install-cni`: which file of the conf dir is
//! the node's primary network (the kubelet's rule), and adding or removing sluice-cni's entry in
//! its plugin chain (a single-plugin `.conf` becomes a `.conflist`). No I/O here.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The `type` of sluice's plugin entry (and the name of its binary in the CNI bin dir).
pub const PLUGIN_TYPE: &str = "sluice-cni";

/// File name extensions the kubelet / container runtime read from the CNI conf dir.
pub const CONF_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// Why a network configuration cannot be edited.
#[derive(Debug, thiserror::Error)]
#[error("CNI config {path}: {reason}")]
pub struct Malformed {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, naming the field.
    pub reason: String,
}

/// Whether `name` is a network configuration the runtime would load (hidden temp files are not).
pub fn is_conf_name(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONF_EXTENSIONS.contains(&e))
}

/// The primary configuration among `names`: the first in lexical order, as the kubelet picks it.
pub fn primary<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names.into_iter().filter(|n| is_conf_name(n)).min()
}

/// A parsed configuration: a `.conflist` (has `plugins`) or a single-plugin `.conf`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, Malformed> {
    let bad = |reason: String| Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Value::Object(conf) = value else {
        return Err(bad("the top level is not a JSON object".into()));
    };
    match conf.get("plugins") {
        Some(Value::Array(plugins)) => {
            for (i, p) in plugins.iter().enumerate() {
                if !p.get("type").is_some_and(Value::is_string) {
                    return Err(bad(format!("plugins[{i}].type: missing or not a string")));
                }
            }
        }
        Some(_) => return Err(bad("plugins: not an array".into())),
        None if !conf.get("type").is_some_and(Value::is_string) => {
            return Err(bad(
                "type: missing or not a string (and no plugins list)".into()
            ));
        }
        None => {}
    }
    Ok(conf)
}

fn is_sluice(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// What to write after an edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    /// Where the new configuration goes (`X.conf` becomes `X.conflist`).
    pub path: PathBuf,
    /// The new configuration.
    pub conf: Value,
    /// The file to remove after writing `path` (the old `.conf`), if any.
    pub remove: Option<PathBuf>,
}

/// `conf` (read from `path`) with exactly one sluice entry, `entry`, at the end of its chain.
/// `None` when it already is exactly that.
pub fn with_entry(
    path: &Path,
    conf: &Map<String, Value>,
    entry: &Map<String, Value>,
) -> Option<Edit> {
    let (list, converted) = as_list(conf);
    let plugins = list["plugins"].as_array().expect("as_list makes an array");
    let mut kept: Vec<Value> = plugins.iter().filter(|p| !is_sluice(p)).cloned().collect();
    kept.push(Value::Object(entry.clone()));
    if !converted && *plugins == kept {
        return None;
    }
    let mut list = list;
    list.insert("plugins".into(), Value::Array(kept));
    Some(Edit {
        path: if converted {
            path.with_extension("conflist")
        } else {
            path.to_path_buf()
        },
        conf: Value::Object(list),
        remove: converted.then(|| path.to_path_buf()),
    })
}

/// `conf` (read from `path`) without any sluice entry; `None` when it has none.
pub fn without_entry(path: &Path, conf: &Map<String, Value>) -> Option<Edit> {
    let plugins = conf.get("plugins")?.as_array()?;
    if !plugins.iter().any(is_sluice) {
        return None;
    }
    let mut conf = conf.clone();
    let kept = plugins.iter().filter(|p| !is_sluice(p)).cloned().collect();
    conf.insert("plugins".into(), Value::Array(kept));
    Some(Edit {
        path: path.to_path_buf(),
        conf: Value::Object(conf),
        remove: None,
    })
}

/// The conflist form of `conf` and whether it had to be converted from a single plugin: the
/// list keeps `cniVersion` and `name`, the plugin keeps everything else.
fn as_list(conf: &Map<String, Value>) -> (Map<String, Value>, bool) {
    if conf.contains_key("plugins") {
        return (conf.clone(), false);
    }
    let mut plugin = conf.clone();
    let mut list = Map::new();
    for key in ["cniVersion", "name"] {
        if let Some(v) = plugin.remove(key) {
            list.insert(key.into(), v);
        }
    }
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    (list, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn primary_is_the_first_config_name() {
        let names = [
            "20-b.conflist",
            ".10-a.conflist.sluice-1.tmp",
            "10-a.conf",
            "05-x.txt",
        ];
        assert_eq!(primary(names), Some("10-a.conf"));
        assert_eq!(primary(["readme.md"]), None);
    }

    #[test]
    fn conf_becomes_a_conflist_with_one_entry() {
        let conf =
            obj(json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge", "bridge": "cni0"}));
        let entry = obj(json!({"type": PLUGIN_TYPE, "mode": "node"}));
        let e = with_entry(Path::new("/d/10-a.conf"), &conf, &entry).unwrap();
        assert_eq!(e.path, Path::new("/d/10-a.conflist"));
        assert_eq!(e.remove.as_deref(), Some(Path::new("/d/10-a.conf")));
        assert_eq!(
            e.conf,
            json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
                {"type": "bridge", "bridge": "cni0"}, {"type": PLUGIN_TYPE, "mode": "node"}]})
        );
        // Idempotent: the result needs no further edit.
        let again = with_entry(&e.path, e.conf.as_object().unwrap(), &entry);
        assert_eq!(again, None);
    }

    #[test]
    fn duplicates_and_stale_options_collapse_to_one_last_entry() {
        let conf = obj(json!({"name": "n", "plugins": [
            {"type": PLUGIN_TYPE, "mode": "off"}, {"type": "bridge"}, {"type": PLUGIN_TYPE}]}));
        let entry = obj(json!({"type": PLUGIN_TYPE, "mode": "node"}));
        let e = with_entry(Path::new("/d/a.conflist"), &conf, &entry).unwrap();
        assert_eq!(e.remove, None);
        assert_eq!(
            e.conf["plugins"],
            json!([{"type": "bridge"}, {"type": PLUGIN_TYPE, "mode": "node"}])
        );
        let removed = without_entry(&e.path, e.conf.as_object().unwrap()).unwrap();
        assert_eq!(removed.conf["plugins"], json!([{"type": "bridge"}]));
        assert_eq!(
            without_entry(&e.path, removed.conf.as_object().unwrap()),
            None
        );
    }

    #[test]
    fn malformed_configs_name_the_file_and_field() {
        let p = Path::new("/d/10-a.conflist");
        for (bytes, needle) in [
            (&b"{not json"[..], "not valid JSON"),
            (b"[1]", "not a JSON object"),
            (b"{\"plugins\": {}}", "plugins: not an array"),
            (b"{\"plugins\": [{\"x\": 1}]}", "plugins[0].type"),
            (b"{\"name\": \"n\"}", "type: missing"),
        ] {
            let e = parse(p, bytes).unwrap_err().to_string();
            assert!(e.contains("/d/10-a.conflist") && e.contains(needle), "{e}");
        }
    }
}
