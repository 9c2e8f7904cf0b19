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

/// A kind as its name (`ssh`), padded like a string (the text of `targets_check` and
/// `tailopsmcp targets check`).
impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
