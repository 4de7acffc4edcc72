//! The request-duration histogram, read from the running binary's
//! `/metrics` after real requests: one series per route template and status
//! class, buckets from 1 ms to 1 s, cumulative, with `+Inf` equal to the
//! count.

use std::time::Duration;

use doc_server::client;
use doc_server::metrics::DURATION_BUCKETS;

use crate::binary::ServerProcess;
use crate::common::fixture;

fn series<'a>(text: &'a str, name: &str, labels: &str) -> Vec<(&'a str, f64)> {
    let prefix = format!("{name}{{{labels}");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap();
            (head, value.parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn request_durations_are_a_histogram_by_route_template_and_status_class() {
    let (_tmp, docs) = fixture();
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 1].into(), &[]);
    let get = |path: &str| client::get(server.addr, path, Duration::from_secs(5)).unwrap();
    for _ in 0..3 {
        assert_eq!(get("/api/docs/alpha").status, 200);
    }
    assert_eq!(get("/api/docs/no-such-doc").status, 404);
    assert_eq!(get("/api/search?q=probes").status, 200);
    assert_eq!(get("/no/such/route").status, 404);
    // Metrics answer on the admin port only.
    let text = client::get(server.admin, "/metrics", Duration::from_secs(5))
        .unwrap()
        .body;

    assert!(
        text.contains("# TYPE doc_server_http_request_duration_seconds histogram\n"),
        "{text}"
    );
    let name = "doc_server_http_request_duration_seconds_bucket";
    let docs_ok = "route=\"/api/docs/{slug}\",status_class=\"2xx\"";
    let buckets = series(&text, name, docs_ok);
    let bounds: Vec<String> = buckets
        .iter()
        .map(|(head, _)| {
            head.rsplit_once("le=\"")
                .unwrap()
                .1
                .trim_end_matches("\"}")
                .to_owned()
        })
        .collect();
    let mut expected: Vec<String> = DURATION_BUCKETS.iter().map(ToString::to_string).collect();
    expected.push("+Inf".to_owned());
    assert_eq!(bounds, expected, "{text}");
    assert_eq!(bounds.first().map(String::as_str), Some("0.001"));
    assert_eq!(bounds[bounds.len() - 2], "1");
    let counts: Vec<f64> = buckets.iter().map(|(_, v)| *v).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {counts:?}"
    );
    assert!(
        (counts[counts.len() - 1] - 3.0).abs() < f64::EPSILON,
        "{text}"
    );
    let count = series(
        &text,
        "doc_server_http_request_duration_seconds_count",
        docs_ok,
    );
    assert_eq!(count.len(), 1);
    assert!((count[0].1 - 3.0).abs() < f64::EPSILON);
    let sum = series(
        &text,
        "doc_server_http_request_duration_seconds_sum",
        docs_ok,
    );
    assert!(sum[0].1 > 0.0 && sum[0].1 < 3.0, "{text}");

    // The 404 for a document is its own class of the same route template;
    // the path that matched no route is one bounded label, never the path.
    let not_found = series(
        &text,
        "doc_server_http_request_duration_seconds_count",
        "route=\"/api/docs/{slug}\",status_class=\"4xx\"",
    );
    assert!((not_found[0].1 - 1.0).abs() < f64::EPSILON, "{text}");
    let search = series(
        &text,
        "doc_server_http_request_duration_seconds_count",
        "route=\"/api/search\",status_class=\"2xx\"",
    );
    assert!((search[0].1 - 1.0).abs() < f64::EPSILON, "{text}");
    assert!(
        text.contains("doc_server_http_request_duration_seconds_count{route=\"unmatched\",status_class=\"4xx\"} 1\n"),
        "{text}"
    );
    assert!(!text.contains("/no/such/route"), "{text}");
    assert!(!text.contains("no-such-doc"), "{text}");
    // The request counters are still there beside it.
    assert!(
        text.contains(
            "doc_server_http_requests_total{route=\"/api/docs/{slug}\",status=\"200\"} 3\n"
        ),
        "{text}"
    );
}
