//! The one integration test binary: every test module and the shared harnesses under `support/`.

mod approvals;
mod audit;
mod audit_chain;
mod bad_input;
mod catalog;
mod cli;
mod containers;
mod deploy;
mod docker;
mod files;
mod foundation;
mod harness;
mod http_exec;
mod inventory;
mod listener;
mod localapi;
mod network;
mod proxmox;
mod services;
mod sessions;
mod ssh;
mod stacks;
mod support;
mod targets;
