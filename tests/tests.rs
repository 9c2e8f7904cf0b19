//! The one integration test binary: every test module and the shared harnesses under `support/`.

mod audit;
mod audit_chain;
mod catalog;
mod deploy;
mod docker;
mod foundation;
mod harness;
mod http_exec;
mod localapi;
mod services;
mod ssh;
mod support;
mod targets;
