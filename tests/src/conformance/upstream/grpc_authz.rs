//! An upstream that is a gRPC ext_authz service (`envoy.service.auth.v3.Authorization/Check`,
//! HTTP/2 plaintext): each `CheckRequest` is recorded as a request (method, path, host and the
//! headers of its `attributes.request.http`, its `body` as the body, and `attr.*`
//! pseudo-headers for the other attributes, `raw_body` among them), and answered from the upstream's script: a 200 reply is OK, its headers
//! the `ok_response` headers (`x-envoy-auth-headers-to-remove` names `headers_to_remove`,
//! `x-resp-*` headers go to `response_headers_to_add`); any other status is a
//! `denied_response` with that status, the headers and the body; `close` fails the call
//! (UNAVAILABLE).

use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::{
    config::core::v3::{address, HeaderValue, HeaderValueOption},
    r#type::v3::HttpStatus,
    service::auth::v3::{
        authorization_server::{Authorization, AuthorizationServer},
        check_response::HttpResponse,
        CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    },
};
use envoy_types::pb::google::rpc::Status;
use tokio::{net::TcpListener, task::JoinHandle};

use super::{Conn, Script, Shared};

struct Authz {
    name: String,
    script: Arc<Script>,
    shared: Arc<Mutex<Shared>>,
}

/// Serves the gRPC ext_authz service on `listener` until dropped.
pub(super) fn spawn(
    rt: &tokio::runtime::Runtime,
    listener: TcpListener,
    name: String,
    script: Arc<Script>,
    shared: Arc<Mutex<Shared>>,
) -> JoinHandle<()> {
    let svc = AuthorizationServer::new(Authz {
        name,
        script,
        shared,
    });
    rt.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    })
}

fn addr_ip(
    p: Option<&envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer>,
) -> String {
    match p
        .and_then(|p| p.address.as_ref())
        .and_then(|a| a.address.as_ref())
    {
        Some(address::Address::SocketAddress(s)) => s.address.clone(),
        _ => "-".into(),
    }
}

#[tonic::async_trait]
impl Authorization for Authz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request
            .remote_addr()
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        // The call's own headers, but the client library's agent string.
        let mut meta: Vec<(String, String)> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .filter(|(k, _)| *k != "user-agent" && *k != "content-type" && *k != "te")
            .map(|(k, v)| {
                (
                    format!("meta.{k}"),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        meta.sort();
        let attrs = request.into_inner().attributes.unwrap_or_default();
        let http = attrs
            .request
            .as_ref()
            .and_then(|r| r.http.clone())
            .unwrap_or_default();
        let mut headers: Vec<(String, String)> = http.headers.clone().into_iter().collect();
        headers.sort();
        // What varies by nature (time, the client's port, a generated id) only as presence.
        let shape = |s: &str| match s {
            "" => "-",
            s if s.bytes().all(|b| b.is_ascii_digit()) => "<digits>",
            _ => "<other>",
        };
        headers.push(("attr.id".into(), shape(&http.id).into()));
        headers.push(("attr.host".into(), http.host.clone()));
        headers.push(("attr.scheme".into(), http.scheme.clone()));
        headers.push(("attr.protocol".into(), http.protocol.clone()));
        headers.push(("attr.size".into(), http.size.to_string()));
        headers.push(("attr.query".into(), http.query.clone()));
        headers.push(("attr.source".into(), addr_ip(attrs.source.as_ref())));
        headers.push((
            "attr.destination".into(),
            addr_ip(attrs.destination.as_ref()),
        ));
        let time = attrs.request.as_ref().and_then(|r| r.time.as_ref());
        headers.push((
            "attr.time".into(),
            if time.is_some() { "<present>" } else { "-" }.into(),
        ));
        let mut ctx: Vec<_> = attrs.context_extensions.into_iter().collect();
        ctx.sort();
        for (k, v) in ctx {
            headers.push((format!("attr.ctx.{k}"), v));
        }
        headers.extend(meta);
        let conn = Conn {
            serial: 1,
            peer,
            name: self.name.clone(),
            script: self.script.clone(),
            shared: self.shared.clone(),
            tls: None,
            protocol: Some("grpc"),
            proxy_header: None,
        };
        // The body as the check carried it: `body` as the recorded body, `raw_body` (gRPC
        // `pack_as_bytes`) as a pseudo-header.
        if !http.raw_body.is_empty() {
            headers.push((
                "attr.raw_body".into(),
                String::from_utf8_lossy(&http.raw_body).into_owned(),
            ));
        }
        let reply = conn.record(
            http.method,
            http.path,
            headers,
            Vec::new(),
            http.body.into_bytes(),
        );
        if reply.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(reply.delay_ms)).await;
        }
        if reply.close {
            return Err(tonic::Status::unavailable("scripted failure"));
        }
        let option = |(k, v): &(String, String)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = if reply.status == 200 {
            let mut ok = OkHttpResponse::default();
            for h in &reply.headers {
                if h.0 == "x-envoy-auth-headers-to-remove" {
                    ok.headers_to_remove
                        .extend(h.1.split(',').map(|n| n.trim().to_string()));
                } else if h.0.starts_with("x-resp-") {
                    ok.response_headers_to_add.push(option(h));
                } else {
                    ok.headers.push(option(h));
                }
            }
            CheckResponse {
                status: Some(Status::default()),
                http_response: Some(HttpResponse::OkResponse(ok)),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(Status {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(reply.status),
                    }),
                    headers: reply.headers.iter().map(option).collect(),
                    body: reply.body.clone().unwrap_or_default(),
                })),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(resp))
    }
}
