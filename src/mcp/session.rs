//! One call's MCP session as the pipeline's [`Client`]: progress notifications on the caller's
//! token, elicitation for confirmations, sampling, and the session's cancellation.

use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::model::{Client, Reply, Sampled};

/// The key of the confirmation in an input-required result (2026-07-28).
pub(super) const CONFIRM_KEY: &str = "confirm";
/// The boolean property the user sets in a confirmation form.
const CONFIRM_FIELD: &str = "confirm";

/// The form a confirmation shows: `message` and one checkbox.
pub(super) fn confirm_form(message: String) -> rmcp::model::ElicitRequestParams {
    rmcp::model::ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema: rmcp::model::ElicitationSchema::builder()
            .required_bool_property(CONFIRM_FIELD, |b| {
                b.title("Run it").description("Check to run exactly this call")
            })
            .build_unchecked(),
    }
}

/// A user's answer to the confirmation form.
pub(super) fn reply_of(r: &rmcp::model::ElicitResult) -> Reply {
    use rmcp::model::ElicitationAction;
    match r.action {
        ElicitationAction::Accept => Reply::Accept {
            checked: r
                .content
                .as_ref()
                .and_then(|c| c.get(CONFIRM_FIELD))
                .and_then(serde_json::Value::as_bool)
                == Some(true),
        },
        ElicitationAction::Decline => Reply::Decline,
        _ => Reply::Cancel,
    }
}

/// One call's MCP session as the pipeline's [`Client`].
pub(super) struct Session {
    peer: rmcp::Peer<RoleServer>,
    token: Option<rmcp::model::ProgressToken>,
    stateless: bool,
    elicitation: bool,
    sampling: bool,
    cancelled: tokio_util::sync::CancellationToken,
}

impl Session {
    pub(super) fn of(ctx: &RequestContext<RoleServer>) -> Session {
        let stateless = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
        let caps = ctx.client_capabilities();
        Session {
            peer: ctx.peer.clone(),
            token: ctx.meta.get_progress_token(),
            stateless,
            elicitation: caps.as_ref().is_some_and(|c| c.elicitation.is_some()),
            // Sampling is a server-to-client request: not on the stateless protocol.
            sampling: caps.is_some_and(|c| c.sampling.is_some()) && !stateless,
            cancelled: ctx.ct.clone(),
        }
    }
}

impl Client for Session {
    fn stateless(&self) -> bool {
        self.stateless
    }
    fn can_elicit(&self) -> bool {
        self.elicitation
    }
    fn can_sample(&self) -> bool {
        self.sampling
    }
    fn has_progress_token(&self) -> bool {
        self.token.is_some()
    }
    fn progress(&self, progress: f64, total: Option<f64>, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(token) = &self.token else { return };
            let mut param = rmcp::model::ProgressNotificationParam::new(token.clone(), progress).with_message(message);
            if let Some(total) = total {
                param = param.with_total(total);
            }
            if let Err(e) = self.peer.notify_progress(param).await {
                tracing::debug!("progress notification not delivered: {e}");
            }
        })
    }
    fn confirm(&self, message: String, timeout: Duration) -> BoxFuture<'_, Result<Reply, String>> {
        Box::pin(async move {
            self.peer
                .create_elicitation_with_timeout(confirm_form(message), Some(timeout))
                .await
                .map(|r| reply_of(&r))
                .map_err(|e| e.to_string())
        })
    }
    #[allow(deprecated)] // sampling is deprecated by SEP-2577 but current clients still offer it
    fn sample(
        &self,
        system: String,
        prompt: String,
        max_tokens: u32,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Sampled, String>> {
        use rmcp::model::{CreateMessageRequestParams, Role, SamplingMessage, SamplingMessageContentBlock};
        Box::pin(async move {
            let params = CreateMessageRequestParams::new(
                vec![SamplingMessage::new(
                    Role::User,
                    SamplingMessageContentBlock::text(prompt),
                )],
                max_tokens,
            )
            .with_system_prompt(system)
            .with_temperature(0.2);
            let result = match tokio::time::timeout(timeout, self.peer.create_message(params)).await {
                Err(_) => return Err(format!("the client did not answer within {}s", timeout.as_secs())),
                Ok(Err(e)) => return Err(format!("the client's sampling failed: {e}")),
                Ok(Ok(r)) => r,
            };
            let text = result
                .message
                .content
                .into_vec()
                .into_iter()
                .filter_map(|c| match c {
                    SamplingMessageContentBlock::Text(t) => Some(t.text),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Sampled {
                text,
                model: result.model,
            })
        })
    }
    fn cancelled(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cancelled.cancelled())
    }
}
