//! The HCM's `http2_protocol_options` (core.v3.Http2ProtocolOptions): the stream and window
//! limits a downstream HTTP/2 connection advertises in its SETTINGS (hyper's builder sets them)
//! and Envoy's inbound flood limits (enforced by `http/h2_flood.rs`). istiod sends an empty one
//! for every HTTP/2 and gRPC port of an inbound listener, and the three limits from a
//! DestinationRule's or ProxyConfig's connection settings.

use super::{path::FieldPath, raw::RawHttp2Options, ConfigError};

/// Envoy's `max_consecutive_inbound_frames_with_empty_payload` default.
pub const DEFAULT_MAX_CONSECUTIVE_EMPTY_FRAMES: u32 = 1;
/// Envoy's `max_inbound_priority_frames_per_stream` default.
pub const DEFAULT_MAX_PRIORITY_FRAMES_PER_STREAM: u32 = 100;
/// Envoy's `max_inbound_window_update_frames_per_data_frame_sent` default.
pub const DEFAULT_MAX_WINDOW_UPDATES_PER_DATA_FRAME_SENT: u32 = 10;
/// The largest HTTP/2 window and stream count (2^31 - 1).
const MAX: u32 = (1 << 31) - 1;

/// Envoy's inbound HTTP/2 flood limits (`http/h2_flood.rs` has the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2FloodLimits {
    /// Consecutive DATA/HEADERS/CONTINUATION frames with an empty payload and no END_STREAM.
    pub max_consecutive_empty: u32,
    /// PRIORITY frames per opened stream (plus one stream's worth).
    pub max_priority_per_stream: u64,
    /// WINDOW_UPDATE frames per DATA frame sent.
    pub max_window_updates_per_data_sent: u64,
}

impl Default for H2FloodLimits {
    fn default() -> Self {
        Self {
            max_consecutive_empty: DEFAULT_MAX_CONSECUTIVE_EMPTY_FRAMES,
            max_priority_per_stream: DEFAULT_MAX_PRIORITY_FRAMES_PER_STREAM.into(),
            max_window_updates_per_data_sent: DEFAULT_MAX_WINDOW_UPDATES_PER_DATA_FRAME_SENT.into(),
        }
    }
}

/// What the HCM's HTTP/2 connections advertise and enforce; `None` keeps sluice's default
/// (docs/config.md: 200 streams, 1 MiB windows, where Envoy has 1024 and 16 / 24 MiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http2Options {
    /// `max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: Option<u32>,
    /// `initial_stream_window_size` (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_stream_window_size: Option<u32>,
    /// `initial_connection_window_size` (the connection's first WINDOW_UPDATE).
    pub initial_connection_window_size: Option<u32>,
    /// The flood limits.
    pub flood: H2FloodLimits,
}

/// Validates `http2_protocol_options` with Envoy's bounds.
pub(crate) fn parse(
    raw: Option<&RawHttp2Options>,
    p: &FieldPath,
) -> Result<Http2Options, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Http2Options::default());
    };
    let p = p.field("http2_protocol_options");
    let ranged = |v: Option<u32>, name: &str, min: u32| match v {
        Some(n) if !(min..=MAX).contains(&n) => {
            Err(p.field(name).err(format!("{n} is outside {min}..={MAX}")))
        }
        v => Ok(v),
    };
    let defaults = H2FloodLimits::default();
    let window_updates = ranged(
        raw.max_inbound_window_update_frames_per_data_frame_sent,
        "max_inbound_window_update_frames_per_data_frame_sent",
        1,
    )?;
    Ok(Http2Options {
        max_concurrent_streams: ranged(raw.max_concurrent_streams, "max_concurrent_streams", 1)?,
        initial_stream_window_size: ranged(
            raw.initial_stream_window_size,
            "initial_stream_window_size",
            65535,
        )?,
        initial_connection_window_size: ranged(
            raw.initial_connection_window_size,
            "initial_connection_window_size",
            65535,
        )?,
        flood: H2FloodLimits {
            max_consecutive_empty: raw
                .max_consecutive_inbound_frames_with_empty_payload
                .unwrap_or(defaults.max_consecutive_empty),
            max_priority_per_stream: raw
                .max_inbound_priority_frames_per_stream
                .map_or(defaults.max_priority_per_stream, u64::from),
            max_window_updates_per_data_sent: window_updates
                .map_or(defaults.max_window_updates_per_data_sent, u64::from),
        },
    })
}
