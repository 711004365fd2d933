//! The loader of the per-pod sk_lookup instances, made once per data path.
//!
//! aya's `EbpfLoader::new` reads and parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, about
//! 5 MiB, some 20 MiB once parsed) every time it is called, although these programs need no
//! CO-RE relocation. Made per enrollment, that parse was the largest part of the agent's CPU per
//! `sluice enroll` and the whole of its RSS peak (`cargo xtask bench --scale`: perf showed
//! `Btf::from_sys_fs` + `Btf::parse` in ~40% of the agent's samples during 40 enrollments). One
//! loader per data path parses it once, at start, and drops it right away (`btf(None)`); every
//! instance is then loaded by the same loader with its own netns cookie.

use std::path::Path;

use aya::{Ebpf, EbpfError, EbpfLoader};
use sluice_common::SK_LOOKUP_NETNS_GLOBAL;

use super::OBJECT;

/// The value the loader holds between loads (0 never matches a policy).
static NO_COOKIE: u64 = 0;

/// An `EbpfLoader` without BTF, pinned maps under the data path's pin directory.
pub(super) struct InstanceLoader(EbpfLoader<'static>);

impl InstanceLoader {
    pub(super) fn new(pin_dir: &Path) -> Self {
        let mut loader = EbpfLoader::new();
        loader
            .btf(None)
            .default_map_pin_directory(pin_dir)
            .override_global(SK_LOOKUP_NETNS_GLOBAL, &NO_COOKIE, true);
        Self(loader)
    }

    /// Loads the object with `netns_cookie` as the sk_lookup program's load-time constant.
    pub(super) fn load(&mut self, netns_cookie: u64) -> Result<Ebpf, EbpfError> {
        // The loader keeps globals by reference for its whole ('static) life; the cookie lives
        // on the heap until the loader no longer refers to it.
        let cookie = Box::into_raw(Box::new(netns_cookie));
        // SAFETY: `cookie` comes from Box::into_raw and is freed only below, after the second
        // override_global replaced the loader's one reference to it; `load` copies the
        // globals' bytes into the object and the returned `Ebpf` borrows nothing from the
        // loader. A panic in between leaks 8 bytes, never a dangling reference.
        let value: &'static u64 = unsafe { &*cookie };
        self.0.override_global(SK_LOOKUP_NETNS_GLOBAL, value, true);
        let loaded = self.0.load(OBJECT);
        self.0
            .override_global(SK_LOOKUP_NETNS_GLOBAL, &NO_COOKIE, true);
        // SAFETY: as above: allocated by Box::into_raw, no reference to it is left.
        drop(unsafe { Box::from_raw(cookie) });
        loaded
    }
}
