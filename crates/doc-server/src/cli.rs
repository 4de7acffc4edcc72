//! The command line: `doc-server`, `--health-check`, `--smoke-test`, `--version`, `--help`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::{
    AppState, Config, DocStore, SERVICE_NAME, ServeConfig, ServeOutcome, app, client, config, log,
    serve,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for invalid configuration or command-line usage, distinct from
/// runtime failures (1) so that a crash loop caused by a typo is obvious.
const EXIT_USAGE: u8 = 2;
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

const HELP: &str = "\
doc-server: serves the Markdown files in DOCS_DIR as a JSON API

Usage:
  doc-server                 run the server
  doc-server --health-check  exit 0 if the local server is ready, else 1
  doc-server --smoke-test    check the server at SMOKE_TEST_HOST serves DOCS_DIR's documents
  doc-server --version       print the version
  doc-server --help          print this help

Environment:
  PORT                      port to listen on (1-65535, default 8080)
  BIND_ADDR                 address to bind (default 0.0.0.0)
  DOCS_DIR                  directory of *.md files (default: docs)
  SHUTDOWN_TIMEOUT_SECS     how long to drain requests on SIGTERM/SIGINT (default 30)
  HEADER_READ_TIMEOUT_SECS  time to send a request head (default 10)
  REQUEST_TIMEOUT_SECS      time from request head to response sent (default 30)
  IDLE_TIMEOUT_SECS         keep-alive wait for the next request (default 60)
  MAX_CONNECTIONS           connections served at once (default 256)
  MAX_HEADER_BYTES          largest request head, bytes (default 16384)
  DOCS_MAX_BYTES            total size of the documents, bytes (default 33554432)
  DOCS_MAX_COUNT            number of documents (default 10000)
";

/// The whole program behind `fn main`: arguments, then the health check or
/// the server. It lives in the library so that the serve loop, which is
/// generic over the router and the shutdown signal, is instantiated and
/// optimised once, here, rather than again in the binary crate.
#[must_use]
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if let Some(extra) = args.next() {
        return usage_error(&extra);
    }
    let Some(arg) = first else {
        return run_server();
    };
    match arg.to_str() {
        Some("--health-check") => health_check(),
        Some("--smoke-test") => crate::smoke::main(),
        Some("--version" | "-V") => {
            print_stdout(&format!("doc-server {}\n", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            print_stdout(HELP);
            ExitCode::SUCCESS
        }
        _ => usage_error(&arg),
    }
}

fn usage_error(arg: &std::ffi::OsStr) -> ExitCode {
    log(format_args!("unknown argument {arg:?} (see --help)"));
    ExitCode::from(EXIT_USAGE)
}

/// Like `print!`, but a closed stdout is not worth a panic.
fn print_stdout(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Container `HEALTHCHECK` entry point. Exit codes are only ever 0 or 1:
/// Docker reserves 2 for health checks, so even a bad `PORT` reports 1.
///
/// It dials the address the server listens on (`BIND_ADDR`, `PORT`; the
/// loopback address for a wildcard bind) and passes only on a ready answer
/// that names this service, not on any 200 from whatever holds the port.
fn health_check() -> ExitCode {
    let (bind, port) = match config::listen_addr_from_env() {
        Ok(found) => found,
        Err(err) => {
            log(format_args!("health check failed: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let ip = match bind {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, port);
    let url = format!("http://{addr}/health/ready");
    match client::get(addr, "/health/ready", HEALTH_CHECK_TIMEOUT) {
        Ok(resp) => {
            let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap_or_default();
            if body["service"] != SERVICE_NAME {
                log(format_args!(
                    "health check failed: GET {url} answered {} but not as a Doc Server (is another process on the port?)",
                    resp.status
                ));
                ExitCode::FAILURE
            } else if resp.status == 200 && body["status"] == "ready" {
                ExitCode::SUCCESS
            } else {
                log(format_args!(
                    "health check failed: GET {url} returned {} (status {})",
                    resp.status, body["status"]
                ));
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            log(format_args!("health check failed: GET {url}: {err}"));
            ExitCode::FAILURE
        }
    }
}

fn run_server() -> ExitCode {
    install_panic_hook();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            log(err);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (docs, skipped) = match DocStore::load_within(&config.docs_dir, config.docs_limits) {
        Ok(loaded) => loaded,
        Err(err) => {
            // A directory that cannot be listed or holds more than the limits
            // allow is a deployment mistake rather than a crash.
            log(format_args!(
                "DOCS_DIR={:?} {err}",
                config.docs_dir.as_os_str()
            ));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for skip in &skipped {
        log(format_args!(
            "warning: skipping {}: {}",
            skip.path.display(),
            skip.reason
        ));
    }
    if docs.is_empty() {
        log(format_args!(
            "warning: no documents found in {}",
            config.docs_dir.display()
        ));
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            log(format_args!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config, docs));
    // After a drain timeout, connection tasks may still be holding requests;
    // do not let them delay the exit any further.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run(config: Config, docs: DocStore) -> ExitCode {
    // Install the handlers before binding: a SIGTERM that arrives the moment
    // the server looks ready must drain it, not kill it with the default
    // signal disposition.
    let (mut sigterm, mut sigint) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            log(format_args!("cannot install signal handlers: {err}"));
            return ExitCode::FAILURE;
        }
    };

    let addr = SocketAddr::new(config.bind_addr, config.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            log(format_args!("cannot listen on {addr}: {err}"));
            return ExitCode::FAILURE;
        }
    };

    let docs_count = docs.len();
    let state = AppState::new(docs);
    log(format_args!(
        "listening on {addr} (port {}), {docs_count} documents loaded from {}",
        config.port,
        config.docs_dir.display()
    ));

    let shutdown = async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        log(format_args!("received {name}"));
    };

    let serve_config = ServeConfig {
        limits: config.limits,
        drain_timeout: config.shutdown_timeout,
    };
    match serve(listener, app(state.clone()), state, shutdown, serve_config).await {
        Ok(ServeOutcome::Drained) => {
            log("drained: all in-flight requests finished, exiting");
            ExitCode::SUCCESS
        }
        // Exit 1, not 0: requests were cut off, and the exit status is the
        // one signal an orchestrator records about how the shutdown went.
        Ok(ServeOutcome::DrainTimedOut { cut_off }) => {
            log(format_args!(
                "drain timed out after {}s: {cut_off} request(s) still in flight were cut off, exiting with status 1",
                config.shutdown_timeout.as_secs()
            ));
            ExitCode::FAILURE
        }
        Err(err) => {
            log(format_args!("server error: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// Replaces the default multi-line panic report with one log line, so a
/// panicking handler (answered with a 500 by the router) stays greppable.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic payload)");
        match info.location() {
            Some(loc) => log(format_args!("panic at {loc}: {}", msg.escape_debug())),
            None => log(format_args!("panic: {}", msg.escape_debug())),
        }
    }));
}
