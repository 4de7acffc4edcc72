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
    /// Keyed by route template (a bounded set, so the map cannot grow
    /// without limit).
    routes: Mutex<BTreeMap<String, RouteStats>>,
    in_flight: AtomicU64,
    /// Indexed by [`Listener`].
    connections_open: [AtomicU64; Listener::ALL.len()],
    /// Indexed by [`Listener`], then [`Closed`].
    connections_closed: [[AtomicU64; Closed::ALL.len()]; Listener::ALL.len()],
}

#[derive(Debug, Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    /// By status class, 1xx to 5xx.
    durations: [Histogram; 5],
}

#[derive(Debug, Default, Clone, Copy)]
struct Histogram {
    /// Not cumulative: the count of each bucket alone, and past the last.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `PORT`: the API, behind the Service.
    Public = 0,
    /// `ADMIN_PORT`: probes and metrics.
    Admin = 1,
}

impl Listener {
    const ALL: [Self; 2] = [Self::Public, Self::Admin];

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Admin => "admin",
        }
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
    /// Closed at accept: the listener's connection limit was reached.
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
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // Looked up by `&str` first: no allocation once the route is known.
        let per_route = if let Some(found) = routes.get_mut(route) {
            found
        } else {
            routes.entry(route.to_owned()).or_default()
        };
        *per_route.by_status.entry(status).or_insert(0) += 1;
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let h = &mut per_route.durations[class];
        let secs = took.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        h.buckets[bucket] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn track_connection(&self, listener: Listener) -> ConnectionGuard<'_> {
        self.connections_open[listener as usize].fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self, listener)
    }

    pub fn record_closed(&self, listener: Listener, why: Closed) {
        self.connections_closed[listener as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[must_use]
    pub fn closed(&self, listener: Listener, why: Closed) -> u64 {
        self.connections_closed[listener as usize][why as usize].load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self, docs_loaded: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut durations = String::new();
        out.push_str(
            "# HELP doc_server_http_requests_total HTTP requests handled, by matched route template and status code.\n\
             # TYPE doc_server_http_requests_total counter\n",
        );
        durations.push_str(
            "# HELP doc_server_http_request_duration_seconds Time to answer a request, up to its response head, by matched route template and status class.\n\
             # TYPE doc_server_http_request_duration_seconds histogram\n",
        );
        {
            let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            for (route, stats) in routes.iter() {
                let route = escape_label(route);
                for (status, count) in &stats.by_status {
                    let _ = writeln!(
                        out,
                        "doc_server_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                    );
                }
                for (class, h) in (1..).zip(&stats.durations) {
                    if h.count == 0 {
                        continue;
                    }
                    let labels = format!("route=\"{route}\",status_class=\"{class}xx\"");
                    let mut cumulative = 0;
                    for (le, n) in DURATION_BUCKETS.iter().zip(&h.buckets) {
                        cumulative += n;
                        let _ = writeln!(
                            durations,
                            "doc_server_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                        );
                    }
                    let _ = writeln!(
                        durations,
                        "doc_server_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                         doc_server_http_request_duration_seconds_sum{{{labels}}} {}\n\
                         doc_server_http_request_duration_seconds_count{{{labels}}} {}",
                        h.count, h.sum, h.count
                    );
                }
            }
        }
        out.push_str(&durations);
        let _ = write!(
            out,
            "# HELP doc_server_http_requests_in_flight HTTP requests currently being handled.\n\
             # TYPE doc_server_http_requests_in_flight gauge\n\
             doc_server_http_requests_in_flight {}\n\
             # HELP doc_server_docs_loaded Markdown documents loaded from DOCS_DIR.\n\
             # TYPE doc_server_docs_loaded gauge\n\
             doc_server_docs_loaded {docs_loaded}\n\
             # HELP doc_server_connections_open HTTP connections currently open, by listener.\n\
             # TYPE doc_server_connections_open gauge\n",
            self.in_flight(),
        );
        for listener in Listener::ALL {
            let _ = writeln!(
                out,
                "doc_server_connections_open{{listener=\"{}\"}} {}",
                listener.label(),
                self.connections_open[listener as usize].load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP doc_server_connections_closed_total Connections the server closed on its own, by listener and reason.\n\
             # TYPE doc_server_connections_closed_total counter\n",
        );
        for listener in Listener::ALL {
            for why in Closed::ALL {
                let _ = writeln!(
                    out,
                    "doc_server_connections_closed_total{{listener=\"{}\",reason=\"{}\"}} {}",
                    listener.label(),
                    why.label(),
                    self.closed(listener, why)
                );
            }
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

pub struct ConnectionGuard<'a>(&'a Metrics, Listener);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections_open[self.1 as usize].fetch_sub(1, Ordering::Relaxed);
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
        assert!(text.contains("doc_server_connections_open{listener=\"public\"} 0\n"));
        assert!(text.contains("doc_server_connections_open{listener=\"admin\"} 0\n"));
        assert!(text.contains(
            "doc_server_connections_closed_total{listener=\"public\",reason=\"header_timeout\"} 0\n"
        ));
    }

    #[test]
    fn durations_are_a_histogram_by_route_and_status_class() {
        let m = Metrics::default();
        m.record_request("/api/search", 200, Duration::from_micros(500));
        m.record_request("/api/search", 200, Duration::from_millis(30));
        m.record_request("/api/search", 503, Duration::from_secs(2));
        let text = m.render(0);
        let ok = "route=\"/api/search\",status_class=\"2xx\"";
        for line in [
            "# TYPE doc_server_http_request_duration_seconds histogram\n".to_owned(),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"0.001\"}} 1\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"0.025\"}} 1\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"0.05\"}} 2\n"),
            format!("doc_server_http_request_duration_seconds_bucket{{{ok},le=\"+Inf\"}} 2\n"),
            format!("doc_server_http_request_duration_seconds_count{{{ok}}} 2\n"),
            "doc_server_http_request_duration_seconds_bucket{route=\"/api/search\",status_class=\"5xx\",le=\"1\"} 0\n".to_owned(),
            "doc_server_http_request_duration_seconds_bucket{route=\"/api/search\",status_class=\"5xx\",le=\"+Inf\"} 1\n".to_owned(),
        ] {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        // A class with no request has no series.
        assert!(!text.contains("status_class=\"4xx\""), "{text}");
    }

    #[test]
    fn connection_gauge_and_close_reasons_per_listener() {
        let m = Metrics::default();
        let c = m.track_connection(Listener::Admin);
        m.record_closed(Listener::Public, Closed::OverLimit);
        m.record_closed(Listener::Public, Closed::OverLimit);
        let text = m.render(0);
        assert!(
            text.contains("doc_server_connections_open{listener=\"admin\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("doc_server_connections_open{listener=\"public\"} 0\n"),
            "{text}"
        );
        assert!(text.contains(
            "doc_server_connections_closed_total{listener=\"public\",reason=\"over_limit\"} 2\n"
        ));
        assert!(text.contains(
            "doc_server_connections_closed_total{listener=\"admin\",reason=\"over_limit\"} 0\n"
        ));
        drop(c);
        assert!(
            m.render(0)
                .contains("doc_server_connections_open{listener=\"admin\"} 0\n")
        );
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
