//! Runtime configuration, read from environment variables and validated up
//! front so that a misconfigured container fails fast with one readable line
//! instead of half-starting.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 8080;
/// The admin listener (`/health/*`, `/metrics`): probes and scrapes reach it
/// directly, never through the Service, so a flood of the public port
/// cannot starve them.
pub const DEFAULT_ADMIN_PORT: u16 = 9090;
pub const DEFAULT_DOCS_DIR: &str = "docs";
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// Upper bound for the drain timeout. Orchestrators kill the process long
/// before an hour has passed, so a larger value is almost certainly a typo
/// (e.g. milliseconds instead of seconds).
pub const MAX_SHUTDOWN_TIMEOUT_SECS: u64 = 3600;

/// hyper refuses a read buffer below this (`max_buf_size`), so it is the
/// smallest accepted `MAX_HEADER_BYTES`.
pub const MIN_HEADER_BYTES: u64 = 8192;

/// Connection and request limits. The defaults fit the dev pod (64Mi): at
/// `max_connections` connections each holding a full header buffer the
/// server needs about 256 × 16 KiB = 4 MiB for buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a connection's first byte (or its accept) until its request
    /// head is complete; a slow-header client is disconnected after it.
    pub header_read_timeout: Duration,
    /// From a complete request head until the last byte of its response
    /// was written, so a client that never reads its answer is bounded too.
    pub request_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served at once; past it a new connection is closed at
    /// once.
    pub max_connections: usize,
    /// Largest request head (request line and headers); larger gets a 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl Limits {
    /// The admin listener's: probes and scrapes send their request at once
    /// and need their answer within seconds, so nothing there may wait long.
    #[must_use]
    pub fn admin(max_connections: usize) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections,
            max_header_bytes: 8192,
        }
    }
}

/// Searches scan every document, so they run on the blocking pool, a few
/// at a time, each within a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// Searches running at once.
    pub concurrency: usize,
    /// Searches that may wait for one of those slots; past it a search is
    /// answered 503 at once.
    pub queue: usize,
    /// From the request to its result, waiting included; the scan checks it
    /// between documents and gives up with a 503.
    pub timeout: Duration,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            concurrency: 2,
            queue: 16,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Bounds on `DOCS_DIR`, checked before any document is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocsLimits {
    /// Memory the documents may take: their text and their prepared JSON
    /// answers together (see `DocStore::held_bytes`).
    pub max_bytes: u64,
    pub max_count: usize,
}

impl Default for DocsLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            max_count: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub bind_addr: IpAddr,
    pub port: u16,
    pub admin_port: u16,
    pub admin_max_connections: usize,
    pub docs_dir: PathBuf,
    pub shutdown_timeout: Duration,
    pub limits: Limits,
    pub search: SearchLimits,
    pub docs_limits: DocsLimits,
}

/// A rejected setting. `Display` renders the whole message on one line,
/// naming the variable, the offending value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    /// Already quoted and escaped, so control characters cannot break the
    /// one-line error format.
    pub value: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={} {}", self.var, self.value, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(var: &'static str, value: &OsStr, problem: impl Into<String>) -> Self {
        Self {
            var,
            value: quote(value),
            problem: problem.into(),
        }
    }
}

fn quote(value: &OsStr) -> String {
    // `Debug` escapes quotes, newlines and non-UTF-8 bytes.
    match value.to_str() {
        Some(s) => format!("{s:?}"),
        None => format!("{value:?}"),
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// Returns the first invalid setting found.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the configuration through `lookup`, which lets tests supply
    /// variables without mutating the process-wide environment.
    ///
    /// # Errors
    /// Returns the first invalid setting found.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let port = port_from_lookup(&lookup)?;
        let bind_addr = bind_addr_from_lookup(&lookup)?;
        let admin_port = admin_port_from_lookup(&lookup)?;
        if admin_port == port {
            return Err(ConfigError::new(
                "ADMIN_PORT",
                OsStr::new(&admin_port.to_string()),
                "is also PORT; the admin listener needs a port of its own",
            ));
        }

        let docs_dir = match lookup("DOCS_DIR") {
            None => PathBuf::from(DEFAULT_DOCS_DIR),
            Some(raw) => {
                if raw.is_empty() {
                    return Err(ConfigError::new(
                        "DOCS_DIR",
                        &raw,
                        "is empty; expected a path to a directory of .md files",
                    ));
                }
                PathBuf::from(raw)
            }
        };
        check_docs_dir(&docs_dir)?;

        let shutdown_timeout = match lookup("SHUTDOWN_TIMEOUT_SECS") {
            None => Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            Some(raw) => raw
                .to_str()
                .and_then(parse_digits)
                .filter(|secs| (1..=MAX_SHUTDOWN_TIMEOUT_SECS).contains(secs))
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    ConfigError::new(
                        "SHUTDOWN_TIMEOUT_SECS",
                        &raw,
                        format!("is not a whole number of seconds (1-{MAX_SHUTDOWN_TIMEOUT_SECS})"),
                    )
                })?,
        };

        let defaults = Limits::default();
        let secs = |var, default: Duration, max| {
            number(
                &lookup,
                var,
                default.as_secs(),
                1,
                max,
                "whole number of seconds",
            )
            .map(Duration::from_secs)
        };
        let limits = Limits {
            header_read_timeout: secs(
                "HEADER_READ_TIMEOUT_SECS",
                defaults.header_read_timeout,
                300,
            )?,
            request_timeout: secs("REQUEST_TIMEOUT_SECS", defaults.request_timeout, 3600)?,
            idle_timeout: secs("IDLE_TIMEOUT_SECS", defaults.idle_timeout, 3600)?,
            max_connections: size(
                &lookup,
                "MAX_CONNECTIONS",
                defaults.max_connections,
                1,
                100_000,
            )?,
            max_header_bytes: size(
                &lookup,
                "MAX_HEADER_BYTES",
                defaults.max_header_bytes,
                MIN_HEADER_BYTES,
                1024 * 1024,
            )?,
        };
        let admin_max_connections = size(&lookup, "ADMIN_MAX_CONNECTIONS", 16, 1, 1024)?;
        let search = search_from_lookup(&lookup)?;
        let docs_limits = docs_limits_from_lookup(&lookup)?;

        Ok(Self {
            bind_addr,
            port,
            admin_port,
            admin_max_connections,
            docs_dir,
            shutdown_timeout,
            limits,
            search,
            docs_limits,
        })
    }
}

fn docs_limits_from_lookup(
    lookup: &impl Fn(&str) -> Option<OsString>,
) -> Result<DocsLimits, ConfigError> {
    let defaults = DocsLimits::default();
    Ok(DocsLimits {
        max_bytes: number(
            lookup,
            "DOCS_MAX_BYTES",
            defaults.max_bytes,
            1,
            1 << 40,
            "number of bytes",
        )?,
        max_count: size(lookup, "DOCS_MAX_COUNT", defaults.max_count, 1, 1_000_000)?,
    })
}

fn search_from_lookup(
    lookup: &impl Fn(&str) -> Option<OsString>,
) -> Result<SearchLimits, ConfigError> {
    let defaults = SearchLimits::default();
    Ok(SearchLimits {
        concurrency: size(lookup, "SEARCH_CONCURRENCY", defaults.concurrency, 1, 64)?,
        queue: size(lookup, "SEARCH_QUEUE", defaults.queue, 0, 10_000)?,
        timeout: Duration::from_millis(number(
            lookup,
            "SEARCH_TIMEOUT_MS",
            u64::try_from(defaults.timeout.as_millis()).unwrap_or(u64::MAX),
            10,
            60_000,
            "whole number of milliseconds",
        )?),
    })
}

/// An unsigned setting in `min..=max`, or `default` when unset. The error
/// names the range, e.g. `is not a whole number of seconds (1-300)`.
fn number(
    lookup: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
    what: &str,
) -> Result<u64, ConfigError> {
    match lookup(var) {
        None => Ok(default),
        Some(raw) => raw
            .to_str()
            .and_then(parse_digits)
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ConfigError::new(var, &raw, format!("is not a {what} ({min}-{max})"))),
    }
}

/// A count or byte size that the server uses as `usize`.
fn size(
    lookup: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
    default: usize,
    min: u64,
    max: u64,
) -> Result<usize, ConfigError> {
    let default = u64::try_from(default).unwrap_or(u64::MAX);
    let n = number(lookup, var, default, min, max, "whole number")?;
    // `max` is far below `usize::MAX` on every supported target.
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Reads `BIND_ADDR` and `ADMIN_PORT` only: the address `--health-check`
/// dials.
///
/// # Errors
/// Returns an error if either is set but invalid.
pub fn admin_addr_from_env() -> Result<(IpAddr, u16), ConfigError> {
    let lookup = |name: &str| std::env::var_os(name);
    Ok((
        bind_addr_from_lookup(&lookup)?,
        admin_port_from_lookup(&lookup)?,
    ))
}

fn bind_addr_from_lookup(
    lookup: &impl Fn(&str) -> Option<OsString>,
) -> Result<IpAddr, ConfigError> {
    match lookup("BIND_ADDR") {
        None => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(raw) => raw
            .to_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| {
                ConfigError::new(
                    "BIND_ADDR",
                    &raw,
                    "is not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)",
                )
            }),
    }
}

fn port_from_lookup(lookup: &impl Fn(&str) -> Option<OsString>) -> Result<u16, ConfigError> {
    port_var(lookup, "PORT", DEFAULT_PORT)
}

fn admin_port_from_lookup(lookup: &impl Fn(&str) -> Option<OsString>) -> Result<u16, ConfigError> {
    port_var(lookup, "ADMIN_PORT", DEFAULT_ADMIN_PORT)
}

fn port_var(
    lookup: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
    default: u16,
) -> Result<u16, ConfigError> {
    match lookup(var) {
        None => Ok(default),
        Some(raw) => raw
            .to_str()
            .and_then(parse_digits)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&port| port != 0)
            .ok_or_else(|| ConfigError::new(var, &raw, "is not a port number (1-65535)")),
    }
}

/// Accepts plain ASCII digits only: `str::parse` would also take a leading
/// `+`, which is more likely a templating mistake than intent.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn check_docs_dir(dir: &std::path::Path) -> Result<(), ConfigError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::new(
            "DOCS_DIR",
            dir.as_os_str(),
            "is not a directory",
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::new(
            "DOCS_DIR",
            dir.as_os_str(),
            "does not exist; expected a directory of .md files",
        )),
        Err(err) => Err(ConfigError::new(
            "DOCS_DIR",
            dir.as_os_str(),
            format!("cannot be accessed ({err})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    /// A directory that exists in every checkout, so tests need no fixtures.
    fn existing_dir() -> &'static str {
        env!("CARGO_MANIFEST_DIR")
    }

    #[test]
    fn defaults_apply_when_unset() {
        let cfg = parse(&[("DOCS_DIR", existing_dir())]).unwrap();
        assert_eq!(cfg.port, 8080);
        assert_eq!(cfg.bind_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn explicit_values_are_used() {
        let cfg = parse(&[
            ("PORT", "9091"),
            ("BIND_ADDR", "::1"),
            ("DOCS_DIR", existing_dir()),
            ("SHUTDOWN_TIMEOUT_SECS", "5"),
        ])
        .unwrap();
        assert_eq!(cfg.port, 9091);
        assert_eq!(cfg.bind_addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(cfg.docs_dir, PathBuf::from(existing_dir()));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(5));
    }

    #[test]
    fn port_bounds() {
        for ok in ["1", "65535", "08080"] {
            assert!(
                parse(&[("PORT", ok), ("DOCS_DIR", existing_dir())]).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn bad_port_is_rejected_with_one_line_message() {
        for bad in [
            "abc",
            "0",
            "65536",
            "-1",
            "+80",
            " 80",
            "80.0",
            "",
            "99999999999999999999",
        ] {
            let err = parse(&[("PORT", bad), ("DOCS_DIR", existing_dir())]).unwrap_err();
            assert_eq!(err.var, "PORT", "{bad}");
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("1-65535"), "{msg}");
        }
        let err = parse(&[("PORT", "abc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"PORT="abc" is not a port number (1-65535)"#
        );
    }

    #[test]
    fn control_characters_in_values_stay_on_one_line() {
        let err = parse(&[("PORT", "80\n81")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"PORT="80\n81" is not a port number (1-65535)"#
        );
    }

    #[test]
    fn missing_docs_dir_is_rejected() {
        let err = parse(&[("DOCS_DIR", "/definitely/not/here")]).unwrap_err();
        assert_eq!(err.var, "DOCS_DIR");
        assert_eq!(
            err.to_string(),
            r#"DOCS_DIR="/definitely/not/here" does not exist; expected a directory of .md files"#
        );
    }

    #[test]
    fn docs_dir_that_is_a_file_is_rejected() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let err = parse(&[("DOCS_DIR", file)]).unwrap_err();
        assert_eq!(err.var, "DOCS_DIR");
        assert!(err.to_string().ends_with("is not a directory"), "{err}");
    }

    #[test]
    fn empty_docs_dir_is_rejected() {
        let err = parse(&[("DOCS_DIR", "")]).unwrap_err();
        assert_eq!(err.var, "DOCS_DIR");
    }

    #[test]
    fn bad_shutdown_timeout_is_rejected() {
        for bad in ["0", "-5", "abc", "1.5", "", "3601"] {
            let err =
                parse(&[("DOCS_DIR", existing_dir()), ("SHUTDOWN_TIMEOUT_SECS", bad)]).unwrap_err();
            assert_eq!(err.var, "SHUTDOWN_TIMEOUT_SECS", "{bad}");
            assert!(err.to_string().contains("whole number of seconds"), "{err}");
        }
    }

    #[test]
    fn limits_have_defaults_and_ranges() {
        let cfg = parse(&[("DOCS_DIR", existing_dir())]).unwrap();
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.docs_limits, DocsLimits::default());
        let cfg = parse(&[
            ("DOCS_DIR", existing_dir()),
            ("HEADER_READ_TIMEOUT_SECS", "2"),
            ("REQUEST_TIMEOUT_SECS", "3"),
            ("IDLE_TIMEOUT_SECS", "4"),
            ("MAX_CONNECTIONS", "5"),
            ("MAX_HEADER_BYTES", "8192"),
            ("DOCS_MAX_BYTES", "1000"),
            ("DOCS_MAX_COUNT", "7"),
        ])
        .unwrap();
        assert_eq!(cfg.limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(cfg.limits.request_timeout, Duration::from_secs(3));
        assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(4));
        assert_eq!(cfg.limits.max_connections, 5);
        assert_eq!(cfg.limits.max_header_bytes, 8192);
        assert_eq!(cfg.docs_limits.max_bytes, 1000);
        assert_eq!(cfg.docs_limits.max_count, 7);
    }

    #[test]
    fn bad_limits_are_rejected_with_the_range() {
        for (var, bad, expected) in [
            (
                "HEADER_READ_TIMEOUT_SECS",
                "0",
                "is not a whole number of seconds (1-300)",
            ),
            (
                "HEADER_READ_TIMEOUT_SECS",
                "301",
                "is not a whole number of seconds (1-300)",
            ),
            (
                "REQUEST_TIMEOUT_SECS",
                "1.5",
                "is not a whole number of seconds (1-3600)",
            ),
            (
                "IDLE_TIMEOUT_SECS",
                "",
                "is not a whole number of seconds (1-3600)",
            ),
            ("MAX_CONNECTIONS", "0", "is not a whole number (1-100000)"),
            (
                "MAX_HEADER_BYTES",
                "4096",
                "is not a whole number (8192-1048576)",
            ),
            (
                "DOCS_MAX_BYTES",
                "32M",
                "is not a number of bytes (1-1099511627776)",
            ),
            ("DOCS_MAX_COUNT", "-1", "is not a whole number (1-1000000)"),
        ] {
            let err = parse(&[("DOCS_DIR", existing_dir()), (var, bad)]).unwrap_err();
            assert_eq!(err.to_string(), format!("{var}={bad:?} {expected}"));
        }
    }

    #[test]
    fn admin_port_and_search_limits() {
        let cfg = parse(&[("DOCS_DIR", existing_dir())]).unwrap();
        assert_eq!(cfg.admin_port, 9090);
        assert_eq!(cfg.admin_max_connections, 16);
        assert_eq!(cfg.search, SearchLimits::default());
        let cfg = parse(&[
            ("DOCS_DIR", existing_dir()),
            ("ADMIN_PORT", "9100"),
            ("ADMIN_MAX_CONNECTIONS", "4"),
            ("SEARCH_CONCURRENCY", "1"),
            ("SEARCH_QUEUE", "0"),
            ("SEARCH_TIMEOUT_MS", "250"),
        ])
        .unwrap();
        assert_eq!(cfg.admin_port, 9100);
        assert_eq!(cfg.admin_max_connections, 4);
        assert_eq!(
            cfg.search,
            SearchLimits {
                concurrency: 1,
                queue: 0,
                timeout: Duration::from_millis(250)
            }
        );
        for (vars, expected) in [
            (
                &[("ADMIN_PORT", "0")][..],
                r#"ADMIN_PORT="0" is not a port number (1-65535)"#,
            ),
            (
                &[("PORT", "9090")],
                r#"ADMIN_PORT="9090" is also PORT; the admin listener needs a port of its own"#,
            ),
            (
                &[("PORT", "7000"), ("ADMIN_PORT", "7000")],
                r#"ADMIN_PORT="7000" is also PORT; the admin listener needs a port of its own"#,
            ),
            (
                &[("ADMIN_MAX_CONNECTIONS", "0")],
                r#"ADMIN_MAX_CONNECTIONS="0" is not a whole number (1-1024)"#,
            ),
            (
                &[("SEARCH_CONCURRENCY", "65")],
                r#"SEARCH_CONCURRENCY="65" is not a whole number (1-64)"#,
            ),
            (
                &[("SEARCH_QUEUE", "-1")],
                r#"SEARCH_QUEUE="-1" is not a whole number (0-10000)"#,
            ),
            (
                &[("SEARCH_TIMEOUT_MS", "2s")],
                r#"SEARCH_TIMEOUT_MS="2s" is not a whole number of milliseconds (10-60000)"#,
            ),
        ] {
            let mut vars = vars.to_vec();
            vars.push(("DOCS_DIR", existing_dir()));
            assert_eq!(parse(&vars).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn bad_bind_addr_is_rejected() {
        let err = parse(&[("BIND_ADDR", "localhost"), ("DOCS_DIR", existing_dir())]).unwrap_err();
        assert_eq!(err.var, "BIND_ADDR");
    }

    #[test]
    fn port_is_validated_before_docs_dir() {
        // The health check relies on PORT alone; checking it first keeps the
        // reported error stable when several settings are wrong.
        let err = parse(&[("PORT", "x"), ("DOCS_DIR", "/nope")]).unwrap_err();
        assert_eq!(err.var, "PORT");
    }
}
