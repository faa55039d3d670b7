//! Shared librdkafka helpers for the tests that drive the broker with a real Kafka client.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Creates `name` (replication factor 1) through the admin API with `options`; panics on any
/// error.
pub async fn create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    options: &AdminOptions,
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for r in admin.create_topics([&topic], options).await.unwrap() {
        r.unwrap();
    }
}

/// Creates `name` (replication factor 1) with a 10 s operation timeout; panics on any error.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    create_topic_with(bootstrap, name, partitions, &options).await;
}

/// A `FutureProducer` with `linger.ms=5` and `acks=all`, then `extra` settings on top.
pub fn future_producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("acks", "all");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().unwrap()
}

/// Partitions `0..partitions` of `topic`, each from the beginning (for `Consumer::assign`).
pub fn from_beginning(topic: &str, partitions: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    tpl
}
