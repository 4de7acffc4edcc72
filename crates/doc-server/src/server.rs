//! HTTP routes and middleware. The serve loop is in [`crate::conn`].

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Poll;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::docs::{Doc, DocStore};
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
}

impl AppState {
    /// Wraps already-loaded documents. The state starts in
    /// [`Phase::Starting`]; [`crate::serve`] flips it to ready once it accepts.
    #[must_use]
    pub fn new(docs: DocStore) -> Self {
        Self {
            docs: Arc::new(docs),
            metrics: Arc::new(Metrics::default()),
            phase: Arc::new(AtomicU8::new(Phase::Starting as u8)),
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

/// The service's routes without middleware or state. Exposed so that extra
/// routes can be merged in and still get the same middleware via
/// [`with_middleware`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/api/docs", get(list_docs))
        .route("/api/docs/{slug}", get(get_doc))
        .route("/api/search", get(search))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
}

/// Adds panic isolation and metrics to `router` and binds it to `state`.
pub fn with_middleware(router: Router<AppState>, state: AppState) -> Router {
    router
        // Inner layer: turn a handler panic into a 500 before the metrics
        // layer sees the response, so panics are counted as 500s.
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        .with_state(state)
}

/// The complete application.
pub fn app(state: AppState) -> Router {
    with_middleware(routes(), state)
}

#[derive(Debug, Serialize)]
struct DocSummary<'a> {
    slug: &'a str,
    title: &'a str,
}

impl<'a> From<&'a Doc> for DocSummary<'a> {
    fn from(doc: &'a Doc) -> Self {
        Self {
            slug: &doc.slug,
            title: &doc.title,
        }
    }
}

#[derive(Debug, Serialize)]
struct DocBody<'a> {
    slug: &'a str,
    title: &'a str,
    content: &'a str,
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

async fn list_docs(State(state): State<AppState>) -> Response {
    let list: Vec<DocSummary<'_>> = state.docs().iter().map(DocSummary::from).collect();
    Json(list).into_response()
}

async fn get_doc(
    State(state): State<AppState>,
    slug: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    // A slug that does not even decode (e.g. invalid UTF-8 escapes) names no
    // document either; answering 404 keeps the contract simple.
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "document not found");
    let Path(slug) = slug.map_err(|_| not_found())?;
    let doc = state.docs().get(&slug).ok_or_else(not_found)?;
    Ok(Json(DocBody {
        slug: &doc.slug,
        title: &doc.title,
        content: &doc.content,
    })
    .into_response())
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
    let hits: Vec<DocSummary<'_>> = state.docs().search(q).map(DocSummary::from).collect();
    Ok(Json(hits).into_response())
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
