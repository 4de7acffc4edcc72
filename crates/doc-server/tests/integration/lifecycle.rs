//! The real server on a real socket: graceful drain, drain timeout, panic
//! isolation and raw request targets that bypass client-side URL handling.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get as get_route;
use doc_server::{
    AppState, CutOff, DrainEnd, Limits, Phase, ServeConfig, ServeOutcome, admin_app, app, routes,
    serve, with_middleware,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::common::{SECRET, TempDir, fixture, get, http_get, is_ready, load_state, wait_until};

struct Running {
    addr: SocketAddr,
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    stop_now: Option<oneshot::Sender<()>>,
    handle: JoinHandle<io::Result<ServeOutcome>>,
    _docs: TempDir,
}

impl Running {
    /// Starts the production router plus `extra` test-only routes (which get
    /// the same middleware) on an ephemeral port and waits until ready.
    async fn start(extra: Router<AppState>, drain_timeout: Duration) -> Self {
        let (tmp, docs) = fixture();
        let state = load_state(&docs);
        let router = with_middleware(routes().merge(extra), state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (now_tx, now_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(
            listener,
            router,
            state.clone(),
            async {
                let _ = rx.await;
            },
            async {
                // Only a send ends the drain early, not a dropped sender.
                if now_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            },
            ServeConfig {
                limits: Limits::default(),
                drain_timeout,
            },
        ));
        let ready = tokio::task::spawn_blocking(move || {
            wait_until(Duration::from_secs(5), || is_ready(addr))
        })
        .await
        .unwrap();
        assert!(ready, "server did not become ready");
        Self {
            addr,
            state,
            shutdown: Some(tx),
            stop_now: Some(now_tx),
            handle,
            _docs: tmp,
        }
    }

    fn trigger_shutdown(&mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
    }

    /// A second signal: the drain ends at once.
    fn stop_now(&mut self) {
        self.stop_now.take().unwrap().send(()).unwrap();
    }

    async fn finish(self, limit: Duration) -> ServeOutcome {
        tokio::time::timeout(limit, self.handle)
            .await
            .expect("serve() did not return in time")
            .unwrap()
            .unwrap()
    }
}

/// A handler that reports when it starts and then waits for the test to
/// release it, so "in flight" is deterministic without sleeping.
fn slow_route(started: Arc<Notify>, release: Arc<Notify>) -> Router<AppState> {
    Router::new().route(
        "/test/slow",
        get_route(move || {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                "slow done"
            }
        }),
    )
}

fn connection_refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_request() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let mut server = Running::start(
        slow_route(started.clone(), release.clone()),
        Duration::from_secs(5),
    )
    .await;
    let addr = server.addr;
    assert_eq!(server.state.phase(), Phase::Ready);

    let slow = tokio::spawn(http_get(addr, "/test/slow"));
    started.notified().await;

    let shutdown_at = Instant::now();
    server.trigger_shutdown();

    // Readiness flips as the very first step of shutdown, while the slow
    // request is still running. The listener is closing, so ask the same
    // state through the in-process router.
    let probe = app(server.state.clone());
    let mut flipped = false;
    for _ in 0..100 {
        if get(&probe, "/health/ready").await.status == 503 {
            flipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(flipped, "readiness did not turn 503");
    assert!(shutdown_at.elapsed() < Duration::from_secs(1));
    assert!(
        !slow.is_finished(),
        "slow request ended before it was released"
    );

    // New connections are refused once the listener is closed.
    let refused = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(2), || connection_refused(addr))
    })
    .await
    .unwrap();
    assert!(refused, "listener still accepting after shutdown began");
    assert!(!slow.is_finished());

    // The in-flight request still completes normally.
    release.notify_one();
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "slow done");

    assert_eq!(
        server.finish(Duration::from_secs(5)).await,
        ServeOutcome::Drained
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_does_not_block_drain() {
    let mut server = Running::start(Router::new(), Duration::from_secs(5)).await;
    let addr = server.addr;

    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(r#""status":"alive""#) {
        let n = conn.read(&mut buf).unwrap();
        assert_ne!(n, 0, "connection closed early");
        seen.extend_from_slice(&buf[..n]);
    }

    server.trigger_shutdown();
    assert_eq!(
        server.finish(Duration::from_secs(3)).await,
        ServeOutcome::Drained
    );
    // The server closed the idle connection rather than waiting on it.
    assert_eq!(conn.read(&mut buf).unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_is_reported() {
    let started = Arc::new(Notify::new());
    let never_released = Arc::new(Notify::new());
    let mut server = Running::start(
        slow_route(started.clone(), never_released),
        Duration::from_millis(200),
    )
    .await;
    let addr = server.addr;

    // Detached on purpose: the request is cut off when the test runtime ends.
    let _stuck = tokio::spawn(http_get(addr, "/test/slow"));
    started.notified().await;

    let shutdown_at = Instant::now();
    server.trigger_shutdown();
    assert_eq!(
        server.finish(Duration::from_secs(3)).await,
        ServeOutcome::CutOff(CutOff {
            by_request_timeout: 0,
            at_end: 1,
            ended: DrainEnd::Deadline
        })
    );
    let waited = shutdown_at.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_drain_at_once() {
    let started = Arc::new(Notify::new());
    let never_released = Arc::new(Notify::new());
    let mut server = Running::start(
        slow_route(started.clone(), never_released),
        Duration::from_secs(600),
    )
    .await;
    let addr = server.addr;
    let _stuck = tokio::spawn(http_get(addr, "/test/slow"));
    started.notified().await;

    server.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = Instant::now();
    server.stop_now();
    assert_eq!(
        server.finish(Duration::from_secs(3)).await,
        ServeOutcome::CutOff(CutOff {
            by_request_timeout: 0,
            at_end: 1,
            ended: DrainEnd::Signal
        })
    );
    assert!(stopped_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_500_and_server_keeps_serving() {
    async fn explode() -> &'static str {
        panic!("handler blew up")
    }
    let panicking = Router::new().route("/test/panic", get_route(explode));
    let mut server = Running::start(panicking, Duration::from_secs(5)).await;
    let addr = server.addr;

    let boom = http_get(addr, "/test/panic").await.unwrap();
    assert_eq!(boom.status, 500);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&boom.body).unwrap(),
        json!({"error": "internal server error"})
    );

    let next = http_get(addr, "/api/docs/alpha").await.unwrap();
    assert_eq!(next.status, 200);
    let again = http_get(addr, "/test/panic").await.unwrap();
    assert_eq!(again.status, 500);

    // Scraped the way the admin listener serves it, on the same state.
    let metrics = get(&admin_app(server.state.clone()), "/metrics").await.body;
    assert!(
        metrics.contains("doc_server_http_requests_total{route=\"/test/panic\",status=\"500\"} 2"),
        "{metrics}"
    );
    // The panicked requests released their in-flight slot; only the scrape
    // itself is counted.
    assert!(
        metrics.contains("doc_server_http_requests_in_flight 1\n"),
        "{metrics}"
    );

    server.trigger_shutdown();
    assert_eq!(
        server.finish(Duration::from_secs(3)).await,
        ServeOutcome::Drained
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_traversal_targets_are_404_over_tcp() {
    let mut server = Running::start(Router::new(), Duration::from_secs(5)).await;
    let addr = server.addr;
    // Sent verbatim on the request line: no client-side normalisation.
    for target in [
        "/api/docs/../secret",
        "/api/docs/../../../../etc/passwd",
        "/api/docs/%2e%2e%2fsecret",
        "/api/docs/%2e%2e%2fCargo.toml",
        "/api/docs/..%2f..%2fCargo.toml",
        "/api/docs/%2fetc%2fpasswd",
        "/api/docs/leak",
        "/../../etc/passwd",
        "http://127.0.0.1/api/docs/../secret",
    ] {
        let resp = http_get(addr, target).await.unwrap();
        assert_eq!(resp.status, 404, "{target}");
        assert!(!resp.body.contains(SECRET), "{target} leaked the secret");
        assert!(!resp.body.contains("root:"), "{target} leaked /etc/passwd");
    }
    let ok = http_get(addr, "/api/docs/alpha").await.unwrap();
    assert_eq!(ok.status, 200);

    server.trigger_shutdown();
    assert_eq!(
        server.finish(Duration::from_secs(3)).await,
        ServeOutcome::Drained
    );
}
