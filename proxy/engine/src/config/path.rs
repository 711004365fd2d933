//! Envoy field paths (`a.b[2].c`) for error messages, built while validating.

use std::fmt;

use super::ConfigError;

/// A field path such as `static_resources.clusters[1].connect_timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    /// The document root.
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    /// `self.name`.
    pub(crate) fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `self[index]`.
    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// `self.a.b[0]` from a serde_path_to_error path of a nested document.
    pub(crate) fn join_serde(&self, inner: &serde_path_to_error::Path) -> Self {
        let inner = inner.to_string();
        if inner == "." {
            self.clone()
        } else if self.0.is_empty() {
            Self(inner)
        } else if inner.starts_with('[') {
            Self(format!("{}{inner}", self.0))
        } else {
            Self(format!("{}.{inner}", self.0))
        }
    }

    /// An error at this path.
    pub(crate) fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::field(self.0.clone(), message)
    }

    /// `<self>: not supported` (+ detail).
    pub(crate) fn unsupported(&self, detail: &str) -> ConfigError {
        if detail.is_empty() {
            self.err("not supported")
        } else {
            self.err(format!("not supported ({detail})"))
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
