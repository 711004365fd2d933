//! sluice's kernel programs: capture, original destination, fast path.
//!
//! One hook per file; every map lives in `maps.rs`. Runtime settings come from the per-netns
//! policy map, never from compile-time features, so one object is tested and shipped.
// Built for bpfel-unknown-none by proxy/node/build.rs; on the host (`cargo clippy --workspace`) it is
// an ordinary std binary with an empty main, so lints run without a BPF toolchain.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Inline asm for single-instruction loads from `struct bpf_sock` and contexts (see `addr::ctx_u32!`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod addr;
mod connect;
mod maps;
mod peername;
mod sk_lookup;
mod sk_msg;
mod sockops;
mod sockopt;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
