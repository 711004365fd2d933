//! Namespaced test harness for sluice's integration tests (see tests/README.md).
pub mod conformance;
