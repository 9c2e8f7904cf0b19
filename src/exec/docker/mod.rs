//! Docker engines, through bollard: list, inspect, start/stop/restart/pause/unpause, remove,
//! logs and a one-shot stats sample of containers, images (list, pull), networks, volumes and
//! recreating a container from a newer image, on a local socket (`unix://`) or a remote engine
//! over `tcp://` with TLS (CA, client certificate and key files).
//!
//! This is the only module that uses bollard (and its models never leave it: every output is a
//! curated serde + schemars type defined here). It owns the target's own constraints: every call is
//! bounded by [`Limits::timeout`](super::Limits::timeout), log output by
//! [`Limits::max_output`](super::Limits::max_output), container names and ids are validated before
//! any request is built (bollard puts them into the URL path unescaped), and a plain-text `tcp://`
//! engine is refused unless the target opts in. `inspect` redacts secrets by the server-wide rules
//! of [`crate::secrets`]: environment values and labels with secret names, passwords in URLs, and
//! secret options in the command, entrypoint and health check. It knows nothing about callers,
//! MCP, policy or audit.
//!
//! One concern per file, each using only those listed before it:
//! - `refs`: container names and image references, validated;
//! - `plan`: the engine API calls a plan shows ([`ApiCall`]);
//! - `model`: what the operations return (curated types; bollard's models never leave here);
//! - `engine`: [`DockerSettings`], [`Docker`] itself, the connection (TLS configured here rather
//!   than by bollard's `connect_with_ssl`, see there), the per-call timeout and the one mapping
//!   from bollard's errors to [`ExecError`](super::ExecError);
//! - `containers`: list, inspect, state changes and remove, and the conversions from bollard's
//!   container models (with the redaction of `inspect`);
//! - `logs`, `stats`: log lines (filtered and capped as they stream in) and a stats sample;
//! - `images`, `networks`: images (list, pull), networks and volumes;
//! - `update`: recreating a container from a newer image, with roll-back (the only file that
//!   uses `images`' helpers).

mod containers;
mod engine;
mod images;
mod logs;
mod model;
mod networks;
mod plan;
mod refs;
mod stats;
mod update;

pub use containers::{env_key_is_secret, redact_env};
pub use engine::{DEFAULT_ENDPOINT, Docker, DockerSettings};
pub use logs::{MAX_GREP_LEN, MAX_TAIL};
pub use model::{
    ActionResult, ContainerDetails, ContainerState, ContainerSummary, EngineInfo, EnvVar, ImageInfo, LogLine, LogQuery,
    LogStream, Logs, Mount, Network, NetworkInfo, PortMapping, PullResult, REDACTED, RemoveResult, RestartPolicy,
    Stats, UpdateReport, VolumeInfo,
};
pub use plan::{ApiCall, ContainerAction, action_call, pull_call, remove_call};
pub use refs::{ImageRef, MAX_IMAGE_REF_LEN, MAX_REF_LEN, validate_ref};
pub use update::UpdateOptions;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Limits;

    #[test]
    fn executor_and_its_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<Docker>();
        let d = Docker::new("t", DockerSettings::default(), Limits::default()).unwrap();
        send(&d.version());
        send(&d.list(true));
        send(&d.inspect("x"));
        send(&d.start("x"));
        send(&d.stop("x", None));
        send(&d.logs("x", LogQuery::default()));
        send(&d.stats("x"));
    }
}
