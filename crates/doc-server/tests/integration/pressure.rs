//! The compiled binary under the pressure the pod limits are set for:
//! many slow readers of the largest document, and searches saturating the
//! CPU. Figures are printed (run with `--nocapture` to see them); the
//! assertions are loose enough for a busy shared machine and still far
//! from what the server did before its answers were built once and its
//! searches moved off the workers.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{fs, thread};

use doc_server::client;

use crate::abuse::{big_doc_fixture, metric, slow_reader};
use crate::binary::ServerProcess;
use crate::common::TempDir;

/// `resources.limits.memory` of the dev environment, in bytes.
fn dev_pod_memory_limit() -> u64 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/doc-server/values-dev.yaml"
    );
    let values = fs::read_to_string(path).unwrap();
    let after_limits = &values[values
        .find("limits:")
        .expect("no limits: in values-dev.yaml")..];
    let quantity = after_limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("no memory limit in values-dev.yaml")
        .trim();
    let (number, unit) = quantity.split_at(quantity.trim_end_matches(char::is_alphabetic).len());
    let factor = match unit {
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unexpected unit {other:?} in {quantity}"),
    };
    number.parse::<u64>().unwrap() * factor
}

#[allow(clippy::cast_precision_loss)] // a figure to read
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[test]
fn two_hundred_slow_readers_of_the_largest_document_fit_the_dev_pod() {
    // 1 MiB of a control character, whose JSON is 6 MiB: before its answer
    // was built once, each reader held its own copy (1.2 GiB for 200).
    let (_tmp, docs) = big_doc_fixture();
    let server = ServerProcess::start_with(&docs, [127, 0, 0, 1].into(), &[]);
    let (_, loaded) = server.rss();
    let readers: Vec<TcpStream> = (0..200).map(|_| slow_reader(server.addr)).collect();
    // Let every answer fill its socket buffers and stall.
    thread::sleep(Duration::from_millis(500));
    let (now, peak) = server.rss();
    let limit = dev_pod_memory_limit();
    eprintln!(
        "slow readers: 200; RSS loaded {}, with the readers {} (peak {}); dev pod limit {}",
        mib(loaded),
        mib(now),
        mib(peak),
        mib(limit)
    );
    assert!(peak < limit, "peak RSS {} >= {}", mib(peak), mib(limit));
    let open = metric(
        server.admin,
        "doc_server_connections_open{listener=\"public\"}",
    );
    assert_eq!(open, "doc_server_connections_open{listener=\"public\"} 200");
    drop(readers);
    server.signal(libc::SIGTERM);
    let _ = server.wait();
}

/// About `total` bytes of Markdown in files of 1 MB, ASCII text only.
fn write_tree(dir: &std::path::Path, total: usize) {
    let words = [
        "kubernetes",
        "probe",
        "drain",
        "rollout",
        "Latency",
        "memory",
        "search",
        "Header",
    ];
    let mut written = 0;
    for i in 0.. {
        if written >= total {
            break;
        }
        let mut body = format!("# Generated document {i}\n\n");
        for j in 0.. {
            if body.len() >= 1_000_000 - 100 {
                break;
            }
            let _ = writeln!(
                body,
                "Line {j}: {} {} text for the search test.",
                words[(i + j) % words.len()],
                words[(i * 7 + j * 3) % words.len()]
            );
        }
        fs::write(dir.join(format!("doc-{i:03}.md")), &body).unwrap();
        written += body.len();
    }
}

/// The server's CPU time so far (user and system), from `/proc`.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), 1-based 14
    // and 15 overall: utime and stime, in clock ticks of 1/100 s.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

#[test]
fn health_answers_stay_fast_while_sixteen_searches_saturate_the_cpu() {
    let tmp = TempDir::new();
    write_tree(tmp.path(), 50_000_000);
    let server = ServerProcess::start_with(
        tmp.path(),
        [127, 0, 0, 1].into(),
        &[
            ("DOCS_MAX_BYTES", "268435456"),
            // Two run, four wait, the other ten are turned away at once.
            ("SEARCH_QUEUE", "4"),
        ],
    );
    let (addr, admin) = (server.addr, server.admin);
    // Not in any document, and not ASCII: every search reads all 50 MB
    // on its slowest path.
    let path = "/api/search?q=%C3%BCberpr%C3%BCfung";

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let r = client::get(addr, path, Duration::from_secs(30)).unwrap();
                    let retry = r.header("retry-after").map(str::to_owned);
                    let ran = r.status == 200 || r.body.contains("took too long");
                    answers
                        .lock()
                        .unwrap()
                        .push((r.status, retry, at.elapsed(), ran));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));

    let pid = server.pid();
    let (cpu_before, wall) = (cpu_time(pid), Instant::now());
    let mut took = Vec::new();
    while wall.elapsed() < Duration::from_secs(4) {
        let at = Instant::now();
        let live = client::get(admin, "/health/live", Duration::from_secs(5)).unwrap();
        took.push(at.elapsed());
        assert_eq!(live.status, 200);
        thread::sleep(Duration::from_millis(10));
    }
    let (cpu, wall) = (cpu_time(pid).saturating_sub(cpu_before), wall.elapsed());
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    took.sort();
    let p99 = took[took.len() * 99 / 100];
    let answers = answers.lock().unwrap();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    eprintln!(
        "health during 16 searches: {} probes, p50 {:?}, p99 {:?}, max {:?}; server CPU {:?} in {:?}; searches: {ok} answered, {} turned away (fastest {:?})",
        took.len(),
        took[took.len() / 2],
        p99,
        took.last().unwrap(),
        cpu,
        wall,
        busy.len(),
        busy.iter().map(|a| a.2).min()
    );
    // Searches did run (answered, or stopped by their deadline while
    // scanning): on an idle machine two at a time take both cores; at nice
    // 10 on a busy one they take what the rest leaves, so their CPU time is
    // shown, not asserted.
    assert!(answers.iter().any(|a| a.3), "no search ever ran");
    // The target is a p99 under 50 ms, which the load benchmark measures
    // on the release build. Here the bounds only separate the designs on
    // a machine that may be running other builds: before, a probe waited
    // behind whole searches on the runtime's workers, seconds for this
    // debug build (and it timed out after 10 s when tried).
    let p50 = took[took.len() / 2];
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}: {took:?}");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}: {took:?}");
    assert_eq!(ok + busy.len(), answers.len(), "only 200 or 503");
    assert!(!busy.is_empty(), "no search was turned away");
    for a in &busy {
        assert_eq!(a.1.as_deref(), Some("1"), "a 503 without Retry-After");
    }
    // Turned away at once, not after waiting for a turn.
    assert!(busy.iter().map(|a| a.2).min().unwrap() < Duration::from_millis(500));
    let counted = metric(
        admin,
        "doc_server_http_requests_total{route=\"/api/search\",status=\"503\"}",
    );
    assert_eq!(
        counted,
        format!(
            "doc_server_http_requests_total{{route=\"/api/search\",status=\"503\"}} {}",
            busy.len()
        )
    );
    server.signal(libc::SIGTERM);
    let _ = server.wait();
}
