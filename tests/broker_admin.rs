//! Admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, DeleteRecords and DescribeCluster.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::{
    build_batch, creatable, delete_records_req, produce_acks_all, sb, tn, RawClient, TestBroker,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::DeleteRecordsPartitionResult;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest, BrokerId,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, MetadataRequest, MetadataResponse,
};
use strom::log::{Compression, Record};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_CONFIG: i16 = 40;
const UNKNOWN_TOPIC_ID: i16 = 100;

/// ConfigResource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// ConfigSource values.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

async fn create(
    c: &mut RawClient,
    version: i16,
    topic: CreatableTopic,
    validate_only: bool,
) -> CreatableTopicResult {
    let r = c
        .call(
            &CreateTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_validate_only(validate_only)
                .with_topics(vec![topic]),
            version,
        )
        .await;
    assert_eq!(r.topics.len(), 1, "{r:?}");
    r.topics[0].clone()
}

async fn create_ok(c: &mut RawClient, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let r = create(c, 5, creatable(name, partitions, 1, configs), false).await;
    assert_eq!(r.error_code, 0, "{r:?}");
}

async fn metadata(c: &mut RawClient, topics: &[&str]) -> MetadataResponse {
    c.call(
        &MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(tn(t))))
                    .collect(),
            )),
        12,
    )
    .await
}

/// `(error, partition count)` of one topic per Metadata (no auto-creation).
async fn partitions_of(c: &mut RawClient, topic: &str) -> (i16, usize) {
    let r = metadata(c, &[topic]).await;
    (r.topics[0].error_code, r.topics[0].partitions.len())
}

async fn all_topics(c: &mut RawClient) -> BTreeSet<String> {
    let r = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    r.topics
        .iter()
        .map(|t| t.name.as_ref().unwrap().0.to_string())
        .collect()
}

async fn produce(c: &mut RawClient, topic: &str, partition: i32, n: usize) -> (i16, i64) {
    let records =
        (0..n).map(|i| Record::new(None::<Bytes>, Some(format!("v{i}")), 1000 + i as i64));
    let p = produce_acks_all(c, topic, partition, build_batch(Compression::None, records)).await;
    (p.error_code, p.base_offset)
}

async fn describe(
    c: &mut RawClient,
    version: i16,
    resource_type: i8,
    name: &str,
    keys: Option<&[&str]>,
) -> DescribeConfigsResult {
    let r = c
        .call(
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(sb(name))
                    .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| sb(k)).collect())),
            ]),
            version,
        )
        .await;
    assert_eq!(r.results.len(), 1, "{r:?}");
    let res = r.results[0].clone();
    assert_eq!(res.resource_type, resource_type);
    assert_eq!(res.resource_name.as_str(), name);
    res
}

/// name -> (value, source) of a topic's configs (v4).
async fn topic_configs(c: &mut RawClient, topic: &str) -> BTreeMap<String, (String, i8)> {
    let r = describe(c, 4, TOPIC, topic, None).await;
    assert_eq!(r.error_code, 0, "{r:?}");
    r.configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                (
                    e.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    e.config_source,
                ),
            )
        })
        .collect()
}

fn list_set(s: &str) -> BTreeSet<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

async fn delete_records(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    partition: i32,
    before: i64,
) -> DeleteRecordsPartitionResult {
    let r = c
        .call(&delete_records_req(topic, partition, before), version)
        .await;
    assert_eq!(r.topics[0].name, tn(topic));
    let p = r.topics[0].partitions[0].clone();
    assert_eq!(p.partition_index, partition);
    p
}

// ---- CreateTopics ----------------------------------------------------------------------------

#[tokio::test]
async fn create_topics_with_partitions_and_replication_factor() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.num_partitions = 2).await;
    let mut c = RawClient::connect(b.addr).await;
    for (v, name) in [(2, "v2"), (5, "v5"), (7, "v7")] {
        let r = create(&mut c, v, creatable(name, 4, 1, &[]), false).await;
        assert_eq!(r.error_code, 0, "v{v}: {r:?}");
        assert_eq!(r.name, tn(name));
        if v >= 5 {
            assert_eq!((r.num_partitions, r.replication_factor), (4, 1), "v{v}");
        }
        if v >= 7 {
            assert!(!r.topic_id.is_nil());
            let m = metadata(&mut c, &[name]).await;
            assert_eq!(
                m.topics[0].topic_id, r.topic_id,
                "CreateTopics and Metadata agree"
            );
        }
        assert_eq!(partitions_of(&mut c, name).await, (0, 4), "v{v}");
        for p in 0..4 {
            assert_eq!(produce(&mut c, name, p, 1).await, (0, 0));
        }
    }
    // -1 / -1: the broker's defaults (num_partitions = 2, replication factor 1).
    let r = create(&mut c, 5, creatable("dflt", -1, -1, &[]), false).await;
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!((r.num_partitions, r.replication_factor), (2, 1));
    assert_eq!(partitions_of(&mut c, "dflt").await, (0, 2));
    b.stop().await;
}

#[tokio::test]
async fn create_topics_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    for v in [2, 5, 7] {
        let r = create(&mut c, v, creatable("rf3", 1, 3, &[]), false).await;
        assert_eq!(r.error_code, INVALID_REPLICATION_FACTOR, "v{v}: {r:?}");
        let r = create(&mut c, v, creatable("rf0", 1, 0, &[]), false).await;
        assert_eq!(r.error_code, INVALID_REPLICATION_FACTOR, "v{v}: {r:?}");
        let r = create(&mut c, v, creatable("p0", 0, 1, &[]), false).await;
        assert_eq!(r.error_code, INVALID_PARTITIONS, "v{v}: {r:?}");
        let r = create(&mut c, v, creatable("bad name", 1, 1, &[]), false).await;
        assert_eq!(r.error_code, INVALID_TOPIC_EXCEPTION, "v{v}: {r:?}");
        for (k, val) in [
            ("retention.ms", "soon"),
            ("cleanup.policy", "shred"),
            ("no.such.config", "1"),
            ("min.cleanable.dirty.ratio", "1.5"),
        ] {
            let r = create(&mut c, v, creatable("badcfg", 1, 1, &[(k, val)]), false).await;
            assert_eq!(r.error_code, INVALID_CONFIG, "v{v} {k}={val}: {r:?}");
            assert!(r.error_message.is_some());
        }
    }
    assert!(
        all_topics(&mut c).await.is_empty(),
        "a refused topic was created"
    );
    assert!(b.broker.logs().topics().is_empty());

    create_ok(&mut c, "dup", 2, &[]).await;
    produce(&mut c, "dup", 0, 3).await;
    for v in [2, 5, 7] {
        let r = create(&mut c, v, creatable("dup", 5, 1, &[]), false).await;
        assert_eq!(r.error_code, TOPIC_ALREADY_EXISTS, "v{v}: {r:?}");
    }
    // The existing topic is untouched.
    assert_eq!(partitions_of(&mut c, "dup").await, (0, 2));
    assert_eq!(
        b.broker.partition("dup", 0).unwrap().log.log_end_offset(),
        3
    );
    b.stop().await;
}

#[tokio::test]
async fn create_topics_applies_configs() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let r = create(
        &mut c,
        5,
        creatable(
            "cfg",
            2,
            1,
            &[("retention.ms", "12345"), ("cleanup.policy", "compact")],
        ),
        false,
    )
    .await;
    assert_eq!(r.error_code, 0, "{r:?}");
    let configs: BTreeMap<String, (Option<String>, i8)> = r
        .configs
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                (e.value.as_ref().map(|v| v.to_string()), e.config_source),
            )
        })
        .collect();
    assert_eq!(
        configs["retention.ms"],
        (Some("12345".into()), DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(
        configs["cleanup.policy"],
        (Some("compact".into()), DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(
        configs["segment.bytes"],
        (Some("1073741824".into()), DEFAULT_CONFIG)
    );
    // In force on every partition.
    for p in 0..2 {
        let cfg = b.broker.partition("cfg", p).unwrap().log.config();
        assert_eq!(cfg.retention_ms, Some(12345));
        assert!(cfg.compact && !cfg.delete);
    }
    // And reported by DescribeConfigs.
    let d = topic_configs(&mut c, "cfg").await;
    assert_eq!(d["retention.ms"], ("12345".into(), DYNAMIC_TOPIC_CONFIG));
    b.stop().await;
}

#[tokio::test]
async fn create_topics_validate_only_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    for v in [2, 5, 7] {
        let r = create(
            &mut c,
            v,
            creatable("dry", 3, 1, &[("retention.ms", "1000")]),
            true,
        )
        .await;
        assert_eq!(r.error_code, 0, "v{v}: {r:?}");
        if v >= 5 {
            assert_eq!(r.num_partitions, 3);
        }
        // Validation still runs.
        let r = create(&mut c, v, creatable("dry", 3, 3, &[]), true).await;
        assert_eq!(r.error_code, INVALID_REPLICATION_FACTOR, "v{v}");
        let r = create(
            &mut c,
            v,
            creatable("dry", 3, 1, &[("retention.ms", "x")]),
            true,
        )
        .await;
        assert_eq!(r.error_code, INVALID_CONFIG, "v{v}");
    }
    assert_eq!(
        partitions_of(&mut c, "dry").await,
        (UNKNOWN_TOPIC_OR_PARTITION, 0)
    );
    assert!(b.broker.logs().topic("dry").is_none());
    assert!(!dir.path().join("dry-0").exists());
    // A validate-only request for an existing topic reports that it exists.
    create_ok(&mut c, "real", 1, &[]).await;
    let r = create(&mut c, 5, creatable("real", 1, 1, &[]), true).await;
    assert_eq!(r.error_code, TOPIC_ALREADY_EXISTS);
    b.stop().await;
}

// ---- DeleteTopics ----------------------------------------------------------------------------

#[tokio::test]
async fn delete_topics_by_name_v1() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_ok(&mut c, "gone", 2, &[]).await;
    create_ok(&mut c, "kept", 1, &[]).await;
    assert_eq!(produce(&mut c, "gone", 1, 4).await, (0, 0));
    let r = c
        .call(
            &DeleteTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topic_names(vec![tn("gone"), tn("never-was")]),
            1,
        )
        .await;
    let got: Vec<(String, i16)> = r
        .responses
        .iter()
        .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            ("gone".to_string(), 0),
            ("never-was".to_string(), UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    assert_eq!(
        partitions_of(&mut c, "gone").await,
        (UNKNOWN_TOPIC_OR_PARTITION, 0)
    );
    assert_eq!(
        all_topics(&mut c).await,
        BTreeSet::from(["kept".to_string()])
    );
    assert!(!dir.path().join("gone-0").exists());
    assert!(!dir.path().join("gone-1").exists());
    assert_eq!(
        produce(&mut c, "gone", 1, 1).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // A topic re-created under the same name starts empty.
    create_ok(&mut c, "gone", 2, &[]).await;
    assert_eq!(produce(&mut c, "gone", 1, 1).await, (0, 0));

    // Deletion survives a restart.
    c.call(
        &DeleteTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topic_names(vec![tn("gone")]),
        1,
    )
    .await;
    b.stop().await;
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    assert_eq!(
        all_topics(&mut c).await,
        BTreeSet::from(["kept".to_string()])
    );
    b.stop().await;
}

#[tokio::test]
async fn delete_topics_by_id_v6() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_ok(&mut c, "a", 1, &[]).await;
    create_ok(&mut c, "b", 1, &[]).await;
    let m = metadata(&mut c, &["a", "b"]).await;
    let id_a = m.topics[0].topic_id;
    let id_b = m.topics[1].topic_id;
    let r = c
        .call(
            &DeleteTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![DeleteTopicState::default().with_topic_id(id_a)]),
            6,
        )
        .await;
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].error_code, 0, "{r:?}");
    assert_eq!(r.responses[0].topic_id, id_a);
    assert_eq!(r.responses[0].name, Some(tn("a")));
    assert_eq!(
        partitions_of(&mut c, "a").await,
        (UNKNOWN_TOPIC_OR_PARTITION, 0)
    );
    assert_eq!(all_topics(&mut c).await, BTreeSet::from(["b".to_string()]));
    assert_eq!(metadata(&mut c, &["b"]).await.topics[0].topic_id, id_b);

    // The same id again: unknown.
    let r = c
        .call(
            &DeleteTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![DeleteTopicState::default().with_topic_id(id_a)]),
            6,
        )
        .await;
    assert_eq!(r.responses[0].error_code, UNKNOWN_TOPIC_ID, "{r:?}");

    // v6 by name works too.
    let r = c
        .call(
            &DeleteTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![DeleteTopicState::default().with_name(Some(tn("b")))]),
            6,
        )
        .await;
    assert_eq!(r.responses[0].error_code, 0, "{r:?}");
    assert_eq!(r.responses[0].name, Some(tn("b")));
    assert!(all_topics(&mut c).await.is_empty());
    b.stop().await;
}

// ---- CreatePartitions ------------------------------------------------------------------------

async fn create_partitions(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    count: i32,
    validate_only: bool,
) -> i16 {
    let r = c
        .call(
            &CreatePartitionsRequest::default()
                .with_timeout_ms(5000)
                .with_validate_only(validate_only)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(tn(topic))
                    .with_count(count)
                    .with_assignments(None)]),
            version,
        )
        .await;
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].name, tn(topic));
    r.results[0].error_code
}

#[tokio::test]
async fn create_partitions_grows_and_refuses_to_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_ok(&mut c, "t", 1, &[("retention.ms", "4242")]).await;
    assert_eq!(produce(&mut c, "t", 0, 2).await, (0, 0));
    let mut count = 1;
    for v in 0..=3 {
        count += 1;
        assert_eq!(
            create_partitions(&mut c, v, "t", count, false).await,
            0,
            "v{v}"
        );
        assert_eq!(
            partitions_of(&mut c, "t").await,
            (0, count as usize),
            "v{v}"
        );
        assert_eq!(produce(&mut c, "t", count - 1, 1).await, (0, 0), "v{v}");
        // New partitions get the topic's overrides.
        let cfg = b.broker.partition("t", count - 1).unwrap().log.config();
        assert_eq!(cfg.retention_ms, Some(4242));
        // Shrinking and staying the same are refused.
        assert_eq!(
            create_partitions(&mut c, v, "t", count - 1, false).await,
            INVALID_PARTITIONS,
            "v{v}"
        );
        assert_eq!(
            create_partitions(&mut c, v, "t", count, false).await,
            INVALID_PARTITIONS,
            "v{v}"
        );
        // validate_only: accepted, nothing changes.
        assert_eq!(
            create_partitions(&mut c, v, "t", count + 5, true).await,
            0,
            "v{v}"
        );
        assert_eq!(
            partitions_of(&mut c, "t").await,
            (0, count as usize),
            "v{v}"
        );
        assert_eq!(
            create_partitions(&mut c, v, "nosuch", 3, false).await,
            UNKNOWN_TOPIC_OR_PARTITION,
            "v{v}"
        );
    }
    // Old data is untouched, and the new count survives a restart.
    assert_eq!(b.broker.partition("t", 0).unwrap().log.log_end_offset(), 2);
    b.stop().await;
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    assert_eq!(partitions_of(&mut c, "t").await, (0, 5));
    assert_eq!(produce(&mut c, "t", 4, 1).await, (0, 1));
    b.stop().await;
}

// ---- DescribeConfigs -------------------------------------------------------------------------

#[tokio::test]
async fn describe_configs_of_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.log.insert("segment.ms".into(), "3600000".into());
    })
    .await;
    let mut c = RawClient::connect(b.addr).await;
    create_ok(
        &mut c,
        "t",
        1,
        &[("retention.ms", "1234"), ("cleanup.policy", "compact")],
    )
    .await;
    for v in [1, 2, 3, 4] {
        let r = describe(&mut c, v, TOPIC, "t", None).await;
        assert_eq!(r.error_code, 0, "v{v}: {r:?}");
        let names: BTreeSet<String> = r.configs.iter().map(|e| e.name.to_string()).collect();
        for k in [
            "retention.ms",
            "cleanup.policy",
            "segment.bytes",
            "max.message.bytes",
        ] {
            assert!(names.contains(k), "v{v}: {k} missing");
        }
        for e in &r.configs {
            let name = e.name.as_str();
            let value = e.value.as_ref().map(|v| v.to_string());
            let expect = match name {
                "retention.ms" => (Some("1234".to_string()), DYNAMIC_TOPIC_CONFIG),
                "cleanup.policy" => (Some("compact".to_string()), DYNAMIC_TOPIC_CONFIG),
                "segment.ms" => (Some("3600000".to_string()), STATIC_BROKER_CONFIG),
                "segment.bytes" => (Some("1073741824".to_string()), DEFAULT_CONFIG),
                "max.message.bytes" => (Some("1048588".to_string()), DEFAULT_CONFIG),
                _ => (value.clone(), DEFAULT_CONFIG),
            };
            assert_eq!((value, e.config_source), expect, "v{v} {name}");
            assert!(!e.read_only, "v{v} {name}");
            assert!(!e.is_sensitive, "v{v} {name}");
            if v >= 3 {
                let want_type = match name {
                    "retention.ms" | "segment.ms" => 5,         // LONG
                    "cleanup.policy" => 7,                      // LIST
                    "segment.bytes" | "max.message.bytes" => 3, // INT
                    _ => e.config_type,
                };
                assert_eq!(e.config_type, want_type, "v{v} {name}");
            }
        }
    }
    // Only the keys asked for.
    let r = describe(
        &mut c,
        4,
        TOPIC,
        "t",
        Some(&["retention.ms", "segment.bytes"]),
    )
    .await;
    let got: Vec<(String, String, i8)> = r
        .configs
        .iter()
        .map(|e| {
            (
                e.name.to_string(),
                e.value.as_ref().unwrap().to_string(),
                e.config_source,
            )
        })
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        vec![
            ("retention.ms".into(), "1234".into(), DYNAMIC_TOPIC_CONFIG),
            ("segment.bytes".into(), "1073741824".into(), DEFAULT_CONFIG),
        ]
    );
    let r = describe(&mut c, 4, TOPIC, "nosuch", None).await;
    assert_eq!(r.error_code, UNKNOWN_TOPIC_OR_PARTITION, "{r:?}");
    b.stop().await;
}

#[tokio::test]
async fn describe_configs_of_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.node_id = 3;
        c.num_partitions = 6;
        c.log.insert("retention.ms".into(), "600000".into());
    })
    .await;
    let mut c = RawClient::connect(b.addr).await;
    for v in [1, 4] {
        let r = describe(&mut c, v, BROKER, "3", None).await;
        assert_eq!(r.error_code, 0, "v{v}: {r:?}");
        let m: BTreeMap<String, (String, i8, bool)> = r
            .configs
            .iter()
            .map(|e| {
                (
                    e.name.to_string(),
                    (
                        e.value.as_ref().unwrap().to_string(),
                        e.config_source,
                        e.read_only,
                    ),
                )
            })
            .collect();
        assert_eq!(
            m["num.partitions"],
            ("6".into(), STATIC_BROKER_CONFIG, true)
        );
        assert_eq!(m["node.id"], ("3".into(), STATIC_BROKER_CONFIG, true));
        assert_eq!(
            m["log.retention.ms"],
            ("600000".into(), STATIC_BROKER_CONFIG, true)
        );
        assert_eq!(
            m["auto.create.topics.enable"],
            ("true".into(), STATIC_BROKER_CONFIG, true)
        );
    }
    b.stop().await;
}

// ---- AlterConfigs / IncrementalAlterConfigs --------------------------------------------------

async fn alter(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> i16 {
    let r = c
        .call(
            &AlterConfigsRequest::default()
                .with_validate_only(validate_only)
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(TOPIC)
                    .with_resource_name(sb(topic))
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                alter_configs_request::AlterableConfig::default()
                                    .with_name(sb(k))
                                    .with_value(Some(sb(v)))
                            })
                            .collect(),
                    )]),
            version,
        )
        .await;
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].resource_name.as_str(), topic);
    r.responses[0].error_code
}

#[tokio::test]
async fn alter_configs_replaces_all_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_ok(
        &mut c,
        "t",
        2,
        &[("retention.ms", "1000"), ("segment.bytes", "100000")],
    )
    .await;
    for v in [0, 1, 2] {
        assert_eq!(
            alter(&mut c, v, "t", &[("cleanup.policy", "compact")], false).await,
            0,
            "v{v}"
        );
        let d = topic_configs(&mut c, "t").await;
        assert_eq!(
            d["cleanup.policy"],
            ("compact".into(), DYNAMIC_TOPIC_CONFIG)
        );
        assert_eq!(
            d["retention.ms"],
            ("604800000".into(), DEFAULT_CONFIG),
            "v{v}: an override not in the request is removed"
        );
        assert_eq!(d["segment.bytes"], ("1073741824".into(), DEFAULT_CONFIG));
        for p in 0..2 {
            let cfg = b.broker.partition("t", p).unwrap().log.config();
            assert!(cfg.compact && !cfg.delete);
            assert_eq!(cfg.retention_ms, Some(604_800_000));
        }
        // validate_only changes nothing; invalid values are refused and change nothing.
        assert_eq!(
            alter(&mut c, v, "t", &[("retention.ms", "5")], true).await,
            0
        );
        assert_eq!(
            alter(
                &mut c,
                v,
                "t",
                &[("retention.ms", "5"), ("cleanup.policy", "x")],
                false
            )
            .await,
            INVALID_CONFIG,
            "v{v}"
        );
        assert_eq!(
            alter(&mut c, v, "t", &[("bogus.key", "5")], false).await,
            INVALID_CONFIG,
            "v{v}"
        );
        let d = topic_configs(&mut c, "t").await;
        assert_eq!(d["retention.ms"], ("604800000".into(), DEFAULT_CONFIG));
        assert_eq!(
            d["cleanup.policy"],
            ("compact".into(), DYNAMIC_TOPIC_CONFIG)
        );
        // Back to two overrides for the next round.
        assert_eq!(
            alter(
                &mut c,
                v,
                "t",
                &[("retention.ms", "1000"), ("segment.bytes", "100000")],
                false
            )
            .await,
            0
        );
    }
    assert_eq!(
        alter(&mut c, 1, "nosuch", &[("retention.ms", "1")], false).await,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    // Overrides survive a restart.
    b.stop().await;
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    let d = topic_configs(&mut c, "t").await;
    assert_eq!(d["retention.ms"], ("1000".into(), DYNAMIC_TOPIC_CONFIG));
    assert_eq!(d["segment.bytes"], ("100000".into(), DYNAMIC_TOPIC_CONFIG));
    assert_eq!(
        b.broker
            .partition("t", 1)
            .unwrap()
            .log
            .config()
            .retention_ms,
        Some(1000)
    );
    b.stop().await;
}

async fn incremental(
    c: &mut RawClient,
    version: i16,
    topic: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> i16 {
    let r = c
        .call(
            &IncrementalAlterConfigsRequest::default()
                .with_validate_only(validate_only)
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(TOPIC)
                        .with_resource_name(sb(topic))
                        .with_configs(
                            ops.iter()
                                .map(|(k, op, v)| {
                                    incremental_alter_configs_request::AlterableConfig::default()
                                        .with_name(sb(k))
                                        .with_config_operation(*op)
                                        .with_value(v.map(sb))
                                })
                                .collect(),
                        ),
                ]),
            version,
        )
        .await;
    assert_eq!(r.responses.len(), 1);
    assert_eq!(r.responses[0].resource_name.as_str(), topic);
    r.responses[0].error_code
}

#[tokio::test]
async fn incremental_alter_configs_set_delete_append_subtract() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    for v in [0, 1] {
        let topic = format!("t{v}");
        let topic = topic.as_str();
        create_ok(
            &mut c,
            topic,
            1,
            &[("retention.ms", "1000"), ("segment.bytes", "100000")],
        )
        .await;
        let log = b.broker.partition(topic, 0).unwrap().log.clone();

        // SET one, DELETE another; the rest stays.
        assert_eq!(
            incremental(
                &mut c,
                v,
                topic,
                &[
                    ("retention.ms", SET, Some("5000")),
                    ("segment.bytes", DELETE, None),
                    ("max.message.bytes", SET, Some("2000")),
                ],
                false
            )
            .await,
            0,
            "v{v}"
        );
        let d = topic_configs(&mut c, topic).await;
        assert_eq!(d["retention.ms"], ("5000".into(), DYNAMIC_TOPIC_CONFIG));
        assert_eq!(d["segment.bytes"], ("1073741824".into(), DEFAULT_CONFIG));
        assert_eq!(
            d["max.message.bytes"],
            ("2000".into(), DYNAMIC_TOPIC_CONFIG)
        );
        assert_eq!(log.config().retention_ms, Some(5000));
        assert_eq!(log.config().max_message_bytes, 2000);

        // APPEND to the default list (delete).
        assert_eq!(
            incremental(
                &mut c,
                v,
                topic,
                &[("cleanup.policy", APPEND, Some("compact"))],
                false
            )
            .await,
            0,
            "v{v}"
        );
        let d = topic_configs(&mut c, topic).await;
        assert_eq!(
            list_set(&d["cleanup.policy"].0),
            list_set("delete,compact"),
            "v{v}"
        );
        assert_eq!(d["cleanup.policy"].1, DYNAMIC_TOPIC_CONFIG);
        assert!(log.config().compact && log.config().delete);
        // APPEND of an element already there changes nothing.
        assert_eq!(
            incremental(
                &mut c,
                v,
                topic,
                &[("cleanup.policy", APPEND, Some("delete"))],
                false
            )
            .await,
            0
        );
        assert_eq!(
            list_set(&topic_configs(&mut c, topic).await["cleanup.policy"].0),
            list_set("delete,compact")
        );
        // SUBTRACT.
        assert_eq!(
            incremental(
                &mut c,
                v,
                topic,
                &[("cleanup.policy", SUBTRACT, Some("delete"))],
                false
            )
            .await,
            0,
            "v{v}"
        );
        let d = topic_configs(&mut c, topic).await;
        assert_eq!(
            d["cleanup.policy"],
            ("compact".into(), DYNAMIC_TOPIC_CONFIG)
        );
        assert!(log.config().compact && !log.config().delete);

        // validate_only changes nothing.
        assert_eq!(
            incremental(&mut c, v, topic, &[("retention.ms", SET, Some("7"))], true).await,
            0
        );
        // A bad value refuses the whole resource: nothing of it is applied.
        assert_eq!(
            incremental(
                &mut c,
                v,
                topic,
                &[
                    ("retention.ms", SET, Some("7")),
                    ("min.cleanable.dirty.ratio", SET, Some("1.5")),
                ],
                false
            )
            .await,
            INVALID_CONFIG,
            "v{v}"
        );
        // APPEND to something that is not a list.
        assert_eq!(
            incremental(
                &mut c,
                v,
                topic,
                &[("retention.ms", APPEND, Some("7"))],
                false
            )
            .await,
            INVALID_CONFIG,
            "v{v}"
        );
        let d = topic_configs(&mut c, topic).await;
        assert_eq!(d["retention.ms"], ("5000".into(), DYNAMIC_TOPIC_CONFIG));
        assert_eq!(d["min.cleanable.dirty.ratio"].1, DEFAULT_CONFIG);
        assert_eq!(log.config().retention_ms, Some(5000));

        // DELETE of the last override back to the default.
        assert_eq!(
            incremental(&mut c, v, topic, &[("cleanup.policy", DELETE, None)], false).await,
            0
        );
        let d = topic_configs(&mut c, topic).await;
        assert_eq!(d["cleanup.policy"], ("delete".into(), DEFAULT_CONFIG));
        assert!(!log.config().compact && log.config().delete);
    }
    assert_eq!(
        incremental(
            &mut c,
            1,
            "nosuch",
            &[("retention.ms", SET, Some("1"))],
            false
        )
        .await,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    b.stop().await;
}

// ---- DeleteRecords ---------------------------------------------------------------------------

#[tokio::test]
async fn delete_records_moves_the_low_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_ok(&mut c, "t", 2, &[]).await;
    for v in [0, 1, 2] {
        let p = (v % 2) as i32;
        let log = b.broker.partition("t", p).unwrap().log.clone();
        let end = log.log_end_offset();
        assert_eq!(produce(&mut c, "t", p, 10).await, (0, end));
        let r = delete_records(&mut c, v, "t", p, end + 4).await;
        assert_eq!((r.error_code, r.low_watermark), (0, end + 4), "v{v}");
        assert_eq!(log.log_start_offset(), end + 4);
        // Going back is a no-op: the low watermark never moves backwards.
        let r = delete_records(&mut c, v, "t", p, end + 2).await;
        assert_eq!((r.error_code, r.low_watermark), (0, end + 4), "v{v}");
        // Beyond the high watermark.
        let r = delete_records(&mut c, v, "t", p, end + 11).await;
        assert_eq!(r.error_code, OFFSET_OUT_OF_RANGE, "v{v}");
        assert_eq!(log.log_start_offset(), end + 4);
        // -1: up to the high watermark.
        let r = delete_records(&mut c, v, "t", p, -1).await;
        assert_eq!((r.error_code, r.low_watermark), (0, end + 10), "v{v}");
        assert_eq!(log.log_start_offset(), end + 10);
        // Unknown partition / topic.
        let r = delete_records(&mut c, v, "t", 9, 0).await;
        assert_eq!(r.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
        let r = delete_records(&mut c, v, "nosuch", 0, 0).await;
        assert_eq!(r.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{v}");
    }
    // The log keeps growing from where it was.
    assert_eq!(produce(&mut c, "t", 0, 1).await, (0, 20));
    b.stop().await;
}

// ---- DescribeCluster -------------------------------------------------------------------------

#[tokio::test]
async fn describe_cluster_reports_this_broker() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| {
        c.node_id = 5;
        c.advertised = Some("kafka-5.example:9095".into());
    })
    .await;
    let mut c = RawClient::connect(b.addr).await;
    let cluster_id = b.broker.cluster_id().to_string();
    for v in [0, 1] {
        let req = DescribeClusterRequest::default();
        let r = c.call(&req, v).await;
        assert_eq!(r.error_code, 0, "v{v}: {r:?}");
        assert_eq!(r.cluster_id.as_str(), cluster_id, "v{v}");
        assert_eq!(r.controller_id, BrokerId(5), "v{v}");
        let brokers: Vec<(i32, String, i32)> = r
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.host.to_string(), b.port))
            .collect();
        assert_eq!(
            brokers,
            vec![(5, "kafka-5.example".to_string(), 9095)],
            "v{v}"
        );
        if v >= 1 {
            assert_eq!(r.endpoint_type, 1);
        }
    }
    // Metadata agrees.
    let m = metadata(&mut c, &[]).await;
    assert_eq!(m.cluster_id.map(|s| s.to_string()), Some(cluster_id));
    b.stop().await;
}
