//! Every advertised (API, version) pair round-trips through a real broker: the request encoded
//! by `kafka-protocol` at that version is decoded and answered, and the response decodes at that
//! version. This catches a handler filling a field its version does not have (which would make
//! the response unencodable and close the client's connection).

mod common;

use common::{RawClient, TestBroker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strom::broker::apis::SUPPORTED;
use strom::log::{BatchBuilder, Compression, Record};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn topic(x: &str) -> TopicName {
    TopicName(s(x))
}

fn records() -> bytes::Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(Record::new(Some("k"), Some("v"), 1_700_000_000_000));
    b.build().unwrap().into()
}

async fn exercise(c: &mut RawClient, api: ApiKey, v: i16) {
    match api {
        ApiKey::Produce => {
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(topic("versions"))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records())),
                    ])]);
            let r = c.call(&req, v).await;
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "v{v}");
        }
        ApiKey::Fetch => {
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic("versions"))
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)])]);
            let r = c.call(&req, v).await;
            let p = &r.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "v{v}");
            assert!(!p.records.as_ref().unwrap().is_empty(), "v{v}");
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic("versions"))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                    ])]);
            let r = c.call(&req, v).await;
            assert_eq!(r.topics[0].partitions[0].error_code, 0, "v{v}");
        }
        ApiKey::Metadata => {
            let req = MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(topic("versions")))]));
            let r = c.call(&req, v).await;
            assert_eq!(r.topics[0].error_code, 0, "v{v}");
            assert_eq!(r.topics[0].partitions.len(), 1, "v{v}");
        }
        ApiKey::ApiVersions => {
            let r = c.call(&ApiVersionsRequest::default(), v).await;
            assert_eq!(r.error_code, 0, "v{v}");
        }
        ApiKey::CreateTopics => {
            let name = format!("created-v{v}");
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(topic(&name))
                    .with_num_partitions(2)
                    .with_replication_factor(1)]);
            let r = c.call(&req, v).await;
            assert_eq!(r.topics[0].error_code, 0, "v{v}");
        }
        ApiKey::DeleteTopics => {
            let name = format!("created-v{}", 2 + v % 6);
            let mut req = DeleteTopicsRequest::default().with_timeout_ms(1000);
            if v >= 6 {
                req = req.with_topics(vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(topic(&name)))]);
            } else {
                req = req.with_topic_names(vec![topic(&name)]);
            }
            let r = c.call(&req, v).await;
            assert!(
                [0, 3].contains(&r.responses[0].error_code),
                "v{v}: {}",
                r.responses[0].error_code
            );
        }
        ApiKey::CreatePartitions => {
            let req = CreatePartitionsRequest::default()
                .with_validate_only(true)
                .with_timeout_ms(1000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("versions"))
                        .with_count(4),
                ]);
            let r = c.call(&req, v).await;
            assert_eq!(r.results[0].error_code, 0, "v{v}");
        }
        ApiKey::DescribeConfigs => {
            let req = DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("versions"))
                    .with_configuration_keys(None),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("1"))
                    .with_configuration_keys(None),
            ]);
            let r = c.call(&req, v).await;
            assert_eq!(r.results[0].error_code, 0, "v{v}");
            assert_eq!(r.results[1].error_code, 0, "v{v}");
            assert!(r.results[0]
                .configs
                .iter()
                .any(|c| c.name.as_str() == "retention.ms"));
        }
        ApiKey::AlterConfigs => {
            let req = AlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("versions"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1000")))])]);
            let r = c.call(&req, v).await;
            assert_eq!(r.responses[0].error_code, 0, "v{v}");
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = IncrementalAlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("versions"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s("retention.ms"))
                                .with_config_operation(0)
                                .with_value(Some(s("1000"))),
                        ]),
                ]);
            let r = c.call(&req, v).await;
            assert_eq!(r.responses[0].error_code, 0, "v{v}");
        }
        ApiKey::DeleteRecords => {
            let req = DeleteRecordsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic("versions"))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0),
                    ])]);
            let r = c.call(&req, v).await;
            assert_eq!(r.topics[0].partitions[0].error_code, 0, "v{v}");
        }
        ApiKey::DescribeCluster => {
            let r = c.call(&DescribeClusterRequest::default(), v).await;
            assert_eq!(r.error_code, 0, "v{v}");
            assert_eq!(r.brokers.len(), 1, "v{v}");
        }
        ApiKey::InitProducerId => {
            let req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            let r = c.call(&req, v).await;
            assert_eq!(r.error_code, 0, "v{v}");
            assert!(r.producer_id.0 >= 0, "v{v}");
        }
        other => panic!("{other:?} is advertised but this test does not exercise it"),
    }
}

#[tokio::test]
async fn every_advertised_version_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    // The topic most calls use (auto-created by Metadata v1).
    let md = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic("versions"))),
    ]));
    c.call(&md, 1).await;
    for &(api, lo, hi) in SUPPORTED {
        for v in lo..=hi {
            exercise(&mut c, api, v).await;
        }
    }
    b.stop().await;
}
