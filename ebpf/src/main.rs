//! sluice's kernel programs: capture, original destination, fast path.
#![no_std]
#![no_main]

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

/// Let the connect proceed.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn sluice_connect4(_ctx: SockAddrContext) -> i32 {
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
