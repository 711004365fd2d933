//! Bounds on a YAML document before it is decoded: size, nesting depth and alias expansion.
//!
//! serde_norway expands every alias while decoding (into `typed_config` values, or the whole
//! document when a merge key `<<` appears), so a small file of nested aliases can expand to
//! gigabytes; and libyaml's scanner is quadratic in flow nesting, so 100k `[` take half a minute
//! to reject. This pass walks libyaml's event stream once (the parser serde_norway uses, so both
//! read the same document), without expanding anything: it stops at the first collection
//! deeper than [`MAX_DEPTH`], and sums what each anchor would expand to, stopping when aliases
//! would add more than [`MAX_ALIAS_NODES`] nodes or [`MAX_ALIAS_BYTES`] scalar bytes. Syntax
//! errors are left to serde_norway, which reports them with its usual message.

use std::{collections::HashMap, mem::MaybeUninit};

use unsafe_libyaml_norway as unsafe_libyaml;

use super::{path::FieldPath, ConfigError};

/// Largest config document accepted (a bootstrap with 100k routes is ~10 MiB).
pub(crate) const MAX_DOCUMENT_BYTES: usize = 32 << 20;
/// Deepest nesting of collections, aliases included (Envoy bootstraps need ~25).
pub(crate) const MAX_DEPTH: usize = 64;
/// Nodes that alias expansion may add to a document.
pub(crate) const MAX_ALIAS_NODES: u64 = 1 << 18;
/// Scalar bytes that alias expansion may add to a document.
pub(crate) const MAX_ALIAS_BYTES: u64 = 8 << 20;

/// Rejects a document that is too large, too deep or whose aliases expand too far.
pub(crate) fn check(text: &str) -> Result<(), ConfigError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ConfigError::Yaml {
            file: None,
            line: None,
            column: None,
            message: format!(
                "document of {} bytes exceeds the limit of {MAX_DOCUMENT_BYTES}",
                text.len()
            ),
        });
    }
    let mut walk = Walk::default();
    let mut parser = Parser::new(text.as_bytes());
    while let Some(event) = parser.next() {
        walk.event(event)?;
    }
    Ok(())
}

/// What an anchored node expands to.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
    height: usize,
}

/// An open collection, with enough state to name the field path on error.
#[derive(Debug, Default)]
struct Frame {
    mapping: bool,
    anchor: Option<Vec<u8>>,
    size: Size,
    /// Mapping: the next node is a key.
    awaiting_key: bool,
    key: String,
    index: usize,
}

#[derive(Debug, Default)]
struct Walk {
    /// Open collections; empty outside the root collection.
    stack: Vec<Frame>,
    anchors: HashMap<Vec<u8>, Size>,
    alias_nodes: u64,
    alias_bytes: u64,
}

/// The events the walk needs (anchors and scalars as bytes, positions 1-based).
enum Event {
    Scalar {
        anchor: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    Alias {
        anchor: Vec<u8>,
        at: (usize, usize),
    },
    Start {
        mapping: bool,
        anchor: Option<Vec<u8>>,
        at: (usize, usize),
    },
    End,
    Other,
}

impl Walk {
    fn event(&mut self, e: Event) -> Result<(), ConfigError> {
        match e {
            Event::Scalar { anchor, value } => {
                let size = Size {
                    nodes: 1,
                    bytes: value.len() as u64,
                    height: 0,
                };
                if let Some(a) = anchor {
                    self.anchors.insert(a, size);
                }
                let key = self
                    .is_key()
                    .then(|| String::from_utf8_lossy(&value).into_owned());
                self.child(size, key);
                Ok(())
            }
            Event::Alias { anchor, at } => {
                let size = self.anchors.get(&anchor).copied().unwrap_or(Size {
                    nodes: 1,
                    ..Size::default()
                });
                self.alias_nodes = self.alias_nodes.saturating_add(size.nodes);
                self.alias_bytes = self.alias_bytes.saturating_add(size.bytes);
                if self.alias_nodes > MAX_ALIAS_NODES || self.alias_bytes > MAX_ALIAS_BYTES {
                    return Err(self.err(
                        format!(
                            "YAML aliases expand to more than {MAX_ALIAS_NODES} nodes or \
                             {MAX_ALIAS_BYTES} bytes"
                        ),
                        at,
                    ));
                }
                if self.stack.len() + size.height > MAX_DEPTH {
                    return Err(self.too_deep(at));
                }
                self.child(size, None);
                Ok(())
            }
            Event::Start {
                mapping,
                anchor,
                at,
            } => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(self.too_deep(at));
                }
                self.stack.push(Frame {
                    mapping,
                    anchor,
                    awaiting_key: true,
                    ..Frame::default()
                });
                Ok(())
            }
            Event::End => {
                let Some(mut f) = self.stack.pop() else {
                    return Ok(());
                };
                let size = Size {
                    nodes: f.size.nodes.saturating_add(1),
                    bytes: f.size.bytes,
                    height: f.size.height + 1,
                };
                if let Some(a) = f.anchor.take() {
                    self.anchors.insert(a, size);
                }
                self.child(size, None);
                Ok(())
            }
            Event::Other => Ok(()),
        }
    }

    /// Whether the next node is a mapping key.
    fn is_key(&self) -> bool {
        self.stack
            .last()
            .is_some_and(|f| f.mapping && f.awaiting_key)
    }

    /// Accounts a finished node of `size` (`key`: its text, when it is a mapping key).
    fn child(&mut self, size: Size, key: Option<String>) {
        let Some(f) = self.stack.last_mut() else {
            return;
        };
        f.size.nodes = f.size.nodes.saturating_add(size.nodes);
        f.size.bytes = f.size.bytes.saturating_add(size.bytes);
        f.size.height = f.size.height.max(size.height);
        if f.mapping {
            if f.awaiting_key {
                f.key = key.unwrap_or_else(|| "?".to_string());
            }
            f.awaiting_key = !f.awaiting_key;
        } else {
            f.index += 1;
        }
    }

    fn too_deep(&self, at: (usize, usize)) -> ConfigError {
        self.err(format!("nested deeper than {MAX_DEPTH} levels"), at)
    }

    /// An error at the field path of the node being read.
    fn err(&self, message: String, (line, column): (usize, usize)) -> ConfigError {
        let mut p = FieldPath::root();
        for f in &self.stack {
            p = if f.mapping {
                p.field(&f.key)
            } else {
                p.index(f.index)
            };
        }
        let mut e = p.err(message);
        if let ConfigError::Field {
            line: l, column: c, ..
        } = &mut e
        {
            *l = Some(line);
            *c = Some(column);
        }
        e
    }
}

/// libyaml's event parser over a borrowed document.
struct Parser<'a> {
    sys: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    _input: &'a [u8],
    done: bool,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Self {
        let mut sys = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        // SAFETY: libyaml initialises the boxed (never moved) parser; the input outlives it
        // (`'a`), and `Drop` frees it. A failed init (allocation) leaves `done` set.
        let done = unsafe {
            let p = sys.as_mut_ptr();
            let failed = unsafe_libyaml::yaml_parser_initialize(p).fail;
            if !failed {
                unsafe_libyaml::yaml_parser_set_encoding(p, unsafe_libyaml::YAML_UTF8_ENCODING);
                unsafe_libyaml::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as _);
            }
            failed
        };
        Self {
            sys,
            _input: input,
            done,
        }
    }

    /// The next event; None at the end of the stream or at a syntax error.
    fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let mut ev = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser is initialised; a successful parse fills `ev`, which is read
        // (anchors and scalars copied out) and then freed with yaml_event_delete.
        unsafe {
            let p = self.sys.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_parse(p, ev.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let e = &*ev.as_ptr();
            let at = (
                e.start_mark.line as usize + 1,
                e.start_mark.column as usize + 1,
            );
            let out = match e.type_ {
                unsafe_libyaml::YAML_STREAM_END_EVENT => {
                    self.done = true;
                    Event::Other
                }
                unsafe_libyaml::YAML_SCALAR_EVENT => Event::Scalar {
                    anchor: cstr(e.data.scalar.anchor),
                    value: std::slice::from_raw_parts(
                        e.data.scalar.value,
                        e.data.scalar.length as usize,
                    )
                    .to_vec(),
                },
                unsafe_libyaml::YAML_ALIAS_EVENT => Event::Alias {
                    anchor: cstr(e.data.alias.anchor).unwrap_or_default(),
                    at,
                },
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => Event::Start {
                    mapping: false,
                    anchor: cstr(e.data.sequence_start.anchor),
                    at,
                },
                unsafe_libyaml::YAML_MAPPING_START_EVENT => Event::Start {
                    mapping: true,
                    anchor: cstr(e.data.mapping_start.anchor),
                    at,
                },
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT
                | unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::End,
                _ => Event::Other,
            };
            unsafe_libyaml::yaml_event_delete(ev.as_mut_ptr());
            Some(out)
        }
    }
}

/// A NUL-terminated libyaml string (anchor names), copied.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn cstr(p: *const u8) -> Option<Vec<u8>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per the contract, NUL-terminated.
    Some(
        unsafe { std::ffi::CStr::from_ptr(p.cast()) }
            .to_bytes()
            .to_vec(),
    )
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` unless init failed (then libyaml zeroed it, and delete
        // of a zeroed parser frees nothing).
        unsafe { unsafe_libyaml::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}
