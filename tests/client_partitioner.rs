//! strom-client's key partitioning agrees with librdkafka's Java-compatible `murmur2_random`
//! partitioner: records produced by librdkafka land where strom-client would put them.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::kafka::{create_topic, future_producer};
use common::TestBroker;
use rdkafka::producer::FutureRecord;
use strom::client::partitioner::partition_for_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_where_librdkafka_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "keys", 7).await;
    let p = future_producer(
        &bootstrap,
        &[
            ("partitioner", "murmur2_random"),
            ("message.timeout.ms", "30000"),
        ],
    );
    let keys: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("user-{i}-{}", "x".repeat(i % 11)).into_bytes())
        .chain([Vec::new(), b"a".to_vec(), b"\xff\x00\x80".to_vec()])
        .collect();
    let mut pending = Vec::new();
    for k in &keys {
        let fut = p
            .send_result(FutureRecord::to("keys").key(k.as_slice()).payload("v"))
            .map_err(|(e, _)| e)
            .unwrap();
        pending.push((k.clone(), fut));
    }
    for (k, fut) in pending {
        let delivery = fut.await.unwrap().map_err(|(e, _)| e).unwrap();
        assert_eq!(
            delivery.partition,
            partition_for_key(&k, 7),
            "key {:?}",
            String::from_utf8_lossy(&k)
        );
    }
    broker.stop().await;
}
