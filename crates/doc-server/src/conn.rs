//! The accept loops and the life of each connection: header, idle and
//! request timeouts, the connection limits, and a drain that waits only for
//! real requests and says when one was cut off.
//!
//! `axum::serve` builds hyper's connections without a timer, so nothing
//! times out a client that sends its headers slowly, and its graceful
//! shutdown waits for such a client as if it were a request. Here every
//! connection is driven by hyper's HTTP/1 connection directly and watched
//! by a small state machine ([`Track`]) fed by the socket and the service:
//!
//! ```text
//! accept ──> Head ──head parsed──> Request ──response flushed──> Idle
//!             ^                       │                           │
//!             │                       └─ next head already begun ─┤
//!             └────────────────── first byte ─────────────────────┘
//! ```
//!
//! `Head` is bounded by the header-read timeout, `Request` (until the last
//! byte of the response left the buffer) by the request timeout, `Idle` by
//! the idle timeout. A head that began while the previous answer was being
//! written (pipelined, or sent in the same packet) is `Head` from the end of
//! that answer, never `Idle`. On drain, a connection outside `Request` is
//! closed at once; one inside it finishes its response first.
//!
//! Two listeners use this: the public one ([`serve`]), which drains, and
//! the admin one ([`serve_admin`]), which answers probes and scrapes until
//! the process ends.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, Uri, header};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Limits;
use crate::log;
use crate::metrics::{Closed, Listener};
use crate::server::{AppState, Phase};

/// What [`serve`] needs besides the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    pub limits: Limits,
    /// How long in-flight requests may take to finish after shutdown began.
    pub drain_timeout: Duration,
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// Every request that had started finished; idle and half-sent
    /// connections were closed.
    Drained,
    /// Requests were cut off during the drain.
    CutOff(CutOff),
}

/// The requests a drain cut off, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutOff {
    /// Requests whose own request timeout passed during the drain, their
    /// answer not yet written.
    pub by_request_timeout: usize,
    /// Requests still running when the drain ended.
    pub at_end: usize,
    pub ended: DrainEnd,
}

/// What ended a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every connection had closed.
    AllClosed,
    /// `drain_timeout` passed.
    Deadline,
    /// A second shutdown signal.
    Signal,
}

impl CutOff {
    #[must_use]
    pub fn total(&self) -> usize {
        self.by_request_timeout + self.at_end
    }
}

impl fmt::Display for CutOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} request(s) cut off during the drain", self.total())?;
        let mut parts = Vec::new();
        if self.by_request_timeout > 0 {
            parts.push(format!(
                "{} by their request timeout",
                self.by_request_timeout
            ));
        }
        if self.at_end > 0 {
            parts.push(format!(
                "{} still running when {}",
                self.at_end,
                match self.ended {
                    DrainEnd::Deadline => "the drain timeout passed",
                    DrainEnd::Signal => "a second signal ended the drain",
                    DrainEnd::AllClosed => "the drain ended",
                }
            ));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Serves the public `app` on `listener` until `shutdown` resolves, then
/// drains until every request finished, `config.drain_timeout` passed, or
/// `stop_now` resolves (a second signal), whichever comes first.
///
/// On shutdown the state flips to [`Phase::Draining`] first (so readiness
/// probes fail and load balancers stop routing here), then the listener is
/// closed, connections between requests are closed, and requests already
/// started may finish. A request the drain cuts off (its own timeout, the
/// deadline, or `stop_now`) is counted in the outcome.
///
/// # Errors
/// None today; the `Result` keeps room for fatal listener errors.
pub async fn serve<F, G>(
    listener: TcpListener,
    app: Router,
    state: AppState,
    shutdown: F,
    stop_now: G,
    config: ServeConfig,
) -> io::Result<ServeOutcome>
where
    F: Future<Output = ()> + Send + 'static,
    G: Future<Output = ()> + Send + 'static,
{
    let shared = Arc::new(Shared::new(
        app,
        state.clone(),
        config.limits,
        Listener::Public,
    ));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    state.mark_ready();
    accept_until(&listener, &shared, &mut tasks, &drain_rx, shutdown).await;

    state.mark_draining();
    drop(listener);
    log(format_args!(
        "shutdown started: readiness is now 503, draining in-flight requests (timeout {}s; a second signal ends it at once)",
        config.drain_timeout.as_secs_f64()
    ));
    let _ = drain_tx.send(true);
    let ended = tokio::select! {
        () = async { while tasks.join_next().await.is_some() {} } => DrainEnd::AllClosed,
        () = tokio::time::sleep(config.drain_timeout) => DrainEnd::Deadline,
        () = stop_now => DrainEnd::Signal,
    };
    tasks.abort_all();
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // Read after the tasks are gone: a request that ended by its own
    // timeout left `in_flight` before it was counted, so none counts twice.
    let cut = CutOff {
        by_request_timeout: shared.cut_by_timeout.load(Ordering::SeqCst),
        at_end: shared.in_flight.load(Ordering::SeqCst),
        ended,
    };
    Ok(if cut.total() == 0 {
        ServeOutcome::Drained
    } else {
        ServeOutcome::CutOff(cut)
    })
}

/// Serves the admin `app` (probes, metrics) on `listener` with `limits`
/// until `stop` resolves, then closes its connections at once. It never
/// drains: readiness must keep answering "draining" while the public
/// listener drains.
///
/// # Errors
/// None today; the `Result` keeps room for fatal listener errors.
pub async fn serve_admin<F>(
    listener: TcpListener,
    app: Router,
    state: AppState,
    stop: F,
    limits: Limits,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let shared = Arc::new(Shared::new(app, state, limits, Listener::Admin));
    let (_never, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    accept_until(&listener, &shared, &mut tasks, &drain_rx, stop).await;
    tasks.abort_all();
    Ok(())
}

/// Accepts connections within the listener's limit until `stop` resolves.
async fn accept_until<F: Future<Output = ()>>(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    drain: &watch::Receiver<bool>,
    stop: F,
) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
    let mut stop = pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                        let _ = stream.set_nodelay(true);
                        tasks.spawn(drive(stream, Arc::clone(shared), drain.clone(), permit));
                    } else {
                        // Dropping the socket closes it at once: refused
                        // quickly rather than queued behind the flood.
                        shared.state.metrics().record_closed(shared.listener, Closed::OverLimit);
                    }
                }
                // Out of file descriptors and the like: keep serving the
                // connections already open, and try again shortly.
                Err(err) => {
                    log(format_args!("accept failed on the {} listener: {err}", shared.listener.label()));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// What every connection of one listener shares.
struct Shared {
    app: Router,
    state: AppState,
    limits: Limits,
    listener: Listener,
    /// Requests between a complete head and a flushed response.
    in_flight: AtomicUsize,
    /// Requests whose request timeout passed while draining.
    cut_by_timeout: AtomicUsize,
}

impl Shared {
    fn new(app: Router, state: AppState, limits: Limits, listener: Listener) -> Self {
        Self {
            app,
            state,
            limits,
            listener,
            in_flight: AtomicUsize::new(0),
            cut_by_timeout: AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for (the rest of) a request head.
    Head,
    /// A request is being answered, until its response is flushed.
    Request,
    /// Keep-alive, between requests, nothing received yet.
    Idle,
}

/// Where the bytes read so far stand against request heads: whether the
/// last one read is complete. A head ends at an empty line; empty lines
/// before a request line are skipped, as the parser skips them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Every head read so far is complete.
    Between,
    /// Inside a line of a head.
    InLine,
    /// At the start of a line of a head.
    LineStart,
    /// After a `\r` at the start of a line.
    LineStartCr,
}

impl Scan {
    fn feed(mut self, mut bytes: &[u8]) -> Self {
        while let Some((&b, rest)) = bytes.split_first() {
            if self == Self::InLine {
                let Some(i) = memchr::memchr(b'\n', bytes) else {
                    return Self::InLine;
                };
                bytes = &bytes[i + 1..];
                self = Self::LineStart;
                continue;
            }
            self = match (self, b) {
                (Self::Between, b'\r' | b'\n') | (Self::LineStart | Self::LineStartCr, b'\n') => {
                    Self::Between
                }
                (Self::LineStart, b'\r') => Self::LineStartCr,
                _ => Self::InLine,
            };
            bytes = rest;
        }
        self
    }
}

/// One connection's state. Pure: every event carries the time it happened,
/// so the unit tests drive it with a clock of their own.
#[derive(Debug, Clone)]
struct Track {
    stage: Stage,
    since: Instant,
    /// The response body was handed to hyper completely.
    body_done: bool,
    scan: Scan,
}

impl Track {
    fn new(now: Instant) -> Self {
        Self {
            stage: Stage::Head,
            since: now,
            body_done: false,
            scan: Scan::Between,
        }
    }

    fn on_read(&mut self, bytes: &[u8], now: Instant) {
        self.scan = self.scan.feed(bytes);
        if self.stage == Stage::Idle {
            self.stage = Stage::Head;
            self.since = now;
        }
    }

    /// hyper parsed a head and called the service; whether a request began
    /// (rather than one already running).
    fn on_request(&mut self, now: Instant) -> bool {
        let began = self.stage != Stage::Request;
        self.stage = Stage::Request;
        self.since = now;
        self.body_done = false;
        began
    }

    fn on_body_done(&mut self) {
        self.body_done = true;
    }

    /// hyper flushes the socket only once its write buffer is empty, so a
    /// flush after the body ended means the response is out. Returns
    /// whether a request ended.
    fn on_flush(&mut self, now: Instant) -> bool {
        if self.stage != Stage::Request || !self.body_done {
            return false;
        }
        // Bytes past the last complete head are the next head, begun while
        // this answer was written: it gets the header timeout from now.
        self.stage = if self.scan == Scan::Between {
            Stage::Idle
        } else {
            Stage::Head
        };
        self.since = now;
        true
    }

    fn deadline(&self, limits: &Limits) -> Instant {
        self.since
            + match self.stage {
                Stage::Head => limits.header_read_timeout,
                Stage::Request => limits.request_timeout,
                Stage::Idle => limits.idle_timeout,
            }
    }

    /// The connection is going away; whether a request was still running.
    fn close(&mut self) -> bool {
        let running = self.stage == Stage::Request;
        self.stage = Stage::Idle;
        running
    }
}

/// [`Track`] behind a lock, with the request it is answering (for the log
/// line of a request cut off by the drain). Updated by the connection's
/// socket, service and bodies, which all run inside the connection's task,
/// so the lock is never contended; it is there to make the sharing `Send`.
struct Conn {
    track: Mutex<(Track, Option<(Method, Uri)>)>,
    shared: Arc<Shared>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Track, Option<(Method, Uri)>)> {
        self.track.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_read(&self, bytes: &[u8]) {
        self.lock().0.on_read(bytes, Instant::now());
    }

    fn on_request(&self, method: &Method, uri: &Uri) {
        let mut t = self.lock();
        if t.0.on_request(Instant::now()) {
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        t.1 = Some((method.clone(), uri.clone()));
    }

    fn on_body_done(&self) {
        self.lock().0.on_body_done();
    }

    fn on_flush(&self) {
        if self.lock().0.on_flush(Instant::now()) {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn snapshot(&self) -> (Stage, Instant) {
        let t = self.lock();
        (t.0.stage, t.0.deadline(&self.shared.limits))
    }

    /// The connection is going away; a request still running is cut off.
    /// Returns that request, if any.
    fn close(&self) -> Option<String> {
        let mut t = self.lock();
        if !t.0.close() {
            return None;
        }
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        Some(t.1.as_ref().map_or_else(String::new, |(method, uri)| {
            // The path is the client's: escaped and cut, so it cannot
            // forge or flood log lines.
            let path: String = uri.path().chars().take(120).collect();
            format!("{method} {}", path.escape_debug())
        }))
    }
}

/// How a connection ended, when it was not by the client or hyper.
enum End {
    Finished,
    Drained,
    TimedOut { stage: Stage, draining: bool },
}

async fn drive<S>(
    stream: S,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = shared.state.metrics();
    let _open = metrics.track_connection(shared.listener);
    let limits = shared.limits;
    let conn = Arc::new(Conn {
        track: Mutex::new((Track::new(Instant::now()), None)),
        shared: Arc::clone(&shared),
    });
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        conn: Arc::clone(&conn),
    });
    let service = ConnService {
        conn: Arc::clone(&conn),
    };
    let mut builder = http1::Builder::new();
    // The read buffer is where a request head accumulates: bounding it
    // bounds what a half-sent head can cost (hyper answers 431 beyond it).
    builder.max_buf_size(limits.max_header_bytes);
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut timer = pin!(tokio::time::sleep_until(
        Instant::now() + limits.header_read_timeout
    ));
    let mut drain_started = pin!(async move {
        let _ = drain.wait_for(|&d| d).await;
    });
    let mut draining = false;

    let end = poll_fn(|cx| {
        loop {
            // State changes happen only while hyper runs, so it is polled
            // first and the stage read right after is current.
            if connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Finished);
            }
            if !draining && drain_started.as_mut().poll(cx).is_ready() {
                draining = true;
            }
            let (stage, deadline) = conn.snapshot();
            if draining && stage != Stage::Request {
                return Poll::Ready(End::Drained);
            }
            if Instant::now() >= deadline {
                return Poll::Ready(End::TimedOut { stage, draining });
            }
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await;

    let cut = conn.close();
    if let End::TimedOut { stage, draining } = end {
        metrics.record_closed(
            shared.listener,
            match stage {
                Stage::Head => Closed::HeaderTimeout,
                Stage::Request => Closed::RequestTimeout,
                Stage::Idle => Closed::IdleTimeout,
            },
        );
        if let (Some(request), true) = (cut, draining) {
            shared.cut_by_timeout.fetch_add(1, Ordering::SeqCst);
            log(format_args!(
                "cut off {request} during the drain: its request timeout ({}s) passed before its answer was written",
                limits.request_timeout.as_secs()
            ));
        }
    }
    // Dropping the connection closes the socket.
}

/// The socket, reporting reads and flushes to the connection's state.
struct TrackedIo<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            this.conn.on_flush();
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service for one connection.
#[derive(Clone)]
struct ConnService {
    conn: Arc<Conn>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.conn.on_request(req.method(), req.uri());
        let done = BodyDone(Arc::clone(&self.conn));
        let shared = Arc::clone(&self.conn.shared);
        let mut app = shared.app.clone();
        Box::pin(async move {
            let Ok(resp) = tower_service::Service::call(&mut app, req).await;
            // While draining, tell keep-alive clients not to send another
            // request on this connection.
            let close = shared.state.phase() == Phase::Draining;
            Ok(finish(resp, done, close))
        })
    }
}

fn finish(resp: Response, done: BodyDone, close: bool) -> Response<TrackedBody> {
    let (mut parts, body) = resp.into_parts();
    if close {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Response::from_parts(
        parts,
        TrackedBody {
            inner: body,
            _done: done,
        },
    )
}

/// Marks the response body as handed over when hyper drops it.
struct BodyDone(Arc<Conn>);

impl Drop for BodyDone {
    fn drop(&mut self) {
        self.0.on_body_done();
    }
}

/// A response body that reports when hyper is done with it.
struct TrackedBody {
    inner: Body,
    _done: BodyDone,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{Doc, DocStore};
    use crate::server::app;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const SEC: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            header_read_timeout: 10 * SEC,
            request_timeout: 30 * SEC,
            idle_timeout: 60 * SEC,
            max_connections: 4,
            max_header_bytes: 16 * 1024,
        }
    }

    // The pure state machine, driven by a clock of the test's own.

    #[test]
    fn scan_finds_the_end_of_heads_across_reads() {
        let all = |parts: &[&[u8]]| parts.iter().fold(Scan::Between, |s, p| s.feed(p));
        assert_eq!(all(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), Scan::Between);
        assert_eq!(all(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]), Scan::LineStart);
        assert_eq!(
            all(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r"]),
            Scan::LineStartCr
        );
        assert_eq!(
            all(&[b"GET / HTTP/1.1\r\nHo", b"st: a\r", b"\n", b"\r", b"\n"]),
            Scan::Between
        );
        // Bare line feeds end lines too, as the parser accepts them.
        assert_eq!(all(&[b"GET / HTTP/1.1\nHost: a\n\n"]), Scan::Between);
        // Empty lines between requests do not begin a head.
        assert_eq!(all(&[b"GET / HTTP/1.1\r\n\r\n\r\n"]), Scan::Between);
        // A second head begun in the same read as the first.
        assert_eq!(
            all(&[b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\nHo"]),
            Scan::InLine
        );
        assert_eq!(
            all(&[b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n"]),
            Scan::Between
        );
    }

    #[test]
    fn each_stage_has_its_own_deadline() {
        let l = limits();
        let t0 = Instant::now();
        let mut t = Track::new(t0);
        // Accepted, nothing sent: the head is due from the accept.
        assert_eq!((t.stage, t.deadline(&l)), (Stage::Head, t0 + 10 * SEC));
        // Bytes of the head do not move its deadline.
        t.on_read(b"GET / HTTP/1.1\r\n", t0 + 3 * SEC);
        assert_eq!(t.deadline(&l), t0 + 10 * SEC);
        t.on_read(b"\r\n", t0 + 4 * SEC);
        assert!(t.on_request(t0 + 4 * SEC));
        assert_eq!((t.stage, t.deadline(&l)), (Stage::Request, t0 + 34 * SEC));
        // The body handed over is not the answer written.
        assert!(!t.on_flush(t0 + 5 * SEC));
        t.on_body_done();
        assert!(t.on_flush(t0 + 6 * SEC));
        assert_eq!((t.stage, t.deadline(&l)), (Stage::Idle, t0 + 66 * SEC));
        // The next head's first byte starts its own header timeout.
        t.on_read(b"GET", t0 + 20 * SEC);
        assert_eq!((t.stage, t.deadline(&l)), (Stage::Head, t0 + 30 * SEC));
        assert!(!t.close(), "no request was running");
    }

    #[test]
    fn a_head_begun_during_an_answer_is_held_to_the_header_timeout() {
        let l = limits();
        let t0 = Instant::now();
        let mut t = Track::new(t0);
        // One read holds a whole head and the start of the next.
        t.on_read(
            b"GET / HTTP/1.1\r\n\r\nGET /api/docs HTTP/1.1\r\nX-Slow: ",
            t0,
        );
        t.on_request(t0);
        t.on_body_done();
        assert!(t.on_flush(t0 + 2 * SEC));
        assert_eq!((t.stage, t.deadline(&l)), (Stage::Head, t0 + 12 * SEC));

        // Bytes during the answer that complete the next head: idle after.
        let mut t = Track::new(t0);
        t.on_read(b"GET / HTTP/1.1\r\n\r\n", t0);
        t.on_request(t0);
        t.on_read(b"GET /x HTTP/1.1\r\n\r\n", t0 + SEC);
        t.on_body_done();
        assert!(t.on_flush(t0 + 2 * SEC));
        assert_eq!(t.stage, Stage::Idle);
    }

    #[test]
    fn a_request_running_when_the_connection_closes_is_reported() {
        let t0 = Instant::now();
        let mut t = Track::new(t0);
        t.on_read(b"GET / HTTP/1.1\r\n\r\n", t0);
        assert!(t.on_request(t0));
        assert!(t.close());
        assert!(!t.close(), "reported once");
    }

    // hyper's real connection over an in-memory pipe, under tokio's paused
    // clock: time moves only when every task waits, straight to the next
    // timer, so the timeouts are exact and nothing sleeps.

    struct Harness {
        shared: Arc<Shared>,
        drain: watch::Sender<bool>,
    }

    fn harness(limits: Limits) -> Harness {
        let docs = DocStore::from_docs([
            Doc::new("small".into(), "# Small\nhello".into()),
            // JSON escapes each control character to six bytes: 600 KiB
            // of answer, far more than the pipe below holds.
            Doc::new("big".into(), "\u{1}".repeat(100 * 1024)),
        ]);
        let state = AppState::new(docs);
        state.mark_ready();
        let (drain, _) = watch::channel(false);
        Harness {
            shared: Arc::new(Shared::new(
                app(state.clone()),
                state,
                limits,
                Listener::Public,
            )),
            drain,
        }
    }

    impl Harness {
        fn connect(&self) -> (DuplexStream, tokio::task::JoinHandle<()>) {
            let (client, server) = tokio::io::duplex(4096);
            let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
            let task = tokio::spawn(drive(
                server,
                Arc::clone(&self.shared),
                self.drain.subscribe(),
                permit,
            ));
            (client, task)
        }

        fn closed(&self, why: Closed) -> u64 {
            self.shared.state.metrics().closed(Listener::Public, why)
        }
    }

    /// Reads one response (head and a `content-length` body), when no
    /// other follows it.
    async fn response(client: &mut DuplexStream) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse().unwrap());
                if body.len() >= len {
                    return text;
                }
            }
            let n = client.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed before a whole response: {text:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits for the server to close the connection; how long it took.
    async fn closed_after(client: &mut DuplexStream) -> Duration {
        let from = Instant::now();
        let mut buf = [0u8; 4096];
        while client.read(&mut buf).await.unwrap_or(0) > 0 {}
        from.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_sent_head_is_closed_at_the_header_timeout() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(b"GET /api/docs HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        assert_eq!(closed_after(&mut client).await, 10 * SEC);
        task.await.unwrap();
        assert_eq!(h.closed(Closed::HeaderTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_connection_is_closed_at_the_idle_timeout() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert!(response(&mut client).await.starts_with("HTTP/1.1 200"));
        assert_eq!(closed_after(&mut client).await, 60 * SEC);
        task.await.unwrap();
        assert_eq!(h.closed(Closed::IdleTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_gets_the_header_timeout_from_its_first_byte() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        response(&mut client).await;
        tokio::time::sleep(45 * SEC).await;
        client
            .write_all(b"GET /api/docs HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(closed_after(&mut client).await, 10 * SEC);
        task.await.unwrap();
        assert_eq!(h.closed(Closed::HeaderTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_second_head_sent_with_the_first_is_held_to_the_header_timeout() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(
                b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\nGET /api/docs HTTP/1.1\r\nX-Slow: ",
            )
            .await
            .unwrap();
        assert!(response(&mut client).await.starts_with("HTTP/1.1 200"));
        // Not the 60 s idle timeout.
        assert_eq!(closed_after(&mut client).await, 10 * SEC);
        task.await.unwrap();
        assert_eq!(h.closed(Closed::HeaderTimeout), 1);
        assert_eq!(h.closed(Closed::IdleTimeout), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_are_both_answered_then_idle() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\nGET /api/docs/small HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // Both answers, in order (possibly in one read).
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("\"slug\":\"small\"") {
            let n = client.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed early: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.find("alive") < seen.find("\"small\""), "{seen}");
        assert_eq!(closed_after(&mut client).await, 60 * SEC);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_closed_at_the_request_timeout() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(b"GET /api/docs/big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let from = Instant::now();
        task.await.unwrap();
        assert_eq!(from.elapsed(), 30 * SEC);
        assert_eq!(h.closed(Closed::RequestTimeout), 1);
        assert_eq!(h.shared.in_flight.load(Ordering::SeqCst), 0);
        // Not a drain: nothing counts as cut off.
        assert_eq!(h.shared.cut_by_timeout.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_connections_between_requests_at_once() {
        let h = harness(limits());
        let (mut idle, idle_task) = h.connect();
        idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        response(&mut idle).await;
        let (mut half, half_task) = h.connect();
        half.write_all(b"GET /api/docs HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(SEC).await;
        h.drain.send(true).unwrap();
        assert_eq!(closed_after(&mut idle).await, Duration::ZERO);
        assert_eq!(closed_after(&mut half).await, Duration::ZERO);
        idle_task.await.unwrap();
        half_task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_timeout_passes_during_the_drain_is_cut_off() {
        let h = harness(limits());
        let (mut slow, task) = h.connect();
        slow.write_all(b"GET /api/docs/big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(5 * SEC).await;
        h.drain.send(true).unwrap();
        // The drain waits for the request, whose own timeout then ends it.
        tokio::time::sleep(20 * SEC).await;
        assert!(!task.is_finished());
        let from = Instant::now();
        task.await.unwrap();
        assert_eq!(from.elapsed(), 5 * SEC);
        assert_eq!(h.shared.cut_by_timeout.load(Ordering::SeqCst), 1);
        assert_eq!(h.shared.in_flight.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_during_the_drain_ends_its_connection() {
        let h = harness(limits());
        let (mut client, task) = h.connect();
        client
            .write_all(b"GET /api/docs/big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(SEC).await;
        h.drain.send(true).unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        task.await.unwrap();
        let text = String::from_utf8_lossy(&all);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            body.len(),
            6 * 100 * 1024 + r#"{"slug":"big","title":"big","content":""}"#.len()
        );
        assert_eq!(h.shared.cut_by_timeout.load(Ordering::SeqCst), 0);
        assert_eq!(h.shared.in_flight.load(Ordering::SeqCst), 0);
    }
}
