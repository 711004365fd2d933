//! Context quirks in one place: address and port byte order of the kernel's context structs.
//!
//! - IPv4 addresses (`*_ip4`) are u32 holding the network-order bytes; IPv6 are four such u32.
//! - `bpf_sock_addr.user_port` holds the network-order port in its low 16 bits.
//! - `bpf_sock_ops.remote_port` and `sk_msg_md.remote_port` are network order, shifted left by 16
//!   on little-endian kernels; [`remote_port_host`] accepts both layouts.
//! - `local_port` (sock_ops, sk_msg) and `bpf_sock.src_port` are host order;
//!   `bpf_sock.dst_port` is a `__be16`.

use sluice_common::v4_mapped;

/// 16-byte v4-mapped address from a network-order IPv4 u32 as read from a context.
#[inline(always)]
pub fn mapped_from_ip4(ip4_raw: u32) -> [u8; 16] {
    v4_mapped(ip4_raw.to_ne_bytes())
}

/// 16-byte address from the four network-order u32 words of a context's IPv6 field.
#[inline(always)]
pub fn from_ip6(words: [u32; 4]) -> [u8; 16] {
    let a = words[0].to_ne_bytes();
    let b = words[1].to_ne_bytes();
    let c = words[2].to_ne_bytes();
    let d = words[3].to_ne_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// The four network-order u32 words of a 16-byte address, to store into a context's IPv6 field.
#[inline(always)]
pub fn to_ip6(addr: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// Network-order IPv4 u32 (for a context's `*_ip4`) of a v4-mapped address.
#[inline(always)]
pub fn ip4_of_mapped(addr: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]])
}

/// Host-order port from a `remote_port` field of sock_ops / sk_msg. The network-order port sits
/// in the upper 16 bits on little-endian kernels and in the lower 16 bits otherwise; the other
/// half is zero, so OR-ing the halves works for both.
#[inline(always)]
pub fn remote_port_host(raw: u32) -> u16 {
    u16::from_be(((raw >> 16) | (raw & 0xffff)) as u16)
}

/// True for destinations that stay on the host: 127.0.0.0/8, ::1, :: and 0.0.0.0.
#[inline(always)]
pub fn is_loopback(addr: &[u8; 16]) -> bool {
    if sluice_common::is_v4_mapped(addr) {
        return addr[12] == 127
            || (addr[12] == 0 && addr[13] == 0 && addr[14] == 0 && addr[15] == 0);
    }
    let mut i = 0;
    while i < 15 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[15] <= 1
}

/// 127.0.0.1 as a network-order u32.
pub const LOOPBACK_IP4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// ::ffff:127.0.0.1.
pub const LOOPBACK_MAPPED: [u8; 16] = v4_mapped([127, 0, 0, 1]);
/// ::1.
pub const LOOPBACK_IP6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Loads the u32 at byte offset `$off` of a context or `bpf_sock` pointer with one
/// `*(u32 *)(ptr + off)` instruction. Plain Rust field reads let LLVM form `ptr + 40` once and
/// load from it, which the verifier refuses: "dereference of modified ctx ptr R1 off=40
/// disallowed" (context) and "R2 pointer arithmetic on sock prohibited" (bpf_sock).
macro_rules! ctx_u32 {
    ($sk:expr, $off:expr) => {{
        #[cfg(target_arch = "bpf")]
        let v: u32 = {
            let v: u64;
            // SAFETY: `$sk` is the program context or a PTR_TO_SOCKET and `$off` a readable
            // 4-byte field of it.
            unsafe {
                core::arch::asm!(
                    "{v} = *(u32 *)({sk} + {off})",
                    v = out(reg) v,
                    sk = in(reg) $sk,
                    off = const $off,
                    options(readonly, nostack, preserves_flags),
                );
            }
            v as u32
        };
        #[cfg(not(target_arch = "bpf"))]
        // SAFETY: as above (host builds only type-check this crate).
        let v: u32 = unsafe { core::ptr::read_unaligned(($sk as *const u8).add($off) as *const u32) };
        v
    }};
}
pub(crate) use ctx_u32;
