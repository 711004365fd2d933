//! Runs the DaemonSet pod of `deploy/sluice.yaml` with podman the way a kubelet would (issue 11
//! tests 1 and 2): every value comes from the manifest (`manifest`), fields it cannot apply fail
//! the test (`fields`), `$(VAR)` is expanded like the kubelet (`expand`), host paths are remapped
//! into a sandbox the test owns (`sandbox`, the one declared substitution), containers run with
//! podman + runc (`podman`), probes are HTTP GETs (`probe`), the in-cluster API server is a TLS
//! front to the fake one (`apiserver`), the image is built from the debug binaries (`image`)
//! and pods are wired through the conflist install-cni patched (`chain`).

pub mod apiserver;
pub mod chain;
pub mod expand;
pub mod fields;
pub mod image;
pub mod manifest;
pub mod node;
pub mod pod;
pub mod podman;
pub mod probe;
pub mod sandbox;
