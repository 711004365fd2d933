//! Returning freed heap memory to the kernel, for the control-plane moments that free a lot at
//! once (a config reloaded away, an eBPF object loaded). Never called per request.

/// Returns free heap pages of every malloc arena to the kernel (glibc's `malloc_trim(0)`; a
/// no-op on other C libraries).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
