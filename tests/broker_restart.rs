//! Data and offsets survive a broker restart, both after a clean shutdown (SIGTERM) and after
//! `kill -9`, with `strom server` running as a separate process and librdkafka as the client.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::{Duration, Instant};

use common::{free_port, kafka, BrokerProcess};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

fn produce(bootstrap: &str, topic: &str, from: usize, n: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    for i in from..from + n {
        let key = format!("k{}", i % 10);
        let value = format!("value-{i}");
        loop {
            match p.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    // Every record acknowledged (acks=all) before we return: flush fails otherwise.
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(p.in_flight_count(), 0);
}

/// All values in `topic` (3 partitions), by partition in offset order, plus the high watermarks.
fn consume(bootstrap: &str, topic: &str, expect: usize) -> (Vec<String>, Vec<i64>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.assign(&kafka::from_beginning(topic, 3)).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < expect && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            values.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let hws = (0..3)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect();
    (values, hws)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn expected(n: usize) -> Vec<String> {
    sorted((0..n).map(|i| format!("value-{i}")).collect())
}

fn create_topic(bootstrap: &str, topic: &str) {
    // Auto-creation through metadata: the broker's default is 1 partition, so create explicitly.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka::create_topic_with(
        bootstrap,
        topic,
        3,
        &rdkafka::admin::AdminOptions::new(),
    ));
}

#[test]
fn data_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let b = BrokerProcess::start(dir.path(), port);
    let bootstrap = b.addr.to_string();
    create_topic(&bootstrap, "clean");
    produce(&bootstrap, "clean", 0, 3000);
    let (_, hws_before) = consume(&bootstrap, "clean", 3000);
    b.terminate();
    assert!(
        dir.path().join(".clean-shutdown").exists(),
        "no clean-shutdown marker"
    );

    let b = BrokerProcess::start(dir.path(), port);
    let (values, hws) = consume(&bootstrap, "clean", 3000);
    assert_eq!(sorted(values), expected(3000));
    assert_eq!(hws, hws_before);
    // The idempotent producer state and offsets continue where they were.
    produce(&bootstrap, "clean", 3000, 500);
    let (values, _) = consume(&bootstrap, "clean", 3500);
    assert_eq!(sorted(values), expected(3500));
    b.terminate();
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let b = BrokerProcess::start(dir.path(), port);
    let bootstrap = b.addr.to_string();
    create_topic(&bootstrap, "crash");
    produce(&bootstrap, "crash", 0, 5000);
    b.kill9();
    assert!(!dir.path().join(".clean-shutdown").exists());

    let b = BrokerProcess::start(dir.path(), port);
    let (values, hws) = consume(&bootstrap, "crash", 5000);
    assert_eq!(
        sorted(values),
        expected(5000),
        "acknowledged records lost or duplicated"
    );
    assert_eq!(hws.iter().sum::<i64>(), 5000);
    produce(&bootstrap, "crash", 5000, 100);
    let (values, _) = consume(&bootstrap, "crash", 5100);
    assert_eq!(sorted(values), expected(5100));
    b.kill9();
}
