//! HTTP routes and middleware. The serve loop is in [`crate::conn`].
//!
//! Two routers share one state: the public one (the API, and `/health/*`
//! for load balancers that check the service port) and the admin one
//! (`/health/*` and `/metrics`, on its own port for the kubelet and
//! Prometheus).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body::{Frame, SizeHint};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SearchLimits;
use crate::docs::{Answer, DocStore, SearchStopped};
use crate::metrics::{self, Metrics};

/// Longest accepted search query; longer ones are rejected rather than
/// scanned against every document.
pub const MAX_QUERY_LEN: usize = 256;

/// Names this service in `/health/*` answers, so `--health-check` can tell a
/// Doc Server from whatever else may be answering on the port.
pub const SERVICE_NAME: &str = "doc-server";

/// Lifecycle phase, as reported by `/health/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The server is not accepting traffic yet.
    Starting = 0,
    /// Documents are loaded and the listener is accepting.
    Ready = 1,
    /// Shutdown has begun: in-flight requests finish, no new work should be
    /// routed here.
    Draining = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Ready,
            _ => Self::Draining,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
        }
    }
}

/// Shared state handed to every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    docs: Arc<DocStore>,
    metrics: Arc<Metrics>,
    phase: Arc<AtomicU8>,
    search: Arc<SearchGate>,
}

impl AppState {
    /// Wraps already-loaded documents, with the default search limits. The
    /// state starts in [`Phase::Starting`]; [`crate::serve`] flips it to
    /// ready once it accepts.
    #[must_use]
    pub fn new(docs: DocStore) -> Self {
        Self::with_search(docs, SearchLimits::default())
    }

    #[must_use]
    pub fn with_search(docs: DocStore, search: SearchLimits) -> Self {
        Self {
            docs: Arc::new(docs),
            metrics: Arc::new(Metrics::default()),
            phase: Arc::new(AtomicU8::new(Phase::Starting as u8)),
            search: Arc::new(SearchGate {
                running: Arc::new(Semaphore::new(search.concurrency)),
                admitted: AtomicUsize::new(0),
                limits: search,
            }),
        }
    }

    #[must_use]
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// Marks the server ready, unless shutdown already began: a late
    /// "ready" must never undo "draining".
    pub fn mark_ready(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Starting as u8,
            Phase::Ready as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    pub fn mark_draining(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::SeqCst);
    }

    #[must_use]
    pub fn docs(&self) -> &DocStore {
        &self.docs
    }

    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The public routes without middleware or state. Exposed so that extra
/// routes can be merged in and still get the same middleware via
/// [`with_middleware`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/api/docs", get(list_docs))
        .route("/api/docs/{slug}", get(get_doc))
        .route("/api/search", get(search))
        .fallback(not_found)
}

/// The admin listener's routes: probes and metrics only.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
}

/// Adds panic isolation and metrics to `router` and binds it to `state`.
pub fn with_middleware(router: Router<AppState>, state: AppState) -> Router {
    router
        // After every route is added: it applies to the routes present.
        .method_not_allowed_fallback(method_not_allowed)
        // Inner layer: turn a handler panic into a 500 before the metrics
        // layer sees the response, so panics are counted as 500s.
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .with_state(state)
}

/// The public application.
pub fn app(state: AppState) -> Router {
    with_middleware(routes(), state)
}

/// The admin application.
pub fn admin_app(state: AppState) -> Router {
    with_middleware(admin_routes(), state)
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    q: Option<String>,
}

/// JSON error body: `{"error": "..."}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive", "service": SERVICE_NAME }))
}

async fn ready(State(state): State<AppState>) -> Response {
    let phase = state.phase();
    let status = if phase == Phase::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "status": phase.as_str(), "service": SERVICE_NAME })),
    )
        .into_response()
}

async fn list_docs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    prepared(state.docs().list(), &headers)
}

async fn get_doc(
    State(state): State<AppState>,
    headers: HeaderMap,
    slug: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    // A slug that does not even decode (e.g. invalid UTF-8 escapes) names no
    // document either; answering 404 keeps the contract simple.
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "document not found");
    let Path(slug) = slug.map_err(|_| not_found())?;
    let answer = state.docs().answer(&slug).ok_or_else(not_found)?;
    Ok(prepared(answer, &headers))
}

/// A prepared answer, or 304 when the client already holds it. The body
/// shares the prepared bytes: nothing is copied per request.
fn prepared(answer: &Answer, headers: &HeaderMap) -> Response {
    let etag = (header::ETAG, answer.etag.clone());
    if headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|h| answer.matches_if_none_match(h))
    {
        return (StatusCode::NOT_MODIFIED, [etag]).into_response();
    }
    (
        [(header::CONTENT_TYPE, JSON), etag],
        Body::new(Shared::new(answer.body.clone())),
    )
        .into_response()
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// How much of a shared answer is handed to hyper at once: hyper queues the
/// slices it is given without copying them, and when it cannot (an
/// unvectored socket) it copies one slice at a time, not the whole answer.
const FRAME_BYTES: usize = 64 * 1024;

/// A body that hands out slices of shared bytes.
struct Shared {
    rest: Bytes,
}

impl Shared {
    fn new(bytes: Bytes) -> Self {
        Self { rest: bytes }
    }
}

impl http_body::Body for Shared {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let rest = &mut self.get_mut().rest;
        if rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = rest.len().min(FRAME_BYTES);
        Poll::Ready(Some(Ok(Frame::data(rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// The search answer: the prepared list elements of the hits, joined into
/// a JSON array as the client reads it. What a request holds is the hits'
/// positions and one frame, however many documents matched.
struct SearchAnswer {
    docs: Arc<DocStore>,
    hits: Vec<u32>,
    next: usize,
    remaining: u64,
}

impl SearchAnswer {
    fn new(docs: Arc<DocStore>, hits: Vec<u32>) -> Self {
        let items: u64 = hits
            .iter()
            .filter_map(|&i| docs.summary(i))
            .map(|s| s.len() as u64)
            .sum();
        let commas = hits.len().saturating_sub(1) as u64;
        Self {
            docs,
            hits,
            next: 0,
            remaining: 2 + items + commas,
        }
    }
}

/// The size of one frame of a search answer.
const HITS_FRAME_BYTES: usize = 16 * 1024;

impl http_body::Body for SearchAnswer {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut frame = Vec::with_capacity(
            HITS_FRAME_BYTES.min(usize::try_from(this.remaining).unwrap_or(HITS_FRAME_BYTES)),
        );
        if this.next == 0 {
            frame.push(b'[');
        }
        while let Some(&i) = this.hits.get(this.next) {
            let item = this.docs.summary(i).map_or(&[][..], |b| &b[..]);
            if !frame.is_empty() && frame.len() + item.len() + 1 > HITS_FRAME_BYTES {
                break;
            }
            if this.next > 0 {
                frame.push(b',');
            }
            frame.extend_from_slice(item);
            this.next += 1;
        }
        if this.next == this.hits.len() {
            frame.push(b']');
            // Past the last hit, so a later poll ends the body.
            this.next += 1;
        }
        this.remaining = this.remaining.saturating_sub(frame.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(frame)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Admission to the search scan: `concurrency` run at once on the blocking
/// pool, `queue` more may wait for them, the rest are turned away at once.
struct SearchGate {
    running: Arc<Semaphore>,
    /// Searches running or waiting.
    admitted: AtomicUsize,
    limits: SearchLimits,
}

/// Holds a place among the admitted searches until dropped.
struct Admitted<'a>(&'a SearchGate);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SearchGate {
    fn admit(&self) -> Option<Admitted<'_>> {
        let cap = self.limits.concurrency + self.limits.queue;
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(self);
        (before < cap).then_some(admitted)
    }

    async fn slot(&self, deadline: tokio::time::Instant) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout_at(deadline, Arc::clone(&self.running).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// Tells a running scan that nobody waits for it any more, when the
/// request is dropped (its client left, or its connection timed out).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Searches may use every core, but never ahead of anything else: their
/// threads run at nice 10, so a probe or a document answer still gets the
/// CPU at once. Only searches run on the blocking pool, so its threads keep
/// the lower priority; raising the nice value needs no privilege.
fn lower_this_threads_priority() {
    thread_local! {
        static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !LOWERED.get() {
        // SAFETY: a plain system call on plain integers. On Linux the nice
        // value belongs to the thread, and `who` 0 names the calling one.
        // A failure leaves the thread as it was, which is only slower.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        }
        LOWERED.set(true);
    }
}

fn busy(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid query string; expected ?q=<search term>",
        )
    })?;
    let q = params.q.as_deref().map(str::trim).unwrap_or_default();
    if q.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing search term; expected ?q=<search term>",
        ));
    }
    if q.chars().count() > MAX_QUERY_LEN {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("search term is longer than {MAX_QUERY_LEN} characters"),
        ));
    }
    let gate = &state.search;
    let deadline = tokio::time::Instant::now() + gate.limits.timeout;
    let Some(_admitted) = gate.admit() else {
        return Ok(busy("too many searches at once, try again"));
    };
    let Some(slot) = gate.slot(deadline).await else {
        return Ok(busy("search timed out waiting for its turn, try again"));
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let docs = Arc::clone(&state.docs);
    let term = q.to_owned();
    let scan = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        lower_this_threads_priority();
        docs.search_until(&term, deadline.into_std(), &cancelled)
    });
    match scan.await {
        Ok(Ok(hits)) => Ok((
            [(header::CONTENT_TYPE, JSON)],
            Body::new(SearchAnswer::new(Arc::clone(&state.docs), hits)),
        )
            .into_response()),
        Ok(Err(SearchStopped::Deadline | SearchStopped::Cancelled)) => {
            Ok(busy("search took too long, try again"))
        }
        // Panicked: let the panic layer answer 500, as for any handler.
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics().render(state.docs().len()),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// Every route is GET (and HEAD, which the router derives from it); the
/// router adds the `Allow` header to what this returns.
async fn method_not_allowed(method: Method) -> Response {
    if method == Method::OPTIONS {
        return Json(serde_json::json!({ "allow": ["GET", "HEAD"] })).into_response();
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; use GET",
    )
    .into_response()
}

/// Labels by the matched route template, never the raw path, so arbitrary
/// URLs cannot create new series.
async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(metrics::UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let metrics = state.metrics();
    let _in_flight = metrics.track_in_flight();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics.record_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Turns a panicking handler into a 500 for that one request. This only
/// works because the release profile keeps `panic = "unwind"`. The panic
/// itself is reported by the process's panic hook, so it is not logged again
/// here.
async fn catch_panic(req: Request, next: Next) -> Response {
    let mut fut = pin!(next.run(req));
    std::future::poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            // The inner future is never polled again after it panicked.
            Err(_) => Poll::Ready(
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
                    .into_response(),
            ),
        }
    })
    .await
}
