//! strom-client's producer against a real broker: batching, every codec, idempotence, errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::TestBroker;
use strom::client::{Compression, Producer, ProducerConfig, ProducerRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_in_order_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("p-{}", c.name());
        let p = Producer::new(ProducerConfig::new(&b.bootstrap()).compression(c))
            .await
            .unwrap();
        let mut futs = Vec::new();
        for i in 0..5000 {
            let r = ProducerRecord::new(&topic, format!("value-{i}")).key(format!("k{}", i % 7));
            futs.push(p.send(r).await.unwrap());
        }
        let mut last = std::collections::HashMap::new();
        for f in futs {
            let m = f.await.unwrap();
            let prev = last.insert(m.partition, m.offset);
            assert!(
                prev.is_none_or(|p| p + 1 == m.offset),
                "offsets in order per partition"
            );
        }
        p.close().await.unwrap();
    }
    b.stop().await;
}
