//! `strom sql` as a process against a real `strom server`: `-c` and `-f` print tables, stop at
//! the first error with one `ERROR:` line and exit status 1, and an unreachable server is one
//! line too.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::sql::SqlServer;
use strom::client::{Admin, NewTopic};

/// Runs `strom sql --server <server> <args>` (at most 20 s); (success, stdout, stderr).
async fn strom_sql(server: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(common::strom_bin());
    cmd.args(["sql", "--server", server])
        .args(args)
        .stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("strom sql finishes within 20 s")
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
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_prints_a_table_or_one_error_line() {
    let server = SqlServer::start().await;
    let sql = server.sql_addr.to_string();
    let admin = Admin::connect(&server.bootstrap()).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("cli_orders", 2)])
        .await
        .unwrap();

    let (ok, out, err) = strom_sql(&sql, &["-c", "SHOW TOPICS;"]).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("name") && lines[0].contains("partitions"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("---") && lines[1].contains('+'),
        "{out}"
    );
    let row = lines.iter().find(|l| l.contains("cli_orders")).expect(&out);
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[..2], ["cli_orders", "2"], "{out}");
    // Strom's own topics are not listed: the one row is the user's topic.
    assert!(lines.contains(&"(1 row)"), "{out}");

    let err = one_line_error(strom_sql(&sql, &["-c", "SELEC 1;"]).await);
    assert!(err.starts_with("ERROR: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_runs_statement_by_statement_and_stops_at_the_first_error() {
    let server = SqlServer::start().await;
    let sql = server.sql_addr.to_string();
    let dir = tempfile::tempdir().unwrap();

    let good = dir.path().join("good.sql");
    std::fs::write(
        &good,
        "-- a stream, then the catalog\n\
         CREATE STREAM cli_s (a INT, b VARCHAR)\n  WITH (topic='cli_t', format='json', partitions=1);\n\
         SHOW STREAMS;\n",
    )
    .unwrap();
    let (ok, out, err) = strom_sql(&sql, &["-f", good.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("cli_s"), "{out}");

    let bad = dir.path().join("bad.sql");
    std::fs::write(&bad, "SELECT 1 + 1;\nSELEC 2;\nSELECT 3 + 3;\n").unwrap();
    let (ok, out, err) = strom_sql(&sql, &["-f", bad.to_str().unwrap()]).await;
    let err = one_line_error((ok, out.clone(), err));
    assert!(err.starts_with("ERROR: "), "{err}");
    assert!(err.ends_with("bad.sql:2)"), "{err}");
    // The statement before the error ran and printed; the one after did not run.
    assert!(out.contains(" 2\n"), "{out}");
    assert!(!out.contains(" 6\n"), "{out}");
}

#[tokio::test]
async fn an_unreachable_server_is_one_line() {
    let port = common::free_port();
    let server = format!("127.0.0.1:{port}");
    let err = one_line_error(strom_sql(&server, &["-c", "SHOW TOPICS;"]).await);
    assert!(
        err.starts_with(&format!("strom sql: cannot connect to {server}: ")),
        "{err}"
    );
}
