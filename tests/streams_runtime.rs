//! The Streams runtime against a real broker (a `strom server` child process): word count with
//! a repartition and interactive queries, the start-up checks (co-partitioning, missing source
//! topics), scaling out to a second instance, and failover after one instance crashes.
//!
//! Every wait polls a condition against a deadline and fails with what it last saw.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, BrokerProcess};
use strom::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use strom::streams::{Error, JoinWindows, Serde, Streams, StreamsBuilder, StreamsConfig, Topology};

/// Upper bound of every wait in this file.
const WAIT: Duration = Duration::from_secs(60);

/// Session timeout of the streams consumers: short, so a crashed instance is noticed quickly.
const SESSION_TIMEOUT_MS: &str = "3000";

const WORDS: &[&str] = &[
    "stream",
    "log",
    "topic",
    "partition",
    "offset",
    "broker",
    "record",
    "window",
    "join",
    "table",
];

// ---- Harness ------------------------------------------------------------------------------------

/// A `strom server` in a temporary directory, with group timers lowered for tests: sessions
/// down to 1 s accepted, no initial rebalance delay.
struct Server {
    broker: BrokerProcess,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("strom.toml");
        std::fs::write(
            &config,
            "group-min-session-timeout-ms = 1000\ngroup-initial-rebalance-delay-ms = 0\n",
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let broker = BrokerProcess::start_with_args(
            &data,
            free_port(),
            &[OsStr::new("--config"), config.as_os_str()],
        );
        Server { broker, _dir: dir }
    }

    fn bootstrap(&self) -> String {
        self.broker.addr.to_string()
    }

    async fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin = Admin::new(ClientConfig::new(&self.bootstrap()))
            .await
            .unwrap();
        let new: Vec<NewTopic> = topics.iter().map(|(t, n)| NewTopic::new(*t, *n)).collect();
        admin.create_topics(&new).await.unwrap();
    }
}

/// Streams settings for these tests: 100 ms commits, a 3 s session, 500 ms heartbeats.
fn streams_config(app: &str, bootstrap: &str) -> StreamsConfig {
    let mut c = StreamsConfig::new(app, bootstrap).commit_interval(Duration::from_millis(100));
    c.set("consumer.session.timeout.ms", SESSION_TIMEOUT_MS)
        .unwrap()
        .set("consumer.heartbeat.interval.ms", "500")
        .unwrap();
    c
}

async fn start(topology: Topology, config: StreamsConfig) -> Streams {
    let app = config.application_id.clone();
    match Streams::start(topology, config).await {
        Ok(s) => s,
        Err(e) => panic!("starting streams application {app}: {e}"),
    }
}

/// A record for `topic`; `partition` None lets the producer place it by key.
fn record<K: Serde, V: Serde>(
    topic: &str,
    partition: Option<i32>,
    key: &K,
    value: &V,
) -> ProducerRecord {
    ProducerRecord {
        topic: topic.to_string(),
        partition,
        key: key.to_bytes(),
        value: value.to_bytes(),
        ..Default::default()
    }
}

/// Writes `records` and waits until every one is acknowledged.
async fn produce(bootstrap: &str, records: Vec<ProducerRecord>) {
    let producer = Producer::new(ProducerConfig::new(bootstrap)).await.unwrap();
    let mut acks = Vec::with_capacity(records.len());
    for r in records {
        acks.push(producer.send(r).await.unwrap());
    }
    producer.flush().await.unwrap();
    for a in acks {
        a.await.unwrap();
    }
    producer.close().await.unwrap();
}

/// Reads a topic from the beginning, keeping the latest value per key.
struct Latest<K, V> {
    topic: String,
    consumer: Consumer,
    latest: BTreeMap<K, Option<V>>,
    records: usize,
}

impl<K: Serde + Ord + std::fmt::Debug, V: Serde + std::fmt::Debug> Latest<K, V> {
    async fn new(bootstrap: &str, topic: &str) -> Self {
        let admin = Admin::new(ClientConfig::new(bootstrap)).await.unwrap();
        let parts: Vec<TopicPartition> = admin
            .describe_topic(topic)
            .await
            .unwrap()
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect();
        let mut consumer = Consumer::new(ConsumerConfig::new(bootstrap)).await.unwrap();
        consumer.assign(&parts).unwrap();
        consumer.seek_to_beginning(&parts).unwrap();
        Latest {
            topic: topic.to_string(),
            consumer,
            latest: BTreeMap::new(),
            records: 0,
        }
    }

    async fn poll(&mut self) {
        for r in self
            .consumer
            .poll(Duration::from_millis(100))
            .await
            .unwrap()
        {
            let k = K::from_bytes(r.key.as_deref()).unwrap();
            let v = r.value.as_deref().map(|b| V::deserialize(b).unwrap());
            self.latest.insert(k, v);
            self.records += 1;
        }
    }

    /// Reads until `done(latest)` holds; panics after `WAIT` showing what was read.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&BTreeMap<K, Option<V>>) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.latest) {
            assert!(
                Instant::now() < deadline,
                "{what}: not reached on {} after {WAIT:?} ({} records read); latest per key: {:?}",
                self.topic,
                self.records,
                self.latest
            );
            self.poll().await;
        }
    }
}

/// Polls `cond` every 50 ms until it holds; panics after `WAIT` with `what` and `state()`.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` lines of 1..=8 words spread round-robin over `partitions`, and the word counts they
/// add to `expected`.
fn lines(
    rng: &mut Rng,
    topic: &str,
    partitions: i32,
    n: usize,
    expected: &mut BTreeMap<String, i64>,
) -> (Vec<ProducerRecord>, u64) {
    let mut words_total = 0;
    let records = (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..1 + rng.below(8))
                .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                .collect();
            for w in &words {
                *expected.entry(w.to_string()).or_default() += 1;
                words_total += 1;
            }
            record(topic, Some(i as i32 % partitions), &(), &words.join(" "))
        })
        .collect();
    (records, words_total)
}

/// Lines in, a count per word out (through a repartition topic), the counts in `store`.
fn word_count(lines: &str, counts: &str, store: &str) -> Topology {
    let builder = StreamsBuilder::new();
    builder
        .stream::<(), String>(lines)
        .flat_map_values(|line| {
            line.split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .group_by(|_, word| word.clone())
        .materialize_as(store)
        .count()
        .to_stream()
        .to(counts);
    builder.build().unwrap()
}

/// Values of `latest` with deletions (null values) left out.
fn present<K: Clone + Ord, V: Clone>(latest: &BTreeMap<K, Option<V>>) -> BTreeMap<K, V> {
    latest
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect()
}

// ---- Tests --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_against_a_server_with_interactive_queries() {
    let server = Server::start();
    let bootstrap = server.bootstrap();
    server
        .create_topics(&[("wc-lines", 3), ("wc-counts", 3)])
        .await;
    let mut app = start(
        word_count("wc-lines", "wc-counts", "wc-store"),
        streams_config("wc-app", &bootstrap),
    )
    .await;

    let mut expected = BTreeMap::new();
    let (input, words) = lines(&mut Rng(42), "wc-lines", 3, 2_000, &mut expected);
    produce(&bootstrap, input).await;
    app.wait_until_running(WAIT).await.unwrap();

    let mut out = Latest::<String, i64>::new(&bootstrap, "wc-counts").await;
    out.until(
        "the latest count of every word equals its number of occurrences",
        |l| present(l) == expected,
    )
    .await;

    // Interactive query: this instance owns every task, so its store holds every word.
    let store = app.kv_store::<String, i64>("wc-store").unwrap();
    let all: BTreeMap<String, i64> = store.all().into_iter().collect();
    assert_eq!(all, expected, "kv_store contents");
    for (w, n) in &expected {
        assert_eq!(store.get(w), Some(*n), "kv_store get({w:?})");
    }
    assert_eq!(store.get(&"no-such-word".to_string()), None);
    assert_eq!(
        store.range(&"l".to_string(), &"p".to_string()),
        expected
            .iter()
            .filter(|(w, _)| w.as_str() >= "l" && w.as_str() <= "p")
            .map(|(w, n)| (w.clone(), *n))
            .collect::<Vec<_>>(),
        "kv_store range [l, p]"
    );
    // 3 partitions of the input and 3 of the repartition topic: 6 tasks.
    let tasks: BTreeSet<(usize, i32)> = app.tasks().into_iter().collect();
    assert_eq!(
        tasks,
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
            .into_iter()
            .collect(),
        "one instance owns every task"
    );

    // Metrics are published at commits: wait for one that covers every record.
    let lines_and_words = 2_000 + words;
    wait_for(
        "metrics covering every line and word",
        || app.metrics().tasks.processed >= lines_and_words,
        || format!("metrics {:?}", app.metrics()),
    )
    .await;
    let m = app.metrics();
    assert!(m.tasks.processed > 0);
    assert_eq!(
        m.tasks.processed, lines_and_words,
        "each line (sub-topology 0) and each word (sub-topology 1) processed once"
    );
    assert!(m.commits > 0, "{m:?}");
    assert!(
        m.produced >= words,
        "at least one repartition record per word: {m:?}"
    );
    assert_eq!(m.restored, 0, "nothing to restore on a fresh start: {m:?}");
    assert_eq!(app.state(), strom::streams::State::Running);
    app.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_rejects_unpartitioned_joins_and_missing_topics() {
    let server = Server::start();
    let bootstrap = server.bootstrap();
    server.create_topics(&[("left-2", 2), ("right-3", 3)]).await;

    let builder = StreamsBuilder::new();
    let left = builder.stream::<String, String>("left-2");
    let right = builder.stream::<String, String>("right-3");
    left.join(
        &right,
        |a, b| format!("{a}+{b}"),
        JoinWindows::new(Duration::from_secs(5), Duration::ZERO),
    )
    .to("joined");
    let topology = builder.build().unwrap();
    let err = match Streams::start(topology, streams_config("join-app", &bootstrap)).await {
        Ok(_) => panic!("a join of a 2-partition and a 3-partition topic started"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Topology(_)),
        "a topology error, got {err:?}"
    );
    for needle in ["left-2", "right-3", "co-partitioned"] {
        assert!(msg.contains(needle), "{needle:?} not in the error: {msg}");
    }

    let builder = StreamsBuilder::new();
    builder
        .stream::<String, String>("no-such-topic")
        .map_values(|v| v.len() as i64)
        .to("lengths");
    let topology = builder.build().unwrap();
    let err = match Streams::start(topology, streams_config("missing-app", &bootstrap)).await {
        Ok(_) => panic!("started with a missing source topic"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-topic"),
        "the error names the missing topic: {msg}"
    );
    // The check itself must not create the topic (auto-creation on metadata requests).
    let admin = Admin::new(ClientConfig::new(&bootstrap)).await.unwrap();
    let described = admin.describe_topic("no-such-topic").await;
    assert!(
        described.as_ref().map_or(true, |t| t.partitions.is_empty()),
        "checking for the source topic created it: {:?}",
        described.map(|t| t.partitions.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_takes_half_the_tasks_and_results_stay_exact() {
    let server = Server::start();
    let bootstrap = server.bootstrap();
    server
        .create_topics(&[("scale-lines", 4), ("scale-counts", 4)])
        .await;
    let topology = || word_count("scale-lines", "scale-counts", "scale-store");
    let mut a = start(topology(), streams_config("scale-app", &bootstrap)).await;
    a.wait_until_running(WAIT).await.unwrap();

    // Phase 1, on A alone.
    let mut rng = Rng(7);
    let mut expected = BTreeMap::new();
    let (input, _) = lines(&mut rng, "scale-lines", 4, 1_000, &mut expected);
    produce(&bootstrap, input).await;
    let mut out = Latest::<String, i64>::new(&bootstrap, "scale-counts").await;
    out.until("phase 1 counted by instance A", |l| present(l) == expected)
        .await;
    // Two more commits: everything A processed is in the changelog and committed, so handing
    // tasks over repeats nothing.
    let commits = a.metrics().commits;
    wait_for(
        "two more commits on A",
        || a.metrics().commits >= commits + 2,
        || format!("A {:?}", a.metrics()),
    )
    .await;

    // B joins: the group rebalances and the 8 tasks split between A and B.
    let mut b = start(topology(), streams_config("scale-app", &bootstrap)).await;
    b.wait_until_running(WAIT).await.unwrap();
    let all_tasks: BTreeSet<(usize, i32)> =
        (0..2).flat_map(|s| (0..4).map(move |p| (s, p))).collect();
    wait_for(
        "A and B to split every task between them",
        || {
            let (ta, tb): (BTreeSet<_>, BTreeSet<_>) = (
                a.tasks().into_iter().collect(),
                b.tasks().into_iter().collect(),
            );
            !ta.is_empty()
                && !tb.is_empty()
                && ta.is_disjoint(&tb)
                && ta.union(&tb).copied().collect::<BTreeSet<_>>() == all_tasks
        },
        || format!("A owns {:?}, B owns {:?}", a.tasks(), b.tasks()),
    )
    .await;
    // The stores of both, restored from the changelogs, hold phase 1's counts exactly once.
    let stores = |a: &Streams, b: &Streams| {
        let sa = a.kv_store::<String, i64>("scale-store").unwrap().all();
        let sb = b.kv_store::<String, i64>("scale-store").unwrap().all();
        (sa, sb)
    };
    let (sa, sb) = stores(&a, &b);
    let mut union: BTreeMap<String, i64> = sa.iter().cloned().collect();
    for (k, v) in &sb {
        assert!(
            union.insert(k.clone(), *v).is_none(),
            "word {k:?} in the stores of both A and B"
        );
    }
    assert_eq!(union, expected, "A's and B's stores after the rebalance");
    assert!(
        !sb.is_empty() && b.metrics().restored > 0,
        "B restored its share of phase 1 from the changelog: {:?}",
        b.metrics()
    );

    // Phase 2, on both.
    let (input, _) = lines(&mut rng, "scale-lines", 4, 1_000, &mut expected);
    produce(&bootstrap, input).await;
    out.until("phases 1 and 2 counted by A and B", |l| {
        present(l) == expected
    })
    .await;
    wait_for(
        "both stores to hold the final counts",
        || {
            let (sa, sb) = stores(&a, &b);
            sa.into_iter().chain(sb).collect::<BTreeMap<_, _>>() == expected
        },
        || format!("stores {:?}", stores(&a, &b)),
    )
    .await;
    // Metrics are published at commits.
    wait_for(
        "both instances to report processed records",
        || a.metrics().tasks.processed > 0 && b.metrics().tasks.processed > 0,
        || format!("A {:?}, B {:?}", a.metrics(), b.metrics()),
    )
    .await;
    b.close().await.unwrap();
    a.close().await.unwrap();
}

/// Keys of the failover test, `FAILOVER_ROUNDS` values each.
const FAILOVER_KEYS: usize = 12;
const FAILOVER_ROUNDS: i64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_tasks_move_to_the_survivor_without_loss() {
    let server = Server::start();
    let bootstrap = server.bootstrap();
    server
        .create_topics(&[("fo-in", 4), ("fo-max", 4), ("fo-count", 4)])
        .await;
    // Values are per-key sequence numbers 1..=N in order: the max per key is N exactly, however
    // often a record is reprocessed, while the count may only exceed N.
    let topology = || {
        let builder = StreamsBuilder::new();
        let input = builder.stream::<String, i64>("fo-in");
        input
            .group_by_key()
            .materialize_as("fo-max-store")
            .reduce(|acc, v| *acc = (*acc).max(v))
            .to_stream()
            .to("fo-max");
        input
            .group_by_key()
            .materialize_as("fo-count-store")
            .count()
            .to_stream()
            .to("fo-count");
        builder.build().unwrap()
    };
    let mut survivor = start(topology(), streams_config("fo-app", &bootstrap)).await;
    survivor.wait_until_running(WAIT).await.unwrap();
    let mut victim = start(topology(), streams_config("fo-app", &bootstrap)).await;
    victim.wait_until_running(WAIT).await.unwrap();
    let all_tasks: BTreeSet<(usize, i32)> = (0..4).map(|p| (0, p)).collect();
    wait_for(
        "the two instances to split the 4 tasks",
        || {
            let (ts, tv): (BTreeSet<_>, BTreeSet<_>) = (
                survivor.tasks().into_iter().collect(),
                victim.tasks().into_iter().collect(),
            );
            !ts.is_empty()
                && !tv.is_empty()
                && ts.is_disjoint(&tv)
                && ts.union(&tv).copied().collect::<BTreeSet<_>>() == all_tasks
        },
        || {
            format!(
                "survivor owns {:?}, victim owns {:?}",
                survivor.tasks(),
                victim.tasks()
            )
        },
    )
    .await;
    let restored_before = survivor.metrics().restored;

    // Input in the background: round r writes value r for every key.
    let keys: Vec<String> = (0..FAILOVER_KEYS).map(|i| format!("key-{i}")).collect();
    let progress = Arc::new(AtomicI64::new(0));
    let producer = {
        let (bootstrap, keys, progress) = (bootstrap.clone(), keys.clone(), progress.clone());
        tokio::spawn(async move {
            let producer = Producer::new(ProducerConfig::new(&bootstrap))
                .await
                .unwrap();
            let mut acks = Vec::new();
            for round in 1..=FAILOVER_ROUNDS {
                for k in &keys {
                    acks.push(
                        producer
                            .send(record("fo-in", None, k, &round))
                            .await
                            .unwrap(),
                    );
                }
                producer.flush().await.unwrap();
                progress.store(round, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            for a in acks {
                a.await.unwrap();
            }
            producer.close().await.unwrap();
        })
    };

    // Crash the victim mid-stream, once it has processed and committed some of its share.
    wait_for(
        "a quarter of the input written and both instances processing",
        || {
            progress.load(Ordering::Acquire) >= FAILOVER_ROUNDS / 4
                && victim.metrics().tasks.processed > 0
                && survivor.metrics().tasks.processed > 0
        },
        || {
            format!(
                "round {}, survivor {:?}, victim {:?}",
                progress.load(Ordering::Acquire),
                survivor.metrics(),
                victim.metrics()
            )
        },
    )
    .await;
    let victim_tasks = victim.tasks();
    let crashed_at = progress.load(Ordering::Acquire);
    drop(victim); // no final commit, no LeaveGroup: the session has to expire
    assert!(
        crashed_at < FAILOVER_ROUNDS,
        "the input was complete before the crash (round {crashed_at}): not a mid-stream crash"
    );

    // The survivor takes every task over, restoring the victim's stores from the changelogs.
    wait_for(
        "the survivor to own every task after the victim's session expired",
        || survivor.tasks().into_iter().collect::<BTreeSet<_>>() == all_tasks,
        || {
            format!(
                "survivor owns {:?} (victim had {victim_tasks:?}), state {:?}",
                survivor.tasks(),
                survivor.state()
            )
        },
    )
    .await;
    assert!(
        survivor.metrics().restored > restored_before,
        "the survivor restored the victim's stores from their changelogs: {:?}",
        survivor.metrics()
    );

    eprintln!(
        "failover: crashed at round {crashed_at}, takeover by round {}, survivor {:?}",
        progress.load(Ordering::Acquire),
        survivor.metrics()
    );
    tokio::time::timeout(WAIT, producer)
        .await
        .expect("the input producer finished in time")
        .unwrap();

    // No loss: every key's max reaches N; duplicates can only push counts above N.
    let n = FAILOVER_ROUNDS;
    let mut max_out = Latest::<String, i64>::new(&bootstrap, "fo-max").await;
    max_out
        .until("the latest max of every key equals the last round", |l| {
            keys.iter().all(|k| l.get(k) == Some(&Some(n)))
        })
        .await;
    assert_eq!(
        max_out.latest.len(),
        FAILOVER_KEYS,
        "only the input's keys: {:?}",
        max_out.latest
    );
    let mut count_out = Latest::<String, i64>::new(&bootstrap, "fo-count").await;
    count_out
        .until(
            "the latest count of every key reaches the number of rounds",
            |l| {
                keys.iter()
                    .all(|k| l.get(k).copied().flatten().is_some_and(|c| c >= n))
            },
        )
        .await;
    // The survivor's stores agree: max exactly N, count at least N and equal to its output.
    let max_store = survivor.kv_store::<String, i64>("fo-max-store").unwrap();
    let count_store = survivor.kv_store::<String, i64>("fo-count-store").unwrap();
    for k in &keys {
        assert_eq!(max_store.get(k), Some(n), "max-store value of {k}");
    }
    count_out
        .until("the latest count output to match the count store", |l| {
            keys.iter()
                .all(|k| l.get(k).copied().flatten() == count_store.get(k))
        })
        .await;
    for k in &keys {
        let c = count_store.get(k).unwrap();
        assert!(c >= n, "count-store value of {k}: {c} < {n}");
        // At-least-once repeats at most what was processed after the last commit before the
        // crash (about 100 ms of input); half the input again means offsets or changelogs
        // went wrong.
        assert!(
            c < n + n / 2,
            "key {k}: count {c} for {n} records: far more duplicates than at-least-once allows"
        );
    }
    eprintln!(
        "failover: final counts {:?} for {n} records per key",
        count_store.all()
    );
    survivor.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_tasks_runs_and_unknown_stores_are_errors() {
    let server = Server::start();
    let bootstrap = server.bootstrap();
    server
        .create_topics(&[("idle-lines", 1), ("idle-counts", 1)])
        .await;
    let topology = || word_count("idle-lines", "idle-counts", "idle-store");
    let mut a = start(topology(), streams_config("idle-app", &bootstrap)).await;
    a.wait_until_running(WAIT).await.unwrap();
    // One input partition, two sub-topologies: a second instance may get a task or nothing,
    // and either way it is running once the group has placed it.
    let mut b = start(topology(), streams_config("idle-app", &bootstrap)).await;
    b.wait_until_running(WAIT).await.unwrap();
    wait_for(
        "both instances to own disjoint tasks covering both sub-topologies",
        || {
            let (ta, tb) = (a.tasks(), b.tasks());
            ta.len() + tb.len() == 2 && ta.iter().all(|t| !tb.contains(t))
        },
        || format!("a {:?} b {:?}", a.tasks(), b.tasks()),
    )
    .await;
    match a.kv_store::<String, i64>("idle-stor") {
        Err(Error::Config(m)) => assert!(m.contains("idle-store"), "names the known stores: {m}"),
        Err(e) => panic!("wrong error for an unknown store: {e}"),
        Ok(_) => panic!("an unknown store name was accepted"),
    }
    b.close().await.unwrap();
    a.close().await.unwrap();
}
