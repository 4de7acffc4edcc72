//! The compiled binary as a process: configuration errors, CLI flags,
//! `--health-check`, and SIGTERM/SIGINT handling.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{fixture, is_ready, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_doc-server");

/// A port nothing listens on right now. There is a small window in which
/// another process could take it, which is acceptable for tests.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two distinct free ports (both held while the second is asked for).
pub fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// The binary with a clean environment, so the host's variables never leak
/// into what is being tested.
pub fn command(envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command that is expected to exit promptly.
pub fn run(cmd: &mut Command) -> Finished {
    let child = cmd.spawn().unwrap();
    wait_exit(child, Duration::from_secs(10))
}

fn wait_exit(mut child: Child, limit: Duration) -> Finished {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// A running server process, killed on drop if a test fails midway.
pub struct ServerProcess {
    child: Option<Child>,
    /// `PORT`: the API.
    pub addr: SocketAddr,
    /// `ADMIN_PORT`: `/health/*` and `/metrics`.
    pub admin: SocketAddr,
}

impl ServerProcess {
    fn start(docs: &Path) -> Self {
        Self::start_with(docs, [127, 0, 0, 1].into(), &[])
    }

    /// Starts the binary on `ip` and two free ports, with `extra` variables
    /// over the defaults below, and waits until its admin port says ready.
    pub fn start_with(docs: &Path, ip: IpAddr, extra: &[(&str, &str)]) -> Self {
        let (port, admin_port) = free_ports();
        let (port_s, admin_s, ip_s) = (port.to_string(), admin_port.to_string(), ip.to_string());
        let mut envs = vec![
            ("PORT", port_s.as_str()),
            ("ADMIN_PORT", admin_s.as_str()),
            ("BIND_ADDR", ip_s.as_str()),
            ("DOCS_DIR", docs.to_str().unwrap()),
            ("SHUTDOWN_TIMEOUT_SECS", "5"),
        ];
        envs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        envs.extend_from_slice(extra);
        let child = command(&envs).spawn().unwrap();
        let mut server = Self {
            child: Some(child),
            addr: SocketAddr::new(ip, port),
            admin: SocketAddr::new(ip, admin_port),
        };
        let admin = server.admin;
        let child = server.child.as_mut().unwrap();
        // Generous: a debug build on a busy machine takes seconds to load
        // and prepare a 50 MB tree.
        let ready = wait_until(Duration::from_secs(60), || {
            is_ready(admin) || child.try_wait().unwrap().is_some()
        });
        if !is_ready(admin) {
            let out = wait_exit(server.child.take().unwrap(), Duration::from_secs(1));
            panic!(
                "server not ready (polled: {ready}); stderr:\n{}",
                out.stderr
            );
        }
        server
    }

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The process's resident memory now and at its peak (`VmRSS`,
    /// `VmHWM`), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().strip_suffix(" kB"))
                .unwrap_or_else(|| panic!("no {key} in {status}"))
                .trim()
                .parse::<u64>()
                .unwrap()
                * 1024
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.as_ref().unwrap().id()).unwrap();
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our
        // own child, which has not been reaped yet, so it cannot have been
        // reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    pub fn wait(mut self) -> Finished {
        wait_exit(self.child.take().unwrap(), Duration::from_secs(10))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn assert_one_line(stderr: &str) {
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(stderr.ends_with('\n'));
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start(&docs);
    server.signal(libc::SIGTERM);
    let out = server.wait();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("listening on 127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("4 documents loaded"), "{}", out.stderr);
    assert!(out.stderr.contains("received SIGTERM"), "{}", out.stderr);
    assert!(out.stderr.contains("shutdown started"), "{}", out.stderr);
    assert!(out.stderr.contains("drained"), "{}", out.stderr);
    // The fixture's skipped files are reported, one line each.
    assert!(out.stderr.contains("warning: skipping"), "{}", out.stderr);
    assert!(out.stderr.contains("outside DOCS_DIR"), "{}", out.stderr);
}

#[test]
fn sigint_drains_and_exits_zero() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start(&docs);
    server.signal(libc::SIGINT);
    let out = server.wait();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("received SIGINT"), "{}", out.stderr);
    assert!(out.stderr.contains("drained"), "{}", out.stderr);
}

#[test]
fn health_check_passes_against_running_server() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start(&docs);
    let admin = server.admin.port().to_string();
    // DOCS_DIR and PORT are deliberately bogus: the probe runs in the same
    // container but depends on ADMIN_PORT alone.
    let out = run(command(&[
        ("ADMIN_PORT", &admin),
        ("PORT", "nonsense"),
        ("DOCS_DIR", "/does/not/exist"),
    ])
    .arg("--health-check"));
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", out.stderr);
    assert_eq!(out.stderr, "");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait().status.code(), Some(0));
}

#[test]
fn health_check_fails_when_nothing_listens() {
    let port = free_port().to_string();
    let started = Instant::now();
    let out = run(command(&[("ADMIN_PORT", &port)]).arg("--health-check"));
    assert_eq!(out.status.code(), Some(1));
    assert_one_line(&out.stderr);
    assert!(
        out.stderr.starts_with("doc-server: health check failed: "),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn health_check_with_bad_port_exits_one() {
    let out = run(command(&[("ADMIN_PORT", "abc")]).arg("--health-check"));
    // Never 2: Docker reserves that exit code for health checks.
    assert_eq!(out.status.code(), Some(1));
    assert_one_line(&out.stderr);
    assert!(out.stderr.contains(r#"ADMIN_PORT="abc""#), "{}", out.stderr);
}

#[test]
fn bad_config_exits_two_with_one_line() {
    let (_tmp, docs) = fixture();
    let docs = docs.to_str().unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("PORT", "abc"), ("DOCS_DIR", docs)],
            "doc-server: PORT=\"abc\" is not a port number (1-65535)\n",
        ),
        (
            &[("PORT", "0"), ("DOCS_DIR", docs)],
            "doc-server: PORT=\"0\" is not a port number (1-65535)\n",
        ),
        (
            &[("PORT", "65536"), ("DOCS_DIR", docs)],
            "doc-server: PORT=\"65536\" is not a port number (1-65535)\n",
        ),
        (
            &[("DOCS_DIR", "/does/not/exist")],
            "doc-server: DOCS_DIR=\"/does/not/exist\" does not exist; expected a directory of .md files\n",
        ),
        (
            &[("DOCS_DIR", file)],
            &format!("doc-server: DOCS_DIR={file:?} is not a directory\n"),
        ),
        (
            &[("DOCS_DIR", docs), ("SHUTDOWN_TIMEOUT_SECS", "0")],
            "doc-server: SHUTDOWN_TIMEOUT_SECS=\"0\" is not a whole number of seconds (1-3600)\n",
        ),
        (
            &[("DOCS_DIR", docs), ("SHUTDOWN_TIMEOUT_SECS", "soon")],
            "doc-server: SHUTDOWN_TIMEOUT_SECS=\"soon\" is not a whole number of seconds (1-3600)\n",
        ),
        (
            &[("ADMIN_PORT", "8080"), ("DOCS_DIR", docs)],
            "doc-server: ADMIN_PORT=\"8080\" is also PORT; the admin listener needs a port of its own\n",
        ),
        (
            &[("ADMIN_PORT", "65536"), ("DOCS_DIR", docs)],
            "doc-server: ADMIN_PORT=\"65536\" is not a port number (1-65535)\n",
        ),
        (
            &[("DOCS_DIR", docs), ("SEARCH_CONCURRENCY", "0")],
            "doc-server: SEARCH_CONCURRENCY=\"0\" is not a whole number (1-64)\n",
        ),
        (
            &[("DOCS_DIR", docs), ("BIND_ADDR", "localhost")],
            "doc-server: BIND_ADDR=\"localhost\" is not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)\n",
        ),
    ];
    for (envs, expected) in cases {
        let out = run(&mut command(envs));
        assert_eq!(out.status.code(), Some(2), "{envs:?}: {}", out.stderr);
        assert_eq!(&out.stderr, expected, "{envs:?}");
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn default_docs_dir_is_relative_to_working_directory() {
    // With no DOCS_DIR and a working directory that has no `docs/`, the
    // default is reported as missing rather than silently serving nothing.
    let (tmp, _docs) = fixture();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(command(&[("PORT", "1")]).current_dir(&empty));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        out.stderr,
        "doc-server: DOCS_DIR=\"docs\" does not exist; expected a directory of .md files\n"
    );
}

#[test]
fn port_in_use_exits_one_with_one_line() {
    let (_tmp, docs) = fixture();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let free = free_port().to_string();
    for (public, admin, expected) in [
        (
            &port,
            &free,
            format!("doc-server: cannot listen on 127.0.0.1:{port}: "),
        ),
        (
            &free,
            &port,
            format!("doc-server: cannot listen on 127.0.0.1:{port} (ADMIN_PORT): "),
        ),
    ] {
        let out = run(&mut command(&[
            ("PORT", public),
            ("ADMIN_PORT", admin),
            ("BIND_ADDR", "127.0.0.1"),
            ("DOCS_DIR", docs.to_str().unwrap()),
        ]));
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        let last = out.stderr.lines().last().unwrap();
        assert!(last.starts_with(&expected), "{}", out.stderr);
    }
}

#[test]
fn cli_flags() {
    let version = run(command(&[]).arg("--version"));
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        version.stdout,
        format!("doc-server {}\n", env!("CARGO_PKG_VERSION"))
    );

    let help = run(command(&[]).arg("--help"));
    assert_eq!(help.status.code(), Some(0));
    assert!(help.stdout.contains("--health-check"), "{}", help.stdout);
    assert!(
        help.stdout.contains("SHUTDOWN_TIMEOUT_SECS"),
        "{}",
        help.stdout
    );

    for args in [&["--bogus"][..], &["serve"], &["--version", "extra"]] {
        let out = run(command(&[]).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_one_line(&out.stderr);
        assert!(out.stderr.contains("unknown argument"), "{}", out.stderr);
    }
}
