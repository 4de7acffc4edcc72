//! Endpoint behaviour, driven in-process through the router.

use axum::http::StatusCode;
use doc_server::{AppState, DocStore, admin_app, app};
use serde_json::json;

use crate::common::{SECRET, fixture, get, load_state};

fn ready_app() -> (crate::common::TempDir, AppState, axum::Router) {
    let (tmp, docs) = fixture();
    let state = load_state(&docs);
    state.mark_ready();
    let router = app(state.clone());
    (tmp, state, router)
}

#[test]
fn loader_skips_invalid_names_and_escaping_symlinks() {
    let (_tmp, docs) = fixture();
    let (store, skipped) = DocStore::load(&docs).unwrap();
    let slugs: Vec<&str> = store.iter().map(|d| d.slug.as_str()).collect();
    // `alias.md` links to a file inside DOCS_DIR, which is fine.
    assert_eq!(slugs, ["alias", "alpha", "beta-guide", "notes_2024"]);
    let mut skipped_names: Vec<String> = skipped
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped_names.sort();
    assert_eq!(skipped_names, ["Bad Name.md", "leak.md"]);
    let leak = skipped
        .iter()
        .find(|s| s.path.ends_with("leak.md"))
        .unwrap();
    assert!(leak.reason.contains("outside DOCS_DIR"), "{}", leak.reason);
}

#[tokio::test]
async fn liveness_is_always_ok() {
    let (_tmp, docs) = fixture();
    let state = load_state(&docs);
    let router = app(state.clone());
    assert_eq!(get(&router, "/health/live").await.status, StatusCode::OK);
    state.mark_draining();
    assert_eq!(get(&router, "/health/live").await.status, StatusCode::OK);
}

#[tokio::test]
async fn readiness_follows_lifecycle() {
    let (_tmp, docs) = fixture();
    let state = load_state(&docs);
    let router = app(state.clone());

    let starting = get(&router, "/health/ready").await;
    assert_eq!(starting.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        starting.json(),
        json!({"status": "starting", "service": "doc-server"})
    );

    state.mark_ready();
    let ready = get(&router, "/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "service": "doc-server"})
    );

    state.mark_draining();
    let draining = get(&router, "/health/ready").await;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        draining.json(),
        json!({"status": "draining", "service": "doc-server"})
    );

    // Once draining, nothing may flip the server back to ready.
    state.mark_ready();
    assert_eq!(
        get(&router, "/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn lists_docs_sorted_by_slug() {
    let (_tmp, _, router) = ready_app();
    let reply = get(&router, "/api/docs").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(
        reply.json(),
        json!([
            {"slug": "alias", "title": "Alpha"},
            {"slug": "alpha", "title": "Alpha"},
            {"slug": "beta-guide", "title": "Beta Guide"},
            {"slug": "notes_2024", "title": "notes_2024"},
        ])
    );
}

#[tokio::test]
async fn fetches_one_doc() {
    let (_tmp, _, router) = ready_app();
    let reply = get(&router, "/api/docs/beta-guide").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({
            "slug": "beta-guide",
            "title": "Beta Guide",
            "content": "# Beta Guide\n\nHow to configure PORT.\n",
        })
    );
}

#[tokio::test]
async fn unknown_slug_is_json_404() {
    let (_tmp, _, router) = ready_app();
    let reply = get(&router, "/api/docs/does-not-exist").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), json!({"error": "document not found"}));
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let (_tmp, _, router) = ready_app();
    let reply = get(&router, "/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json(), json!({"error": "not found"}));
}

#[tokio::test]
async fn traversal_attempts_are_404() {
    let (_tmp, _, router) = ready_app();
    let attempts = [
        "/api/docs/../../Cargo.toml",
        "/api/docs/../secret",
        "/api/docs/%2e%2e%2fCargo.toml",
        "/api/docs/%2E%2E%2F%2E%2E%2FCargo.toml",
        "/api/docs/..%2f..%2fsecret",
        "/api/docs/..%2f..%2f",
        "/api/docs/..",
        "/api/docs/%2e%2e",
        "/api/docs/%2fetc%2fpasswd",
        "/api/docs//etc/passwd",
        "/api/docs/%5c..%5csecret",
        "/api/docs/..%5c..%5csecret",
        "/api/docs/alpha.md",
        "/api/docs/ALPHA",
        "/api/docs/leak",
        "/api/docs/secret",
        "/api/docs/sub%2fnested",
        "/api/docs/sub/nested",
        "/api/docs/Bad%20Name",
        "/api/docs/alpha%00",
        "/api/docs/%ff",
        "/../Cargo.toml",
        "/api/../../../../etc/passwd",
    ];
    for uri in attempts {
        let reply = get(&router, uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(reply.json()["error"].is_string(), "{uri}: {}", reply.body);
        assert!(!reply.body.contains(SECRET), "{uri} leaked the secret");
        assert!(!reply.body.contains("[package]"), "{uri} leaked Cargo.toml");
    }
}

#[tokio::test]
async fn search_matches_title_and_content_case_insensitively() {
    let (_tmp, _, router) = ready_app();

    let by_content = get(&router, "/api/search?q=KUBERNETES").await;
    assert_eq!(by_content.status, StatusCode::OK);
    assert_eq!(
        by_content.json(),
        json!([
            {"slug": "alias", "title": "Alpha"},
            {"slug": "alpha", "title": "Alpha"},
        ])
    );

    let by_title = get(&router, "/api/search?q=beta%20guide").await;
    assert_eq!(
        by_title.json(),
        json!([{"slug": "beta-guide", "title": "Beta Guide"}])
    );

    let none = get(&router, "/api/search?q=zzz-no-match").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json(), json!([]));
}

#[tokio::test]
async fn a_search_answer_of_many_frames_is_the_list_of_its_hits() {
    // About 60 bytes a hit: 2000 hits span several 16 KiB frames.
    let docs = (0..2000).map(|i| {
        doc_server::Doc::new(
            format!("doc-{i:04}"),
            format!(
                "# Title {i}\n{}",
                if i % 3 == 0 { "common" } else { "rare" }
            ),
        )
    });
    let state = AppState::new(DocStore::from_docs(docs));
    state.mark_ready();
    let router = app(state);
    let reply = get(&router, "/api/search?q=COMMON").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(
        reply.headers["content-length"].to_str().unwrap(),
        reply.body.len().to_string()
    );
    let expected: Vec<serde_json::Value> = (0..2000)
        .filter(|i| i % 3 == 0)
        .map(|i| json!({"slug": format!("doc-{i:04}"), "title": format!("Title {i}")}))
        .collect();
    assert_eq!(reply.json(), serde_json::Value::Array(expected));
    let none = get(&router, "/api/search?q=absent").await;
    assert_eq!(none.body, "[]");
    assert_eq!(none.headers["content-length"], "2");
}

#[tokio::test]
async fn search_without_term_is_400() {
    let (_tmp, _, router) = ready_app();
    for uri in [
        "/api/search",
        "/api/search?",
        "/api/search?q=",
        "/api/search?q=%20%20",
        "/api/search?other=x",
        "/api/search?q=a&q=b",
    ] {
        let reply = get(&router, uri).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("?q="), "{uri}: {error}");
    }
    let long = format!("/api/search?q={}", "a".repeat(300));
    assert_eq!(get(&router, &long).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_count_by_route_template() {
    let (_tmp, state, router) = ready_app();
    let admin = admin_app(state);

    let before = get(&admin, "/metrics").await;
    assert_eq!(before.status, StatusCode::OK);
    assert!(
        before.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for line in [
        "# HELP doc_server_http_requests_total ",
        "# TYPE doc_server_http_requests_total counter",
        "# HELP doc_server_http_requests_in_flight ",
        "# TYPE doc_server_http_requests_in_flight gauge",
        // The scrape itself is in flight while the text is rendered.
        "doc_server_http_requests_in_flight 1",
        "# HELP doc_server_docs_loaded ",
        "# TYPE doc_server_docs_loaded gauge",
        "doc_server_docs_loaded 4",
    ] {
        assert!(
            before.body.contains(line),
            "missing {line:?} in\n{}",
            before.body
        );
    }
    assert!(!before.body.contains("route=\"/api/docs/{slug}\""));

    get(&router, "/api/docs/alpha").await;
    get(&router, "/api/docs/beta-guide").await;
    get(&router, "/api/docs/missing").await;
    get(&router, "/some/random/path").await;
    get(&router, "/another/random/path").await;

    let after = get(&admin, "/metrics").await.body;
    for line in [
        "doc_server_http_requests_total{route=\"/api/docs/{slug}\",status=\"200\"} 2",
        "doc_server_http_requests_total{route=\"/api/docs/{slug}\",status=\"404\"} 1",
        "doc_server_http_requests_total{route=\"unmatched\",status=\"404\"} 2",
        "doc_server_http_requests_total{route=\"/metrics\",status=\"200\"} 1",
    ] {
        assert!(after.contains(line), "missing {line:?} in\n{after}");
    }
    // Raw paths must never become label values.
    assert!(!after.contains("/api/docs/alpha"), "{after}");
    assert!(!after.contains("random"), "{after}");
}

#[tokio::test]
async fn wrong_method_is_json_405_and_counted() {
    let (_tmp, state, router) = ready_app();
    for (method, path) in [
        ("POST", "/api/docs"),
        ("DELETE", "/api/docs/alpha"),
        ("PUT", "/api/search?q=x"),
        ("POST", "/health/live"),
    ] {
        let reply = crate::common::call(&router, method, path).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.headers["allow"], "GET,HEAD");
        assert_eq!(
            reply.json(),
            json!({"error": "method not allowed; use GET"})
        );
    }
    let options = crate::common::call(&router, "OPTIONS", "/api/docs").await;
    assert_eq!(options.status, StatusCode::OK);
    assert_eq!(options.headers["content-type"], "application/json");
    assert_eq!(options.headers["allow"], "GET,HEAD");
    assert_eq!(options.json(), json!({"allow": ["GET", "HEAD"]}));
    // HEAD is GET without the body.
    let head = crate::common::call(&router, "HEAD", "/api/docs/alpha").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.body, "");
    let metrics = get(&admin_app(state), "/metrics").await.body;
    for line in [
        "doc_server_http_requests_total{route=\"/api/docs\",status=\"405\"} 1",
        "doc_server_http_requests_total{route=\"/api/docs\",status=\"200\"} 1",
        "doc_server_http_requests_total{route=\"/health/live\",status=\"405\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn metrics_are_served_by_the_admin_router_only() {
    let (_tmp, state, router) = ready_app();
    assert_eq!(get(&router, "/metrics").await.status, StatusCode::NOT_FOUND);
    let admin = admin_app(state);
    assert_eq!(get(&admin, "/metrics").await.status, StatusCode::OK);
    assert_eq!(get(&admin, "/health/live").await.status, StatusCode::OK);
    assert_eq!(get(&admin, "/health/ready").await.status, StatusCode::OK);
    assert_eq!(get(&admin, "/api/docs").await.status, StatusCode::NOT_FOUND);
    // The public router keeps /health/* for load balancers on the service port.
    assert_eq!(get(&router, "/health/ready").await.status, StatusCode::OK);
}

#[tokio::test]
async fn documents_and_the_list_carry_an_etag_and_answer_304_to_it() {
    let (_tmp, _, router) = ready_app();
    for path in ["/api/docs/alpha", "/api/docs"] {
        let first = get(&router, path).await;
        assert_eq!(first.status, StatusCode::OK);
        let etag = first.headers["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
        assert_eq!(
            get(&router, path).await.headers["etag"],
            etag.as_str(),
            "stable"
        );
        for (inm, status) in [
            (etag.clone(), StatusCode::NOT_MODIFIED),
            (format!("W/{etag}"), StatusCode::NOT_MODIFIED),
            (format!("\"other\", {etag}"), StatusCode::NOT_MODIFIED),
            ("*".to_owned(), StatusCode::NOT_MODIFIED),
            ("\"other\"".to_owned(), StatusCode::OK),
        ] {
            let reply =
                crate::common::call_with(&router, "GET", path, &[("if-none-match", &inm)]).await;
            assert_eq!(reply.status, status, "{path} If-None-Match: {inm}");
            assert_eq!(reply.headers["etag"], etag.as_str());
            if status == StatusCode::NOT_MODIFIED {
                assert_eq!(reply.body, "", "a 304 has no body");
            } else {
                assert_eq!(reply.body, first.body);
            }
        }
    }
    let alpha = get(&router, "/api/docs/alpha").await.headers["etag"].clone();
    let beta = get(&router, "/api/docs/beta-guide").await.headers["etag"].clone();
    assert_ne!(alpha, beta);
}
