//! HTTP details on the compiled binary, over raw sockets: cache validators,
//! JSON for every answer, and a request head begun in the same packet as
//! the one before it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::abuse::{closed_within, connect, keep_alive_get};
use crate::binary::ServerProcess;
use crate::common::fixture;

/// Sends `request` verbatim (it should ask for `Connection: close`) and
/// returns the response head and body.
fn exchange(addr: SocketAddr, request: &str) -> (String, String) {
    let mut conn = connect(addr);
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn documents_answer_304_to_their_etag() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 1].into(), &[]);
    let get = |path: &str, extra: &str| {
        exchange(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"),
        )
    };
    for path in ["/api/docs/alpha", "/api/docs"] {
        let (head, body) = get(path, "");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let etag = header(&head, "etag").unwrap().to_owned();
        assert!(etag.starts_with('"'), "a strong validator: {etag}");

        let (head304, body304) = get(path, &format!("If-None-Match: {etag}\r\n"));
        assert!(head304.starts_with("HTTP/1.1 304"), "{head304}");
        assert_eq!(header(&head304, "etag"), Some(etag.as_str()));
        assert_eq!(body304, "");

        let (again, again_body) = get(path, "If-None-Match: \"something-else\"\r\n");
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        assert_eq!(again_body, body);
    }
    let metrics = crate::abuse::metric(
        server.admin,
        "doc_server_http_requests_total{route=\"/api/docs/{slug}\",status=\"304\"}",
    );
    assert!(metrics.ends_with(" 1"), "{metrics}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

#[test]
fn wrong_methods_and_options_answer_json() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 1].into(), &[]);
    for (method, path, status, body) in [
        (
            "POST",
            "/api/docs",
            "HTTP/1.1 405",
            r#"{"error":"method not allowed; use GET"}"#,
        ),
        (
            "DELETE",
            "/api/docs/alpha",
            "HTTP/1.1 405",
            r#"{"error":"method not allowed; use GET"}"#,
        ),
        (
            "OPTIONS",
            "/api/search",
            "HTTP/1.1 200",
            r#"{"allow":["GET","HEAD"]}"#,
        ),
    ] {
        let (head, got) = exchange(
            server.addr,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(head.starts_with(status), "{method} {path}: {head}");
        assert_eq!(
            header(&head, "content-type"),
            Some("application/json"),
            "{head}"
        );
        assert_eq!(header(&head, "allow"), Some("GET,HEAD"), "{head}");
        assert_eq!(got, body);
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

/// One packet holds a whole request and the start of the next: once the
/// first is answered, the rest is a half-sent head and gets the header
/// timeout, not the idle timeout.
#[test]
fn a_partial_second_head_in_the_first_ones_packet_gets_the_header_timeout() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(
        &docs,
        [127, 0, 0, 1].into(),
        &[
            ("HEADER_READ_TIMEOUT_SECS", "1"),
            ("IDLE_TIMEOUT_SECS", "60"),
        ],
    );
    let mut conn = connect(server.addr);
    conn.write_all(
        b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\nGET /api/docs HTTP/1.1\r\nX-Slow: ",
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("alive") {
        assert!(Instant::now() < deadline, "no answer: {seen:?}");
        let n = conn.read(&mut buf).unwrap_or(0);
        if n > 0 {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let answered = Instant::now();
    assert!(closed_within(&mut conn, Duration::from_secs(10)));
    let held = answered.elapsed();
    assert!(
        held < Duration::from_secs(5),
        "held {held:?}: the idle timeout"
    );

    // A whole second request on a kept-alive connection is still answered.
    let mut conn = connect(server.addr);
    assert!(keep_alive_get(&mut conn, "/health/live").starts_with("HTTP/1.1 200"));
    assert!(keep_alive_get(&mut conn, "/api/docs").starts_with("HTTP/1.1 200"));
    let closed =
        "doc_server_connections_closed_total{listener=\"public\",reason=\"header_timeout\"}";
    assert_eq!(
        crate::abuse::metric(server.admin, closed),
        format!("{closed} 1")
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}
