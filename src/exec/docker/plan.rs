//! The engine API calls a plan shows (`POST /containers/web/restart`), from pure functions
//! beside the operations that make them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::refs::ImageRef;

/// One engine API call as a plan shows it, e.g. `POST /containers/web/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ApiCall {
    /// `GET`, `POST` or `DELETE`.
    pub method: String,
    /// Path and query, without the API version prefix.
    pub path: String,
}

impl ApiCall {
    pub(super) fn new(method: &str, path: String) -> ApiCall {
        ApiCall {
            method: method.to_string(),
            path,
        }
    }
}

impl std::fmt::Display for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// A state change of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerAction {
    Start,
    Stop,
    Restart,
    Pause,
    Unpause,
}

impl ContainerAction {
    pub fn verb(self) -> &'static str {
        match self {
            ContainerAction::Start => "start",
            ContainerAction::Stop => "stop",
            ContainerAction::Restart => "restart",
            ContainerAction::Pause => "pause",
            ContainerAction::Unpause => "unpause",
        }
    }
}

/// The API call `action` makes on `container` (a name or id as given); `timeout_secs` applies to
/// stop and restart.
pub fn action_call(action: ContainerAction, container: &str, timeout_secs: Option<i64>) -> ApiCall {
    let mut path = format!("/containers/{container}/{}", action.verb());
    if let (ContainerAction::Stop | ContainerAction::Restart, Some(t)) = (action, timeout_secs) {
        path.push_str(&format!("?t={t}"));
    }
    ApiCall::new("POST", path)
}

/// The API call that removes `container`.
pub fn remove_call(container: &str, force: bool, volumes: bool) -> ApiCall {
    let query: Vec<&str> = [(force, "force=true"), (volumes, "v=true")]
        .into_iter()
        .filter_map(|(on, q)| on.then_some(q))
        .collect();
    let mut path = format!("/containers/{container}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    ApiCall::new("DELETE", path)
}

/// The API call that pulls `image`.
pub fn pull_call(image: &ImageRef) -> ApiCall {
    ApiCall::new(
        "POST",
        format!("/images/create?fromImage={}&tag={}", image.name, image.tag),
    )
}
