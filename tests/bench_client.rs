//! `strom bench produce|consume|e2e` (`strom::bench_client`) against a real broker, with small
//! numbers: counts are exact, latencies are reported where they should be, the JSON summary
//! parses, and an unreachable broker is a one-line error.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use common::TestBroker;
use strom::bench_client::{run, BenchSummary, ClientBench};
use strom::client::admin::{Admin, OffsetSpec};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: ClientBench,
}

/// `strom bench MODE ARGS...` as the command line would parse it.
fn cmd(mode: &str, brokers: &str, args: &[&str]) -> ClientBench {
    let mut argv = vec!["bench", mode, "--brokers", brokers, "--no-progress"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap().cmd
}

fn assert_latency(s: &BenchSummary) {
    let l = s.latency_ms.as_ref().expect("latency reported");
    assert!(l.p50 > 0.0, "{s:?}");
    assert!(
        l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{s:?}"
    );
    assert!(l.max < 60_000.0, "{s:?}");
}

fn assert_rates(s: &BenchSummary) {
    assert!(s.seconds > 0.0, "{s:?}");
    assert!(s.records_per_sec > 0.0 && s.mib_per_sec > 0.0, "{s:?}");
    let expected = s.records as f64 / s.seconds;
    assert!(
        (s.records_per_sec - expected).abs() < 1e-6 * expected,
        "{s:?}"
    );
}

async fn records_in(bootstrap: &str, topic: &str) -> i64 {
    let admin = Admin::connect(bootstrap).await.unwrap();
    let ends = admin
        .list_offsets(&[topic.to_string()], OffsetSpec::Latest)
        .await
        .unwrap();
    ends.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_then_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let bs = b.bootstrap();

    let common = [
        "--records",
        "2000",
        "--record-size",
        "100",
        "--partitions",
        "3",
    ];
    let s = run(cmd(
        "produce",
        &bs,
        &[&common[..], &["--topic", "bp"]].concat(),
    ))
    .await
    .unwrap();
    assert_eq!(s.mode, "produce");
    assert_eq!((s.records, s.bytes), (2000, 200_000));
    assert_latency(&s);
    assert_rates(&s);
    assert_eq!(records_in(&bs, "bp").await, 2000);
    let admin = Admin::connect(&bs).await.unwrap();
    assert_eq!(
        admin.describe_topic("bp").await.unwrap().partitions.len(),
        3
    );

    // Fewer than the topic holds: exactly --records are counted.
    let s = run(cmd("consume", &bs, &["--topic", "bp", "--records", "1500"]))
        .await
        .unwrap();
    assert_eq!(s.mode, "consume");
    assert_eq!((s.records, s.bytes), (1500, 150_000));
    assert!(s.latency_ms.is_none());
    assert_rates(&s);
    assert_eq!(records_in(&bs, "bp").await, 2000, "nothing produced");

    // More than the topic holds: the missing records are produced first.
    let s = run(cmd(
        "consume",
        &bs,
        &["--topic", "bp", "--records", "3000", "--record-size", "100"],
    ))
    .await
    .unwrap();
    assert_eq!((s.records, s.bytes), (3000, 300_000));
    assert_eq!(records_in(&bs, "bp").await, 3000);

    // End to end on a fresh topic, two producers, another codec and acks.
    let s = run(cmd(
        "e2e",
        &bs,
        &[
            &common[..],
            &[
                "--topic",
                "be",
                "--producers",
                "2",
                "--acks",
                "1",
                "--compression",
                "lz4",
                "--linger-ms",
                "1",
            ],
        ]
        .concat(),
    ))
    .await
    .unwrap();
    assert_eq!(s.mode, "e2e");
    assert_eq!((s.records, s.bytes), (2000, 200_000));
    assert_latency(&s);
    assert_rates(&s);

    // End to end on a topic that already holds records: only the new ones are read.
    let s = run(cmd(
        "e2e",
        &bs,
        &["--topic", "bp", "--records", "500", "--record-size", "4"],
    ))
    .await
    .unwrap();
    assert_eq!((s.records, s.bytes), (500, 2000));
    assert_latency(&s);
    assert_eq!(records_in(&bs, "bp").await, 3500);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bounds_a_run_and_json_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let bs = b.bootstrap();
    let started = Instant::now();
    let s = run(cmd(
        "produce",
        &bs,
        &[
            "--duration",
            "1s",
            "--record-size",
            "64",
            "--acks",
            "0",
            "--json",
        ],
    ))
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(s.records > 0 && s.bytes == s.records * 64, "{s:?}");
    assert!(s.seconds >= 1.0 && s.seconds < 20.0, "{s:?}");
    assert_latency(&s);

    let json = serde_json::to_value(&s).unwrap();
    for key in [
        "mode",
        "records",
        "bytes",
        "seconds",
        "records_per_sec",
        "mib_per_sec",
    ] {
        assert!(json.get(key).is_some(), "{key} missing in {json}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(
            json["latency_ms"][key].is_f64(),
            "latency_ms.{key} in {json}"
        );
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_one_line_error() {
    let port = common::free_port();
    let brokers = format!("127.0.0.1:{port}");
    for mode in ["produce", "consume", "e2e"] {
        let e = run(cmd(mode, &brokers, &["--records", "10"]))
            .await
            .unwrap_err();
        assert!(e.contains(&brokers), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = run(cmd("produce", &brokers, &["--producers", "0"]))
        .await
        .unwrap_err();
    assert!(e.contains("--producers"), "{e}");
}

/// The `strom` binary: `strom bench produce --json` prints one JSON object on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let bs = b.bootstrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::strom_bin())
            .args([
                "bench",
                "produce",
                "--brokers",
                &bs,
                "--records",
                "1000",
                "--record-size",
                "10",
            ])
            .arg("--json")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "strom bench produce failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["mode"], "produce");
    assert_eq!(json["records"], 1000);
    assert_eq!(json["bytes"], 10_000);
    assert!(json["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{json}");
    b.stop().await;
}
