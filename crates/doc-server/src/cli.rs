//! The command line: `doc-server`, `--health-check`, `--smoke-test`, `--version`, `--help`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::{
    AppState, Config, DocStore, Limits, SERVICE_NAME, ServeConfig, ServeOutcome, admin_app, app,
    client, config, log, serve, serve_admin,
};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

/// Exit code for invalid configuration or command-line usage, distinct from
/// runtime failures (1) so that a crash loop caused by a typo is obvious.
const EXIT_USAGE: u8 = 2;
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

const HELP: &str = "\
doc-server: serves the Markdown files in DOCS_DIR as a JSON API

Usage:
  doc-server                 run the server
  doc-server --health-check  exit 0 if the local server is ready (asked on ADMIN_PORT), else 1
  doc-server --smoke-test    check the server at SMOKE_TEST_HOST serves DOCS_DIR's documents
  doc-server --version       print the version
  doc-server --help          print this help

Environment:
  PORT                      port of the API (1-65535, default 8080)
  ADMIN_PORT                port of /health/* and /metrics (1-65535, default 9090)
  BIND_ADDR                 address to bind both to (default 0.0.0.0)
  DOCS_DIR                  directory of *.md files (default: docs)
  SHUTDOWN_TIMEOUT_SECS     how long to drain requests on SIGTERM/SIGINT (default 30)
  HEADER_READ_TIMEOUT_SECS  time to send a request head (default 10)
  REQUEST_TIMEOUT_SECS      time from request head to response sent (default 30)
  IDLE_TIMEOUT_SECS         keep-alive wait for the next request (default 60)
  MAX_CONNECTIONS           connections served at once on PORT (default 256)
  ADMIN_MAX_CONNECTIONS     connections served at once on ADMIN_PORT (default 16)
  MAX_HEADER_BYTES          largest request head, bytes (default 16384)
  SEARCH_CONCURRENCY        searches running at once (default 2)
  SEARCH_QUEUE              searches waiting for them, past it 503 (default 16)
  SEARCH_TIMEOUT_MS         time a search may take, waiting included (default 2000)
  DOCS_MAX_BYTES            memory for the documents, text and answers (default 33554432)
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
/// Docker reserves 2 for health checks, so even a bad `ADMIN_PORT` reports 1.
///
/// It dials the admin listener (`BIND_ADDR`, `ADMIN_PORT`; the loopback
/// address for a wildcard bind), which a flood of the public port cannot
/// reach, and passes only on a ready answer that names this service, not on
/// any 200 from whatever holds the port.
fn health_check() -> ExitCode {
    let (bind, port) = match config::admin_addr_from_env() {
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
    let admin_addr = SocketAddr::new(config.bind_addr, config.admin_port);
    let (listener, admin_listener) = match (
        TcpListener::bind(addr).await,
        std::net::TcpListener::bind(admin_addr).and_then(|l| l.set_nonblocking(true).map(|()| l)),
    ) {
        (Ok(listener), Ok(admin)) => (listener, admin),
        (Err(err), _) => {
            log(format_args!("cannot listen on {addr}: {err}"));
            return ExitCode::FAILURE;
        }
        (_, Err(err)) => {
            log(format_args!(
                "cannot listen on {admin_addr} (ADMIN_PORT): {err}"
            ));
            return ExitCode::FAILURE;
        }
    };

    let docs_count = docs.len();
    let held = docs.held_bytes();
    let state = AppState::with_search(docs, config.search);
    let (admin_stop, admin) = match start_admin(
        admin_listener,
        state.clone(),
        Limits::admin(config.admin_max_connections),
    ) {
        Ok(started) => started,
        Err(err) => {
            log(format_args!("cannot start the admin listener: {err}"));
            return ExitCode::FAILURE;
        }
    };
    #[allow(clippy::cast_precision_loss)] // a human-readable figure
    let held_mib = held as f64 / (1024.0 * 1024.0);
    log(format_args!(
        "listening on {addr} (port {}), admin (/health/*, /metrics) on {admin_addr}, {docs_count} documents loaded from {} ({held_mib:.1} MiB held with their answers)",
        config.port,
        config.docs_dir.display()
    ));

    // Counts shutdown signals: the first starts the drain, a second ends it.
    let (signals_tx, signals) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            };
            let mut count = 0;
            signals_tx.send_modify(|n| {
                *n += 1;
                count = *n;
            });
            if count == 1 {
                log(format_args!("received {name}"));
            } else {
                log(format_args!("received {name} again: ending the drain now"));
            }
        }
    });
    let nth_signal = |n: u32| {
        let mut signals = signals.clone();
        async move {
            let _ = signals.wait_for(|&count| count >= n).await;
        }
    };

    let serve_config = ServeConfig {
        limits: config.limits,
        drain_timeout: config.shutdown_timeout,
    };
    let outcome = serve(
        listener,
        app(state.clone()),
        state,
        nth_signal(1),
        nth_signal(2),
        serve_config,
    )
    .await;
    let _ = admin_stop.send(());
    let _ = tokio::task::spawn_blocking(move || admin.join()).await;
    match outcome {
        Ok(ServeOutcome::Drained) => {
            log("drained: all in-flight requests finished, exiting");
            ExitCode::SUCCESS
        }
        // Exit 1, not 0: requests were cut off, and the exit status is the
        // one signal an orchestrator records about how the shutdown went.
        Ok(ServeOutcome::CutOff(cut)) => {
            log(format_args!("{cut}, exiting with status 1"));
            ExitCode::FAILURE
        }
        Err(err) => {
            log(format_args!("server error: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// Runs the admin listener on a thread and runtime of its own, so neither
/// a flood of the public port nor busy workers can delay a probe's answer.
/// It serves until the returned sender fires (or is dropped).
fn start_admin(
    listener: std::net::TcpListener,
    state: AppState,
    limits: Limits,
) -> std::io::Result<(oneshot::Sender<()>, std::thread::JoinHandle<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("admin".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(err) => {
                        log(format_args!("admin listener failed: {err}"));
                        return;
                    }
                };
                let stop = async move {
                    let _ = stop_rx.await;
                };
                if let Err(err) =
                    serve_admin(listener, admin_app(state.clone()), state, stop, limits).await
                {
                    log(format_args!("admin listener failed: {err}"));
                }
            });
        })?;
    Ok((stop_tx, thread))
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
