//! Every advertised (API, version) pair round-trips through a real broker: the request encoded
//! by `kafka-protocol` at that version is decoded and answered, and the response decodes at that
//! version. This catches a handler filling a field its version does not have (which would make
//! the response unencodable and close the client's connection).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::{build_batch, sb as s, tn as topic, RawClient, TestBroker};
use kafka_protocol::messages::*;
use strom::broker::apis::SUPPORTED;
use strom::log::{Compression, Record};

fn records() -> bytes::Bytes {
    let record = Record::new(Some("k"), Some("v"), 1_700_000_000_000);
    build_batch(Compression::None, [record]).into()
}

/// Joins `group` as a new consumer (handling MEMBER_ID_REQUIRED) at `version`; returns the
/// member id and generation.
async fn join(c: &mut RawClient, group: &str, version: i16) -> (String, i32) {
    let mut member = String::new();
    for _ in 0..2 {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(&member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(bytes::Bytes::from_static(b"meta"))]);
        let r = c.call(&req, version).await;
        if r.error_code == 79 {
            member = r.member_id.to_string();
            continue;
        }
        assert_eq!(r.error_code, 0, "join v{version}");
        assert_eq!(r.leader, r.member_id);
        assert_eq!(r.members.len(), 1);
        return (r.member_id.to_string(), r.generation_id);
    }
    panic!("join v{version} asked for a member id twice");
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
        ApiKey::OffsetForLeaderEpoch => {
            let req = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic("versions"))
                        .with_partitions(vec![
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(i32::MAX),
                        ]),
                ]);
            let r = c.call(&req, v).await;
            let p = &r.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "v{v}");
            assert!(
                p.end_offset >= 1,
                "v{v}: the latest epoch ends at the log end"
            );
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
        ApiKey::FindCoordinator => {
            let mut req = FindCoordinatorRequest::default().with_key_type(0);
            if v >= 4 {
                req = req.with_coordinator_keys(vec![s("g1"), s("g2")]);
            } else {
                req = req.with_key(s("g1"));
            }
            let r = c.call(&req, v).await;
            if v >= 4 {
                assert_eq!(r.coordinators.len(), 2);
                assert!(r
                    .coordinators
                    .iter()
                    .all(|c| c.error_code == 0 && c.node_id.0 == 1));
            } else {
                assert_eq!((r.error_code, r.node_id.0), (0, 1), "v{v}");
            }
        }
        ApiKey::JoinGroup => {
            let (member, generation) = join(c, &format!("join-v{v}"), v).await;
            assert!(
                !member.is_empty() && generation == 1,
                "v{v}: {member} {generation}"
            );
        }
        ApiKey::SyncGroup => {
            let g = format!("sync-v{v}");
            let (member, generation) = join(c, &g, 5).await;
            let req = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&g)))
                .with_generation_id(generation)
                .with_member_id(s(&member))
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s("range")))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s(&member))
                        .with_assignment(bytes::Bytes::from_static(b"assigned")),
                ]);
            let r = c.call(&req, v).await;
            assert_eq!(r.error_code, 0, "v{v}");
            assert_eq!(r.assignment.as_ref(), b"assigned");
        }
        ApiKey::Heartbeat => {
            let g = format!("hb-v{v}");
            let (member, generation) = join(c, &g, 5).await;
            let req = HeartbeatRequest::default()
                .with_group_id(GroupId(s(&g)))
                .with_generation_id(generation)
                .with_member_id(s(&member));
            assert_eq!(c.call(&req, v).await.error_code, 0, "v{v}");
        }
        ApiKey::LeaveGroup => {
            let g = format!("leave-v{v}");
            let (member, _) = join(c, &g, 5).await;
            let mut req = LeaveGroupRequest::default().with_group_id(GroupId(s(&g)));
            if v >= 3 {
                req = req.with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s(&member))
                ]);
            } else {
                req = req.with_member_id(s(&member));
            }
            let r = c.call(&req, v).await;
            assert_eq!(r.error_code, 0, "v{v}");
        }
        ApiKey::OffsetCommit => {
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(s("committer")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic("versions"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]);
            let r = c.call(&req, v).await;
            assert_eq!(r.topics[0].partitions[0].error_code, 0, "v{v}");
        }
        ApiKey::OffsetFetch => {
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(s("committer")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic("versions"))
                        .with_partition_indexes(vec![0]),
                ]));
            let r = c.call(&req, v).await;
            assert_eq!(r.topics[0].partitions[0].committed_offset, 1, "v{v}");
        }
        ApiKey::ListGroups => {
            let r = c.call(&ListGroupsRequest::default(), v).await;
            assert!(
                r.groups
                    .iter()
                    .any(|g| g.group_id.0.as_str() == "committer"),
                "v{v}"
            );
        }
        ApiKey::DescribeGroups => {
            let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("committer"))]);
            let r = c.call(&req, v).await;
            assert_eq!(r.groups[0].group_state.as_str(), "Empty", "v{v}");
        }
        ApiKey::DeleteGroups => {
            let g = format!("deleted-v{v}");
            let commit = OffsetCommitRequest::default()
                .with_group_id(GroupId(s(&g)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic("versions"))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]);
            c.call(&commit, 8).await;
            let r = c
                .call(
                    &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&g))]),
                    v,
                )
                .await;
            assert_eq!(r.results[0].error_code, 0, "v{v}");
        }
        ApiKey::OffsetDelete => {
            let req = OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("committer")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic("versions"))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]);
            let r = c.call(&req, v).await;
            assert_eq!(
                (r.error_code, r.topics[0].partitions[0].error_code),
                (0, 0),
                "v{v}"
            );
        }
        other => panic!("{other:?} is advertised but this test does not exercise it"),
    }
}

#[tokio::test]
async fn every_advertised_version_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |c| c.group_initial_rebalance_delay_ms = 0).await;
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

/// `__consumer_offsets` belongs to the coordinator: clients cannot produce to it, trim it,
/// delete it or change its partition count.
#[tokio::test]
async fn the_offsets_topic_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    // The topic appears on first use of a group API.
    c.call(&FindCoordinatorRequest::default().with_key(s("g")), 3)
        .await;
    let internal = "__consumer_offsets";
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic(internal))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records())),
            ])]);
    let r = c.call(&produce, 9).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 17);
    let del = DeleteRecordsRequest::default().with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(topic(internal))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(-1),
            ]),
    ]);
    assert_eq!(c.call(&del, 2).await.topics[0].partitions[0].error_code, 17);
    let grow = CreatePartitionsRequest::default().with_topics(vec![
        create_partitions_request::CreatePartitionsTopic::default()
            .with_name(topic(internal))
            .with_count(60),
    ]);
    assert_eq!(c.call(&grow, 3).await.results[0].error_code, 17);
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![topic(internal)]);
    assert_eq!(c.call(&delete, 5).await.responses[0].error_code, 17);
    assert!(b.broker.logs().topic(internal).is_some());
    b.stop().await;
}
