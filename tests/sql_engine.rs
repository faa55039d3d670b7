//! The SQL engine against a real broker over TCP (in this process): DDL, ad-hoc queries over
//! history with pushdown, windowed continuous queries with late records, and a persistent query
//! surviving an engine restart with its window state.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestBroker;
use strom::client::{
    Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use strom_sql::{Engine, EngineConfig, Output};

async fn engine(bootstrap: &str) -> std::sync::Arc<Engine> {
    let mut c = EngineConfig::new(bootstrap);
    c.commit_interval = Duration::from_millis(100);
    Engine::start(c).await.unwrap()
}

async fn exec(e: &Engine, sql: &str) -> Vec<Output> {
    match e.execute(sql).await {
        Ok(o) => o,
        Err(err) => panic!("{sql}: {err}"),
    }
}

/// Rows of the last statement as `col=value` text lines.
async fn rows(e: &Engine, sql: &str) -> Vec<String> {
    let mut out = exec(e, sql).await;
    let Some(Output::Rows { batches, .. }) = out.pop() else {
        panic!("no rows: {sql}")
    };
    let mut lines = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                strom_sql::datafusion::arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &Default::default(),
                )
                .unwrap()
            })
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .schema()
                .fields()
                .iter()
                .zip(&fmts)
                .map(|(f, fm)| format!("{}={}", f.name(), fm.value(r)))
                .collect();
            lines.push(cells.join(" "));
        }
    }
    lines
}

async fn produce(bootstrap: &str, topic: &str, recs: &[(i64, &str)]) {
    let p = Producer::new(ProducerConfig::new(bootstrap)).await.unwrap();
    for (ts, v) in recs {
        p.send(ProducerRecord::new(topic, v.to_string()).timestamp(*ts))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    p.close().await.unwrap();
}

async fn read_topic(bootstrap: &str, topic: &str, want: usize) -> Vec<String> {
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap)).await.unwrap();
    let tp = TopicPartition::new(topic, 0);
    c.assign(std::slice::from_ref(&tp)).unwrap();
    c.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while out.len() < want && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(100)).await.unwrap() {
            out.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"null")).into_owned());
        }
    }
    // Anything extra shows up within a moment.
    for r in c.poll(Duration::from_millis(300)).await.unwrap() {
        out.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or(b"null")).into_owned());
    }
    out
}

const MIN: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_adhoc_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(&e, "CREATE STREAM orders (id BIGINT, amount DOUBLE, ts TIMESTAMP) WITH (topic='orders', timestamp='ts', partitions=2)").await;
    produce(
        &bs,
        "orders",
        &[
            (1000, r#"{"id":1,"amount":10.5,"ts":1000}"#),
            (2000, r#"{"id":2,"amount":20,"ts":2000}"#),
            (3000, r#"{"id":3,"amount":30,"ts":3000}"#),
            (4000, "not json"),
        ],
    )
    .await;
    let got = rows(&e, "SELECT count(*) AS n, sum(amount) AS s FROM orders").await;
    assert_eq!(got, vec!["n=3 s=60.5"]);
    let got = rows(
        &e,
        "SELECT id FROM orders WHERE _timestamp >= TIMESTAMP '1970-01-01 00:00:02' ORDER BY id",
    )
    .await;
    assert_eq!(got, vec!["id=2", "id=3"]);
    let got = rows(&e, "SHOW STREAMS").await;
    assert!(
        got[0].starts_with("name=orders topic=orders format=json"),
        "{got:?}"
    );
    // Strom's own topics (the catalog) are listed only when asked for.
    let got = rows(&e, "SHOW TOPICS").await;
    assert_eq!(got, vec!["name=orders partitions=2"]);
    let got = rows(&e, "SHOW ALL TOPICS").await;
    assert!(
        got.contains(&"name=_strom_sql_catalog partitions=1".to_string()),
        "{got:?}"
    );
    let err = e
        .execute("SELECT amout FROM orders")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unknown column `amout` at line 1, column 8; did you mean `amount`?"
    );
    let err = e
        .execute("SELECT * FROM order")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown stream or table `order`") && err.contains("did you mean `orders`"),
        "{err}"
    );
    let err = e
        .execute("CREATE STREAM x (a INT) WITH (topik='x')")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean `topic`"), "{err}");
    let err = e
        .execute("CREATE STREAM o2 AS SELECT * FROM orders ORDER BY id")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("not supported: ORDER BY"), "{err}");
    e.shutdown().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_counts_with_late_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(
        &e,
        "CREATE STREAM clicks (user_id VARCHAR, ts TIMESTAMP) WITH (topic='clicks', timestamp='ts', partitions=1);
         CREATE STREAM counts WITH (topic='counts', late_topic='counts_late') AS
           SELECT window_start, user_id, count(*) AS n
           FROM TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
           GROUP BY window_start, window_end, user_id",
    )
    .await;
    let click = |u: &str, t: i64| format!(r#"{{"user_id":"{u}","ts":{t}}}"#);
    let first = [
        click("a", 1000),
        click("b", 2000),
        click("a", 59_000),
        click("a", MIN + 1),
    ];
    let recs: Vec<(i64, &str)> = first.iter().map(|s| (0, s.as_str())).collect();
    produce(&bs, "clicks", &recs).await;
    let out = read_topic(&bs, "counts", 2).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.contains(&r#"{"window_start":"1970-01-01T00:00:00","user_id":"a","n":2}"#.to_string()),
        "{out:?}"
    );
    // Let the query commit its state, then restart the engine mid-window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.shutdown().await;
    drop(e);
    let e = engine(&bs).await;
    assert_eq!(e.queries().len(), 1);
    let second = [click("a", MIN + 2), click("b", 500), click("a", 3 * MIN)];
    let recs: Vec<(i64, &str)> = second.iter().map(|s| (0, s.as_str())).collect();
    produce(&bs, "clicks", &recs).await;
    let out = read_topic(&bs, "counts", 3).await;
    assert_eq!(out.len(), 3, "{out:?}");
    // The second minute counts the record from before the restart too.
    assert_eq!(
        out[2],
        r#"{"window_start":"1970-01-01T00:01:00","user_id":"a","n":2}"#
    );
    let late = read_topic(&bs, "counts_late", 1).await;
    assert_eq!(late.len(), 1, "{late:?}");
    let q = e.queries()[0].clone();
    assert_eq!(q.late, 1);
    exec(&e, &format!("TERMINATE {}", q.id)).await;
    assert!(e.queries().is_empty());
    // Nothing of it stays behind: its state topic goes with it.
    let admin = strom::client::Admin::connect(&bs).await.unwrap();
    let state = format!("_strom_sql_{}_state", q.id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin.describe_topic(&state).await.is_ok() {
        assert!(Instant::now() < deadline, "{state} left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.shutdown().await;
    broker.stop().await;
}

/// A stream-stream join's buffered rows survive a restart: a left row read before it still
/// meets a right row that comes after it (the buffers are rebuilt from the input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_buffers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(
        &e,
        "CREATE STREAM lefts (id BIGINT, ts TIMESTAMP) WITH (topic='lefts', timestamp='ts');
         CREATE STREAM rights (id BIGINT, ts TIMESTAMP) WITH (topic='rights', timestamp='ts');
         CREATE STREAM pairs WITH (topic='pairs') AS
           SELECT l.id, r.ts AS right_ts FROM lefts l JOIN rights r
           ON l.id = r.id AND r.ts BETWEEN l.ts AND l.ts + INTERVAL '10' MINUTE",
    )
    .await;
    let row = |id: i64, t: i64| format!(r#"{{"id":{id},"ts":{t}}}"#);
    // Left 1 and 2 before the restart; right 2 joins at once.
    let before = [row(1, 1000), row(2, 2000)];
    let recs: Vec<(i64, &str)> = before.iter().map(|s| (0, s.as_str())).collect();
    produce(&bs, "lefts", &recs).await;
    let r2 = row(2, 3000);
    produce(&bs, "rights", &[(0, r2.as_str())]).await;
    let out = read_topic(&bs, "pairs", 1).await;
    assert_eq!(out.len(), 1, "{out:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.shutdown().await;
    drop(e);
    let e = engine(&bs).await;
    // Right 1 after the restart meets left 1 from before it, and nothing joins twice.
    let r1 = row(1, MIN);
    produce(&bs, "rights", &[(0, r1.as_str())]).await;
    let out = read_topic(&bs, "pairs", 2).await;
    assert_eq!(
        out,
        vec![
            r#"{"id":2,"right_ts":"1970-01-01T00:00:03"}"#.to_string(),
            r#"{"id":1,"right_ts":"1970-01-01T00:01:00"}"#.to_string(),
        ]
    );
    e.shutdown().await;
    broker.stop().await;
}

/// Window functions over an updating aggregate keep working after a restart: the window state
/// is rebuilt from the aggregate's restored groups, so a row after the restart has rows from
/// before it in its frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_functions_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(
        &e,
        "CREATE STREAM sales (item VARCHAR, seller VARCHAR, price BIGINT, ts TIMESTAMP)
           WITH (topic='sales', timestamp='ts');
         CREATE STREAM recent WITH (topic='recent') AS
           SELECT q.item, AVG(q.top) OVER (PARTITION BY q.seller ORDER BY q.last
             ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS avg_top
           FROM (SELECT item, seller, MAX(price) AS top, MAX(ts) AS last
                 FROM sales GROUP BY item, seller) AS q",
    )
    .await;
    let sale = |item: &str, price: i64, t: i64| {
        format!(r#"{{"item":"{item}","seller":"s","price":{price},"ts":{t}}}"#)
    };
    let (a, b, c) = (
        sale("a", 10, 1000),
        sale("b", 20, 2000),
        sale("c", 40, 3000),
    );
    produce(&bs, "sales", &[(0, a.as_str()), (0, b.as_str())]).await;
    let avg = |rows: &[String]| -> Vec<(String, f64)> {
        rows.iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                (
                    v["item"].as_str().unwrap().to_string(),
                    v["avg_top"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let out = read_topic(&bs, "recent", 2).await;
    assert_eq!(avg(&out), vec![("a".into(), 10.0), ("b".into(), 15.0)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.shutdown().await;
    drop(e);
    let e = engine(&bs).await;
    // c's frame is b (from before the restart) and c.
    produce(&bs, "sales", &[(0, c.as_str())]).await;
    let out = read_topic(&bs, "recent", 3).await;
    assert_eq!(avg(&out[2..]), vec![("c".into(), 30.0)]);
    e.shutdown().await;
    broker.stop().await;
}

/// Window functions over a stream's rows after a restart: the rows later frames need, and the
/// rows still waiting for the watermark, are kept in the query's state topic, so results
/// continue as if there had been no restart, and no row gets its results twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_windows_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(
        &e,
        "CREATE STREAM ticks (sym VARCHAR, price BIGINT, ts TIMESTAMP)
           WITH (topic='ticks', timestamp='ts');
         CREATE STREAM pairs_avg WITH (topic='pairs_avg') AS
           SELECT price, AVG(price) OVER (PARTITION BY sym ORDER BY ts
             ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS a2
           FROM ticks",
    )
    .await;
    let tick = |price: i64| format!(r#"{{"sym":"s","price":{price},"ts":{}}}"#, price * 100);
    let ticks: Vec<String> = [10, 20, 30, 40, 50].into_iter().map(tick).collect();
    let avgs = |rows: &[String]| -> Vec<(i64, f64)> {
        rows.iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(r).unwrap();
                (v["price"].as_i64().unwrap(), v["a2"].as_f64().unwrap())
            })
            .collect()
    };
    // 10 and 20 get their results; 30 waits for the watermark to pass it.
    let first: Vec<(i64, &str)> = ticks[..3].iter().map(|t| (0, t.as_str())).collect();
    produce(&bs, "ticks", &first).await;
    let out = read_topic(&bs, "pairs_avg", 2).await;
    assert_eq!(avgs(&out), vec![(10, 10.0), (20, 15.0)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.shutdown().await;
    drop(e);
    let e = engine(&bs).await;
    produce(&bs, "ticks", &[(0, ticks[3].as_str())]).await;
    produce(&bs, "ticks", &[(0, ticks[4].as_str())]).await;
    let out = read_topic(&bs, "pairs_avg", 4).await;
    assert_eq!(
        avgs(&out),
        vec![(10, 10.0), (20, 15.0), (30, 25.0), (40, 35.0)]
    );
    e.shutdown().await;
    broker.stop().await;
}

/// A query catching up on a backlog reads one partition ahead of another; records of the
/// partition behind are not late for it: the watermark follows the partitions with records
/// still to read. (Partition 0 holds minute 10, partition 1 minute 5; together more than one
/// poll's worth, so the first micro-batch holds all of one and part of the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_behind_is_not_late() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(
        &e,
        "CREATE STREAM ev (n BIGINT, ts TIMESTAMP) WITH (topic='ev', timestamp='ts', partitions=2)",
    )
    .await;
    let p = Producer::new(ProducerConfig::new(&bs)).await.unwrap();
    let mut pending = Vec::new();
    for (partition, minute) in [(0, 10), (1, 5)] {
        for k in 0..4000i64 {
            let t = minute * MIN + k * 10;
            let v = format!(r#"{{"n":{k},"ts":{t}}}"#);
            let r = ProducerRecord::new("ev", v)
                .partition(partition)
                .timestamp(t);
            pending.push(p.send(r).await.unwrap());
        }
        // Both partitions reach minute 30, which closes minutes 5 and 10.
        let t = 30 * MIN;
        let r = ProducerRecord::new("ev", format!(r#"{{"n":-1,"ts":{t}}}"#))
            .partition(partition)
            .timestamp(t);
        pending.push(p.send(r).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    p.close().await.unwrap();
    exec(
        &e,
        "CREATE STREAM ev_counts WITH (topic='ev_counts', partitions=1) AS
           SELECT window_start, COUNT(*) AS c
           FROM TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' MINUTE)
           GROUP BY window_start, window_end",
    )
    .await;
    let out = read_topic(&bs, "ev_counts", 2).await;
    let mut counts: Vec<(String, i64)> = out
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            (
                v["window_start"].as_str().unwrap().to_string(),
                v["c"].as_i64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("1970-01-01T00:05:00".to_string(), 4000),
            ("1970-01-01T00:10:00".to_string(), 4000)
        ]
    );
    e.shutdown().await;
    broker.stop().await;
}

/// A table made by a query grouping by two columns is keyed by both (the record key holds
/// both): read back ad hoc, and joined by a continuous query, it has one row per pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_keyed_by_two_columns_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let e = engine(&bs).await;
    exec(
        &e,
        "CREATE STREAM visits (user_id VARCHAR, page VARCHAR, ts TIMESTAMP)
           WITH (topic='visits', timestamp='ts');
         CREATE TABLE visit_counts WITH (topic='visit_counts') AS
           SELECT user_id, page, COUNT(*) AS n FROM visits GROUP BY user_id, page",
    )
    .await;
    let visit = |u: &str, p: &str, t: i64| format!(r#"{{"user_id":"{u}","page":"{p}","ts":{t}}}"#);
    let recs = [
        visit("u1", "a", 1000),
        visit("u1", "b", 2000),
        visit("u1", "a", 3000),
        visit("u2", "a", 4000),
    ];
    let refs: Vec<(i64, &str)> = recs.iter().map(|v| (0, v.as_str())).collect();
    produce(&bs, "visits", &refs).await;
    // The changelog holds one record per change (how many depends on micro-batching).
    let want = vec![
        "user_id=u1 page=a n=2",
        "user_id=u1 page=b n=1",
        "user_id=u2 page=a n=1",
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = rows(
            &e,
            "SELECT user_id, page, n FROM visit_counts ORDER BY user_id, page",
        )
        .await;
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A continuous query joins a stream with it on both columns.
    exec(
        &e,
        "CREATE STREAM lookups (user_id VARCHAR, page VARCHAR) WITH (topic='lookups');
         CREATE STREAM looked WITH (topic='looked') AS
           SELECT l.user_id, l.page, c.n FROM lookups l
           JOIN visit_counts c ON l.user_id = c.user_id AND l.page = c.page",
    )
    .await;
    let a = r#"{"user_id":"u1","page":"a"}"#;
    let b = r#"{"user_id":"u1","page":"b"}"#;
    produce(&bs, "lookups", &[(0, a), (0, b)]).await;
    let mut out = read_topic(&bs, "looked", 2).await;
    out.sort();
    assert_eq!(
        out,
        vec![
            r#"{"user_id":"u1","page":"a","n":2}"#.to_string(),
            r#"{"user_id":"u1","page":"b","n":1}"#.to_string(),
        ]
    );
    e.shutdown().await;
    broker.stop().await;
}

async fn shared_engine(bootstrap: &str, name: &str) -> std::sync::Arc<Engine> {
    let mut c = EngineConfig::new(bootstrap).shared(strom_sql::HostingConfig {
        session_timeout: Duration::from_secs(6),
        tick: Duration::from_millis(100),
        name: Some(name.to_string()),
    });
    c.commit_interval = Duration::from_millis(100);
    Engine::start(c).await.unwrap()
}

/// (engine index, state) of query `id` as each engine reports it, once one runs it and the
/// other says another server does (10 s at most).
async fn placed(engines: &[&Engine], id: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states: Vec<String> = engines
            .iter()
            .map(|e| {
                e.queries()
                    .into_iter()
                    .find(|q| q.id == id)
                    .map_or("absent".to_string(), |q| q.state)
            })
            .collect();
        let running: Vec<usize> = (0..states.len())
            .filter(|&i| states[i] == "RUNNING")
            .collect();
        let elsewhere = states.iter().filter(|s| *s == "ELSEWHERE").count();
        if running.len() == 1 && elsewhere == states.len() - 1 {
            return running[0];
        }
        assert!(
            Instant::now() < deadline,
            "query {id} not placed: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two engines sharing one cluster: what one creates the other knows, each persistent query
/// runs on exactly one of them, and when that one stops the other takes the query over from
/// its committed offsets, so no input record goes unprocessed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_of_a_cluster_share_queries_and_take_them_over() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bs = broker.bootstrap();
    let a = shared_engine(&bs, "a").await;
    let b = shared_engine(&bs, "b").await;
    exec(
        &a,
        "CREATE STREAM pays (id BIGINT, amount BIGINT) WITH (topic='pays')",
    )
    .await;
    exec(
        &a,
        "CREATE STREAM big WITH (topic='big') AS SELECT id FROM pays WHERE amount >= 10",
    )
    .await;
    let id = a.queries()[0].id.clone();
    // Ids made by an engine of a cluster end with its name: no two engines make the same.
    assert!(id.starts_with('q') && id.ends_with("_a"), "{id}");
    // The other engine learns the stream from the catalog.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.execute("DESCRIBE pays").await.is_err() {
        assert!(Instant::now() < deadline, "engine b never saw `pays`");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let engines = [a.as_ref(), b.as_ref()];
    let host = placed(&engines, &id).await;
    // The engine that does not run the query still will not drop what it reads.
    let err = engines[1 - host]
        .execute("DROP STREAM pays")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("used by {id}")), "{err}");

    let batch = |from: i64| -> Vec<(i64, String)> {
        (from..from + 20)
            .map(|i| (i, format!(r#"{{"id":{i},"amount":{}}}"#, i % 20)))
            .collect()
    };
    let first = batch(0);
    let refs: Vec<(i64, &str)> = first.iter().map(|(t, v)| (*t, v.as_str())).collect();
    produce(&bs, "pays", &refs).await;
    let out = read_topic(&bs, "big", 10).await;
    assert_eq!(out.len(), 10, "each record once: {out:?}");

    // The host stops; the other engine takes the query over.
    let (gone, stays) = if host == 0 { (a, b) } else { (b, a) };
    gone.shutdown().await;
    drop(gone);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !stays
        .queries()
        .iter()
        .any(|q| q.id == id && q.state == "RUNNING")
    {
        assert!(Instant::now() < deadline, "{:?}", stays.queries());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = batch(20);
    let refs: Vec<(i64, &str)> = second.iter().map(|(t, v)| (*t, v.as_str())).collect();
    produce(&bs, "pays", &refs).await;
    let out = read_topic(&bs, "big", 20).await;
    let mut ids: Vec<i64> = out
        .iter()
        .map(|v| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ids.sort();
    let want: Vec<i64> = (0..40).filter(|i| i % 20 >= 10).collect();
    assert_eq!(
        ids, want,
        "every matching record exactly once across the handover"
    );

    // TERMINATE through the engine that runs it; it is gone from the catalog.
    exec(&stays, &format!("TERMINATE {id}")).await;
    assert!(stays.queries().is_empty());
    stays.shutdown().await;
}
