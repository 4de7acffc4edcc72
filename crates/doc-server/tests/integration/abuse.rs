//! The compiled binary under slow clients, floods and oversized inputs:
//! timeouts, the connection limit with the admin port answering through a
//! flood, a drain that only waits for real requests and counts the ones it
//! cuts off, the health check's address and identity, and the doc-tree
//! limits. The state machine's timing is unit-tested with a paused clock
//! (`src/conn.rs`); these check that the binary is wired to it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use std::{fs, thread};

use doc_server::client;

use crate::binary::{ServerProcess, assert_one_line, command, free_port, run};
use crate::common::{TempDir, fixture};

const TRIES: Duration = Duration::from_secs(10);

pub fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    conn
}

/// A connection that has sent part of a request head and then stalls.
pub fn half_sent(addr: SocketAddr) -> TcpStream {
    let mut conn = connect(addr);
    conn.write_all(b"GET /api/docs HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .unwrap();
    conn
}

/// Whether the server closed `conn`: end of stream or a reset, not a
/// timeout. Waits up to `limit`.
pub fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Sends one keep-alive request and reads its response head and body.
pub fn keep_alive_get(conn: &mut TcpStream, path: &str) -> String {
    write!(conn, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TRIES;
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= len {
                return text;
            }
        }
        assert!(Instant::now() < deadline, "no full response: {text}");
        match conn.read(&mut buf) {
            Ok(0) => panic!("closed early: {text}"),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// The line of `/metrics` (scraped from the admin address) that starts so.
pub fn metric(admin: SocketAddr, line_start: &str) -> String {
    let body = client::get(admin, "/metrics", Duration::from_secs(5))
        .unwrap()
        .body;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {body}"))
        .to_owned()
}

#[test]
fn slow_header_client_is_disconnected_after_the_timeout() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(
        &docs,
        [127, 0, 0, 1].into(),
        &[("HEADER_READ_TIMEOUT_SECS", "1")],
    );
    let started = Instant::now();
    let mut conn = half_sent(server.addr);
    // Trickle a header byte every 100 ms: activity must not extend the
    // deadline for the head.
    let mut closed = false;
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(8) {
        if conn.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        match conn.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => panic!("got an answer to a half-sent request"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let waited = started.elapsed();
    assert!(closed, "slow-header connection still open after {waited:?}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    // Far below the 8 s the client would keep trickling; slack for a busy
    // machine.
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Only that connection was closed; the server serves on.
    let closed =
        "doc_server_connections_closed_total{listener=\"public\",reason=\"header_timeout\"}";
    assert_eq!(metric(server.admin, closed), format!("{closed} 1"));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

#[test]
fn sigterm_with_idle_and_half_sent_connections_exits_zero_at_once() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(
        &docs,
        [127, 0, 0, 1].into(),
        &[
            ("SHUTDOWN_TIMEOUT_SECS", "30"),
            ("HEADER_READ_TIMEOUT_SECS", "60"),
        ],
    );
    let mut idle = connect(server.addr);
    let answer = keep_alive_get(&mut idle, "/api/docs");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut half = half_sent(server.addr);

    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let out = server.wait();
    let took = sent.elapsed();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    // The drain timeout is 30 s: anything near it would mean waiting.
    assert!(took < Duration::from_secs(5), "drain took {took:?}");
    assert!(out.stderr.contains("drained"), "{}", out.stderr);
    assert!(closed_within(&mut idle, Duration::from_secs(1)));
    assert!(closed_within(&mut half, Duration::from_secs(1)));
}

/// `big.md`: 1 MiB of a control character, which JSON escapes to six
/// bytes each, so the 6 MiB answer cannot fit in the loopback socket
/// buffers of a client that does not read.
pub fn big_doc_fixture() -> (TempDir, std::path::PathBuf) {
    let (tmp, docs) = fixture();
    fs::write(docs.join("big.md"), "\u{1}".repeat(1024 * 1024)).unwrap();
    (tmp, docs)
}

/// Asks for the big document and reads only the first bytes of the answer.
pub fn slow_reader(addr: SocketAddr) -> TcpStream {
    let mut conn = connect(addr);
    conn.write_all(b"GET /api/docs/big HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    conn
}

fn started_big_server(docs: &Path, drain_secs: &str, request_secs: &str) -> ServerProcess {
    ServerProcess::start_with(
        docs,
        [127, 0, 0, 1].into(),
        &[
            ("SHUTDOWN_TIMEOUT_SECS", drain_secs),
            ("REQUEST_TIMEOUT_SECS", request_secs),
        ],
    )
}

#[test]
fn sigterm_waits_for_a_slow_real_request_and_exits_zero() {
    let (_tmp, docs) = big_doc_fixture();
    let mut server = started_big_server(&docs, "30", "30");
    let mut conn = slow_reader(server.addr);

    server.signal(libc::SIGTERM);
    thread::sleep(Duration::from_secs(1));
    assert!(
        !server.has_exited(),
        "the server exited while a response was still being sent"
    );

    // Now read the rest: the whole answer arrives, then the server exits 0.
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(body.len(), len, "response cut short");
    assert!(len > 6 * 1024 * 1024, "{len}");
    let out = server.wait();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("drained"), "{}", out.stderr);
}

#[test]
fn drain_timeout_with_a_real_request_exits_one_and_counts_it() {
    let (_tmp, docs) = big_doc_fixture();
    let server = started_big_server(&docs, "1", "30");
    let _conn = slow_reader(server.addr);
    let _half = half_sent(server.addr);

    server.signal(libc::SIGTERM);
    let out = server.wait();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(
            "doc-server: 1 request(s) cut off during the drain (1 still running when the drain timeout passed), exiting with status 1\n"
        ),
        "{}",
        out.stderr
    );
}

/// The defaults' shape: the request timeout ends before the drain's, so
/// every request ends "by itself" within the drain. One cut off that way
/// is still cut off: counted, logged, exit 1.
#[test]
fn a_slow_reader_cut_off_by_its_request_timeout_during_the_drain_exits_one() {
    let (_tmp, docs) = big_doc_fixture();
    let server = started_big_server(&docs, "30", "2");
    let _conn = slow_reader(server.addr);

    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let out = server.wait();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(
            "doc-server: cut off GET /api/docs/big during the drain: its request timeout (2s) passed before its answer was written\n"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "doc-server: 1 request(s) cut off during the drain (1 by their request timeout), exiting with status 1\n"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("drained"), "{}", out.stderr);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn a_second_signal_ends_the_drain_at_once() {
    let (_tmp, docs) = big_doc_fixture();
    let server = started_big_server(&docs, "600", "600");
    let _conn = slow_reader(server.addr);

    server.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    let second = Instant::now();
    server.signal(libc::SIGINT);
    let out = server.wait();
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    for line in [
        "doc-server: received SIGTERM\n",
        "doc-server: received SIGINT again: ending the drain now\n",
        "doc-server: 1 request(s) cut off during the drain (1 still running when a second signal ended the drain), exiting with status 1\n",
    ] {
        assert!(
            out.stderr.contains(line),
            "missing {line:?} in\n{}",
            out.stderr
        );
    }
}

#[test]
fn a_client_that_never_reads_its_answer_is_closed_after_the_request_timeout() {
    let (_tmp, docs) = big_doc_fixture();
    let server = ServerProcess::start_with(
        &docs,
        [127, 0, 0, 1].into(),
        &[("REQUEST_TIMEOUT_SECS", "1")],
    );
    let started = Instant::now();
    let mut conn = slow_reader(server.addr);
    thread::sleep(Duration::from_millis(1500));
    // Whatever was already buffered arrives, then the stream ends early.
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.len() < 6 * 1024 * 1024, "{} bytes", rest.len());
    assert!(started.elapsed() < Duration::from_secs(10));
    let closed =
        "doc_server_connections_closed_total{listener=\"public\",reason=\"request_timeout\"}";
    assert_eq!(metric(server.admin, closed), format!("{closed} 1"));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

/// The attack the admin port is for: every public slot held by idle
/// keep-alive connections and half-sent heads, and more connections
/// arriving all the time. The probes' port answers as if nothing happened.
#[test]
fn a_flood_of_the_public_port_leaves_the_admin_port_answering() {
    let (_tmp, docs) = fixture();
    // The default limits and timeouts, as a pod runs them.
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 1].into(), &[]);
    let (addr, admin) = (server.addr, server.admin);
    let mut flood: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut conn = connect(addr);
            assert!(keep_alive_get(&mut conn, "/health/live").starts_with("HTTP/1.1 200"));
            conn
        })
        .collect();
    flood.extend((0..56).map(|_| half_sent(addr)));
    // The public port is full: a new connection is closed at once.
    let deadline = Instant::now() + TRIES;
    loop {
        let mut conn = connect(addr);
        if closed_within(&mut conn, Duration::from_millis(500)) {
            break;
        }
        assert!(Instant::now() < deadline, "the public port never filled up");
        flood.push(conn);
    }
    // Keep connecting, as an attacker refilling freed slots would.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let stop = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(mut conn) = TcpStream::connect(addr) {
                    let _ = conn.write_all(b"GET /api/docs HTTP/1.1\r\nX-Slow: ");
                    held.push(conn);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut took = Vec::new();
    for _ in 0..20 {
        let at = Instant::now();
        let live = client::get(admin, "/health/live", Duration::from_secs(3)).unwrap();
        took.push(at.elapsed());
        assert_eq!(live.status, 200, "{}", live.body);
        thread::sleep(Duration::from_millis(50));
    }
    took.sort();
    // Within 100 ms; one slow answer in twenty is the shared machine, not
    // the server (a refused probe would fail above, not here).
    assert!(took[18] < Duration::from_millis(100), "{took:?}");
    let check = run(command(&[
        ("ADMIN_PORT", &admin.port().to_string()),
        ("BIND_ADDR", "127.0.0.1"),
    ])
    .arg("--health-check"));
    assert_eq!(check.status.code(), Some(0), "stderr:\n{}", check.stderr);
    let refused = metric(
        admin,
        "doc_server_connections_closed_total{listener=\"public\",reason=\"over_limit\"}",
    );
    assert!(!refused.ends_with(" 0"), "{refused}");
    let open = metric(admin, "doc_server_connections_open{listener=\"public\"}");
    assert_eq!(open, "doc_server_connections_open{listener=\"public\"} 256");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attacker.join().unwrap();

    // Once the flood goes away, the public port serves again.
    drop(flood);
    let deadline = Instant::now() + TRIES;
    while !client::get(addr, "/api/docs", Duration::from_secs(3)).is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "still busy after the flood left");
        thread::sleep(Duration::from_millis(20));
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

#[test]
fn oversized_request_head_is_431() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(
        &docs,
        [127, 0, 0, 1].into(),
        &[("MAX_HEADER_BYTES", "8192")],
    );
    let mut conn = connect(server.addr);
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let big = "a".repeat(20_000);
    // The server may stop reading early; the answer is what counts.
    let _ = write!(
        conn,
        "GET /api/docs HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

#[test]
fn health_check_dials_bind_addr_and_refuses_an_impostor() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 2].into(), &[]);
    let port = server.admin.port().to_string();
    let check = |bind: Option<&str>, port: &str| {
        let mut envs = vec![("ADMIN_PORT", port)];
        if let Some(bind) = bind {
            envs.push(("BIND_ADDR", bind));
        }
        run(command(&envs).arg("--health-check"))
    };
    let ok = check(Some("127.0.0.2"), &port);
    assert_eq!(ok.status.code(), Some(0), "stderr:\n{}", ok.stderr);
    assert_eq!(ok.stderr, "");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));

    // Something else holds the port and answers 200 to everything.
    let impostor = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = impostor.local_addr().unwrap().port().to_string();
    thread::spawn(move || {
        for conn in impostor.incoming() {
            let Ok(mut conn) = conn else { continue };
            // Read the whole request, so closing sends no reset.
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = r#"{"status":"ready"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let fooled = check(Some("127.0.0.2"), &port);
    assert_eq!(fooled.status.code(), Some(1), "stderr:\n{}", fooled.stderr);
    assert_one_line(&fooled.stderr);
    assert!(
        fooled.stderr.contains(&format!(
            "GET http://127.0.0.2:{port}/health/ready answered 200 but not as a Doc Server"
        )),
        "{}",
        fooled.stderr
    );

    // Without BIND_ADDR the check dials 127.0.0.1, where nothing listens.
    let elsewhere = check(None, &free_port().to_string());
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(
        elsewhere.stderr.contains("GET http://127.0.0.1:"),
        "{}",
        elsewhere.stderr
    );
}

#[test]
fn oversized_doc_tree_exits_two_naming_the_limit() {
    let tmp = TempDir::new();
    let docs = tmp.path();
    for name in ["a", "b", "c"] {
        fs::write(docs.join(format!("{name}.md")), "x".repeat(600_000)).unwrap();
    }
    let docs_s = docs.to_str().unwrap();
    let started = Instant::now();
    let out = run(&mut command(&[
        ("DOCS_DIR", docs_s),
        ("DOCS_MAX_BYTES", "1000000"),
        ("PORT", &free_port().to_string()),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_one_line(&out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "doc-server: DOCS_DIR={docs_s:?} holds 1800000 bytes (1.7 MiB) of documents, which take \
             at least 3600000 bytes (3.4 MiB) in memory as text and as prepared answers, more than \
             DOCS_MAX_BYTES=1000000 (1.0 MiB); raise DOCS_MAX_BYTES together with the pod's memory \
             limit, or serve fewer documents\n"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let out = run(&mut command(&[
        ("DOCS_DIR", docs_s),
        ("DOCS_MAX_COUNT", "2"),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert_one_line(&out.stderr);
    assert!(
        out.stderr
            .contains("holds 3 documents, more than DOCS_MAX_COUNT=2"),
        "{}",
        out.stderr
    );
}
