//! `/xds_status` (sluice's own path; Envoy has none): what the xDS client driving this server
//! knows — per resource type the last response, ACK and NACK, and the control-plane stream. The
//! engine does not know the client (it lives in `sluice-xds`): the client registers a
//! [`StatusProvider`] on the server ([`Server::set_xds_status`](crate::server::Server::set_xds_status))
//! and the admin prints what it returns. A server without one (a static bootstrap) answers
//! `{"static": true, "proxy_version": ..., "node": ...}`.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::server::{Runtime, Server};

/// Builds the `/xds_status` document on request (never on a data-path request).
pub type StatusProvider = Arc<dyn Fn() -> Value + Send + Sync>;

/// The `/xds_status` answer of `server`.
pub fn json(server: &Server, rt: &Runtime) -> Value {
    match server.xds_status() {
        Some(p) => p(),
        None => json!({
            "static": true,
            "proxy_version": concat!("sluice/", env!("CARGO_PKG_VERSION")),
            "node": rt.source.get("node").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::testing;

    #[tokio::test]
    async fn static_until_a_client_registers_its_provider() {
        let b = testing::bootstrap(&[("/", "b")], &[("b", "127.0.0.1:9".parse().unwrap())]);
        let (server, _) = testing::serve(b, None).await;
        let v = super::json(&server, &server.runtime());
        assert_eq!(v["static"], true, "{v}");
        assert_eq!(
            v["proxy_version"],
            concat!("sluice/", env!("CARGO_PKG_VERSION"))
        );
        server.set_xds_status(Arc::new(|| json!({"control_plane": {"connected": true}})));
        assert_eq!(
            super::json(&server, &server.runtime()),
            json!({"control_plane": {"connected": true}})
        );
    }
}
