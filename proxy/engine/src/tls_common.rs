//! What the upstream (`upstream/tls.rs`) and downstream (`downstream_tls.rs`) TLS contexts
//! share: matching the peer certificate's subject alternative names (`san.rs`) and the
//! `tls_params` of a `CommonTlsContext` (`params.rs`: protocol versions, cipher suites and
//! curves, as a rustls crypto provider).

pub mod params;
pub mod san;

pub use params::TlsParams;
pub use san::SanMatchers;
