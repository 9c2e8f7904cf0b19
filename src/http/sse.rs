//! Fewer socket writes for the SSE streams that answer MCP `POST`s on a session.
//!
//! rmcp answers a `POST` on a session (2025-06-18 and earlier) with an SSE stream: it returns
//! the response head at once, with a priming event (the event id a client resumes from), then
//! sends the JSON-RPC answer when the handler is done, then ends the stream from another task a
//! moment later. hyper writes whatever the body has ready and flushes when it has to wait, so a
//! fast call cost three writes (head + priming, answer, end of stream), each a TCP segment the
//! client wakes up for. [`coalesce`] holds the response until the stream has ended or
//! [`HOLD`] has passed, and [`Coalesced`] keeps gathering frames while the stream is
//! producing them: a fast call goes out in one write, head to end. A slow one gets its head and
//! priming event after [`HOLD`], and from then on every event is sent as soon as it arrives
//! (frames that arrive together still go together).
//!
//! Does not: change a byte of what is sent, touch other responses (JSON answers, `GET`
//! streams), or buffer without bound (a frame is at most one SSE event; the hold ends at
//! [`HOLD`]).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, header};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// How long the start of a stream may wait for more of it before it is sent anyway. Short
/// enough that a client of a long call gets its priming event (and can resume) at once in
/// human terms; long enough to cover a fast tool call.
pub const HOLD: Duration = Duration::from_millis(10);

/// `response` with its body coalesced, if it answers a `POST` with an SSE stream; else as is.
pub async fn coalesce(method: &Method, response: Response) -> Response {
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if method != Method::POST || !sse {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut body = Coalesced::new(body);
    // The head waits with the first frames, up to HOLD (even when nothing has arrived yet).
    std::future::poll_fn(|cx| body.poll_start(cx)).await;
    Response::from_parts(parts, Body::new(body))
}

/// A body that hands out what its inner body produced as one frame: everything that was ready,
/// and at the start of the stream everything that arrived within [`HOLD`].
pub struct Coalesced {
    inner: Body,
    buf: BytesMut,
    /// The start-of-stream hold; `None` once it expired or the first frame went out.
    hold: Option<Pin<Box<Sleep>>>,
    trailers: Option<HeaderMap>,
    error: Option<axum::Error>,
    ended: bool,
}

impl Coalesced {
    pub fn new(inner: Body) -> Coalesced {
        Coalesced {
            inner,
            buf: BytesMut::new(),
            hold: Some(Box::pin(tokio::time::sleep(HOLD))),
            trailers: None,
            error: None,
            ended: false,
        }
    }

    /// `Ready` when the head should go out: something is ready to send (see [`Self::poll_fill`]),
    /// or the hold expired with nothing yet.
    fn poll_start(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_fill(cx).is_ready() {
            return Poll::Ready(());
        }
        if let Some(hold) = &mut self.hold {
            ready!(hold.as_mut().poll(cx));
            self.hold = None;
        }
        Poll::Ready(())
    }

    /// Gather frames; `Ready` once something should be sent: the stream ended (or failed, or
    /// sent trailers), or data is waiting and the inner body has nothing more right now (after
    /// the hold, at the start of the stream).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.ended && self.error.is_none() && self.trailers.is_none() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
                Poll::Ready(Some(Err(e))) => self.error = Some(e),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending if self.buf.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    if let Some(hold) = &mut self.hold {
                        ready!(hold.as_mut().poll(cx));
                        self.hold = None;
                    }
                    return Poll::Ready(());
                }
            }
        }
        Poll::Ready(())
    }
}

impl HttpBody for Coalesced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx));
        if !this.buf.is_empty() {
            this.hold = None;
            return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if let Some(e) = this.error.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.buf.is_empty() && self.trailers.is_none() && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    /// An SSE response whose body frames are sent on the returned channel.
    fn streaming() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Response) {
        let (tx, mut rx) = mpsc::channel(8);
        let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .unwrap();
        (tx, response)
    }

    async fn next_frame(body: &mut Body) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    #[tokio::test]
    async fn a_fast_stream_goes_out_whole_with_its_head() {
        let (tx, response) = streaming();
        tx.send(Ok(Bytes::from_static(b"id: 0\nretry: 3000\ndata:\n\n")))
            .await
            .unwrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send(Ok(Bytes::from_static(b"data: {\"answer\":1}\n\n")))
                .await
                .unwrap();
            tokio::task::yield_now().await;
            drop(tx); // the stream ends a moment after the answer, from another task
        });
        let response = coalesce(&Method::POST, response).await;
        producer.await.unwrap();
        let mut body = response.into_body();
        assert_eq!(
            next_frame(&mut body).await.unwrap(),
            Bytes::from_static(b"id: 0\nretry: 3000\ndata:\n\ndata: {\"answer\":1}\n\n")
        );
        assert!(body.is_end_stream(), "the end is known with the last frame");
        assert_eq!(next_frame(&mut body).await, None);
    }

    #[tokio::test]
    async fn a_slow_stream_sends_its_start_after_the_hold_then_each_event_as_it_comes() {
        let (tx, response) = streaming();
        tx.send(Ok(Bytes::from_static(b"id: 0\ndata:\n\n"))).await.unwrap();
        let started = Instant::now();
        let response = coalesce(&Method::POST, response).await;
        let waited = started.elapsed();
        assert!(waited >= HOLD && waited < HOLD * 20, "head after {waited:?}");
        let mut body = response.into_body();
        assert_eq!(
            next_frame(&mut body).await.unwrap(),
            Bytes::from_static(b"id: 0\ndata:\n\n")
        );
        // After the start, an event is not held back.
        tx.send(Ok(Bytes::from_static(b"data: progress\n\n"))).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            next_frame(&mut body).await.unwrap(),
            Bytes::from_static(b"data: progress\n\n")
        );
        assert!(started.elapsed() < HOLD, "a later event waited {:?}", started.elapsed());
        tx.send(Ok(Bytes::from_static(b"data: done\n\n"))).await.unwrap();
        drop(tx);
        assert_eq!(
            next_frame(&mut body).await.unwrap(),
            Bytes::from_static(b"data: done\n\n")
        );
        assert_eq!(next_frame(&mut body).await, None);
    }

    /// A stream with nothing at all within the hold (rmcp without a priming event, a handler
    /// still running): the head goes out after the hold instead of waiting for a first event.
    #[tokio::test]
    async fn an_empty_start_sends_the_head_after_the_hold() {
        let (tx, response) = streaming();
        let started = Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(5), coalesce(&Method::POST, response))
            .await
            .expect("the head never went out");
        let waited = started.elapsed();
        assert!(waited >= HOLD && waited < HOLD * 20, "head after {waited:?}");
        let mut body = response.into_body();
        tx.send(Ok(Bytes::from_static(b"data: late\n\n"))).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            next_frame(&mut body).await.unwrap(),
            Bytes::from_static(b"data: late\n\n")
        );
        assert!(
            started.elapsed() < HOLD,
            "the first event waited {:?}",
            started.elapsed()
        );
        drop(tx);
        assert_eq!(next_frame(&mut body).await, None);
    }

    #[tokio::test]
    async fn an_error_comes_after_the_data_before_it() {
        let (tx, response) = streaming();
        tx.send(Ok(Bytes::from_static(b"data: a\n\n"))).await.unwrap();
        tx.send(Err(std::io::Error::other("broken"))).await.unwrap();
        let mut body = coalesce(&Method::POST, response).await.into_body();
        assert_eq!(next_frame(&mut body).await.unwrap(), Bytes::from_static(b"data: a\n\n"));
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn other_responses_pass_untouched() {
        // A GET stream is long-lived and a JSON answer is one frame: neither is held.
        let (_tx, response) = streaming();
        let started = Instant::now();
        let response = coalesce(&Method::GET, response).await;
        assert!(started.elapsed() < HOLD);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        let json = Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let json = coalesce(&Method::POST, json).await;
        assert_eq!(
            json.into_body().collect().await.unwrap().to_bytes(),
            Bytes::from_static(b"{}")
        );
    }
}
