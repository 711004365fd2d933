//! Small hashable names for config objects (the routing vocabulary shared with the runtime).

use std::{borrow::Borrow, fmt, sync::Arc};

macro_rules! name_ref {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a name.
            pub fn new(name: &str) -> Self {
                Self(Arc::from(name))
            }

            /// The name as written in the config.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
    };
}

name_ref!(
    /// The name of a cluster (`static_resources.clusters[].name`); cheap to clone, usable as a
    /// `HashMap` key looked up by `&str`.
    ClusterRef
);
name_ref!(
    /// The name of a listener (`static_resources.listeners[].name`).
    ListenerRef
);
