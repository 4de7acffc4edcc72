//! Hand-rolled Prometheus metrics. A handful of series do not justify a
//! metrics crate and its dependency tree in a size-tuned image.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Route label for requests that matched no route. Using one fixed value
/// instead of the raw path keeps the series count bounded no matter what
/// URLs scanners throw at the service.
pub const UNMATCHED_ROUTE: &str = "unmatched";

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request-duration histogram, in seconds: 1 ms to 1 s,
/// the range in which a canary's latency is judged.
pub const DURATION_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Keyed by (route template, status code). Both are bounded sets, so the
    /// map cannot grow without limit.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Keyed by (route template, status class 1 to 5): bounded too.
    durations: Mutex<BTreeMap<(String, u8), Histogram>>,
    in_flight: AtomicU64,
    connections_open: AtomicU64,
    /// Indexed by [`Closed`].
    connections_closed: [AtomicU64; Closed::ALL.len()],
}

#[derive(Debug, Default, Clone, Copy)]
struct Histogram {
    /// Not cumulative: the count of each bucket alone, and past the last.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// Why the server closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The request head did not arrive within `HEADER_READ_TIMEOUT_SECS`.
    HeaderTimeout = 0,
    /// A keep-alive connection waited longer than `IDLE_TIMEOUT_SECS`.
    IdleTimeout = 1,
    /// A request and its response took longer than `REQUEST_TIMEOUT_SECS`.
    RequestTimeout = 2,
    /// Closed at accept: `MAX_CONNECTIONS` and the probe reserve were full.
    OverLimit = 3,
}

impl Closed {
    const ALL: [Self; 4] = [
        Self::HeaderTimeout,
        Self::IdleTimeout,
        Self::RequestTimeout,
        Self::OverLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::OverLimit => "over_limit",
        }
    }
}

impl Metrics {
    /// Counts a request as in flight until the returned guard is dropped.
    /// A guard (rather than paired inc/dec calls) keeps the gauge right when
    /// a handler panics or the client disconnects mid-request.
    pub fn track_in_flight(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self)
    }

    /// Counts one answered request and how long the router took to answer
    /// it (up to its response head; writing the body is not included).
    pub fn record_request(&self, route: &str, status: u16, took: Duration) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            *requests.entry((route.to_owned(), status)).or_insert(0) += 1;
        }
        let class = u8::try_from((status / 100).clamp(1, 5)).unwrap_or(5);
        let mut durations = self
            .durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        durations
            .entry((route.to_owned(), class))
            .or_default()
            .observe(took);
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn track_connection(&self) -> ConnectionGuard<'_> {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self)
    }

    pub fn record_closed(&self, why: Closed) {
        self.connections_closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[must_use]
    pub fn closed(&self, why: Closed) -> u64 {
        self.connections_closed[why as usize].load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self, docs_loaded: usize) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str(
            "# HELP doc_server_http_requests_total HTTP requests handled, by matched route template and status code.\n\
             # TYPE doc_server_http_requests_total counter\n",
        );
        {
            let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            for ((route, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "doc_server_http_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                    escape_label(route)
                );
            }
        }
        out.push_str(
            "# HELP doc_server_http_request_duration_seconds Time to answer a request, up to its response head, by matched route template and status class.\n\
             # TYPE doc_server_http_request_duration_seconds histogram\n",
        );
        {
            let durations = self
                .durations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for ((route, class), h) in durations.iter() {
                let labels = format!(
                    "route=\"{}\",status_class=\"{class}xx\"",
                    escape_label(route)
                );
                let mut cumulative = 0;
                for (le, n) in DURATION_BUCKETS.iter().zip(&h.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "doc_server_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "doc_server_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                     doc_server_http_request_duration_seconds_sum{{{labels}}} {}\n\
                     doc_server_http_request_duration_seconds_count{{{labels}}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let _ = write!(
            out,
            "# HELP doc_server_http_requests_in_flight HTTP requests currently being handled.\n\
             # TYPE doc_server_http_requests_in_flight gauge\n\
             doc_server_http_requests_in_flight {}\n\
             # HELP doc_server_docs_loaded Markdown documents loaded from DOCS_DIR.\n\
             # TYPE doc_server_docs_loaded gauge\n\
             doc_server_docs_loaded {docs_loaded}\n\
             # HELP doc_server_connections_open HTTP connections currently open.\n\
             # TYPE doc_server_connections_open gauge\n\
             doc_server_connections_open {}\n\
             # HELP doc_server_connections_closed_total Connections the server closed on its own, by reason.\n\
             # TYPE doc_server_connections_closed_total counter\n",
            self.in_flight(),
            self.connections_open.load(Ordering::Relaxed)
        );
        for why in Closed::ALL {
            let _ = writeln!(
                out,
                "doc_server_connections_closed_total{{reason=\"{}\"}} {}",
                why.label(),
                self.closed(why)
            );
        }
        out
    }
}

pub struct InFlightGuard<'a>(&'a Metrics);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct ConnectionGuard<'a>(&'a Metrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.record_request("/api/docs/{slug}", 200, MS);
        m.record_request("/api/docs/{slug}", 200, MS);
        m.record_request("/api/docs/{slug}", 404, MS);
        let text = m.render(4);
        assert!(text.contains(
            "doc_server_http_requests_total{route=\"/api/docs/{slug}\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "doc_server_http_requests_total{route=\"/api/docs/{slug}\",status=\"404\"} 1\n"
        ));
        assert!(text.contains("# TYPE doc_server_http_requests_total counter\n"));
        assert!(text.contains("# TYPE doc_server_http_requests_in_flight gauge\n"));
        assert!(text.contains("doc_server_http_requests_in_flight 0\n"));
        assert!(text.contains("doc_server_docs_loaded 4\n"));
        assert!(text.contains("doc_server_connections_open 0\n"));
        assert!(
            text.contains("doc_server_connections_closed_total{reason=\"header_timeout\"} 0\n")
        );
    }

    #[test]
    fn durations_are_a_histogram_by_route_and_status_class() {
        let m = Metrics::default();
        m.record_request("/api/search", 200, Duration::from_micros(500));
        m.record_request("/api/search", 200, Duration::from_millis(30));
        m.record_request("/api/search", 503, Duration::from_secs(2));
        let text = m.render(0);
        let ok = "route=\"/api/search\",status_class=\"2xx\"";
        let failed = "route=\"/api/search\",status_class=\"5xx\"";
        for line in [
            "# TYPE doc_server_http_request_duration_seconds histogram\n".to_owned(),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"0.001\"}} 1\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"0.025\"}} 1\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"0.05\"}} 2\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"1\"}} 2\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"+Inf\"}} 2\n"),
            format!("doc_server_http_request_duration_seconds_count{{{ok}}} 2\n"),
            format!("doc_server_http_request_duration_seconds_sum{{{ok}}} 0.030"),
            format!("doc_server_http_request_duration_seconds_bucket{{{failed},le=\"1\"}} 0\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{failed},le=\"+Inf\"}} 1\n"),
        ] {
            assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("status_class=\"4xx\""),
            "no empty classes: {text}"
        );
    }

    #[test]
    fn connection_gauge_and_close_reasons() {
        let m = Metrics::default();
        let c = m.track_connection();
        m.record_closed(Closed::OverLimit);
        m.record_closed(Closed::OverLimit);
        let text = m.render(0);
        assert!(text.contains("doc_server_connections_open 1\n"), "{text}");
        assert!(text.contains("doc_server_connections_closed_total{reason=\"over_limit\"} 2\n"));
        drop(c);
        assert!(m.render(0).contains("doc_server_connections_open 0\n"));
    }

    #[test]
    fn in_flight_guard_restores_gauge() {
        let m = Metrics::default();
        let a = m.track_in_flight();
        let b = m.track_in_flight();
        assert_eq!(m.in_flight(), 2);
        drop(a);
        assert_eq!(m.in_flight(), 1);
        drop(b);
        assert_eq!(m.in_flight(), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
    }
}
