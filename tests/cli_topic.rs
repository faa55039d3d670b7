//! `strom topic ...` and `strom cluster info` run as processes against a real broker: create
//! with partitions and configs, list, describe, alter, delete, and one-line errors.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::process::Command;

use common::TestBroker;

/// Runs `strom <args> --brokers <broker>` off the async runtime; (success, stdout, stderr).
async fn strom(broker: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(common::strom_bin());
    cmd.args(args).args(["--brokers", broker]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
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

/// The partition rows of `strom topic describe`, split into fields.
fn partition_rows(describe: &str) -> Vec<Vec<String>> {
    describe
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|f| f.parse::<i32>().is_ok())
        })
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let broker = b.bootstrap();

    let (ok, out, err) = strom(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
            "--config",
            "cleanup.policy=compact",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "created topic orders");

    // Creating it again says why it failed.
    let err = one_line_error(strom(&broker, &["topic", "create", "orders"]).await);
    assert!(err.contains("TopicAlreadyExists"), "{err}");

    let (ok, out, err) = strom(&broker, &["topic", "list"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["orders"], "{out}");

    // Records in partition 1 show in its log end offset.
    let mut c = common::RawClient::connect(b.addr).await;
    let batch = common::build_batch(
        strom::log::Compression::None,
        (0..4).map(|i| strom::log::Record::new(None::<&str>, Some(format!("v{i}")), 1000 + i)),
    );
    assert_eq!(
        common::produce_acks_all(&mut c, "orders", 1, batch)
            .await
            .error_code,
        0
    );

    let (ok, out, err) = strom(&broker, &["topic", "describe", "orders"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("topic orders (id "), "{out}");
    assert!(out.contains("3 partitions, replication factor 1"), "{out}");
    let node = b.broker.config().node_id.to_string();
    let rows = partition_rows(&out);
    assert_eq!(rows.len(), 3, "{out}");
    for (p, row) in rows.iter().enumerate() {
        let end = if p == 1 { "4" } else { "0" };
        // partition, leader, replicas, isr, log-start, log-end
        assert_eq!(
            row,
            &[&p.to_string(), &node, &node, &node, "0", end],
            "{out}"
        );
    }
    assert!(out.contains("  retention.ms=3600000\n"), "{out}");
    assert!(out.contains("  cleanup.policy=compact\n"), "{out}");
    // Defaults are not listed.
    assert!(!out.contains("segment.bytes"), "{out}");

    let (ok, out, err) = strom(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--partitions",
            "5",
            "--config",
            "retention.ms=60000",
            "--delete-config",
            "cleanup.policy",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("3 -> 5 partitions"), "{out}");
    let (ok, out, err) = strom(&broker, &["topic", "describe", "orders"]).await;
    assert!(ok, "{err}");
    assert_eq!(partition_rows(&out).len(), 5, "{out}");
    assert!(out.contains("  retention.ms=60000\n"), "{out}");
    assert!(!out.contains("cleanup.policy"), "{out}");

    // Partitions can only be added.
    let err =
        one_line_error(strom(&broker, &["topic", "alter", "orders", "--partitions", "2"]).await);
    assert!(err.contains("can only be added"), "{err}");
    // A config the broker does not know is refused with its reason.
    let err = one_line_error(
        strom(
            &broker,
            &["topic", "alter", "orders", "--config", "no.such=1"],
        )
        .await,
    );
    assert!(err.contains("no.such"), "{err}");

    let (ok, out, err) = strom(&broker, &["topic", "delete", "orders"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deleted topic orders");
    let (ok, out, err) = strom(&broker, &["topic", "list"]).await;
    assert!(ok, "{err}");
    assert!(!out.lines().any(|l| l == "orders"), "{out}");
    let err = one_line_error(strom(&broker, &["topic", "describe", "orders"]).await);
    assert!(err.contains("unknown topic orders"), "{err}");

    let (ok, out, err) = strom(&broker, &["cluster", "info"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("cluster id: {}", b.broker.cluster_id())),
        "{out}"
    );
    assert!(out.contains(&format!("controller: {node}")), "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with(&format!("{node} ")))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, [node.as_str(), broker.as_str(), "-"], "{out}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let broker = b.bootstrap();

    for args in [
        &["topic", "describe", "nope"][..],
        &["topic", "delete", "nope"],
        &["topic", "alter", "nope", "--partitions", "4"],
    ] {
        let err = one_line_error(strom(&broker, args).await);
        assert!(err.contains("unknown topic nope"), "{args:?}: {err}");
    }
    // Nothing was auto-created by asking.
    let (ok, out, _) = strom(&broker, &["topic", "list"]).await;
    assert!(ok && out.trim().is_empty(), "{out}");

    let err = one_line_error(
        strom(
            &broker,
            &["topic", "create", "t", "--config", "retention.ms"],
        )
        .await,
    );
    assert!(
        err.contains("--config \"retention.ms\": expected KEY=VALUE"),
        "{err}"
    );
    let err = one_line_error(
        strom(
            &broker,
            &["topic", "create", "t", "--config", "retention.ms=soon"],
        )
        .await,
    );
    assert!(err.contains("retention.ms"), "{err}");
    let err = one_line_error(strom(&broker, &["topic", "alter", "t"]).await);
    assert!(err.contains("nothing to alter"), "{err}");
    b.stop().await;

    // Nothing listens on this port.
    let addr = format!("127.0.0.1:{}", common::free_port());
    for args in [&["topic", "list"][..], &["cluster", "info"]] {
        let err = one_line_error(strom(&addr, args).await);
        assert!(
            err.contains(&format!("broker unreachable at {addr}")),
            "{args:?}: {err}"
        );
    }
}
