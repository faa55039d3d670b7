//! End to end with librdkafka (the `rdkafka` crate): topics created through the admin API,
//! 100k keyed records with headers produced with every compression codec, consumed back
//! byte-exact; an idempotent producer whose responses are dropped by a faulty proxy writes no
//! duplicates.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{create_topic, from_beginning, future_producer};
use common::TestBroker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: i64,
}

/// Consumes `partitions` from the beginning until `count` messages arrived.
fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Vec<(i32, i64, Expected)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused-no-commits")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    consumer.assign(&from_beginning(topic, partitions)).unwrap();
    let mut out = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed only {} of {count}",
            out.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            m.partition(),
            m.offset(),
            Expected {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp: m.timestamp().to_millis().unwrap(),
            },
        ));
    }
    // Nothing more than what was produced.
    assert!(
        consumer.poll(Duration::from_millis(500)).is_none(),
        "an extra message arrived"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_round_trip_with_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), |_| {}).await;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "roundtrip", 6).await;

    const PER_CODEC: usize = 20_000;
    let base_ts = 1_700_000_000_000i64;
    let mut expected: BTreeMap<(i32, i64), Expected> = BTreeMap::new();
    for (ci, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let p = future_producer(
            &bootstrap,
            &[
                ("message.timeout.ms", "60000"),
                ("compression.type", codec),
                ("batch.num.messages", "500"),
            ],
        );
        let mut pending = Vec::with_capacity(PER_CODEC);
        for i in 0..PER_CODEC {
            let n = ci * PER_CODEC + i;
            let e = Expected {
                key: format!("key-{}", n % 1009).into_bytes(),
                value: format!("{codec}:{n}:").repeat(1 + n % 7).into_bytes(),
                headers: vec![
                    ("n".to_string(), Some(n.to_string().into_bytes())),
                    ("codec".to_string(), Some(codec.as_bytes().to_vec())),
                    ("empty".to_string(), None),
                ],
                timestamp: base_ts + n as i64,
            };
            let mut headers = OwnedHeaders::new();
            for (k, v) in &e.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let record = FutureRecord::to("roundtrip")
                .key(&e.key)
                .payload(&e.value)
                .headers(headers)
                .timestamp(e.timestamp);
            let fut = p.send_result(record).map_err(|(err, _)| err).unwrap();
            pending.push((fut, e));
        }
        for (fut, e) in pending {
            let delivery = fut.await.unwrap().map_err(|(err, _)| err).unwrap();
            assert!(
                expected
                    .insert((delivery.partition, delivery.offset), e)
                    .is_none(),
                "two records acknowledged at one offset"
            );
        }
    }
    assert_eq!(expected.len(), 5 * PER_CODEC);

    let bootstrap2 = bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || {
        consume_all(&bootstrap2, "roundtrip", 6, 5 * PER_CODEC)
    })
    .await
    .unwrap();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, msg) in got {
        let want = expected
            .get(&(partition, offset))
            .unwrap_or_else(|| panic!("unexpected message at {partition}/{offset}"));
        assert_eq!(&msg, want, "message at {partition}/{offset}");
        if let Some(prev) = last.insert(partition, offset) {
            assert!(
                offset > prev,
                "partition {partition} went from {prev} back to {offset}"
            );
        }
    }
    // Every partition got a share (keys spread by librdkafka's partitioner).
    assert_eq!(last.len(), 6);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_with_lost_responses_writes_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let broker =
        TestBroker::start(dir.path(), |c| c.advertised = Some(proxy_addr.to_string())).await;
    let dropped = Arc::new(AtomicUsize::new(0));
    tokio::spawn(common::proxy::faulty_proxy(
        proxy,
        broker.addr,
        8,
        dropped.clone(),
    ));
    let bootstrap = proxy_addr.to_string();
    create_topic(&bootstrap, "idem", 3).await;

    let p = future_producer(
        &bootstrap,
        &[
            ("message.timeout.ms", "60000"),
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("batch.num.messages", "50"),
            ("retry.backoff.ms", "10"),
        ],
    );
    const N: usize = 5_000;
    let mut pending = Vec::new();
    for i in 0..N {
        let value = format!("v{i}");
        let key = format!("k{}", i % 13);
        let fut = p
            .send_result(FutureRecord::to("idem").key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
        pending.push(fut);
    }
    for f in pending {
        f.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "the proxy never dropped a produce response"
    );

    // Read straight from the broker: exactly N records, each value once, in send order per key.
    let addr = broker.bootstrap();
    let got = tokio::task::spawn_blocking(move || consume_all(&addr, "idem", 3, N))
        .await
        .unwrap();
    let mut values = HashSet::new();
    let mut per_key: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (_, _, m) in &got {
        let v = String::from_utf8(m.value.clone()).unwrap();
        assert!(values.insert(v.clone()), "duplicate record {v}");
        let n: usize = v[1..].parse().unwrap();
        if let Some(prev) = per_key.insert(m.key.clone(), n) {
            assert!(n > prev, "key order broken: {prev} then {n}");
        }
    }
    assert_eq!(values.len(), N);
    broker.stop().await;
}
