//! The metadata quorum in-process: one controller node on loopback (a quorum of one), so its
//! Raft storage, its listener and its restart path are exercised without other processes.
//!
//! - proposals through `QuorumClient` are applied and published as images;
//! - garbage on the controller port closes that connection only;
//! - after a restart from the same directory the image is back (log replay), and new proposals
//!   continue from it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use strom::controller::{
    Command, Controller, ControllerConfig, Image, NewTopic, Outcome, QuorumClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(dir: &std::path::Path, addr: &str) -> ControllerConfig {
    ControllerConfig {
        node_id: 1,
        voters: vec![(1, addr.to_string())],
        dir: dir.to_path_buf(),
        broker_session_timeout: Duration::from_secs(30),
        leader_imbalance_interval: Duration::from_secs(30),
        raft_heartbeat: Duration::from_millis(50),
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn wait_for(c: &Controller, what: &str, f: impl Fn(&Image) -> bool) {
    let mut rx = c.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|i| f(i)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap();
}

fn topic(name: &str) -> Command {
    Command::CreateTopics {
        topics: vec![NewTopic {
            name: name.into(),
            id: format!("{:0>32}", name.len()),
            partitions: 2,
            replication_factor: 1,
            assignment: None,
            configs: BTreeMap::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_survive_garbage_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let c = Controller::start(config(dir.path(), &addr)).await.unwrap();
    let client = QuorumClient::new(&[(1, addr.clone())]);
    let t = Duration::from_secs(10);

    let reg = client
        .propose(
            Command::Register {
                id: 7,
                host: "h".into(),
                port: 9092,
                rack: None,
            },
            t,
        )
        .await
        .unwrap();
    let Outcome::Registered { epoch } = reg else {
        panic!("{reg:?}")
    };
    client
        .propose(Command::Unfence { id: 7, epoch }, t)
        .await
        .unwrap();
    let created = client.propose(topic("orders"), t).await.unwrap();
    assert_eq!(created, Outcome::Topics(vec![("orders".into(), None)]));
    wait_for(&c, "the topic", |i| i.topics.contains_key("orders")).await;
    wait_for(&c, "a cluster id (set by the active controller)", |i| {
        !i.cluster_id.is_empty()
    })
    .await;
    let img = c.image();
    assert_eq!(img.topics["orders"].partitions[1].leader, 7);

    // Garbage: a bad length, then bad JSON. Each closes its own connection only.
    for junk in [&b"\xff\xff\xff\xffnope"[..], &b"\x00\x00\x00\x05{{{{{"[..]] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the controller answered garbage instead of closing");
    }
    let again = client.propose(topic("still-fine"), t).await.unwrap();
    assert_eq!(again, Outcome::Topics(vec![("still-fine".into(), None)]));

    // Restart from the same directory: the log is replayed into the same image.
    let before = c.image();
    c.shutdown().await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = Controller::start(config(dir.path(), &addr)).await.unwrap();
    wait_for(&c, "the replayed image", |i| {
        i.topics.contains_key("still-fine") && i.brokers.contains_key(&7)
    })
    .await;
    let after = c.image();
    assert_eq!(after.topics, before.topics);
    assert_eq!(after.cluster_id, before.cluster_id);
    let dup = client.propose(topic("orders"), t).await.unwrap();
    let Outcome::Topics(r) = dup else {
        panic!("{dup:?}")
    };
    assert_eq!(
        r[0].1.as_ref().unwrap().code,
        36,
        "TOPIC_ALREADY_EXISTS after the restart"
    );
    c.shutdown().await;
}
