//! strom-client consumer-group features beyond the basics: static membership, pattern
//! subscriptions, manual and async commits, and producer backpressure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestBroker;
use strom::client::{
    Admin, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use tokio::net::TcpListener;

fn group_cfg(b: &TestBroker, group: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(&b.bootstrap())
        .offset_reset(OffsetReset::Earliest)
        .group_id(group);
    c.set("heartbeat.interval.ms", "100")
        .unwrap()
        .set("session.timeout.ms", "6000")
        .unwrap();
    c
}

async fn poll_until(c: &mut Consumer, mut done: impl FnMut(&Consumer) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(c) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        c.poll(Duration::from_millis(50)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_comes_back_without_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.group_initial_rebalance_delay_ms = 0).await;
    Admin::connect(&b.bootstrap())
        .await
        .unwrap()
        .create_topics(&[NewTopic::new("st", 4)])
        .await
        .unwrap();
    let mut cfg = group_cfg(&b, "static");
    cfg.set("group.instance.id", "instance-a").unwrap();
    let mut c = Consumer::new(cfg.clone()).await.unwrap();
    c.subscribe(&["st"]).unwrap();
    poll_until(&mut c, |c| c.assignment().len() == 4, "assignment").await;
    let (member, generation) = c.member().unwrap();
    c.close().await.unwrap();
    // A static member does not leave on close: its return is not a rebalance.
    let d = Admin::connect(&b.bootstrap())
        .await
        .unwrap()
        .describe_group("static")
        .await
        .unwrap();
    assert_eq!(d.members.len(), 1, "static member kept");
    assert_eq!(d.members[0].instance_id.as_deref(), Some("instance-a"));
    let mut again = Consumer::new(cfg).await.unwrap();
    again.subscribe(&["st"]).unwrap();
    poll_until(
        &mut again,
        |c| c.assignment().len() == 4,
        "assignment after restart",
    )
    .await;
    let (member2, generation2) = again.member().unwrap();
    assert_ne!(member, member2, "a new member id for the same instance");
    assert_eq!(
        generation, generation2,
        "no rebalance for a returning static member"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscription_picks_up_new_topics() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.group_initial_rebalance_delay_ms = 0).await;
    let admin = Admin::connect(&b.bootstrap()).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("metrics-a", 2), NewTopic::new("other", 2)])
        .await
        .unwrap();
    let mut cfg = group_cfg(&b, "pattern");
    cfg.set("metadata.max.age.ms", "200").unwrap();
    let mut c = Consumer::new(cfg).await.unwrap();
    c.subscribe_pattern("metrics-.*").unwrap();
    poll_until(&mut c, |c| c.assignment().len() == 2, "metrics-a").await;
    assert!(c.assignment().iter().all(|tp| tp.topic == "metrics-a"));
    admin
        .create_topics(&[NewTopic::new("metrics-b", 3)])
        .await
        .unwrap();
    poll_until(
        &mut c,
        |c| c.assignment().len() == 5,
        "metrics-b joins the subscription",
    )
    .await;
    let p = Producer::new(ProducerConfig::new(&b.bootstrap()))
        .await
        .unwrap();
    p.send(ProducerRecord::new("metrics-b", "x"))
        .await
        .unwrap()
        .await
        .unwrap();
    p.send(ProducerRecord::new("other", "y"))
        .await
        .unwrap()
        .await
        .unwrap();
    let r = c.recv().await.unwrap();
    assert_eq!(
        (r.topic.as_str(), r.value.as_deref()),
        ("metrics-b", Some(&b"x"[..]))
    );
    assert!(
        c.poll(Duration::from_millis(300)).await.unwrap().is_empty(),
        "`other` is not subscribed"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_and_async_commits() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.group_initial_rebalance_delay_ms = 0).await;
    Admin::connect(&b.bootstrap())
        .await
        .unwrap()
        .create_topics(&[NewTopic::new("mc", 1)])
        .await
        .unwrap();
    let p = Producer::new(ProducerConfig::new(&b.bootstrap()))
        .await
        .unwrap();
    for i in 0..10 {
        p.send(ProducerRecord::new("mc", format!("{i}")))
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    let tp = TopicPartition::new("mc", 0);
    let mut c = Consumer::new(group_cfg(&b, "manual").auto_commit(false))
        .await
        .unwrap();
    c.assign(std::slice::from_ref(&tp)).unwrap();
    for _ in 0..4 {
        c.recv().await.unwrap();
    }
    c.commit().await.unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        4
    );
    c.commit_offsets(&BTreeMap::from([(tp.clone(), 7)]))
        .await
        .unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        7
    );
    c.recv().await.unwrap();
    c.commit_async().unwrap().await.unwrap().unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        5
    );
    drop(c);
    // A new consumer of the group starts at the committed offset.
    let mut again = Consumer::new(group_cfg(&b, "manual").auto_commit(false))
        .await
        .unwrap();
    again.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(again.recv().await.unwrap().offset, 5);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_for_buffer_memory_then_everything_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.advertised = Some(proxy_addr.to_string())).await;
    let paused = Arc::new(AtomicBool::new(false));
    tokio::spawn(common::proxy::pausable_proxy(proxy, b.addr, paused.clone()));
    let bootstrap = proxy_addr.to_string();
    Admin::connect(&bootstrap)
        .await
        .unwrap()
        .create_topics(&[NewTopic::new("bp", 1)])
        .await
        .unwrap();
    let mut cfg = ProducerConfig::new(&bootstrap);
    cfg.set("buffer.memory", "65536")
        .unwrap()
        .set("batch.size", "8192")
        .unwrap()
        .set("max.block.ms", "300")
        .unwrap();
    let p = Arc::new(Producer::new(cfg).await.unwrap());
    p.send(ProducerRecord::new("bp", "warm-up"))
        .await
        .unwrap()
        .await
        .unwrap();
    paused.store(true, std::sync::atomic::Ordering::SeqCst);
    let value = vec![b'x'; 1000];
    let mut accepted = Vec::new();
    let err = loop {
        match p.send(ProducerRecord::new("bp", value.clone())).await {
            Ok(f) => accepted.push(f),
            Err(e) => break e,
        }
        assert!(accepted.len() < 1000, "send never blocked: no backpressure");
    };
    assert!(err.to_string().contains("buffer.memory"), "{err}");
    // About 64 KiB of 1 KB records fit (plus a batch or so the broker acknowledged just as the
    // proxy paused), not more.
    assert!(
        (50..=80).contains(&accepted.len()),
        "{} records accepted",
        accepted.len()
    );
    let n = accepted.len() as i64;
    // A blocked send goes through as soon as the broker answers again.
    let p2 = p.clone();
    let blocked = tokio::spawn(async move { p2.send(ProducerRecord::new("bp", "after")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    paused.store(false, std::sync::atomic::Ordering::SeqCst);
    let last = blocked.await.unwrap().unwrap().await.unwrap();
    for f in accepted {
        f.await.unwrap();
    }
    // Offsets: warm-up 0, the accepted records 1..=n, then the one that waited.
    assert_eq!(last.offset, n + 1, "delivered after the others");
    b.stop().await;
}
