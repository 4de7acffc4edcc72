//! `doc-server --smoke-test`: checks a running Doc Server from outside, as a
//! release's Helm test hook does inside the cluster before any traffic is
//! judged. The documents it expects are the ones in its own `DOCS_DIR` (in
//! the image, the documents the release was built with), so a server that
//! was pointed at an empty or a wrong tree fails here even though it is
//! ready: every expected document must answer 200 as JSON with exactly its
//! content, the list must name them all, a search for a document's title
//! must find it, and the server must report itself ready.
//!
//! Where to ask: `SMOKE_TEST_HOST` (an IP address, e.g. a Service's
//! cluster IP), `SMOKE_TEST_PORT` (default 80) and `SMOKE_TEST_HEALTH_PORT`
//! (where `/health/ready` answers; default `SMOKE_TEST_PORT`; `none` when
//! the address offers no health endpoint, which leaves it to the probes).
//! Each problem is one line; the last line says how many checks failed.
//! Exit codes: 0 passed, 1 failed, 2 bad configuration.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

use crate::client::{self, Response};
use crate::{Config, DocStore, SERVICE_NAME, log};

/// Long enough for the largest document (1 MiB, up to six times that as
/// JSON) over a loaded cluster network.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A busy answer (503 with `Retry-After`) is asked again this often.
const BUSY_RETRIES: u32 = 3;

/// Where the server under test answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub api: SocketAddr,
    /// None: health is not asked.
    pub health: Option<SocketAddr>,
}

/// Reads the target from `lookup` (the process environment in [`main`]).
///
/// # Errors
/// One line naming the variable that is missing or invalid.
pub fn target_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Target, String> {
    let host = lookup("SMOKE_TEST_HOST")
        .ok_or("SMOKE_TEST_HOST is not set; expected the IP address of the server to test")?;
    let ip: IpAddr = host.trim().parse().map_err(|_| {
        format!("SMOKE_TEST_HOST={host:?} is not an IP address (e.g. a Service's ClusterIP)")
    })?;
    let port = |name: &str, default: u16| -> Result<u16, String> {
        lookup(name).map_or(Ok(default), |raw| {
            raw.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{name}={raw:?} is not a port number (1-65535)"))
        })
    };
    let api = port("SMOKE_TEST_PORT", 80)?;
    let health = if lookup("SMOKE_TEST_HEALTH_PORT").is_some_and(|v| v.trim() == "none") {
        None
    } else {
        Some(SocketAddr::new(ip, port("SMOKE_TEST_HEALTH_PORT", api)?))
    };
    Ok(Target {
        api: SocketAddr::new(ip, api),
        health,
    })
}

/// The entry point behind `--smoke-test`.
#[must_use]
pub fn main() -> ExitCode {
    let target = match target_from(|name| std::env::var(name).ok()) {
        Ok(target) => target,
        Err(err) => {
            log(format_args!("smoke test: {err}"));
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            log(format_args!("smoke test: {err}"));
            return ExitCode::from(2);
        }
    };
    let docs = match DocStore::load_within(&config.docs_dir, config.docs_limits) {
        Ok((docs, _skipped)) => docs,
        Err(err) => {
            log(format_args!(
                "smoke test: DOCS_DIR={:?} {err}",
                config.docs_dir.as_os_str()
            ));
            return ExitCode::from(2);
        }
    };
    if docs.is_empty() {
        log(format_args!(
            "smoke test: DOCS_DIR={:?} holds no documents, so there is nothing to expect; point it at the documents the release must serve",
            config.docs_dir.as_os_str()
        ));
        return ExitCode::from(2);
    }
    let problems = check(target, &docs);
    for p in &problems {
        log(format_args!("smoke test: {p}"));
    }
    let checks = docs.len() + 2 + usize::from(target.health.is_some());
    if let Some(first) = problems.first() {
        log(format_args!(
            "smoke test failed: {} of {checks} checks against {}: {first}",
            problems.len(),
            target.api
        ));
        ExitCode::FAILURE
    } else {
        let health = if target.health.is_some() {
            ", search and health"
        } else {
            " and search (health not asked)"
        };
        log(format_args!(
            "smoke test passed: {} documents, the list{health} at {}",
            docs.len(),
            target.api
        ));
        ExitCode::SUCCESS
    }
}

/// Every check against `target`; one line per problem, empty when all passed.
#[must_use]
pub fn check(target: Target, docs: &DocStore) -> Vec<String> {
    let mut problems = Vec::new();
    let mut note = |r: Result<(), String>| {
        if let Err(p) = r {
            problems.push(p);
        }
    };
    if let Some(addr) = target.health {
        note(health(addr));
    }
    note(list(target.api, docs));
    for doc in docs.iter() {
        note(document(target.api, &doc.slug, &doc.title, &doc.content));
    }
    if let Some(first) = docs.iter().next() {
        note(search(target.api, &first.slug, &first.title));
    }
    problems
}

fn get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut attempt = 0;
    loop {
        let resp = client::get(addr, path, REQUEST_TIMEOUT)
            .map_err(|err| format!("GET {path} from {addr}: {err}"))?;
        let busy = resp.status == 503 && resp.header("retry-after").is_some();
        if !busy || attempt == BUSY_RETRIES {
            return Ok(resp);
        }
        attempt += 1;
        sleep(Duration::from_secs(1));
    }
}

/// A 200 whose content type is JSON, parsed.
fn json_ok(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let resp = get(addr, path)?;
    if resp.status != 200 {
        return Err(format!(
            "GET {path} answered {}, expected 200{}",
            resp.status,
            error_of(&resp.body)
        ));
    }
    let content_type = resp.header("content-type").unwrap_or("(none)");
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "GET {path} answered content type {content_type}, expected application/json"
        ));
    }
    serde_json::from_str(&resp.body)
        .map_err(|err| format!("GET {path} answered a body that is not JSON ({err})"))
}

/// The server's own `{"error": ...}`, when it gave one.
fn error_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(|e| format!(" ({e})")))
        .unwrap_or_default()
}

fn health(addr: SocketAddr) -> Result<(), String> {
    let resp = get(addr, "/health/ready")?;
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap_or_default();
    if resp.status == 200 && body["status"] == "ready" && body["service"] == SERVICE_NAME {
        Ok(())
    } else {
        Err(format!(
            "GET /health/ready answered {} ({}), expected 200 and ready from {SERVICE_NAME}",
            resp.status,
            resp.body.trim()
        ))
    }
}

fn list(addr: SocketAddr, docs: &DocStore) -> Result<(), String> {
    let listed = json_ok(addr, "/api/docs")?;
    let slugs: Vec<&str> = listed
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["slug"].as_str()).collect())
        .unwrap_or_default();
    let missing: Vec<&str> = docs
        .iter()
        .map(|d| d.slug.as_str())
        .filter(|s| !slugs.contains(s))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "GET /api/docs does not list {} of {} documents ({})",
            missing.len(),
            docs.len(),
            missing.join(", ")
        ))
    }
}

fn document(addr: SocketAddr, slug: &str, title: &str, content: &str) -> Result<(), String> {
    let path = format!("/api/docs/{slug}");
    let body = json_ok(addr, &path)?;
    if body["slug"] != slug || body["title"] != title {
        return Err(format!(
            "GET {path} answered slug {} and title {}, expected {slug:?} and {title:?}",
            body["slug"], body["title"]
        ));
    }
    if body["content"].as_str() != Some(content) {
        let got = body["content"].as_str().map_or(0, str::len);
        return Err(format!(
            "GET {path} answered other content ({got} bytes, expected {})",
            content.len()
        ));
    }
    Ok(())
}

fn search(addr: SocketAddr, slug: &str, title: &str) -> Result<(), String> {
    let path = format!("/api/search?q={}", percent_encode(title));
    let hits = json_ok(addr, &path)?;
    let found = hits
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["slug"] == slug));
    if found {
        Ok(())
    } else {
        Err(format!(
            "GET {path} does not find {slug:?}, whose title it searched for"
        ))
    }
}

/// Everything but RFC 3986's unreserved characters, escaped.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn target_defaults_and_errors() {
        let t = target_from(lookup(&[("SMOKE_TEST_HOST", "10.0.0.7")])).unwrap();
        assert_eq!(t.api, "10.0.0.7:80".parse().unwrap());
        assert_eq!(t.health, Some(t.api));
        let t = target_from(lookup(&[
            ("SMOKE_TEST_HOST", "fd00::1"),
            ("SMOKE_TEST_PORT", "8080"),
            ("SMOKE_TEST_HEALTH_PORT", "9090"),
        ]))
        .unwrap();
        assert_eq!(t.api, "[fd00::1]:8080".parse().unwrap());
        assert_eq!(t.health, Some("[fd00::1]:9090".parse().unwrap()));
        let t = target_from(lookup(&[
            ("SMOKE_TEST_HOST", "10.0.0.7"),
            ("SMOKE_TEST_HEALTH_PORT", "none"),
        ]))
        .unwrap();
        assert_eq!(t.health, None);
        assert!(
            target_from(lookup(&[]))
                .unwrap_err()
                .starts_with("SMOKE_TEST_HOST is not set")
        );
        assert_eq!(
            target_from(lookup(&[("SMOKE_TEST_HOST", "doc-server")])).unwrap_err(),
            "SMOKE_TEST_HOST=\"doc-server\" is not an IP address (e.g. a Service's ClusterIP)"
        );
        assert_eq!(
            target_from(lookup(&[
                ("SMOKE_TEST_HOST", "10.0.0.7"),
                ("SMOKE_TEST_PORT", "0")
            ]))
            .unwrap_err(),
            "SMOKE_TEST_PORT=\"0\" is not a port number (1-65535)"
        );
    }

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        assert_eq!(percent_encode("Getting started"), "Getting%20started");
        assert_eq!(percent_encode("a&b=c/ü"), "a%26b%3Dc%2F%C3%BC");
        assert_eq!(percent_encode("x-y_z.~"), "x-y_z.~");
    }
}
