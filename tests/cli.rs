//! Integration tests: the real binary against the sandbox on loopback.
//!
//! One test binary (see `Cargo.toml`), one module per area.

mod common;

mod conformance;
mod faults;
mod operate;
mod run;
mod sandbox;
