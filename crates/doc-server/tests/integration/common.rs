use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{fs, io};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use doc_server::{AppState, DocStore, client};
use tower::ServiceExt;

/// A scratch directory removed on drop. Hand-rolled to avoid a dependency
/// for a dozen lines.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "doc-server-test-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub const SECRET: &str = "TOP-SECRET-DO-NOT-SERVE";

/// `<tmp>/docs` holds three servable docs plus files that must be skipped;
/// `<tmp>/secret.md` sits next to it and must never be reachable.
pub fn fixture() -> (TempDir, PathBuf) {
    let tmp = TempDir::new();
    let docs = tmp.path().join("docs");
    fs::create_dir(&docs).unwrap();
    fs::write(
        docs.join("alpha.md"),
        "# Alpha\n\nThe first document mentions Kubernetes probes.\n",
    )
    .unwrap();
    fs::write(
        docs.join("beta-guide.md"),
        "# Beta Guide\n\nHow to configure PORT.\n",
    )
    .unwrap();
    fs::write(docs.join("notes_2024.md"), "No heading here, just notes.\n").unwrap();
    fs::write(docs.join("Bad Name.md"), "# Skipped\n").unwrap();
    fs::write(docs.join("readme.txt"), "not markdown\n").unwrap();
    fs::create_dir(docs.join("sub")).unwrap();
    fs::write(docs.join("sub").join("nested.md"), "# Nested\n").unwrap();
    fs::write(
        tmp.path().join("secret.md"),
        format!("# Secret\n{SECRET}\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret.md"), docs.join("leak.md")).unwrap();
    std::os::unix::fs::symlink("alpha.md", docs.join("alias.md")).unwrap();
    (tmp, docs)
}

pub fn load_state(docs: &Path) -> AppState {
    let (store, _skipped) = DocStore::load(docs).unwrap();
    AppState::new(store)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Runs one request through the router in-process.
pub async fn call(router: &Router, method: &str, uri: &str) -> Reply {
    call_with(router, method, uri, &[]).await
}

/// Runs one request with extra headers through the router in-process.
pub async fn call_with(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Body::empty()).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

pub async fn get(router: &Router, uri: &str) -> Reply {
    call(router, "GET", uri).await
}

/// A real HTTP request over TCP, off the async runtime.
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<client::Response> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || client::get(addr, &path, Duration::from_secs(5)))
        .await
        .unwrap()
}

/// Polls `check` every few milliseconds until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn is_ready(addr: SocketAddr) -> bool {
    client::get(addr, "/health/ready", Duration::from_millis(500)).is_ok_and(|r| r.status == 200)
}
