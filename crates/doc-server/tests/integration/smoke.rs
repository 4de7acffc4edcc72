//! `doc-server --smoke-test` against the running binary: it passes against
//! a server that serves its own `DOCS_DIR`, and fails, one line per problem,
//! against one that is ready but serves an empty or a different tree.

use std::fs;

use crate::binary::{ServerProcess, assert_one_line, command, free_port, run};
use crate::common::{TempDir, fixture};

fn smoke(port: u16, docs: &str) -> crate::binary::Finished {
    smoke_with(port, docs, &[])
}

fn smoke_with(port: u16, docs: &str, extra: &[(&str, &str)]) -> crate::binary::Finished {
    let port = port.to_string();
    let mut envs = vec![
        ("SMOKE_TEST_HOST", "127.0.0.1"),
        ("SMOKE_TEST_PORT", port.as_str()),
        ("DOCS_DIR", docs),
    ];
    envs.extend_from_slice(extra);
    run(command(&envs).arg("--smoke-test"))
}

#[test]
fn passes_against_a_server_that_serves_the_expected_documents() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 1].into(), &[]);
    let out = smoke(server.addr.port(), docs.to_str().unwrap());
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_one_line(&out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "doc-server: smoke test passed: 4 documents, the list, search and health at {}\n",
            server.addr
        )
    );
    // Where the address offers no health endpoint, the probes are left to judge it.
    let out = smoke_with(
        server.addr.port(),
        docs.to_str().unwrap(),
        &[("SMOKE_TEST_HEALTH_PORT", "none")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        format!(
            "doc-server: smoke test passed: 4 documents, the list and search (health not asked) at {}\n",
            server.addr
        )
    );
}

#[test]
fn fails_against_a_ready_server_with_an_empty_tree() {
    let (tmp, docs) = fixture();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let server = ServerProcess::start_with(&empty, [127, 0, 0, 1].into(), &[]);
    let out = smoke(server.addr.port(), docs.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.contains(&"doc-server: smoke test: GET /api/docs/alpha answered 404, expected 200 (document not found)"),
        "{}",
        out.stderr
    );
    assert!(
        lines.contains(&"doc-server: smoke test: GET /api/docs does not list 4 of 4 documents (alias, alpha, beta-guide, notes_2024)"),
        "{}",
        out.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "doc-server: smoke test: GET /api/search?q=Alpha does not find \"alias\""
        )),
        "{}",
        out.stderr
    );
    // Health is fine: the server is ready, which is exactly what probes cannot tell apart.
    assert!(!out.stderr.contains("/health/ready"), "{}", out.stderr);
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "doc-server: smoke test failed: 6 of 7 checks against {}: GET /api/docs does not list 4 of 4 documents (alias, alpha, beta-guide, notes_2024)",
            server.addr
        )
    );
}

#[test]
fn fails_against_a_server_whose_documents_differ() {
    let (_tmp, docs) = fixture();
    let other = TempDir::new();
    for entry in fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") && path.is_file() {
            fs::copy(&path, other.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    fs::write(
        other.path().join("beta-guide.md"),
        "# Beta Guide\n\nAn older text.\n",
    )
    .unwrap();
    let server = ServerProcess::start_with(other.path(), [127, 0, 0, 1].into(), &[]);
    let out = smoke(server.addr.port(), docs.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("doc-server: smoke test: GET /api/docs/beta-guide answered other content (29 bytes, expected 37)\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("smoke test failed: 1 of 7 checks"),
        "{}",
        out.stderr
    );
}

#[test]
fn fails_in_one_line_when_nothing_answers_and_refuses_bad_settings() {
    let (_tmp, docs) = fixture();
    let port = free_port();
    let out = smoke(port, docs.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("doc-server: smoke test failed: 7 of 7 checks against 127.0.0.1:{port}: GET /health/ready from 127.0.0.1:{port}: ")),
        "{}",
        out.stderr
    );

    let out = run(command(&[("DOCS_DIR", docs.to_str().unwrap())]).arg("--smoke-test"));
    assert_eq!(out.status.code(), Some(2));
    assert_one_line(&out.stderr);
    assert!(
        out.stderr
            .starts_with("doc-server: smoke test: SMOKE_TEST_HOST is not set"),
        "{}",
        out.stderr
    );

    let empty = TempDir::new();
    let out = smoke(port, empty.path().to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert_one_line(&out.stderr);
    assert!(
        out.stderr
            .contains("holds no documents, so there is nothing to expect"),
        "{}",
        out.stderr
    );
}
