//! The few bytes of WebSocket and HTTP/2 framing the soak's in-process clients and echo server
//! write by hand (xtask imports no HTTP library): RFC 6455 frames of < 126 bytes, and raw
//! HTTP/2 frames with a minimal HPACK header block.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::timeout,
};

/// RFC 6455's example key and its accept value (a fixed key: no SHA-1 needed).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Reads up to the end of an HTTP head (`\r\n\r\n`), at most 16 KiB; returns the head and any
/// bytes after it.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(p + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 16384 {
            bail!("head longer than 16 KiB");
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the end of the head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status code of a response head.
pub fn status(head: &str) -> Option<u16> {
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A text frame: masked (client) or not (server); `payload` < 126 bytes.
pub fn ws_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mut f = vec![0x81, payload.len() as u8];
    match mask {
        Some(m) => {
            f[1] |= 0x80;
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Reads one short frame; returns (opcode, unmasked payload).
pub async fn ws_read<S: AsyncRead + Unpin>(s: &mut S) -> Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let len = (h[1] & 0x7f) as usize;
    if len >= 126 {
        bail!("frame of {len}: longer than the soak sends");
    }
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut mask).await?;
    }
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await?;
    for (i, b) in p.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok((h[0] & 0x0f, p))
}

/// HTTP/2 frame types and flags the flood clients use.
pub const H2_HEADERS: u8 = 0x1;
pub const H2_RST_STREAM: u8 = 0x3;
pub const H2_SETTINGS: u8 = 0x4;
pub const H2_PING: u8 = 0x6;
pub const H2_GOAWAY: u8 = 0x7;
pub const H2_END_STREAM_HEADERS: u8 = 0x5;
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK block of `GET http://svc.test/`: static-table indexes for :method GET (2), :scheme
/// http (6), :path / (4), and :authority (1) as a literal without indexing.
pub fn h2_get_block(authority: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
    b.extend_from_slice(authority.as_bytes());
    b
}

/// What the peer did with a flood: the first GOAWAY or close seen within `wait`.
pub async fn h2_outcome<S: AsyncRead + Unpin>(s: &mut S, wait: Duration) -> &'static str {
    let read = async {
        loop {
            let mut h = [0u8; 9];
            if s.read_exact(&mut h).await.is_err() {
                return "closed by proxy";
            }
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let mut p = vec![0u8; len];
            if s.read_exact(&mut p).await.is_err() {
                return "closed by proxy";
            }
            if h[3] == H2_GOAWAY {
                return "goaway from proxy";
            }
        }
    };
    timeout(wait, read)
        .await
        .unwrap_or("survived (connection kept)")
}

/// Writes all of `bytes`, bounded by `wait`.
pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8], wait: Duration) -> Result<()> {
    timeout(wait, s.write_all(bytes))
        .await
        .context("write timed out")??;
    Ok(())
}
