//! The config loader: YAML bytes -> libyaml limits pre-pass -> serde -> validated bootstrap,
//! as `sluice proxy -c` and every hot reload run it (`config::load_serving_file`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file that is not UTF-8 is refused by the read itself.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match sluice_engine::config::from_yaml_str(text) {
        Ok(_) => {
            // load_serving_file parses an accepted file once more for /config_dump.
            let _: Option<serde_json::Value> = serde_norway::from_str(text).ok();
        }
        Err(e) => {
            // Every rejection renders; a field error names its path.
            let _ = e.to_string();
        }
    }
});
