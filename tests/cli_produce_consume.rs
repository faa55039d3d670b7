//! `strom produce` and `strom consume` run as processes against a real broker: keys, headers,
//! JSON and text output, `--from` (beginning, offset, time), group commits, `--file`, errors.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::TestBroker;
use serde_json::Value;

/// Runs `strom <args> --brokers <broker>` with `stdin` as input; (success, stdout, stderr).
async fn strom(broker: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(common::strom_bin());
    cmd.args(args)
        .args(["--brokers", broker])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs a command that must succeed; returns its stdout.
async fn ok(broker: &str, args: &[&str], stdin: &str) -> String {
    let (ok, out, err) = strom(broker, args, stdin).await;
    assert!(ok, "strom {args:?} failed: {err}");
    out
}

/// Asserts a failure reported as exactly one line on stderr, and returns that line.
fn one_line_error((ok, out, err): (bool, String, String)) -> String {
    assert!(!ok, "expected a failure; stdout: {out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("strom: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    err
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_from_beginning_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let broker = b.bootstrap();
    ok(
        &broker,
        &["topic", "create", "events", "--partitions", "1"],
        "",
    )
    .await;

    let before = now_ms();
    let out = ok(
        &broker,
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
            "--header",
            "v=a=b",
        ],
        "k1:v1\nk2:v2:with:colons\n:empty-key\r\nk4:",
    )
    .await;
    let after = now_ms();
    assert_eq!(out, "", "nothing printed on success without --verbose");

    let out = ok(
        &broker,
        &[
            "consume",
            "events",
            "--from",
            "beginning",
            "--count",
            "4",
            "--format",
            "json",
        ],
        "",
    )
    .await;
    let records = json_lines(&out);
    let want = [
        ("k1", "v1"),
        ("k2", "v2:with:colons"),
        ("", "empty-key"),
        ("k4", ""),
    ];
    assert_eq!(records.len(), want.len(), "{out}");
    for (i, (r, (k, v))) in records.iter().zip(want).enumerate() {
        assert_eq!(r["topic"], "events", "{r}");
        assert_eq!(r["key"], k, "{r}");
        assert_eq!(r["value"], v, "{r}");
        assert_eq!(r["partition"], 0, "{r}");
        assert_eq!(r["offset"], i as i64, "{r}");
        assert!(r.get("value_encoding").is_none(), "{r}");
        let ts = r["timestamp"].as_i64().unwrap();
        assert!(
            (before..=after).contains(&ts),
            "{ts} not in {before}..={after}"
        );
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "src", "value": "cli"}, {"key": "v", "value": "a=b"}]),
            "{r}"
        );
    }

    let out = ok(
        &broker,
        &["consume", "events", "--from", "beginning", "--count", "2"],
        "",
    )
    .await;
    assert_eq!(out, "v1\nv2:with:colons\n");
    let out = ok(
        &broker,
        &[
            "consume",
            "events",
            "--from",
            "1",
            "--count",
            "2",
            "--print-key",
        ],
        "",
    )
    .await;
    assert_eq!(out, "k2\tv2:with:colons\n\tempty-key\n");
    // --timeout-ms ends a consumer that has nothing (more) to read, successfully.
    let out = ok(
        &broker,
        &["consume", "events", "--from", "3", "--timeout-ms", "300"],
        "",
    )
    .await;
    assert_eq!(out, "\n", "only the last value, which is empty");
    let out = ok(&broker, &["consume", "events", "--timeout-ms", "200"], "").await;
    assert_eq!(out, "", "the default start is the end");

    // Values that are not UTF-8 come out as base64, and say so.
    let mut c = common::RawClient::connect(b.addr).await;
    let batch = common::build_batch(
        strom::log::Compression::None,
        [strom::log::Record::new(
            None::<&[u8]>,
            Some(&[0xffu8, 0xfe][..]),
            now_ms(),
        )],
    );
    let r = common::produce_acks_all(&mut c, "events", 0, batch).await;
    assert_eq!(r.error_code, 0);
    let out = ok(
        &broker,
        &[
            "consume", "events", "--from", "4", "--count", "1", "--format", "json",
        ],
        "",
    )
    .await;
    let r = &json_lines(&out)[0];
    assert_eq!(r["value"], "//4=", "{r}");
    assert_eq!(r["value_encoding"], "base64", "{r}");
    assert_eq!(r["key"], Value::Null, "{r}");
    assert_eq!(r["headers"], serde_json::json!([]), "{r}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let broker = b.bootstrap();
    // Records stamped 1_000_000 + i ms by the producer.
    let mut c = common::RawClient::connect(b.addr).await;
    common::create_topic(&mut c, "timed", 1, &[]).await;
    let batch = common::build_batch(
        strom::log::Compression::None,
        (0..10).map(|i| strom::log::Record::new(Some("k"), Some(format!("v{i}")), 1_000_000 + i)),
    );
    assert_eq!(
        common::produce_acks_all(&mut c, "timed", 0, batch)
            .await
            .error_code,
        0
    );
    // 1970-01-01T00:16:40.005Z = 1_000_005 ms: the first record at or after it is v5.
    let out = ok(
        &broker,
        &[
            "consume",
            "timed",
            "--from",
            "1970-01-01T00:16:40.005Z",
            "--format",
            "json",
            "--timeout-ms",
            "500",
        ],
        "",
    )
    .await;
    let records = json_lines(&out);
    let got: Vec<(i64, i64, &str)> = records
        .iter()
        .map(|r| {
            (
                r["offset"].as_i64().unwrap(),
                r["timestamp"].as_i64().unwrap(),
                r["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (5, 1_000_005, "v5"),
            (6, 1_000_006, "v6"),
            (7, 1_000_007, "v7"),
            (8, 1_000_008, "v8"),
            (9, 1_000_009, "v9")
        ]
    );
    // A time after every record: nothing, until the timeout.
    let out = ok(
        &broker,
        &[
            "consume",
            "timed",
            "--from",
            "2001-01-01T00:00:00Z",
            "--timeout-ms",
            "300",
        ],
        "",
    )
    .await;
    assert_eq!(out, "");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumption_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.group_initial_rebalance_delay_ms = 0;
    })
    .await;
    let broker = b.bootstrap();
    ok(
        &broker,
        &["topic", "create", "jobs", "--partitions", "2"],
        "",
    )
    .await;
    let lines: String = (0..6).map(|i| format!("k{i}:job{i}\n")).collect();
    ok(
        &broker,
        &[
            "produce",
            "jobs",
            "--key-separator",
            ":",
            "--acks",
            "1",
            "--compression",
            "gzip",
        ],
        &lines,
    )
    .await;

    // The first member reads 4 of the 6 and commits exactly those on exit.
    let first = ok(
        &broker,
        &[
            "consume",
            "jobs",
            "--group",
            "g",
            "--from",
            "beginning",
            "--count",
            "4",
        ],
        "",
    )
    .await;
    assert_eq!(first.lines().count(), 4, "{first}");
    ok(&broker, &["produce", "jobs", "--partition", "1"], "late\n").await;
    // The second run starts at the committed offsets: the 2 unread, then the late one.
    let second = ok(
        &broker,
        &[
            "consume",
            "jobs",
            "--group",
            "g",
            "--from",
            "beginning",
            "--timeout-ms",
            "1500",
        ],
        "",
    )
    .await;
    let mut all: Vec<&str> = first.lines().chain(second.lines()).collect();
    assert!(second.lines().any(|l| l == "late"), "{second}");
    assert_eq!(second.lines().count(), 3, "{second}");
    all.sort();
    let mut want: Vec<String> = (0..6).map(|i| format!("job{i}")).collect();
    want.push("late".into());
    want.sort();
    assert_eq!(all, want);
    // Everything is committed: a third run gets nothing.
    let third = ok(
        &broker,
        &["consume", "jobs", "--group", "g", "--timeout-ms", "500"],
        "",
    )
    .await;
    assert_eq!(third, "");
    let describe = ok(&broker, &["group", "describe", "g"], "").await;
    let lags: Vec<&str> = describe
        .lines()
        .filter(|l| l.starts_with("jobs "))
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(lags, ["0", "0"], "{describe}");

    // A new group with --from OFFSET starts there on every partition it has no commit for.
    let out = ok(
        &broker,
        &[
            "consume",
            "jobs",
            "--group",
            "h",
            "--partition",
            "1",
            "--from",
            "1",
            "--format",
            "json",
            "--timeout-ms",
            "500",
        ],
        "",
    )
    .await;
    let offsets: Vec<i64> = json_lines(&out)
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert!(!offsets.is_empty() && offsets[0] == 1, "{out}");
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{out}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_from_a_file_verbosely() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let broker = b.bootstrap();
    ok(
        &broker,
        &["topic", "create", "files", "--partitions", "2"],
        "",
    )
    .await;
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();
    let out = ok(
        &broker,
        &[
            "produce",
            "files",
            "--file",
            file.to_str().unwrap(),
            "--partition",
            "1",
            "--verbose",
            "--linger-ms",
            "0",
        ],
        "ignored stdin\n",
    )
    .await;
    assert_eq!(out, "files\t1\t0\nfiles\t1\t1\nfiles\t1\t2\n");
    let out = ok(
        &broker,
        &[
            "consume",
            "files",
            "--partition",
            "1",
            "--from",
            "beginning",
            "--count",
            "3",
        ],
        "",
    )
    .await;
    assert_eq!(out, "a\nb\nc\n");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.auto_create_topics = false).await;
    let broker = b.bootstrap();
    ok(&broker, &["topic", "create", "t", "--partitions", "1"], "").await;

    let err = one_line_error(
        strom(
            &broker,
            &["produce", "t", "--key-separator", ":"],
            "k:v\nnokey\n",
        )
        .await,
    );
    assert!(err.contains("line 2: no key separator"), "{err}");
    let err = one_line_error(strom(&broker, &["produce", "t", "--partition", "7"], "x\n").await);
    assert!(
        err.contains("line 1: ") && err.contains("partition 7"),
        "{err}"
    );
    let err = one_line_error(strom(&broker, &["produce", "t", "--acks", "2"], "x\n").await);
    assert!(err.contains("--acks \"2\""), "{err}");
    let err = one_line_error(strom(&broker, &["produce", "t", "--header", "nokv"], "x\n").await);
    assert!(
        err.contains("--header \"nokv\": expected KEY=VALUE"),
        "{err}"
    );
    let err =
        one_line_error(strom(&broker, &["produce", "t", "--file", "/no/such/file"], "").await);
    assert!(err.contains("/no/such/file"), "{err}");
    // The broker does not auto-create topics here.
    let err = one_line_error(strom(&broker, &["produce", "missing"], "x\n").await);
    assert!(err.contains("unknown topic missing"), "{err}");
    let err = one_line_error(strom(&broker, &["consume", "missing"], "").await);
    assert!(err.contains("unknown topic missing"), "{err}");
    let err = one_line_error(strom(&broker, &["consume", "t", "--partition", "3"], "").await);
    assert!(err.contains("partition 3 does not exist"), "{err}");
    let err = one_line_error(strom(&broker, &["consume", "t", "--from", "soon"], "").await);
    assert!(err.contains("--from \"soon\""), "{err}");
    // Of the failed runs, only the line before the bad one was produced.
    let out = ok(
        &broker,
        &["consume", "t", "--from", "beginning", "--timeout-ms", "300"],
        "",
    )
    .await;
    assert_eq!(out, "v\n");
    b.stop().await;

    let addr = format!("127.0.0.1:{}", common::free_port());
    for args in [&["produce", "t"][..], &["consume", "t"]] {
        let err = one_line_error(strom(&addr, args, "x\n").await);
        assert!(
            err.contains(&format!("broker unreachable at {addr}")),
            "{args:?}: {err}"
        );
    }
}
