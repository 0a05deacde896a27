//! Integration tests: the real binary against the sandbox on loopback.
//!
//! One test binary (see `Cargo.toml`), one module per area.

mod common;

mod bad_answers;
mod bad_input;
mod conformance;
mod faults;
mod fuzz;
mod ledger;
mod operate;
mod pace;
mod prism;
mod report;
mod run;
mod samples;
mod sandbox;
mod schemathesis;
mod secrets;
mod tokens;
mod webhooks;
mod wrong;
