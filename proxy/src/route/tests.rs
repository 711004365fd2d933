//! Route matching tests.
