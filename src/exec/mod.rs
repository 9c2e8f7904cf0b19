//! Everything that reaches a system: typed operations that read (and later change) a host,
//! returning plain serde + schemars values.
//!
//! Today that is only the local host ([`local`]). Tools call into `exec`; `exec` knows nothing
//! about callers, MCP, policy or audit, and never decides whether an operation is allowed.
//! Its functions may block (they read `/proc`, `/sys`, call `statvfs`): async callers run them
//! inside `tokio::task::spawn_blocking`.

pub mod local;
