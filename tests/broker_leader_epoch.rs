//! OffsetForLeaderEpoch against a real broker: the end offset of an epoch from the log's epoch
//! cache, the undefined answer for epochs older than the log, and KIP-320 epoch fencing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{build_batch, create_topic, produce_acks_all, tn, RawClient, TestBroker};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use strom::log::{Compression, Record};

fn ask(topic: &str, current: i32, epoch: i32) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(tn(topic))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])])
}

#[tokio::test]
async fn epochs_end_offsets_and_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), |_| {}).await;
    let mut c = RawClient::connect(b.addr).await;
    create_topic(&mut c, "ep", 1, &[]).await;
    for _ in 0..3 {
        let batch = build_batch(
            Compression::None,
            (0..5).map(|i| Record::new(Some("k"), Some(format!("{i}")), 1)),
        );
        assert_eq!(produce_acks_all(&mut c, "ep", 0, batch).await.error_code, 0);
    }
    let meta = c
        .call(
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(tn("ep"))),
            ])),
            12,
        )
        .await;
    let epoch = meta.topics[0].partitions[0].leader_epoch;
    assert!(epoch >= 0);
    for v in 2..=4 {
        // The current epoch ends at the log end.
        let r = c.call(&ask("ep", epoch, epoch), v).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            (0, epoch, 15),
            "v{v}"
        );
        // Asking about a later epoch answers with the latest one the log has.
        let p = c.call(&ask("ep", -1, epoch + 7), v).await.topics[0].partitions[0].clone();
        assert_eq!((p.leader_epoch, p.end_offset), (epoch, 15), "v{v}");
        // An epoch older than the log: undefined, not an error.
        let p = c.call(&ask("ep", -1, epoch - 1), v).await.topics[0].partitions[0].clone();
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            (0, -1, -1),
            "v{v}"
        );
        // A caller that believes in a newer leadership than ours: UNKNOWN_LEADER_EPOCH.
        let p = c.call(&ask("ep", epoch + 1, epoch), v).await.topics[0].partitions[0].clone();
        assert_eq!(
            p.error_code,
            ResponseError::UnknownLeaderEpoch.code(),
            "v{v}"
        );
        // Unknown partition.
        let p = c.call(&ask("nope", -1, 0), v).await.topics[0].partitions[0].clone();
        assert_eq!(
            p.error_code,
            ResponseError::UnknownTopicOrPartition.code(),
            "v{v}"
        );
    }
    b.stop().await;
}
