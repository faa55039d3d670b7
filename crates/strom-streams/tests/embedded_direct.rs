//! Embedded direct mode (`Streams::start_embedded`): input read straight from the in-process
//! log, through rebalances and crashes. Two instances share an application id and split the two
//! tasks; mid-stream the second is dropped without a commit (a crash), a replacement joins and
//! is crashed in turn, and at the end it is crashed for good. The first instance takes the tasks
//! over each time, restores their stores from the changelogs and resumes from the committed
//! offsets, so the final per-key results are complete: the max of each key's sequence numbers
//! is exact (duplicates cannot raise it) and counts are at least the truth (at-least-once).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strom_client::{
    Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use strom_streams::{Serde, Streams, StreamsBuilder, StreamsConfig, Strom, Topology};

const KEYS: i64 = 8;
const ROUNDS: i64 = 300;

fn topology() -> Topology {
    let b = StreamsBuilder::new();
    let s = b.stream::<String, i64>("seq");
    let grouped = s.group_by_key();
    grouped
        .materialize_as("max")
        .reduce(|a, v| *a = (*a).max(v))
        .to_stream()
        .to("max-out");
    s.group_by_key()
        .materialize_as("count")
        .count()
        .to_stream()
        .to("count-out");
    b.build().unwrap()
}

fn config(bootstrap: &str) -> StreamsConfig {
    let mut c =
        StreamsConfig::new("direct-app", bootstrap).commit_interval(Duration::from_millis(50));
    c.set("consumer.session.timeout.ms", "2000")
        .unwrap()
        .set("consumer.heartbeat.interval.ms", "300")
        .unwrap();
    c
}

async fn latest(bootstrap: &str, topic: &str) -> BTreeMap<String, i64> {
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap)).await.unwrap();
    let parts: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new(topic, p)).collect();
    c.assign(&parts).unwrap();
    c.seek_to_beginning(&parts).unwrap();
    let mut out = BTreeMap::new();
    loop {
        let recs = c.poll(Duration::from_millis(300)).await.unwrap();
        if recs.is_empty() {
            return out;
        }
        for r in recs {
            let k = String::from_bytes(r.key.as_deref()).unwrap();
            out.insert(k, i64::from_bytes(r.value.as_deref()).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_direct_instance_is_taken_over_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let strom = Strom::embedded_with(dir.path(), |c| c.group_min_session_timeout_ms = 1000)
        .await
        .unwrap();
    strom
        .create_topics(&["seq", "max-out", "count-out"], 2)
        .await
        .unwrap();
    let bootstrap = strom.bootstrap();

    let mut a = Streams::start_embedded(topology(), config(&bootstrap), &strom)
        .await
        .unwrap();
    let mut b = Streams::start_embedded(topology(), config(&bootstrap), &strom)
        .await
        .unwrap();
    a.wait_until_running(Duration::from_secs(30)).await.unwrap();
    b.wait_until_running(Duration::from_secs(30)).await.unwrap();

    let producer = Producer::new(ProducerConfig::new(&bootstrap))
        .await
        .unwrap();
    let mut crashed = false;
    for round in 1..=ROUNDS {
        for k in 0..KEYS {
            producer
                .send(ProducerRecord::new("seq", round.to_bytes().unwrap()).key(format!("k{k}")))
                .await
                .unwrap();
        }
        if round % 20 == 0 {
            producer.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round == ROUNDS / 3 && !crashed {
            let deadline = Instant::now() + Duration::from_secs(30);
            while a.tasks().len() != 1 || b.tasks().len() != 1 {
                assert!(
                    Instant::now() < deadline,
                    "tasks not split: a {:?} b {:?}",
                    a.tasks(),
                    b.tasks()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(b);
            b = Streams::start_embedded(topology(), config(&bootstrap), &strom)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(b);
            crashed = true;
            b = Streams::start_embedded(topology(), config(&bootstrap), &strom)
                .await
                .unwrap();
        }
    }
    producer.flush().await.unwrap();
    drop(b);

    // The survivor ends up with every task and the complete results.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let max = latest(&bootstrap, "max-out").await;
        let count = latest(&bootstrap, "count-out").await;
        let done = a.tasks().len() == 2
            && max.len() == KEYS as usize
            && max.values().all(|&m| m == ROUNDS)
            && count.values().all(|&c| c >= ROUNDS)
            && count.len() == KEYS as usize;
        if done {
            let store = a.kv_store::<String, i64>("max").unwrap();
            for k in 0..KEYS {
                assert_eq!(store.get(&format!("k{k}")), Some(ROUNDS));
            }
            let counts = a.kv_store::<String, i64>("count").unwrap().all();
            assert!(
                counts.iter().all(|(_, c)| *c >= ROUNDS && *c < 2 * ROUNDS),
                "{counts:?}"
            );
            assert!(
                a.metrics().restored > 0,
                "the survivor restored state: {:?}",
                a.metrics()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "incomplete after 60 s: tasks {:?}, max {max:?}, count {count:?}",
            a.tasks()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_every_processed_record_output() {
    let dir = tempfile::tempdir().unwrap();
    let strom = Strom::embedded(dir.path()).await.unwrap();
    strom.create_topics(&["words", "lengths"], 2).await.unwrap();
    let bootstrap = strom.bootstrap();
    let producer = Producer::new(ProducerConfig::new(&bootstrap))
        .await
        .unwrap();
    let n = 20_000;
    for i in 0..n {
        producer
            .send(ProducerRecord::new("words", format!("word-{i}")).key(format!("k{}", i % 97)))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let b = StreamsBuilder::new();
    b.stream::<String, String>("words")
        .map_values(|w| w.len() as i64)
        .to("lengths");
    // A long commit interval: only close() commits.
    let config =
        StreamsConfig::new("close-app", &bootstrap).commit_interval(Duration::from_secs(600));
    let mut app = Streams::start_embedded(b.build().unwrap(), config, &strom)
        .await
        .unwrap();
    app.wait_until_running(Duration::from_secs(30))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metrics().tasks.processed < n {
        assert!(
            Instant::now() < deadline,
            "processed {}",
            app.metrics().tasks.processed
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    app.close().await.unwrap();
    let out = latest_count(&bootstrap, "lengths").await;
    assert_eq!(
        out, n as usize,
        "every processed record's output was written before the commit"
    );
}

async fn latest_count(bootstrap: &str, topic: &str) -> usize {
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap)).await.unwrap();
    let parts: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new(topic, p)).collect();
    c.assign(&parts).unwrap();
    c.seek_to_beginning(&parts).unwrap();
    let mut n = 0;
    loop {
        let recs = c.poll(Duration::from_millis(500)).await.unwrap();
        if recs.is_empty() {
            return n;
        }
        n += recs.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repartition_topic_joined_with_a_table_is_co_partitioned_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let strom = Strom::embedded(dir.path()).await.unwrap();
    strom.create_topics(&["clicks"], 4).await.unwrap();
    strom
        .create_topics(&["users", "enriched"], 2)
        .await
        .unwrap();
    let bootstrap = strom.bootstrap();
    let producer = Producer::new(ProducerConfig::new(&bootstrap))
        .await
        .unwrap();
    for u in 0..20 {
        producer
            .send(ProducerRecord::new("users", format!("name-{u}")).key(format!("u{u}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let b = StreamsBuilder::new();
    let users = b.table::<String, String>("users");
    // Clicks keyed by click id carry the user id: re-keyed, then joined with the users table.
    b.stream::<String, String>("clicks")
        .select_key(|_, user| user.clone())
        .join_table(&users, |_, name| name.clone())
        .to("enriched");
    let topology = b.build().unwrap();
    let mut app = Streams::start_embedded(
        topology,
        StreamsConfig::new("repart-app", &bootstrap),
        &strom,
    )
    .await
    .unwrap();
    app.wait_until_running(Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in 0..200 {
        producer
            .send(ProducerRecord::new("clicks", format!("u{}", c % 20)).key(format!("click-{c}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let admin = strom_client::Admin::new(strom_client::ClientConfig::new(&bootstrap))
        .await
        .unwrap();
    let repartition: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.clone())
        .filter(|n| n.ends_with("-repartition"))
        .collect();
    assert_eq!(repartition.len(), 1, "{repartition:?}");
    assert_eq!(
        admin
            .describe_topic(&repartition[0])
            .await
            .unwrap()
            .partitions
            .len(),
        2
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = latest_count(&bootstrap, "enriched").await;
        if n == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 200 clicks enriched");
    }
    app.close().await.unwrap();
}
