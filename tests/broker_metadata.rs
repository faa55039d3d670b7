//! Metadata: the broker list with the advertised address, cluster and controller ids,
//! auto-creation (on, off, and refused by the client), "all topics", topic ids (v10+) and their
//! stability across a restart, and invalid topic names.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{tn, RawClient, TestBroker};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{BrokerId, DeleteTopicsRequest, MetadataRequest, MetadataResponse};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNKNOWN_TOPIC_ID: i16 = 100;

fn req(topics: Option<&[&str]>, allow_auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(tn(t))))
                .collect()
        }))
        .with_allow_auto_topic_creation(allow_auto_create)
}

/// Metadata at `version` (v0-v3 cannot carry allow_auto_topic_creation=false).
async fn metadata(
    c: &mut RawClient,
    version: i16,
    topics: Option<&[&str]>,
    allow_auto_create: bool,
) -> MetadataResponse {
    c.call(&req(topics, allow_auto_create), version).await
}

fn name_of(t: &MetadataResponseTopic) -> String {
    t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default()
}

fn names(r: &MetadataResponse) -> BTreeSet<String> {
    r.topics.iter().map(name_of).collect()
}

fn topic<'a>(r: &'a MetadataResponse, name: &str) -> &'a MetadataResponseTopic {
    r.topics
        .iter()
        .find(|t| name_of(t) == name)
        .unwrap_or_else(|| panic!("topic {name} not in the response: {r:?}"))
}

fn brokers(r: &MetadataResponse) -> Vec<(i32, String, i32)> {
    r.brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect()
}

/// Checks that `t` is a healthy single-node topic with `n` partitions led by `node`.
fn assert_topic_led_by(t: &MetadataResponseTopic, n: i32, node: i32, version: i16) {
    assert_eq!(t.error_code, 0, "{t:?}");
    assert!(!t.is_internal);
    let idx: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    assert_eq!(idx, (0..n).collect::<Vec<_>>(), "{t:?}");
    for p in &t.partitions {
        assert_eq!(p.error_code, 0, "{p:?}");
        assert_eq!(p.leader_id, BrokerId(node));
        assert_eq!(p.replica_nodes, vec![BrokerId(node)]);
        assert_eq!(p.isr_nodes, vec![BrokerId(node)]);
        if version >= 7 {
            assert_eq!(p.leader_epoch, 0, "{p:?}");
        }
        if version >= 5 {
            assert!(p.offline_replicas.is_empty());
        }
    }
}

#[tokio::test]
async fn v1_lists_the_advertised_broker_and_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.node_id = 7;
        c.advertised = Some("broker7.example:19092".into());
    })
    .await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 1, None, true).await;
    assert_eq!(brokers(&r), vec![(7, "broker7.example".to_string(), 19092)]);
    assert_eq!(r.controller_id, BrokerId(7));
    assert!(r.topics.is_empty(), "{r:?}");
    // v1 has no cluster id on the wire.
    assert_eq!(r.cluster_id, None);
    b.stop().await;
}

#[tokio::test]
async fn cluster_id_is_reported_from_v2_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let id = b.broker.cluster_id().to_string();
    assert_eq!(id.len(), 22, "{id:?}");
    let mut c = RawClient::connect(b.addr).await;
    for v in [2, 4, 9, 12] {
        let r = metadata(&mut c, v, None, true).await;
        assert_eq!(
            r.cluster_id.as_ref().map(|s| s.to_string()),
            Some(id.clone()),
            "v{v}"
        );
        assert_eq!(r.controller_id, BrokerId(1), "v{v}");
    }
    b.stop().await;
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 9, None, true).await;
    assert_eq!(r.cluster_id.map(|s| s.to_string()), Some(id));
    b.stop().await;
}

/// Without `advertised`, clients must be told the address the broker actually listens on. With
/// `listen = 127.0.0.1:0` (an ephemeral port, as in these tests) that is the bound port, not 0:
/// Kafka replaces port 0 in its advertised listeners with the bound port.
#[tokio::test]
async fn without_advertised_the_bound_address_is_advertised() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 9, None, true).await;
    assert_eq!(
        brokers(&r),
        vec![(1, "127.0.0.1".to_string(), b.addr.port() as i32)],
        "a client following this metadata must be able to connect back"
    );
    b.stop().await;
}

#[tokio::test]
async fn v4_auto_creation_follows_the_client_flag() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.num_partitions = 3).await;
    let mut c = RawClient::connect(b.addr).await;

    // The client says no: unknown, and nothing is created.
    let r = metadata(&mut c, 4, Some(&["orders"]), false).await;
    assert_eq!(r.topics.len(), 1);
    assert_eq!(name_of(&r.topics[0]), "orders");
    assert_eq!(r.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert!(r.topics[0].partitions.is_empty());
    assert!(b.broker.logs().topic("orders").is_none());
    let all = metadata(&mut c, 4, None, false).await;
    assert!(all.topics.is_empty(), "{all:?}");

    // The client says yes: created with num_partitions.
    let r = metadata(&mut c, 4, Some(&["orders"]), true).await;
    assert_eq!(r.topics.len(), 1);
    assert_topic_led_by(topic(&r, "orders"), 3, 1, 4);
    assert_eq!(b.broker.logs().topic("orders").unwrap().partitions, 3);
    for p in 0..3 {
        assert!(b.broker.partition("orders", p).is_some(), "partition {p}");
    }

    // Now it exists, so even allow=false finds it.
    let r = metadata(&mut c, 4, Some(&["orders"]), false).await;
    assert_topic_led_by(topic(&r, "orders"), 3, 1, 4);
    b.stop().await;
}

#[tokio::test]
async fn v1_auto_creates_because_old_clients_cannot_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.num_partitions = 2).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 1, Some(&["legacy"]), true).await;
    assert_topic_led_by(topic(&r, "legacy"), 2, 1, 1);
    b.stop().await;
}

#[tokio::test]
async fn auto_creation_disabled_in_the_broker_gives_unknown_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.auto_create_topics = false).await;
    let mut c = RawClient::connect(b.addr).await;
    for v in [1, 4, 9, 12] {
        let r = metadata(&mut c, v, Some(&["nope"]), true).await;
        assert_eq!(r.topics.len(), 1, "v{v}");
        assert_eq!(name_of(&r.topics[0]), "nope", "v{v}");
        assert_eq!(r.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
    }
    assert!(b.broker.logs().topic("nope").is_none());
    assert!(metadata(&mut c, 9, None, true).await.topics.is_empty());
    b.stop().await;
}

#[tokio::test]
async fn null_topics_means_all_topics_and_empty_means_none() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.num_partitions = 2).await;
    let mut c = RawClient::connect(b.addr).await;
    metadata(&mut c, 4, Some(&["alpha", "beta", "gamma"]), true).await;
    let want: BTreeSet<String> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for v in [1, 4, 9, 12] {
        let r = metadata(&mut c, v, None, true).await;
        assert_eq!(names(&r), want, "v{v}");
        assert_eq!(r.topics.len(), 3, "v{v}");
        for t in &r.topics {
            assert_topic_led_by(t, 2, 1, v);
        }
        // v1+: an empty list asks for no topics at all.
        let r = metadata(&mut c, v, Some(&[]), true).await;
        assert!(r.topics.is_empty(), "v{v}: {r:?}");
        assert_eq!(r.brokers.len(), 1);
    }
    // v0: an empty list means all topics.
    let r = metadata(&mut c, 0, Some(&[]), true).await;
    assert_eq!(names(&r), want);
    b.stop().await;
}

#[tokio::test]
async fn v9_flexible_round_trip_with_several_topics() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.num_partitions = 4;
        c.advertised = Some("[::1]:29092".into());
    })
    .await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 9, Some(&["a.b", "c_d-e"]), true).await;
    assert_eq!(brokers(&r), vec![(1, "::1".to_string(), 29092)]);
    assert_eq!(
        r.topics.iter().map(name_of).collect::<Vec<_>>(),
        vec!["a.b", "c_d-e"],
        "topics come back in request order"
    );
    for t in &r.topics {
        assert_topic_led_by(t, 4, 1, 9);
    }
    // A mix of known and unknown with creation refused.
    let r = metadata(&mut c, 9, Some(&["a.b", "zzz"]), false).await;
    assert_eq!(topic(&r, "a.b").error_code, 0);
    assert_eq!(topic(&r, "zzz").error_code, UNKNOWN_TOPIC_OR_PARTITION);
    b.stop().await;
}

#[tokio::test]
async fn v12_topic_ids_are_set_usable_and_stable_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.num_partitions = 2).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 12, Some(&["one", "two"]), true).await;
    let id1 = topic(&r, "one").topic_id;
    let id2 = topic(&r, "two").topic_id;
    assert!(!id1.is_nil());
    assert!(!id2.is_nil());
    assert_ne!(id1, id2);
    // The same id on every request, and in the "all topics" listing.
    let all = metadata(&mut c, 12, None, true).await;
    assert_eq!(topic(&all, "one").topic_id, id1);
    assert_eq!(topic(&all, "two").topic_id, id2);
    // Ids are below v10 not on the wire.
    let r9 = metadata(&mut c, 9, Some(&["one"]), true).await;
    assert!(r9.topics[0].topic_id.is_nil());

    // Lookup by id alone (v12 allows a null name).
    let by_id = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(id2)]));
    let r = c.call(&by_id, 12).await;
    assert_eq!(r.topics.len(), 1, "{r:?}");
    assert_eq!(name_of(&r.topics[0]), "two", "{r:?}");
    assert_eq!(r.topics[0].topic_id, id2);
    assert_topic_led_by(&r.topics[0], 2, 1, 12);

    b.stop().await;
    let b = TestBroker::start(dir.path(), |c| c.num_partitions = 2).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 12, None, false).await;
    assert_eq!(names(&r).len(), 2);
    assert_eq!(
        topic(&r, "one").topic_id,
        id1,
        "topic id changed on restart"
    );
    assert_eq!(
        topic(&r, "two").topic_id,
        id2,
        "topic id changed on restart"
    );
    let r = c.call(&by_id, 12).await;
    assert_eq!(name_of(&r.topics[0]), "two");

    // After deletion the id is unknown, and a re-created topic gets a new id.
    let del = c
        .call(
            &DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_topic_id(id2)])
                .with_timeout_ms(5000),
            6,
        )
        .await;
    assert_eq!(del.responses[0].error_code, 0, "{del:?}");
    let r = c.call(&by_id, 12).await;
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].error_code, UNKNOWN_TOPIC_ID, "{r:?}");
    assert_eq!(r.topics[0].topic_id, id2);
    let r = metadata(&mut c, 12, Some(&["two"]), true).await;
    assert_eq!(topic(&r, "two").error_code, 0);
    assert!(!topic(&r, "two").topic_id.is_nil());
    assert_ne!(topic(&r, "two").topic_id, id2);
    b.stop().await;
}

#[tokio::test]
async fn invalid_topic_names_are_refused_when_auto_creating() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let too_long = "x".repeat(250);
    let bad = [
        "bad name",
        "bad/name",
        "..",
        ".",
        "ünïcode",
        "",
        too_long.as_str(),
    ];
    for v in [1, 4, 9, 12] {
        let r = metadata(&mut c, v, Some(&bad), true).await;
        assert_eq!(r.topics.len(), bad.len(), "v{v}");
        for (t, name) in r.topics.iter().zip(bad) {
            assert_eq!(name_of(t), name, "v{v}");
            assert_eq!(t.error_code, INVALID_TOPIC_EXCEPTION, "v{v} {name:?}");
            assert!(t.partitions.is_empty());
        }
    }
    assert!(b.broker.logs().topics().is_empty());
    // The longest legal name (249 characters) is fine.
    let longest = "y".repeat(249);
    let r = metadata(&mut c, 9, Some(&[longest.as_str()]), true).await;
    assert_topic_led_by(&r.topics[0], 1, 1, 9);
    b.stop().await;
}

/// Kafka validates the name of a topic it does not know even when it will not create it:
/// `KafkaApis.getTopicMetadata` answers INVALID_TOPIC_EXCEPTION for an invalid name and
/// UNKNOWN_TOPIC_OR_PARTITION only for a valid one.
#[tokio::test]
async fn invalid_topic_names_are_refused_without_auto_creation() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.auto_create_topics = false).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 9, Some(&["bad name", "good-name"]), true).await;
    assert_eq!(
        topic(&r, "good-name").error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(topic(&r, "bad name").error_code, INVALID_TOPIC_EXCEPTION);
    b.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = metadata(&mut c, 9, Some(&["bad name", "good-name"]), false).await;
    assert_eq!(
        topic(&r, "good-name").error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(topic(&r, "bad name").error_code, INVALID_TOPIC_EXCEPTION);
    b.stop().await;
}
