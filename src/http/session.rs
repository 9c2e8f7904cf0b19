//! MCP sessions (`Mcp-Session-Id`, protocol 2025-06-18 and earlier) without a task per session:
//! rmcp's [`SessionManager`] for `/mcp`, and the principal each session belongs to.
//!
//! rmcp's own `LocalSessionManager` runs a worker task per session that every message passes
//! through: a session call crossed it four times (open the call's stream, deliver the request,
//! deliver the answer, acknowledge the delivery), each a task wake-up and a new idle timer. Here
//! the HTTP task hands the request to the session's service loop itself, and the loop's `send`
//! puts the answer on the call's stream under a short lock. What a client sees is the same:
//!
//! - every `POST` with a request gets an SSE stream that opens with a priming event (`retry:` and
//!   an event id), carries what the call emits (progress, elicitation and sampling requests made
//!   while it runs) and ends with its answer;
//! - a client whose connection dropped picks the stream up with `GET` + `Last-Event-ID`: it gets
//!   the events after that id and, if the call is still running, the rest as it comes. An answer
//!   that finds nobody reading is kept [`Settings::answered_ttl`] for such a resume;
//! - `GET` without `Last-Event-ID` opens the standalone stream (messages tied to no call); a
//!   second one while the first is open gets a keep-alive-only stream, as rmcp does, so competing
//!   reconnections do not steal it from each other;
//! - a client's `notifications/cancelled` ends that call's stream;
//! - a request whose id a call of the same session still holds is refused with a JSON-RPC error
//!   (MCP request ids must be unique within a session): routed by id, its answer would end the
//!   other call's stream. A refused `tools/call` is audited like any other refusal;
//! - a session with nothing in flight and no traffic for [`Settings::idle`] is closed (rmcp closes
//!   one after the same time even with a call running; we do not cut a long call off).
//!
//! **Invariant:** the routing lock is never held across an `.await`; streams are unbounded
//! channels fed in the order the service loop sends, so an answer never overtakes the progress
//! sent before it. Their size is bounded by what the call emits, as the replay cache is by
//! [`Settings::replay`].

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::Stream;
use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, ErrorData, GetExtensions, GetMeta, JsonRpcMessage,
    ProgressToken, RequestId, ServerJsonRpcMessage, ServerNotification,
};
use rmcp::service::OriginatingRequestId;
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId, SessionManager};
use tokio::sync::{mpsc, oneshot};

use crate::audit::Auditor;
use crate::tailnet::Caller;

/// Timings and sizes of the session layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A session with nothing in flight and no traffic this long is closed.
    pub idle: Duration,
    /// The `retry:` hint of each call stream's priming event.
    pub retry: Duration,
    /// Events each stream keeps for a resume.
    pub replay: usize,
    /// How long an answer nobody was reading waits for a resume.
    pub answered_ttl: Duration,
    /// How long `initialize` may take.
    pub init_timeout: Duration,
    /// Sessions one principal may hold (`[limits] max_sessions_per_principal`).
    pub max_per_principal: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle: Duration::from_secs(300),
            retry: Duration::from_secs(3),
            replay: 16,
            answered_ttl: Duration::from_secs(60),
            init_timeout: Duration::from_secs(60),
            max_per_principal: 16,
        }
    }
}

/// A principal is at its session limit and every one of its sessions has a call in flight.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many sessions: this caller already has {cap} open, each with a call in flight; close one (DELETE) or retry when one ends"
)]
pub struct TooManySessions {
    pub cap: usize,
}

/// Why a session operation failed. rmcp answers these with HTTP 500 (a failed resume with an
/// empty stream), so the text is for logs.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session {0} not found")]
    NotFound(SessionId),
    #[error("session {0} is closed")]
    Closed(SessionId),
    #[error("event id `{0}` does not name a stream of this session")]
    UnknownEvent(String),
    #[error("session {0}: initialize was not answered within {1:?}")]
    InitTimeout(SessionId, Duration),
}

/// The live sessions. Shared by rmcp's HTTP service (as its [`SessionManager`]) and the identity
/// middleware (who owns which session).
pub struct Sessions {
    map: RwLock<HashMap<SessionId, Arc<Session>>>,
    settings: Settings,
    /// Where a refused `tools/call` is recorded (`None` in unit tests).
    auditor: Option<Auditor>,
}

struct Session {
    id: SessionId,
    routes: Mutex<Routes>,
}

/// Where the server's messages for one session go. Locked briefly, never across an `.await`.
struct Routes {
    /// To the service loop ([`SessionTransport::receive`]); `None` once the session is closed.
    inbound: Option<mpsc::Sender<ClientJsonRpcMessage>>,
    /// The principal that created the session (set once `initialize` is answered).
    owner: Option<String>,
    /// The pending `initialize` answer.
    init: Option<(RequestId, oneshot::Sender<ServerJsonRpcMessage>)>,
    next_stream: u64,
    /// One per `POST` that carried a request.
    streams: HashMap<u64, Feed>,
    by_request: HashMap<RequestId, u64>,
    by_progress: HashMap<ProgressToken, u64>,
    /// The standalone (`GET`) stream.
    standalone: Feed,
    /// Keep-alive-only `GET` streams opened while the standalone one was taken.
    shadows: Vec<mpsc::UnboundedSender<ServerSseMessage>>,
    last_active: Instant,
}

/// One SSE stream: its receiver (while someone reads it) and the events a resume replays.
struct Feed {
    /// `None`: the standalone stream.
    stream: Option<u64>,
    /// The call's request id and progress token while it runs (a call stream only).
    call: Option<(RequestId, Option<ProgressToken>)>,
    tx: Option<mpsc::UnboundedSender<ServerSseMessage>>,
    /// The last [`Settings::replay`] events, oldest first.
    cache: VecDeque<ServerSseMessage>,
    next_index: u64,
    /// The highest index handed to a live receiver.
    delivered: Option<u64>,
    /// Set when the call was answered while nobody read the stream.
    answered_at: Option<Instant>,
}

impl Feed {
    fn new(stream: Option<u64>, first_index: u64) -> Feed {
        Feed {
            stream,
            call: None,
            tx: None,
            cache: VecDeque::new(),
            next_index: first_index,
            delivered: None,
            answered_at: None,
        }
    }

    fn event_id(&self, index: u64) -> String {
        match self.stream {
            Some(stream) => format!("{index}/{stream}"),
            None => index.to_string(),
        }
    }

    /// Give `event` the next event id, keep it for a resume and send it if someone is reading.
    /// `false` if nobody is.
    fn push(&mut self, mut event: ServerSseMessage, replay: usize) -> bool {
        let index = self.next_index;
        self.next_index += 1;
        event.event_id = Some(self.event_id(index));
        if self.cache.len() >= replay {
            self.cache.pop_front();
        }
        self.cache.push_back(event.clone());
        self.send(index, event)
    }

    fn send(&mut self, index: u64, event: ServerSseMessage) -> bool {
        match &self.tx {
            Some(tx) if tx.send(event).is_ok() => {
                self.delivered = Some(index);
                true
            }
            _ => {
                self.tx = None;
                false
            }
        }
    }

    /// A new receiver for this stream, with the cached events after `after` replayed into it.
    fn attach(&mut self, after: Option<u64>) -> mpsc::UnboundedReceiver<ServerSseMessage> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx = Some(tx);
        let replay: Vec<_> = self
            .cache
            .iter()
            .filter_map(|e| {
                let index = index_of(e)?;
                after.is_none_or(|a| index > a).then(|| (index, e.clone()))
            })
            .collect();
        for (index, event) in replay {
            self.send(index, event);
        }
        rx
    }

    fn live(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

/// The index part of an event id this module gave (`INDEX` or `INDEX/STREAM`).
fn index_of(event: &ServerSseMessage) -> Option<u64> {
    let id = event.event_id.as_deref()?;
    id.split('/').next()?.parse().ok()
}

/// Parse a `Last-Event-ID`: `(index, Some(stream))` for a call stream, `(index, None)` for the
/// standalone stream.
fn parse_event_id(id: &str) -> Option<(u64, Option<u64>)> {
    match id.split_once('/') {
        Some((index, stream)) => Some((index.parse().ok()?, Some(stream.parse().ok()?))),
        None => Some((id.parse().ok()?, None)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Routes {
    fn new(inbound: mpsc::Sender<ClientJsonRpcMessage>) -> Routes {
        Routes {
            inbound: Some(inbound),
            owner: None,
            init: None,
            next_stream: 0,
            streams: HashMap::new(),
            by_request: HashMap::new(),
            by_progress: HashMap::new(),
            standalone: Feed::new(None, 1),
            shadows: Vec::new(),
            last_active: Instant::now(),
        }
    }

    /// Drop the answered streams nobody resumed within `ttl`.
    fn evict_answered(&mut self, ttl: Duration) {
        self.streams
            .retain(|_, f| f.answered_at.is_none_or(|at| at.elapsed() < ttl));
    }

    /// Forget the routes to `stream` (its call's request id and progress token).
    fn unroute(&mut self, stream: u64) {
        let Some((request, progress)) = self.streams.get_mut(&stream).and_then(|f| f.call.take()) else {
            return;
        };
        if self.by_request.get(&request) == Some(&stream) {
            self.by_request.remove(&request);
        }
        if let Some(token) = progress
            && self.by_progress.get(&token) == Some(&stream)
        {
            self.by_progress.remove(&token);
        }
    }

    /// Route one message from the service loop.
    fn deliver(&mut self, message: ServerJsonRpcMessage, replay: usize) {
        let (stream, answers) = match &message {
            JsonRpcMessage::Request(r) => {
                let origin = r.request.extensions().get::<OriginatingRequestId>();
                (origin.and_then(|o| self.by_request.get(&o.0).copied()), false)
            }
            JsonRpcMessage::Notification(n) => match &n.notification {
                ServerNotification::ProgressNotification(p) => {
                    (self.by_progress.get(&p.params.progress_token).copied(), false)
                }
                ServerNotification::CancelledNotification(c) => (
                    c.params
                        .request_id
                        .as_ref()
                        .and_then(|id| self.by_request.get(id).copied()),
                    false,
                ),
                _ => (None, false),
            },
            JsonRpcMessage::Response(r) => (self.by_request.get(&r.id).copied(), true),
            JsonRpcMessage::Error(e) => (e.id.as_ref().and_then(|id| self.by_request.get(id).copied()), true),
        };
        let event = ServerSseMessage::from_message(message);
        let Some((stream, feed)) = stream.and_then(|s| Some((s, self.streams.get_mut(&s)?))) else {
            self.standalone.push(event, replay);
            return;
        };
        let read = feed.push(event, replay);
        if !answers {
            return;
        }
        if !read {
            // Kept for a resume until `Settings::answered_ttl`.
            feed.answered_at = Some(Instant::now());
        }
        self.unroute(stream);
        if read {
            // The answer is on its way to the client, which ends the stream.
            self.streams.remove(&stream);
        }
    }

    /// Close everything: the service loop's input and every stream.
    fn close(&mut self) {
        self.inbound = None;
        self.init = None;
        self.streams.clear();
        self.by_request.clear();
        self.by_progress.clear();
        self.standalone.tx = None;
        self.shadows.clear();
    }
}

impl Sessions {
    pub fn new(settings: Settings) -> Sessions {
        Sessions {
            map: RwLock::new(HashMap::new()),
            settings,
            auditor: None,
        }
    }

    /// Record refused `tools/call` requests with `auditor`.
    pub fn auditing(mut self, auditor: Auditor) -> Sessions {
        self.auditor = Some(auditor);
        self
    }

    /// Audit a `tools/call` refused here, before its error goes out (other methods are not
    /// audited, as elsewhere). Its caller is the one the identity middleware attached.
    async fn audit_refusal(&self, session: &SessionId, request: &ClientRequest, reason: &str) {
        let (Some(auditor), ClientRequest::CallToolRequest(call)) = (&self.auditor, request) else {
            return;
        };
        let Some(caller) = call
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Arc<Caller>>())
        else {
            return;
        };
        let mut rec = crate::audit::Record::request(caller, Some(session.to_string()), "tools/call");
        rec.tool = Some(call.params.name.to_string());
        rec.arguments = call.params.arguments.clone().map(serde_json::Value::Object);
        if let Err(e) = auditor.refuse(rec.denied(reason.to_string())).await {
            tracing::error!(error = %e, "audit write failed for a refused request");
        }
    }

    fn get(&self, id: &SessionId) -> Result<Arc<Session>, SessionError> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| SessionError::NotFound(id.clone()))
    }

    /// `true` if `principal` may use session `id`: it created it, or the session is unknown (rmcp
    /// answers that with 404) or not yet bound.
    pub fn may_use(&self, id: &str, principal: &str) -> bool {
        let Some(session) = self.map.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned() else {
            return true;
        };
        lock(&session.routes).owner.as_deref().is_none_or(|o| o == principal)
    }

    /// Record who created session `id` (from its `initialize` answer), keeping the principal
    /// within [`Settings::max_per_principal`] sessions: past it, the principal's least recently
    /// active session with no call in flight is closed (a client that went away without
    /// `DELETE` leaves such sessions behind); when every one has a call in flight, the new
    /// session is closed instead and `Err` says so.
    pub fn bind(&self, id: &str, principal: &str) -> Result<(), TooManySessions> {
        let (owned, this) = {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            let Some(this) = map.get(id).cloned() else {
                return Ok(());
            };
            lock(&this.routes).owner.get_or_insert_with(|| principal.to_string());
            // (id, last active, busy) of the principal's other sessions.
            let owned: Vec<(SessionId, Instant, bool)> = map
                .values()
                .filter(|s| s.id.as_ref() != id)
                .filter_map(|s| {
                    let r = lock(&s.routes);
                    (r.owner.as_deref() == Some(principal))
                        .then(|| (s.id.clone(), r.last_active, !r.by_request.is_empty()))
                })
                .collect();
            (owned, this)
        };
        let cap = self.settings.max_per_principal;
        if owned.len() < cap {
            return Ok(());
        }
        let mut idle: Vec<&(SessionId, Instant, bool)> = owned.iter().filter(|(_, _, busy)| !busy).collect();
        idle.sort_by_key(|(_, at, _)| *at);
        let excess = owned.len() + 1 - cap;
        if idle.len() < excess {
            self.remove(&this.id);
            return Err(TooManySessions { cap });
        }
        for (old, _, _) in idle.into_iter().take(excess) {
            tracing::info!(session = %old, principal, cap, "closing a caller's oldest idle session: at its session limit");
            self.remove(old);
        }
        Ok(())
    }

    fn remove(&self, id: &SessionId) {
        let removed = self.map.write().unwrap_or_else(PoisonError::into_inner).remove(id);
        if let Some(session) = removed {
            lock(&session.routes).close();
        }
    }

    /// Hand `message` to the session's service loop.
    async fn push(&self, session: &Session, message: ClientJsonRpcMessage) -> Result<(), SessionError> {
        let inbound = lock(&session.routes).inbound.clone();
        match inbound {
            Some(tx) => tx
                .send(message)
                .await
                .map_err(|_| SessionError::Closed(session.id.clone())),
            None => Err(SessionError::Closed(session.id.clone())),
        }
    }
}

/// An SSE stream's events, as rmcp's HTTP service reads them.
struct Events(mpsc::UnboundedReceiver<ServerSseMessage>);

impl Stream for Events {
    type Item = ServerSseMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<ServerSseMessage>> {
        self.0.poll_recv(cx)
    }
}

impl SessionManager for Sessions {
    type Error = SessionError;
    type Transport = SessionTransport;

    async fn create_session(&self) -> Result<(SessionId, SessionTransport), SessionError> {
        let id: SessionId = uuid::Uuid::new_v4().to_string().into();
        let (tx, rx) = mpsc::channel(16);
        let session = Arc::new(Session {
            id: id.clone(),
            routes: Mutex::new(Routes::new(tx)),
        });
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), session.clone());
        let idle = self.settings.idle;
        let transport = SessionTransport {
            session,
            inbound: rx,
            replay: self.settings.replay,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
        };
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, SessionError> {
        let session = self.get(id)?;
        let (tx, rx) = oneshot::channel();
        if let JsonRpcMessage::Request(r) = &message {
            lock(&session.routes).init = Some((r.id.clone(), tx));
        }
        self.push(&session, message).await?;
        let timeout = self.settings.init_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(SessionError::Closed(id.clone())),
            Err(_) => {
                self.close_session(id).await?;
                Err(SessionError::InitTimeout(id.clone(), timeout))
            }
        }
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, SessionError> {
        Ok(self.map.read().unwrap_or_else(PoisonError::into_inner).contains_key(id))
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), SessionError> {
        self.remove(id);
        Ok(())
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, SessionError> {
        let session = self.get(id)?;
        let replay = self.settings.replay;
        let (stream, rx, reused) = {
            let mut routes = lock(&session.routes);
            routes.evict_answered(self.settings.answered_ttl);
            routes.last_active = Instant::now();
            let stream = routes.next_stream;
            routes.next_stream += 1;
            let mut feed = Feed::new(Some(stream), 0);
            let rx = feed.attach(None);
            feed.push(ServerSseMessage::retry(self.settings.retry), replay);
            let mut reused = None;
            if let JsonRpcMessage::Request(r) = &message {
                if routes.by_request.contains_key(&r.id) {
                    let reason = format!(
                        "request id {} is already used by a call in flight in this session \
                         (request ids must be unique within a session); nothing ran",
                        r.id
                    );
                    let error = ErrorData::invalid_request(reason.clone(), None);
                    feed.push(
                        ServerSseMessage::from_message(ServerJsonRpcMessage::error(error, Some(r.id.clone()))),
                        replay,
                    );
                    reused = Some(reason);
                } else {
                    let token = r.request.get_meta().get_progress_token();
                    routes.by_request.insert(r.id.clone(), stream);
                    if let Some(token) = &token {
                        routes.by_progress.insert(token.clone(), stream);
                    }
                    feed.call = Some((r.id.clone(), token));
                }
            }
            // A refused request's feed is dropped here: its stream ends after the error.
            if reused.is_none() {
                routes.streams.insert(stream, feed);
            }
            (stream, rx, reused)
        };
        if let (Some(reason), JsonRpcMessage::Request(r)) = (reused, &message) {
            tracing::warn!(session = %id, %reason, "refused a request");
            self.audit_refusal(id, &r.request, &reason).await;
            return Ok(Events(rx));
        }
        if let Err(e) = self.push(&session, message).await {
            let mut routes = lock(&session.routes);
            routes.unroute(stream);
            routes.streams.remove(&stream);
            return Err(e);
        }
        Ok(Events(rx))
    }

    async fn accept_message(&self, id: &SessionId, message: ClientJsonRpcMessage) -> Result<(), SessionError> {
        let session = self.get(id)?;
        {
            let mut routes = lock(&session.routes);
            routes.last_active = Instant::now();
            if let JsonRpcMessage::Notification(n) = &message
                && let ClientNotification::CancelledNotification(c) = &n.notification
                && let Some(request) = &c.params.request_id
                && let Some(stream) = routes.by_request.get(request).copied()
            {
                // The client gave up on this call: end its stream.
                routes.unroute(stream);
                routes.streams.remove(&stream);
            }
        }
        self.push(&session, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, SessionError> {
        let session = self.get(id)?;
        let mut routes = lock(&session.routes);
        routes.last_active = Instant::now();
        Ok(Events(standalone(&mut routes, None)))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, SessionError> {
        let session = self.get(id)?;
        let unknown = || SessionError::UnknownEvent(last_event_id.clone());
        let (index, stream) = parse_event_id(&last_event_id).ok_or_else(unknown)?;
        let mut routes = lock(&session.routes);
        routes.last_active = Instant::now();
        let Some(stream) = stream else {
            return Ok(Events(standalone(&mut routes, Some(index))));
        };
        routes.evict_answered(self.settings.answered_ttl);
        let feed = routes.streams.get_mut(&stream).ok_or_else(unknown)?;
        let rx = feed.attach(Some(index));
        if feed.answered_at.is_some() {
            // Everything, answer included, is replayed: the stream ends here.
            routes.streams.remove(&stream);
        }
        Ok(Events(rx))
    }
}

/// The standalone stream for a `GET`: the stream itself, with what it missed after `after` (or
/// everything not yet delivered), when nobody holds it; else a keep-alive-only stream.
fn standalone(routes: &mut Routes, after: Option<u64>) -> mpsc::UnboundedReceiver<ServerSseMessage> {
    if routes.standalone.live() {
        const MAX_SHADOWS: usize = 32;
        routes.shadows.retain(|tx| !tx.is_closed());
        if routes.shadows.len() >= MAX_SHADOWS {
            routes.shadows.remove(0);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        routes.shadows.push(tx);
        return rx;
    }
    let after = after.or(routes.standalone.delivered);
    routes.standalone.attach(after)
}

/// The service loop's side of a session: requests in, everything the server sends routed out.
pub struct SessionTransport {
    session: Arc<Session>,
    inbound: mpsc::Receiver<ClientJsonRpcMessage>,
    replay: usize,
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
}

impl Transport<RoleServer> for SessionTransport {
    type Error = SessionError;

    fn send(
        &mut self,
        message: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), SessionError>> + Send + 'static {
        let mut routes = lock(&self.session.routes);
        let result = if routes.inbound.is_none() {
            Err(SessionError::Closed(self.session.id.clone()))
        } else {
            routes.last_active = Instant::now();
            match routes.init.take() {
                Some((id, tx))
                    if matches!(&message, JsonRpcMessage::Response(r) if r.id == id)
                        || matches!(&message, JsonRpcMessage::Error(e) if e.id.as_ref() == Some(&id)) =>
                {
                    let _ = tx.send(message);
                }
                init => {
                    routes.init = init;
                    routes.deliver(message, self.replay);
                }
            }
            Ok(())
        };
        std::future::ready(result)
    }

    fn receive(&mut self) -> impl Future<Output = Option<ClientJsonRpcMessage>> + Send {
        futures::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(m) = self.inbound.poll_recv(cx) {
                    return Poll::Ready(m);
                }
                if self.idle_timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The idle timer fired: close the session if it really is idle, else wait again.
                let routes = lock(&self.session.routes);
                let quiet_since = routes.last_active;
                let busy = !routes.by_request.is_empty();
                drop(routes);
                if !busy && quiet_since.elapsed() >= self.idle {
                    tracing::debug!(session = %self.session.id, "closing an idle session");
                    return Poll::Ready(None);
                }
                let from = if busy { Instant::now() } else { quiet_since };
                self.idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(from + self.idle));
            }
        })
    }

    fn close(&mut self) -> impl Future<Output = Result<(), SessionError>> + Send {
        lock(&self.session.routes).close();
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use serde_json::{Value, json};

    fn client(v: Value) -> ClientJsonRpcMessage {
        serde_json::from_value(v).expect("a client message")
    }

    fn server(v: Value) -> ServerJsonRpcMessage {
        serde_json::from_value(v).expect("a server message")
    }

    fn call(id: i64, progress: Option<&str>) -> ClientJsonRpcMessage {
        let mut params = json!({"name": "whoami", "arguments": {}});
        if let Some(token) = progress {
            params["_meta"] = json!({"progressToken": token});
        }
        client(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
    }

    fn answer(id: i64) -> ServerJsonRpcMessage {
        server(json!({"jsonrpc": "2.0", "id": id, "result": {"content": [], "isError": false}}))
    }

    fn progress(token: &str, n: u32) -> ServerJsonRpcMessage {
        server(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": n}}))
    }

    /// What an event carries: its id and the JSON-RPC message (`None` for a priming event).
    fn seen(e: &ServerSseMessage) -> (String, Option<Value>) {
        let message = e.message.as_deref().map(|m| serde_json::to_value(m).unwrap());
        (e.event_id.clone().unwrap_or_default(), message)
    }

    async fn next(s: &mut (impl Stream<Item = ServerSseMessage> + Unpin)) -> Option<(String, Option<Value>)> {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("the stream neither yielded nor ended")
            .map(|e| seen(&e))
    }

    /// A session past `initialize`, with its transport standing in for rmcp's service loop.
    async fn session(settings: Settings) -> (Arc<Sessions>, SessionId, SessionTransport) {
        let sessions = Arc::new(Sessions::new(settings));
        let (id, mut transport) = sessions.create_session().await.unwrap();
        let init = client(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}));
        let (answered, got) = tokio::join!(sessions.initialize_session(&id, init), async {
            let got = transport.receive().await.expect("the initialize request");
            transport
                .send(server(json!({"jsonrpc": "2.0", "id": 0, "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "serverInfo": {"name": "s", "version": "0"}}})))
                .await
                .unwrap();
            got
        });
        assert!(matches!(got, JsonRpcMessage::Request(_)));
        let answered = serde_json::to_value(answered.expect("initialize answered")).unwrap();
        assert_eq!(answered["id"], 0, "{answered}");
        (sessions, id, transport)
    }

    #[tokio::test]
    async fn a_request_reusing_an_id_in_flight_is_refused_without_reaching_the_service() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let mut first = sessions.create_stream(&id, call(7, None)).await.unwrap();
        assert!(matches!(t.receive().await, Some(JsonRpcMessage::Request(_))));

        let mut again = sessions.create_stream(&id, call(7, None)).await.unwrap();
        let (eid, m) = next(&mut again).await.unwrap();
        assert_eq!((eid.as_str(), m), ("0/1", None), "the priming event");
        let (eid, m) = next(&mut again).await.unwrap();
        let m = m.unwrap();
        assert_eq!(
            (eid.as_str(), &m["id"], &m["error"]["code"]),
            ("1/1", &json!(7), &json!(-32600))
        );
        assert_eq!(next(&mut again).await, None, "the error ends the stream");
        let nothing = tokio::time::timeout(Duration::from_millis(50), t.receive()).await;
        assert!(nothing.is_err(), "the refused request reached the service loop");

        // Call 7 is still routed to its own stream, and once answered its id may be used again.
        t.send(answer(7)).await.unwrap();
        assert_eq!(next(&mut first).await.unwrap().0, "0/0");
        let (eid, m) = next(&mut first).await.unwrap();
        assert_eq!((eid.as_str(), &m.unwrap()["result"]["isError"]), ("1/0", &json!(false)));
        let _ = sessions.create_stream(&id, call(7, None)).await.unwrap();
        assert!(matches!(t.receive().await, Some(JsonRpcMessage::Request(_))));
    }

    #[tokio::test]
    async fn a_call_stream_opens_with_a_priming_event_carries_its_progress_and_ends_with_its_answer() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let mut s = sessions.create_stream(&id, call(7, Some("p"))).await.unwrap();
        let priming = s.next().await.unwrap();
        assert_eq!(priming.event_id.as_deref(), Some("0/0"));
        assert_eq!(priming.retry, Some(Duration::from_secs(3)));
        assert!(priming.message.is_none());
        let JsonRpcMessage::Request(r) = t.receive().await.unwrap() else {
            panic!("the call reaches the service loop")
        };
        assert_eq!(r.id, RequestId::Number(7));
        t.send(progress("p", 1)).await.unwrap();
        t.send(progress("other", 1)).await.unwrap();
        t.send(answer(7)).await.unwrap();
        let (eid, m) = next(&mut s).await.unwrap();
        assert_eq!(
            (eid.as_str(), &m.unwrap()["params"]["progressToken"]),
            ("1/0", &json!("p"))
        );
        let (eid, m) = next(&mut s).await.unwrap();
        assert_eq!((eid.as_str(), &m.unwrap()["id"]), ("2/0", &json!(7)));
        assert_eq!(next(&mut s).await, None, "the answer ends the stream");

        // The progress for a token no call holds went to the standalone stream.
        let mut g = sessions.create_standalone_stream(&id).await.unwrap();
        let (eid, m) = next(&mut g).await.unwrap();
        assert_eq!(
            (eid.as_str(), &m.unwrap()["params"]["progressToken"]),
            ("1", &json!("other"))
        );

        // A second call gets a stream of its own.
        let mut s2 = sessions.create_stream(&id, call(8, None)).await.unwrap();
        assert_eq!(next(&mut s2).await.unwrap().0, "0/1");
    }

    #[tokio::test]
    async fn a_dropped_call_stream_is_resumed_from_its_last_event_id_even_after_the_answer() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let mut s = sessions.create_stream(&id, call(1, Some("p"))).await.unwrap();
        assert_eq!(next(&mut s).await.unwrap().0, "0/0");
        t.receive().await.unwrap();
        t.send(progress("p", 1)).await.unwrap();
        assert_eq!(next(&mut s).await.unwrap().0, "1/0");
        drop(s);

        // While the call runs: the resumed stream gets what came after event 0, then the rest.
        t.send(progress("p", 2)).await.unwrap();
        let mut r = sessions.resume(&id, "0/0".into()).await.unwrap();
        assert_eq!(next(&mut r).await.unwrap().0, "1/0");
        assert_eq!(next(&mut r).await.unwrap().0, "2/0");
        drop(r);

        // Answered while nobody reads: kept for a resume, which replays it and ends.
        t.send(answer(1)).await.unwrap();
        let mut r = sessions.resume(&id, "2/0".into()).await.unwrap();
        let (eid, m) = next(&mut r).await.unwrap();
        assert_eq!((eid.as_str(), &m.unwrap()["id"]), ("3/0", &json!(1)));
        assert_eq!(next(&mut r).await, None);
        assert!(
            sessions.resume(&id, "2/0".into()).await.is_err(),
            "delivered, then forgotten"
        );
        assert!(sessions.resume(&id, "0/9".into()).await.is_err(), "no such stream");
        assert!(sessions.resume(&id, "junk".into()).await.is_err());
    }

    #[tokio::test]
    async fn an_answer_nobody_resumes_is_forgotten_after_its_ttl() {
        let settings = Settings {
            answered_ttl: Duration::from_millis(50),
            ..Settings::default()
        };
        let (sessions, id, mut t) = session(settings).await;
        drop(sessions.create_stream(&id, call(1, None)).await.unwrap());
        t.receive().await.unwrap();
        t.send(answer(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(sessions.resume(&id, "0/0".into()).await.is_err());
    }

    #[tokio::test]
    async fn server_requests_ride_their_calls_stream_and_others_the_standalone_one() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let mut g = sessions.create_standalone_stream(&id).await.unwrap();
        let mut s = sessions.create_stream(&id, call(3, None)).await.unwrap();
        next(&mut s).await.unwrap();
        t.receive().await.unwrap();
        let mut ask = server(json!({"jsonrpc": "2.0", "id": 100, "method": "ping"}));
        if let JsonRpcMessage::Request(r) = &mut ask {
            r.request
                .extensions_mut()
                .insert(OriginatingRequestId(RequestId::Number(3)));
        }
        t.send(ask).await.unwrap();
        t.send(server(json!({"jsonrpc": "2.0", "id": 101, "method": "ping"})))
            .await
            .unwrap();
        let (eid, m) = next(&mut s).await.unwrap();
        assert_eq!((eid.as_str(), &m.unwrap()["id"]), ("1/0", &json!(100)));
        let (eid, m) = next(&mut g).await.unwrap();
        assert_eq!((eid.as_str(), &m.unwrap()["id"]), ("1", &json!(101)));

        // The client's answer to the server's request goes to the service loop.
        let reply = client(json!({"jsonrpc": "2.0", "id": 100, "result": {}}));
        sessions.accept_message(&id, reply).await.unwrap();
        assert!(matches!(t.receive().await.unwrap(), JsonRpcMessage::Response(_)));
    }

    #[tokio::test]
    async fn a_cancelled_call_ends_its_stream() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let mut s = sessions.create_stream(&id, call(5, None)).await.unwrap();
        next(&mut s).await.unwrap();
        t.receive().await.unwrap();
        let cancel = client(json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 5, "reason": "user"}}));
        sessions.accept_message(&id, cancel).await.unwrap();
        assert_eq!(next(&mut s).await, None);
        assert!(matches!(t.receive().await.unwrap(), JsonRpcMessage::Notification(_)));
        // A late answer finds no stream and goes nowhere harmful.
        t.send(answer(5)).await.unwrap();
    }

    #[tokio::test]
    async fn the_standalone_stream_gets_what_it_missed_and_a_second_one_only_keeps_alive() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let note = || server(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
        t.send(note()).await.unwrap();
        let mut g = sessions.create_standalone_stream(&id).await.unwrap();
        assert_eq!(next(&mut g).await.unwrap().0, "1", "sent before anyone listened");
        let mut shadow = sessions.create_standalone_stream(&id).await.unwrap();
        t.send(note()).await.unwrap();
        assert_eq!(next(&mut g).await.unwrap().0, "2");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), shadow.next())
                .await
                .is_err(),
            "the second stream carries nothing"
        );
        drop(g);
        t.send(note()).await.unwrap();
        // Reconnecting with the last id seen gets only what came after it.
        let mut again = sessions.resume(&id, "2".into()).await.unwrap();
        assert_eq!(next(&mut again).await.unwrap().0, "3");
        sessions.close_session(&id).await.unwrap();
        assert_eq!(next(&mut again).await, None);
        assert_eq!(next(&mut shadow).await, None);
    }

    #[tokio::test]
    async fn closing_a_session_ends_its_streams_and_its_service_loop() {
        let (sessions, id, mut t) = session(Settings::default()).await;
        let mut s = sessions.create_stream(&id, call(1, None)).await.unwrap();
        next(&mut s).await.unwrap();
        t.receive().await.unwrap();
        sessions.close_session(&id).await.unwrap();
        assert_eq!(next(&mut s).await, None);
        assert!(
            t.receive().await.is_none(),
            "the service loop sees the end of its input"
        );
        assert!(!sessions.has_session(&id).await.unwrap());
        assert!(sessions.create_stream(&id, call(2, None)).await.is_err());
        assert!(t.send(answer(1)).await.is_err());
    }

    #[tokio::test]
    async fn an_idle_session_is_closed_but_not_while_a_call_runs() {
        let settings = Settings {
            idle: Duration::from_millis(100),
            ..Settings::default()
        };
        let (sessions, id, mut t) = session(settings).await;
        let _s = sessions.create_stream(&id, call(1, None)).await.unwrap();
        t.receive().await.unwrap();
        // A call in flight: three idle periods pass and the session stays.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), t.receive())
                .await
                .is_err(),
            "closed with a call running"
        );
        t.send(answer(1)).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(2), t.receive()).await;
        assert!(matches!(closed, Ok(None)), "an idle session stays open");
        assert!(
            sessions.has_session(&id).await.unwrap(),
            "rmcp's close_session removes it"
        );
    }

    #[tokio::test]
    async fn a_session_belongs_to_the_principal_that_created_it() {
        let (sessions, id, _t) = session(Settings::default()).await;
        assert!(sessions.may_use(&id, "bob@example.com"), "not bound yet");
        sessions.bind(&id, "alice@example.com").unwrap();
        sessions.bind(&id, "bob@example.com").unwrap();
        assert!(sessions.may_use(&id, "alice@example.com"));
        assert!(!sessions.may_use(&id, "bob@example.com"), "the first binding holds");
        assert!(
            sessions.may_use("unknown", "bob@example.com"),
            "unknown ids are rmcp's to refuse"
        );
        sessions.close_session(&id).await.unwrap();
        assert!(sessions.may_use(&id, "bob@example.com"), "gone with its session");
    }

    #[tokio::test]
    async fn past_its_session_cap_a_principal_loses_its_oldest_idle_session_never_a_busy_one() {
        let settings = Settings {
            max_per_principal: 2,
            ..Settings::default()
        };
        let (sessions, busy, mut t) = session(settings).await;
        sessions.bind(&busy, "alice").unwrap();
        let _call = sessions.create_stream(&busy, call(1, None)).await.unwrap();
        assert!(matches!(t.receive().await, Some(JsonRpcMessage::Request(_))));
        let (idle, _ti) = sessions.create_session().await.unwrap();
        sessions.bind(&idle, "alice").unwrap();
        let (bobs, _tb) = sessions.create_session().await.unwrap();
        sessions.bind(&bobs, "bob").unwrap();
        // A third of alice's: the idle one goes, the busy one and bob's stay.
        let (third, _t3) = sessions.create_session().await.unwrap();
        sessions.bind(&third, "alice").unwrap();
        assert!(!sessions.has_session(&idle).await.unwrap());
        for id in [&busy, &bobs, &third] {
            assert!(sessions.has_session(id).await.unwrap(), "{id}");
        }
        // Make the third busy too: a fourth finds nothing idle and is itself refused.
        let _call3 = sessions.create_stream(&third, call(2, None)).await.unwrap();
        let (fourth, _t4) = sessions.create_session().await.unwrap();
        let full = sessions.bind(&fourth, "alice").unwrap_err();
        assert!(full.to_string().contains("already has 2 open"), "{full}");
        assert!(!sessions.has_session(&fourth).await.unwrap());
        assert!(sessions.has_session(&busy).await.unwrap() && sessions.has_session(&third).await.unwrap());
    }
}
