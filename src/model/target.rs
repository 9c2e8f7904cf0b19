//! Target kinds: what sort of system a call runs against.

use serde::Serialize;

/// The id of the target that is this host.
pub const LOCAL: &str = "local";

/// What kind of system a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Local,
    Ssh,
    Docker,
    Http,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Ssh => "ssh",
            Kind::Docker => "docker",
            Kind::Http => "http",
        }
    }
}
