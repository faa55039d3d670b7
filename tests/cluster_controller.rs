//! The metadata quorum and the controller's decisions, against three `strom server` processes:
//!
//! - `active_controller_failover`: kill -9 the active controller; the two survivors elect a
//!   new one, which fences the dead node (its leaderships move), and admin requests sent to any
//!   broker still work; the node returns and is listed again.
//! - `controlled_shutdown_moves_leadership_before_exit`: SIGTERM a leader; by the time the
//!   process has exited, none of its partitions is still led by it or leaderless (no session
//!   timeout had to expire).
//! - `min_insync_replicas_refuses_acks_all`: with the ISR below `min.insync.replicas`,
//!   `acks=all` is refused with NOT_ENOUGH_REPLICAS while `acks=1` is accepted; once the node
//!   is back in the ISR, `acks=all` works again.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use kafka_protocol::ResponseError;
use strom::client::{NewTopic, Producer, ProducerConfig, ProducerRecord};

async fn controller(cluster: &TestCluster) -> i32 {
    cluster
        .admin()
        .await
        .unwrap()
        .describe_cluster()
        .await
        .unwrap()
        .controller
}

/// A producer with `acks`; with `retries` 0 a refusal reaches the caller as the broker's error.
async fn producer(cluster: &TestCluster, acks: &str, retries: &str) -> Producer {
    let mut config = ProducerConfig::new(&cluster.bootstrap());
    for (k, v) in [
        ("acks", acks),
        ("retries", retries),
        (
            "enable.idempotence",
            if retries != "0" { "true" } else { "false" },
        ),
        ("delivery.timeout.ms", "3000"),
        ("request.timeout.ms", "1000"),
        ("linger.ms", "0"),
    ] {
        config.set(k, v).unwrap();
    }
    Producer::new(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_controller_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster.create_topic("before", 3, &[]).await;
    let old = controller(&cluster).await;
    assert!(old > 0, "no active controller reported");
    cluster.kill9(old);

    // A new controller among the survivors, and the dead node fenced: it leads nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = async {
            let admin = cluster.admin().await.ok()?;
            let c = admin.describe_cluster().await.ok()?;
            let t = admin.describe_topic("before").await.ok()?;
            let fenced = !c.brokers.iter().any(|b| b.id == old);
            let moved = t
                .partitions
                .iter()
                .all(|p| p.leader >= 0 && p.leader != old);
            (c.controller > 0 && c.controller != old && fenced && moved).then_some(())
        }
        .await;
        if ok.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new controller, or node {old} not fenced, within 15 s\n{}",
            cluster.all_logs_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Admin changes go through the new controller, whichever broker receives them.
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topics(&[NewTopic::new("after", 2).replication_factor(2)])
        .await
        .unwrap();
    let p = producer(&cluster, "all", "10").await;
    let m = p
        .send(ProducerRecord::new("after", "v").partition(1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((m.partition, m.offset), (1, 0));

    // The node returns: registered and listed again.
    cluster.restart(old).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !controller_lists(&cluster, old).await {
        assert!(
            Instant::now() < deadline,
            "node {old} not listed after its restart\n{}",
            cluster.all_logs_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn controller_lists(cluster: &TestCluster, id: i32) -> bool {
    let Ok(admin) = cluster.admin().await else {
        return false;
    };
    admin
        .describe_cluster()
        .await
        .is_ok_and(|c| c.brokers.iter().any(|b| b.id == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_shutdown_moves_leadership_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster.create_topic("graceful", 6, &[]).await;
    let victim = cluster.leader_of("graceful", 0).await;
    let started = Instant::now();
    cluster.terminate(victim).await;
    let took = started.elapsed();
    // Metadata right after the exit: the session timeout (1.5 s) has not necessarily passed, so
    // only the controlled shutdown can have moved the leaderships.
    let admin = cluster.admin().await.unwrap();
    let t = admin.describe_topic("graceful").await.unwrap();
    for p in &t.partitions {
        assert!(
            p.leader >= 0 && p.leader != victim,
            "partition {} is led by {} right after node {victim} shut down (in {took:?}): {t:?}",
            p.partition,
            p.leader
        );
        assert!(
            !p.isr.contains(&victim),
            "node {victim} still in the ISR: {p:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_replicas_refuses_acks_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster
        .create_topic("strict", 1, &[("min.insync.replicas", "3")])
        .await;
    // Right after creation a leader may not have applied the metadata yet: retries cover it.
    let retrying = producer(&cluster, "all", "10").await;
    retrying
        .send(ProducerRecord::new("strict", "in sync"))
        .await
        .unwrap()
        .await
        .unwrap();
    let leader = cluster.leader_of("strict", 0).await;
    let follower = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    cluster.kill9(follower);
    cluster
        .wait_for_isr("strict", 0, 2, Duration::from_secs(15))
        .await;

    let all = producer(&cluster, "all", "0").await;
    let e = all
        .send(ProducerRecord::new("strict", "too few"))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(ResponseError::NotEnoughReplicas),
        "acks=all with 2 in sync and min.insync.replicas=3: {e}"
    );
    let one = producer(&cluster, "1", "0").await;
    one.send(ProducerRecord::new("strict", "acks=1 is fine"))
        .await
        .unwrap()
        .await
        .unwrap();

    cluster.restart(follower).await;
    cluster
        .wait_for_isr("strict", 0, 3, Duration::from_secs(20))
        .await;
    let again = producer(&cluster, "all", "10").await;
    again
        .send(ProducerRecord::new("strict", "in sync again"))
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_behind_the_leaders_log_start_restarts_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster.create_topic("trimmed", 1, &[]).await;
    let p = producer(&cluster, "all", "10").await;
    let send = |n: u32| {
        let p = &p;
        async move {
            for i in 0..n {
                p.send(ProducerRecord::new("trimmed", format!("r{i}")))
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };
    send(10).await;
    let leader = cluster.leader_of("trimmed", 0).await;
    let follower = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    cluster.kill9(follower);
    cluster
        .wait_for_isr("trimmed", 0, 2, Duration::from_secs(15))
        .await;
    // Twenty records in one batch (linger), so the new log start below falls inside it.
    let mut config = ProducerConfig::new(&cluster.bootstrap());
    config.set("linger.ms", "200").unwrap();
    let batched = Producer::new(config).await.unwrap();
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(
            batched
                .send(ProducerRecord::new("trimmed", format!("b{i}")))
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    // The leader drops everything the stopped follower has (and more), mid-batch.
    let admin = cluster.admin().await.unwrap();
    let tp = strom::client::TopicPartition::new("trimmed", 0);
    let starts = admin
        .delete_records(&std::collections::BTreeMap::from([(tp.clone(), 25)]))
        .await
        .unwrap();
    assert_eq!(starts[&tp], 25);
    // Back, it can only copy from offset 25 on, and does: it rejoins the ISR.
    cluster.restart(follower).await;
    let info = cluster
        .wait_for_isr("trimmed", 0, 3, Duration::from_secs(20))
        .await;
    assert!(info.isr.contains(&follower), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_serves_and_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(dir.path()).await;
    cluster.add_broker_only(4).await;
    // Four partitions on four brokers: the broker-only node leads one.
    let admin = cluster.admin().await.unwrap();
    admin
        .create_topics(&[NewTopic::new("four", 4).replication_factor(2)])
        .await
        .unwrap();
    let led = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = cluster.admin().await.unwrap().describe_topic("four").await;
            if let Some(p) = t
                .ok()
                .and_then(|t| t.partitions.iter().find(|p| p.leader == 4).cloned())
            {
                break p.partition;
            }
            assert!(
                Instant::now() < deadline,
                "node 4 leads no partition of `four`\n{}",
                cluster.all_logs_report()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let p = producer(&cluster, "all", "10").await;
    let m = p
        .send(ProducerRecord::new("four", "via node 4").partition(led))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(m.offset, 0);
    // Killed, it is fenced like any broker and its partition moves to the other replica.
    cluster.kill9(4);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = cluster.describe("four", led).await;
        if info.as_ref().is_ok_and(|i| i.leader >= 0 && i.leader != 4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition {led} still led by node 4: {info:?}\n{}",
            cluster.all_logs_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = p
        .send(ProducerRecord::new("four", "after the kill").partition(led))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        m.offset, 1,
        "the acknowledged record survived on the new leader"
    );
}
