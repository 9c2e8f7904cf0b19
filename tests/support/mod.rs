//! Harnesses shared by the integration tests (and the benchmark): tailnet namespaces, the
//! LocalAPI stand-in, the server process, journald, HTTP/MCP clients.

pub mod docker;
pub mod host;
pub mod http;
pub mod journald;
pub mod localapi;
pub mod netns;
pub mod pyclient;
pub mod server;
pub mod sshd;
pub mod sysbox;
pub mod tlsca;
pub mod wrk;
