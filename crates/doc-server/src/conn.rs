//! The accept loop and the life of each connection: header, idle and
//! request timeouts, the connection limit, and a drain that waits only for
//! real requests.
//!
//! `axum::serve` builds hyper's connections without a timer, so nothing
//! times out a client that sends its headers slowly, and its graceful
//! shutdown waits for such a client as if it were a request. Here every
//! connection is driven by hyper's HTTP/1 connection directly and watched
//! by a small state machine fed by the socket and the service:
//!
//! ```text
//! accept ──> Head ──head parsed──> Request ──response flushed──> Idle
//!             ^                                                   │
//!             └────────────────── first byte ────────────────────┘
//! ```
//!
//! `Head` is bounded by the header-read timeout, `Request` (until the last
//! byte of the response left the buffer) by the request timeout, `Idle` by
//! the idle timeout. On drain, a connection outside `Request` is closed at
//! once; one inside it finishes its response first.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Limits;
use crate::log;
use crate::metrics::Closed;
use crate::server::{AppState, Phase};

/// Connections kept for `/health/*` once `max_connections` are open, so the
/// kubelet's probes still get an answer while the server is flooded.
pub const RESERVED_PROBE_CONNECTIONS: usize = 16;
/// Header-read timeout on a reserved probe connection: a probe sends its
/// request at once, a flood should not hold the reserve.
const PROBE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The drain timeout expired with this many requests still running;
    /// they were cut off.
    DrainTimedOut { cut_off: usize },
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
///
/// On shutdown the state flips to [`Phase::Draining`] first (so readiness
/// probes fail and load balancers stop routing here), then the listener is
/// closed, connections between requests are closed, and requests already
/// started may finish for up to `config.drain_timeout`.
///
/// # Errors
/// None today; the `Result` keeps room for fatal listener errors.
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    state: AppState,
    shutdown: F,
    config: ServeConfig,
) -> io::Result<ServeOutcome>
where
    F: Future<Output = ()> + Send + 'static,
{
    let shared = Arc::new(Shared {
        app,
        state: state.clone(),
        limits: config.limits,
        in_flight: AtomicUsize::new(0),
    });
    let (drain_tx, drain_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(config.limits.max_connections));
    let reserve = Arc::new(Semaphore::new(RESERVED_PROBE_CONNECTIONS));
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    state.mark_ready();

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let permit = match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => Some((permit, false)),
                        Err(_) => Arc::clone(&reserve).try_acquire_owned().ok().map(|p| (p, true)),
                    };
                    if let Some((permit, probe_only)) = permit {
                        let _ = stream.set_nodelay(true);
                        tasks.spawn(drive(stream, Arc::clone(&shared), probe_only, drain_rx.clone(), permit));
                    } else {
                        // Dropping the socket closes it at once: refused
                        // quickly rather than queued behind the flood.
                        state.metrics().record_closed(Closed::OverLimit);
                    }
                }
                // Out of file descriptors and the like: keep serving the
                // connections already open, and try again shortly.
                Err(err) => {
                    log(format_args!("accept failed: {err}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }

    state.mark_draining();
    drop(listener);
    log(format_args!(
        "shutdown started: readiness is now 503, draining in-flight requests (timeout {}s)",
        config.drain_timeout.as_secs_f64()
    ));
    let _ = drain_tx.send(true);
    let all_closed = tokio::time::timeout(config.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if all_closed {
        return Ok(ServeOutcome::Drained);
    }
    let cut_off = shared.in_flight.load(Ordering::SeqCst);
    tasks.abort_all();
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(if cut_off == 0 {
        ServeOutcome::Drained
    } else {
        ServeOutcome::DrainTimedOut { cut_off }
    })
}

/// What every connection shares.
struct Shared {
    app: Router,
    state: AppState,
    limits: Limits,
    /// Requests between a complete head and a flushed response.
    in_flight: AtomicUsize,
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

struct Track {
    stage: Stage,
    since: Instant,
    /// The response body was handed to hyper completely.
    body_done: bool,
    /// Bytes arrived while the request ran: the next head has begun.
    read_during_request: bool,
}

/// One connection's state, updated by its socket, service and bodies. All
/// of them run inside the connection's task, so the lock is never
/// contended; it is there to make the sharing `Send`.
struct Conn {
    track: Mutex<Track>,
    shared: Arc<Shared>,
}

impl Conn {
    fn track(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_read(&self) {
        let mut t = self.track();
        match t.stage {
            Stage::Idle => {
                t.stage = Stage::Head;
                t.since = Instant::now();
            }
            Stage::Request => t.read_during_request = true,
            Stage::Head => {}
        }
    }

    fn on_request(&self) {
        let mut t = self.track();
        if t.stage != Stage::Request {
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        *t = Track {
            stage: Stage::Request,
            since: Instant::now(),
            body_done: false,
            read_during_request: false,
        };
    }

    fn on_body_done(&self) {
        self.track().body_done = true;
    }

    /// hyper flushes the socket only once its write buffer is empty, so a
    /// flush after the body ended means the response is out.
    fn on_flush(&self) {
        let mut t = self.track();
        if t.stage == Stage::Request && t.body_done {
            t.stage = if t.read_during_request {
                Stage::Head
            } else {
                Stage::Idle
            };
            t.since = Instant::now();
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn snapshot(&self) -> (Stage, Instant) {
        let t = self.track();
        (t.stage, t.since)
    }

    /// The connection is going away; a request still running is cut off.
    fn close(&self) {
        let mut t = self.track();
        if t.stage == Stage::Request {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        t.stage = Stage::Idle;
    }
}

/// How a connection ended, when it was not by the client or hyper.
enum End {
    Finished,
    Drained,
    TimedOut(Stage),
}

async fn drive(
    stream: TcpStream,
    shared: Arc<Shared>,
    probe_only: bool,
    mut drain: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let metrics = shared.state.clone();
    let _open = metrics.metrics().track_connection();
    let limits = shared.limits;
    let head_timeout = if probe_only {
        limits.header_read_timeout.min(PROBE_HEADER_TIMEOUT)
    } else {
        limits.header_read_timeout
    };
    let conn = Arc::new(Conn {
        track: Mutex::new(Track {
            stage: Stage::Head,
            since: Instant::now(),
            body_done: false,
            read_during_request: false,
        }),
        shared: Arc::clone(&shared),
    });
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        conn: Arc::clone(&conn),
    });
    let service = ConnService {
        conn: Arc::clone(&conn),
        probe_only,
    };
    let mut builder = http1::Builder::new();
    // The read buffer is where a request head accumulates: bounding it
    // bounds what a half-sent head can cost (hyper answers 431 beyond it).
    builder.max_buf_size(limits.max_header_bytes);
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut timer = pin!(tokio::time::sleep_until(Instant::now() + head_timeout));
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
            let (stage, since) = conn.snapshot();
            if draining && stage != Stage::Request {
                return Poll::Ready(End::Drained);
            }
            let deadline = since
                + match stage {
                    Stage::Head => head_timeout,
                    Stage::Request => limits.request_timeout,
                    Stage::Idle => limits.idle_timeout,
                };
            if Instant::now() >= deadline {
                return Poll::Ready(End::TimedOut(stage));
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

    conn.close();
    if let End::TimedOut(stage) = end {
        metrics.metrics().record_closed(match stage {
            Stage::Head => Closed::HeaderTimeout,
            Stage::Request => Closed::RequestTimeout,
            Stage::Idle => Closed::IdleTimeout,
        });
    }
    // Dropping the connection closes the socket.
}

/// The socket, reporting reads and flushes to the connection's state.
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_read();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
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
    /// A reserved connection past `max_connections`: `/health/*` only.
    probe_only: bool,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.conn.on_request();
        let done = BodyDone(Arc::clone(&self.conn));
        let shared = Arc::clone(&self.conn.shared);
        let probe_only = self.probe_only;
        if probe_only && !req.uri().path().starts_with("/health/") {
            let busy = (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                axum::Json(serde_json::json!({ "error": "too many connections, try again" })),
            )
                .into_response();
            return Box::pin(std::future::ready(Ok(finish(busy, done, true))));
        }
        let mut app = shared.app.clone();
        Box::pin(async move {
            let Ok(resp) = tower_service::Service::call(&mut app, req).await;
            // While draining, tell keep-alive clients not to send another
            // request on this connection.
            let close = probe_only || shared.state.phase() == Phase::Draining;
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
