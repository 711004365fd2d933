//! The process's log filter, changeable at run time: `init` installs tracing with a reload
//! layer around its `EnvFilter`, and `POST /logging` (Envoy's parameters: `level=`, `paths=`,
//! `<target>=<level>`) replaces it. Envoy's logger names are its components; sluice's are
//! tracing targets (`sluice_engine`, `sluice_engine::http`, `sluice_xds`, ...).

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::{prelude::*, reload, EnvFilter, Registry};

struct State {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The default level and the per-target levels, as last set.
    levels: Mutex<Levels>,
}

#[derive(Debug, Clone)]
struct Levels {
    default: String,
    targets: Vec<(String, String)>,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Envoy's level names -> tracing's.
const LEVELS: &[(&str, &str)] = &[
    ("trace", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warning", "warn"),
    ("warn", "warn"),
    ("error", "error"),
    ("critical", "error"),
    ("off", "off"),
];

fn tracing_level(envoy: &str) -> Option<&'static str> {
    LEVELS.iter().find(|(e, _)| *e == envoy).map(|(_, t)| *t)
}

/// Installs the process's subscriber (stderr, ANSI on a terminal) with `filter` (a tracing
/// filter such as `info` or `sluice_engine=debug`; `info` when it does not parse). A second
/// call (a subscriber is already set) changes nothing.
pub fn init(filter: &str) {
    let (filter, default) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, filter.to_string()),
        Err(_) => (EnvFilter::new("info"), "info".to_string()),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if tracing_subscriber::registry()
        .with(layer)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = STATE.set(State {
            handle,
            levels: Mutex::new(Levels {
                default,
                targets: Vec::new(),
            }),
        });
    }
}

const USAGE: &str = "usage: /logging?<name>=<level> (change single level)
usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)
usage: /logging?level=<level> (change all levels)
levels: trace debug info warning error critical off 
";

fn render(l: &Levels) -> String {
    let mut out = format!("active loggers:\n  default: {}\n", l.default);
    for (t, v) in &l.targets {
        out.push_str(&format!("  {t}: {v}\n"));
    }
    out
}

/// `POST /logging?...`: (status, body).
pub fn post(params: impl Iterator<Item = (String, String)>) -> (u16, String) {
    let Some(state) = STATE.get() else {
        return (
            500,
            "error: this process's logging was not set up by sluice\n".into(),
        );
    };
    let mut levels = state
        .levels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (k, v) in params {
        let bad_level = || (400, format!("error: unknown logger level\n\n{USAGE}"));
        match k.as_str() {
            "level" => {
                let Some(l) = tracing_level(&v) else {
                    return bad_level();
                };
                levels = Levels {
                    default: l.into(),
                    targets: Vec::new(),
                };
            }
            "paths" => {
                for pair in v.split(',').filter(|p| !p.is_empty()) {
                    let (t, l) = pair.rsplit_once(':').unwrap_or((pair, ""));
                    let Some(l) = tracing_level(l) else {
                        return bad_level();
                    };
                    set_target(&mut levels, t, l);
                }
            }
            target => {
                let Some(l) = tracing_level(&v) else {
                    return bad_level();
                };
                set_target(&mut levels, target, l);
            }
        }
    }
    let directives = std::iter::once(levels.default.clone())
        .chain(levels.targets.iter().map(|(t, l)| format!("{t}={l}")))
        .collect::<Vec<_>>()
        .join(",");
    let filter = match EnvFilter::try_new(&directives) {
        Ok(f) => f,
        Err(e) => return (400, format!("error: unknown logger name ({e})\n\n{USAGE}")),
    };
    if let Err(e) = state.handle.reload(filter) {
        return (500, format!("error: {e}\n"));
    }
    *state.levels.lock().unwrap_or_else(|e| e.into_inner()) = levels.clone();
    (200, render(&levels))
}

fn set_target(levels: &mut Levels, target: &str, level: &str) {
    match levels.targets.iter_mut().find(|(t, _)| t == target) {
        Some(e) => e.1 = level.into(),
        None => levels.targets.push((target.into(), level.into())),
    }
}
