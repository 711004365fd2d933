//! Reading a body to its end while keeping only its first bytes: what a gRPC-Web answer's
//! `grpc-message` and an HTTP health check's `receive` payloads are taken from.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;

/// The first `limit` bytes of `body` and its trailers, once it has ended; its error if it broke
/// off.
pub(crate) async fn read<B>(
    mut body: B,
    limit: usize,
) -> Result<(Vec<u8>, Option<HeaderMap>), B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut kept = Vec::new();
    while let Some(f) = body.frame().await {
        match f?.into_data() {
            Ok(d) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&d[..d.len().min(room)]);
            }
            Err(f) => return Ok((kept, f.into_trailers().ok())),
        }
    }
    Ok((kept, None))
}
