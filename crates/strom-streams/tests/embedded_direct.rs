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
