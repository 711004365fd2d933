//! The in-cluster API server as the kubelet presents it to a pod: `KUBERNETES_SERVICE_HOST`
//! / `_PORT` and the service-account directory (`token`, `ca.crt`, `namespace`) mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount`. Behind it, a TLS front (test CA, a
//! certificate for 127.0.0.1) to the plain-HTTP fake server of `kube_api`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::{kube_api::FakeApiServer, upstream::tls::test_pki};

/// Where the kubelet mounts the service-account token.
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The fake API server behind HTTPS; stopped on drop.
pub struct InClusterApi {
    pub fake: FakeApiServer,
    pub addr: SocketAddr,
    /// The service-account directory to mount at [`SA_MOUNT`].
    pub sa_dir: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
}

impl InClusterApi {
    /// Serves `pods` and `namespaces` over HTTPS; writes the service-account dir under `dir`.
    pub fn start(
        pods: Vec<serde_json::Value>,
        namespaces: Vec<serde_json::Value>,
        namespace: &str,
        dir: &Path,
    ) -> Self {
        let fake = FakeApiServer::start(pods, namespaces);
        let backend = fake.addr();
        let pki = test_pki();
        let sa_dir = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa_dir).expect("mkdir serviceaccount");
        for (file, text) in [
            ("token", "sluice-test-token"),
            ("ca.crt", pki.ca_pem.as_str()),
            ("namespace", namespace),
        ] {
            std::fs::write(sa_dir.join(file), text).expect("write serviceaccount file");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind API front");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut up) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                    }
                });
            }
        });
        Self {
            fake,
            addr,
            sa_dir,
            rt: Some(rt),
        }
    }

    /// The env the kubelet gives every container for the `kubernetes` Service.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST".into(), self.addr.ip().to_string()),
            (
                "KUBERNETES_SERVICE_PORT".into(),
                self.addr.port().to_string(),
            ),
        ]
    }
}

impl Drop for InClusterApi {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
