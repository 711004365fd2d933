//! What every accept loop (listeners, admin) does when `accept()` fails.

use std::time::Duration;

/// Pause after a failed accept.
const RETRY_DELAY: Duration = Duration::from_millis(50);

/// After a failed accept (EMFILE at the fd limit, ENOBUFS, ...): logs and pauses, so a full fd
/// table cannot spin an accept loop (the pending connection stays in the backlog).
pub(crate) async fn failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(RETRY_DELAY).await;
}
