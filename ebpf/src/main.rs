//! sluice's kernel programs: capture, original destination, fast path.
//!
//! One hook per file; every map lives in `maps.rs`. Runtime settings come from the per-netns
//! policy map, never from compile-time features, so one object is tested and shipped.
#![no_std]
#![no_main]
// Inline asm for single-instruction loads from `struct bpf_sock` (see `addr::sock_u32!`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod addr;
mod connect;
mod maps;
mod peername;
mod sk_msg;
mod sockops;
mod sockopt;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
