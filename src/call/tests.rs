//! The pipeline and the approvals gate on their own: in-memory tools, a recording audit sink, a
//! scripted client and a real approvals store in a temporary SQLite file. No root, no network
//! namespaces, no rmcp.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::*;
use crate::audit::{AuditError, Decision};
use crate::model::{Annotations, Area, Kind, Level, Reply, Requirement, Risk, Sampled, Scope, Step, StepKind};
use crate::policy::{LocalGrant, Matcher};
use crate::tools::{Declaration, Output, ToolError, tool};

/// Every row the pipeline wrote, in order; a begun row is completed in place.
#[derive(Default)]
struct Recorder {
    rows: Mutex<Vec<Record>>,
    /// Refusals, kept apart from `rows` as the audit log counts them.
    refused: Mutex<Vec<Record>>,
}

impl Sink for Recorder {
    fn record(&self, rec: Record) -> impl Future<Output = Result<i64, AuditError>> + Send {
        let mut rows = self.rows.lock().unwrap();
        rows.push(rec);
        let id = rows.len() as i64;
        async move { Ok(id) }
    }
    fn refuse(&self, rec: Record) -> impl Future<Output = Result<(), AuditError>> + Send {
        self.refused.lock().unwrap().push(rec);
        async { Ok(()) }
    }
    fn begin(&self, rec: Record) -> impl Future<Output = Result<i64, AuditError>> + Send {
        assert_eq!(rec.outcome, Outcome::Pending);
        self.record(rec)
    }
    fn complete(
        &self,
        id: i64,
        outcome: Outcome,
        error: Option<String>,
        duration_ms: f64,
        result_bytes: Option<i64>,
    ) -> impl Future<Output = Result<(), AuditError>> + Send {
        let mut rows = self.rows.lock().unwrap();
        let row = &mut rows[id as usize - 1];
        assert_eq!(row.outcome, Outcome::Pending, "completed once");
        row.outcome = outcome;
        row.error = error;
        row.duration_ms = Some(duration_ms);
        row.result_bytes = result_bytes;
        async { Ok(()) }
    }
    fn redacted(&self, value: &serde_json::Value) -> serde_json::Value {
        value.clone()
    }
}

impl Recorder {
    fn rows(&self) -> Vec<Record> {
        self.rows.lock().unwrap().clone()
    }
    fn refused(&self) -> Vec<Record> {
        self.refused.lock().unwrap().clone()
    }
    /// Every row of any kind: exactly one per call.
    fn count(&self) -> usize {
        self.rows.lock().unwrap().len() + self.refused.lock().unwrap().len()
    }
}

/// A client with a scripted answer to "run this?" and a record of its progress messages.
struct Scripted {
    stateless: bool,
    elicit: bool,
    reply: Option<Reply>,
    progress: Mutex<Vec<String>>,
    token: bool,
}

impl Scripted {
    fn answers(reply: Option<Reply>) -> Arc<Scripted> {
        Arc::new(Scripted {
            stateless: false,
            elicit: true,
            reply,
            progress: Mutex::default(),
            token: false,
        })
    }
}

impl Client for Scripted {
    fn stateless(&self) -> bool {
        self.stateless
    }
    fn can_elicit(&self) -> bool {
        self.elicit
    }
    fn can_sample(&self) -> bool {
        false
    }
    fn has_progress_token(&self) -> bool {
        self.token
    }
    fn progress(&self, _: f64, _: Option<f64>, message: String) -> BoxFuture<'_, ()> {
        self.progress.lock().unwrap().push(message);
        Box::pin(async {})
    }
    fn confirm(&self, _: String, _: Duration) -> BoxFuture<'_, Result<Reply, String>> {
        let reply = self.reply.ok_or_else(|| "timed out".to_string());
        Box::pin(async move { reply })
    }
    fn sample(&self, _: String, _: String, _: u32, _: Duration) -> BoxFuture<'_, Result<Sampled, String>> {
        Box::pin(async { Err("no".to_string()) })
    }
    fn cancelled(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// Who answers tailscaled's second look after a wait.
struct Again(Caller);

impl Reresolve for Again {
    fn fresh(&self) -> BoxFuture<'_, Result<Caller, String>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

fn caller(login: &str) -> Arc<Caller> {
    Arc::new(Caller::dev(login, "127.0.0.1:1".parse().unwrap()))
}

fn grant(login: &str, words: &[&str]) -> LocalGrant {
    let mut scopes = Vec::new();
    for w in words {
        scopes.extend(crate::model::expand(w).unwrap());
    }
    LocalGrant {
        matcher: Matcher::User(login.into()),
        words: words.iter().map(|w| w.to_string()).collect(),
        scopes,
        targets: vec!["*".into()],
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct UnitArgs {
    unit: String,
    #[serde(default)]
    dry_run: bool,
}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Restarted {
    plan: Vec<Step>,
}

/// `services_restart` (risk `risk`), counting its real runs.
fn restart(risk: Risk, ran: Arc<AtomicUsize>) -> Arc<dyn Tool> {
    tool(
        Declaration {
            name: "services_restart",
            title: "Restart",
            description: "restart a unit",
            requires: Requirement::Scope(Scope::new(Area::Services, Level::Control)),
            risk,
            annotations: Annotations {
                read_only: false,
                destructive: false,
                idempotent: false,
                open_world: false,
            },
            kinds: &[Kind::Local, Kind::Ssh],
        },
        move |ctx: ToolContext, a: UnitArgs| {
            let ran = ran.clone();
            async move {
                if !a.dry_run {
                    ran.fetch_add(1, Ordering::SeqCst);
                }
                let plan = vec![Step {
                    kind: StepKind::Command,
                    target: ctx.target.id.clone(),
                    detail: format!("systemctl restart {}", a.unit),
                }];
                Ok(Output::new(Restarted { plan }, "restarted"))
            }
        },
    )
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoArgs {}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Status {
    up: bool,
}

/// A read-only tool that works on docker targets only (so `local` is the wrong kind), or panics.
fn status(kinds: &'static [Kind], panics: bool) -> Arc<dyn Tool> {
    tool(
        Declaration {
            name: "system_status",
            title: "Status",
            description: "status",
            requires: Requirement::Scope(Scope::new(Area::System, Level::Read)),
            risk: Risk::Low,
            annotations: Annotations::READ_ONLY,
            kinds,
        },
        move |_: ToolContext, _: NoArgs| async move {
            if panics {
                panic!("byte index 4 is not a char boundary");
            }
            Ok::<_, ToolError>(Output::new(Status { up: true }, "up"))
        },
    )
}

struct World {
    pipeline: Pipeline<Recorder>,
    ran: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

/// A pipeline with `services_restart` at `risk` and `system_status`, grants for alice
/// (`operate`) and bob (`admin`), and a real approvals store.
fn world(risk: Risk, extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[audit]\ndatabase = \"{}\"\n{extra}", dir.path().join("t.db").display());
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let config = Arc::new(crate::config::Config::load(Some(&path), &Default::default()).unwrap());
    let ran = Arc::new(AtomicUsize::new(0));
    let tools = vec![restart(risk, ran.clone()), status(&[Kind::Local], false)];
    let approvals = Approvals::open(&dir.path().join("t.db"), config.approvals.clone()).unwrap();
    let pipeline = Pipeline::new(
        config,
        tools,
        Arc::new(Registry::local_only()),
        "example.com/cap/tailopsmcp".into(),
        vec![
            grant("alice@example.com", &["operate"]),
            grant("bob@example.com", &["admin"]),
        ],
        Recorder::default(),
    )
    .with_approvals(Arc::new(approvals));
    World {
        pipeline,
        ran,
        _dir: dir,
    }
}

fn call(who: &Arc<Caller>, tool: &str, args: serde_json::Value) -> Call {
    Call {
        caller: who.clone(),
        session: None,
        tool: tool.into(),
        arguments: args.as_object().cloned().unwrap_or_default(),
        answer: Answer::default(),
        again: Some(Arc::new(Again((**who).clone()))),
    }
}

fn text(r: &Response) -> &str {
    match r {
        Response::Result(r) => &r.text,
        Response::InputRequired { message, .. } => message,
    }
}

fn is_error(r: &Response) -> bool {
    matches!(r, Response::Result(r) if r.is_error)
}

#[tokio::test]
async fn an_allowed_change_is_audited_before_it_runs_and_completed_after() {
    let w = world(Risk::Moderate, "");
    let alice = caller("alice@example.com");
    let r = w
        .pipeline
        .run(
            call(&alice, "services_restart", serde_json::json!({"unit": "nginx"})),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
    let rows = w.pipeline.audit.rows();
    assert_eq!(w.pipeline.audit.count(), 1, "one row per call");
    assert_eq!(rows[0].decision, Decision::Allow);
    assert_eq!(rows[0].outcome, Outcome::Ok, "the pending row was completed");
    assert_eq!(rows[0].target.as_deref(), Some("local"));
    assert!(rows[0].result_bytes.unwrap() > 0);
}

#[tokio::test]
async fn a_call_without_the_scope_is_denied_audited_and_never_runs() {
    let w = world(Risk::Moderate, "");
    let carol = caller("carol@example.com");
    let r = w
        .pipeline
        .run(
            call(&carol, "services_restart", serde_json::json!({"unit": "nginx"})),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    assert!(is_error(&r) && text(&r).starts_with("denied: "), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
    let refused = w.pipeline.audit.refused();
    assert_eq!(w.pipeline.audit.count(), 1);
    assert_eq!(
        (refused[0].decision, refused[0].outcome),
        (Decision::Deny, Outcome::Denied)
    );
}

#[tokio::test]
async fn an_unknown_tool_is_a_protocol_error_with_its_row() {
    let w = world(Risk::Low, "");
    let alice = caller("alice@example.com");
    let e = w
        .pipeline
        .run(call(&alice, "nope", serde_json::json!({})), Scripted::answers(None))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::InvalidParams { message, .. } if message == "unknown tool `nope`"),
        "{e:?}"
    );
    assert_eq!(
        w.pipeline.audit.refused()[0].reason.as_deref(),
        Some("unknown tool `nope`")
    );
}

#[tokio::test]
async fn a_target_of_a_kind_the_tool_does_not_declare_is_refused_before_it_runs() {
    let w = world(Risk::Low, "");
    let mut pipeline = w.pipeline;
    pipeline.tools = vec![status(&[Kind::Docker], true)];
    let bob = caller("bob@example.com");
    let r = pipeline
        .run(
            call(&bob, "system_status", serde_json::json!({})),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    // The tool would panic if it ran.
    assert!(
        text(&r).contains("system_status is not supported on local targets: target `local` is a local target"),
        "{r:?}"
    );
    assert_eq!(pipeline.audit.rows()[0].outcome, Outcome::Error);
}

#[tokio::test]
async fn a_tool_that_panics_is_an_internal_error_and_frees_its_slot() {
    let tool = status(&[Kind::Local], true);
    let target = Arc::new(Target::local());
    let ctx = ToolContext::local(ToolContext::test_caller(), Arc::new(crate::config::Config::defaults()));
    let err = run_on(tool.as_ref(), ctx, JsonObject::new()).await.unwrap_err();
    assert!(err.contains("failed unexpectedly (byte index 4"), "{err}");
    assert_eq!(target.permits_available(), target.max_concurrent);
}

#[tokio::test]
async fn the_plan_is_the_dry_run_of_every_target_and_nothing_runs() {
    let ran = Arc::new(AtomicUsize::new(0));
    let tool = restart(Risk::High, ran.clone());
    let targets = vec![Arc::new(Target::local()), Arc::new(Target::local())];
    let args: JsonObject = serde_json::from_str(r#"{"unit": "nginx.service"}"#).unwrap();
    let config = Arc::new(crate::config::Config::defaults());
    let context = |t: &Arc<Target>| ToolContext {
        target: t.clone(),
        ..ToolContext::local(ToolContext::test_caller(), config.clone())
    };
    let plan = dry_run_plan(tool.as_ref(), &targets, &args, &context).await.unwrap();
    assert_eq!(
        plan_text(&plan),
        "local: systemctl restart nginx.service; local: systemctl restart nginx.service"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a dry run only");
}

#[tokio::test]
async fn confirm_runs_only_on_a_checked_yes_and_says_who_confirmed() {
    let w = world(Risk::High, "");
    let alice = caller("alice@example.com");
    let args = serde_json::json!({"unit": "nginx"});
    for reply in [None, Some(Reply::Decline), Some(Reply::Accept { checked: false })] {
        let r = w
            .pipeline
            .run(call(&alice, "services_restart", args.clone()), Scripted::answers(reply))
            .await
            .unwrap();
        assert!(is_error(&r) && text(&r).contains("nothing ran"), "{reply:?}: {r:?}");
    }
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
    let r = w
        .pipeline
        .run(
            call(&alice, "services_restart", args.clone()),
            Scripted::answers(Some(Reply::Accept { checked: true })),
        )
        .await
        .unwrap();
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
    let rows = w.pipeline.audit.rows();
    assert_eq!(rows.len(), 4, "one row per call, the refused confirmations included");
    assert!(
        rows[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("confirmed by the client (elicitation")
    );
    // A dry run needs no confirmation and changes nothing.
    let r = w
        .pipeline
        .run(
            call(
                &alice,
                "services_restart",
                serde_json::json!({"unit": "nginx", "dry_run": true}),
            ),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stateless_confirmation_is_a_sealed_round_trip_bound_to_the_call() {
    let w = world(Risk::High, "");
    let alice = caller("alice@example.com");
    let client = Arc::new(Scripted {
        stateless: true,
        elicit: false,
        reply: None,
        progress: Mutex::default(),
        token: false,
    });
    let args = serde_json::json!({"unit": "nginx"});
    let r = w
        .pipeline
        .run(call(&alice, "services_restart", args.clone()), client.clone())
        .await
        .unwrap();
    let Response::InputRequired { message, state } = r else {
        panic!("{r:?}")
    };
    assert!(
        message.starts_with("Run this? `services_restart` on local"),
        "{message}"
    );
    // Echoed for other arguments, the state does not open.
    let mut other = call(&alice, "services_restart", serde_json::json!({"unit": "sshd"}));
    other.answer = Answer {
        state: Some(state.clone()),
        reply: Some(Reply::Accept { checked: true }),
    };
    let r = w.pipeline.run(other, client.clone()).await.unwrap();
    assert!(text(&r).starts_with("confirmation refused"), "{r:?}");
    let mut again = call(&alice, "services_restart", args);
    again.answer = Answer {
        state: Some(state),
        reply: Some(Reply::Accept { checked: true }),
    };
    let r = w.pipeline.run(again, client).await.unwrap();
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_person_runs_once_after_someone_else_approves() {
    let w = world(Risk::Critical, "");
    let (alice, bob) = (caller("alice@example.com"), caller("bob@example.com"));
    let args = serde_json::json!({"unit": "nginx"});
    let r = w
        .pipeline
        .run(call(&alice, "services_restart", args.clone()), Scripted::answers(None))
        .await
        .unwrap();
    assert!(text(&r).contains("needs a second person"), "{r:?}");
    let store = w.pipeline.approvals.clone().unwrap();
    let (pending, _) = store.list(true, 10, |_| true).unwrap();
    assert_eq!(pending.len(), 1);
    assert!(
        store.decide(&pending[0].id, true, "alice@example.com", "n").is_err(),
        "the requester cannot approve"
    );
    store.decide(&pending[0].id, true, "bob@example.com", "n").unwrap();
    // Other arguments are not covered.
    let r = w
        .pipeline
        .run(
            call(&alice, "services_restart", serde_json::json!({"unit": "sshd"})),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    assert!(text(&r).contains("approved for different arguments"), "{r:?}");
    let r = w
        .pipeline
        .run(call(&alice, "services_restart", args.clone()), Scripted::answers(None))
        .await
        .unwrap();
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 1);
    let r = w
        .pipeline
        .run(call(&alice, "services_restart", args), Scripted::answers(None))
        .await
        .unwrap();
    assert!(text(&r).contains("already used"), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 1, "an approval runs once");
    let _ = bob;
}

#[tokio::test]
async fn a_caller_that_changed_during_the_wait_is_refused() {
    let w = world(Risk::High, "");
    let alice = caller("alice@example.com");
    let mut c = call(&alice, "services_restart", serde_json::json!({"unit": "nginx"}));
    c.again = Some(Arc::new(Again((*caller("mallory@example.com")).clone())));
    let r = w
        .pipeline
        .run(c, Scripted::answers(Some(Reply::Accept { checked: true })))
        .await
        .unwrap();
    assert!(text(&r).contains("the connection is now mallory@example.com"), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
    // Without a way to ask again, a yes is not enough either.
    let mut c = call(&alice, "services_restart", serde_json::json!({"unit": "nginx"}));
    c.again = None;
    let r = w
        .pipeline
        .run(c, Scripted::answers(Some(Reply::Accept { checked: true })))
        .await
        .unwrap();
    assert!(text(&r).contains("could not be checked again"), "{r:?}");
    assert_eq!(w.ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn past_the_rate_limit_a_call_is_refused_with_a_retry_time() {
    let w = world(Risk::Low, "[limits.rate.low]\nburst = 2\nper_minute = 1\n");
    let alice = caller("alice@example.com");
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            w.pipeline
                .run(
                    call(&alice, "system_status", serde_json::json!({})),
                    Scripted::answers(None),
                )
                .await
                .unwrap(),
        );
    }
    let Some(Response::Result(r)) = last else { panic!() };
    assert!(r.is_error && r.retry_after.is_some_and(|s| s > 0), "{r:?}");
    assert_eq!(w.pipeline.audit.count(), 3);
}

#[tokio::test]
async fn format_renders_the_structured_result_and_the_layer_arguments_never_reach_the_tool() {
    let w = world(Risk::Low, "");
    let alice = caller("alice@example.com");
    let r = w
        .pipeline
        .run(
            call(
                &alice,
                "system_status",
                serde_json::json!({"format": "json", "target": "local"}),
            ),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    assert_eq!(text(&r), "{\n  \"up\": true\n}", "{r:?}");
    let r = w
        .pipeline
        .run(
            call(&alice, "system_status", serde_json::json!({"format": "yaml"})),
            Scripted::answers(None),
        )
        .await
        .unwrap();
    assert!(text(&r).contains("`format` must be `text`, `toon` or `json`"), "{r:?}");
}
