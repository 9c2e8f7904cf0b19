//! The one integration test binary: every test module and the shared harnesses under `support/`.

mod audit;
mod catalog;
mod foundation;
mod harness;
mod localapi;
mod support;
mod targets;
