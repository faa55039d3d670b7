//! ListOffsets (earliest, latest, by timestamp, max timestamp) and DeleteRecords.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Role};

/// `ListOffsets` timestamp for the log end (the high watermark for consumers).
pub const LATEST: i64 = -1;
/// `ListOffsets` timestamp for the log start.
pub const EARLIEST: i64 = -2;
/// `ListOffsets` timestamp for the record with the largest timestamp (KIP-734).
pub const MAX_TIMESTAMP: i64 = -3;

impl Broker {
    pub(crate) fn list_offsets(&self, r: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        let follower = r.replica_id.0 >= 0;
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let resp = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1)
                            .with_offset(-1);
                        let Some(part) = self.partition(&name, p.partition_index) else {
                            return resp
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let (role, leader_epoch) = part.role_epoch();
                        if role != Role::Leader {
                            return resp.with_error_code(ResponseError::NotLeaderOrFollower.code());
                        }
                        let log = &part.log;
                        let visible_end = if follower {
                            log.log_end_offset()
                        } else {
                            log.high_watermark()
                        };
                        let resp = if version >= 4 {
                            resp.with_leader_epoch(leader_epoch)
                        } else {
                            resp
                        };
                        match p.timestamp {
                            LATEST => resp.with_offset(visible_end),
                            EARLIEST => resp.with_offset(log.log_start_offset()),
                            MAX_TIMESTAMP if version >= 7 => match log.max_timestamp_offset() {
                                Some((o, ts)) if o < visible_end => {
                                    resp.with_offset(o).with_timestamp(ts)
                                }
                                _ => resp,
                            },
                            ts if ts >= 0 => match log.record_for_timestamp(ts) {
                                Ok(Some((o, t))) if o < visible_end => {
                                    resp.with_offset(o).with_timestamp(t)
                                }
                                Ok(_) => resp,
                                Err(e) => resp.with_error_code(super::error_code(&e).code()),
                            },
                            _ => resp.with_error_code(ResponseError::InvalidRequest.code()),
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    pub(crate) fn delete_records(&self, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let resp = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        if crate::broker::is_internal(&name) {
                            return resp
                                .with_error_code(ResponseError::InvalidTopicException.code());
                        }
                        let Some(part) = self.partition(&name, p.partition_index) else {
                            return resp
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let hw = part.log.high_watermark();
                        // -1 means "up to the high watermark"; beyond it is out of range.
                        let before = if p.offset == -1 { hw } else { p.offset };
                        if before < 0 || before > hw {
                            return resp.with_error_code(ResponseError::OffsetOutOfRange.code());
                        }
                        match part.log.delete_records(before) {
                            Ok(low) => resp.with_low_watermark(low),
                            Err(e) => resp.with_error_code(super::error_code(&e).code()),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(parts)
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    }
}

impl Broker {
    /// OffsetForLeaderEpoch (KIP-101/279/320): for each partition, the largest leader epoch
    /// `<= leader_epoch` in the log's epoch cache and the offset where that epoch ended. A
    /// follower truncates there after a leader change; a consumer checks its position with it.
    pub(crate) fn offset_for_leader_epoch(
        &self,
        r: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.topic.0.to_string();
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let resp = EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let Some(part) = self.partition(&name, p.partition) else {
                            return resp
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let (role, leader_epoch) = part.role_epoch();
                        if role != Role::Leader {
                            return resp.with_error_code(ResponseError::NotLeaderOrFollower.code());
                        }
                        // The caller's view of the leadership must be current (KIP-320).
                        if p.current_leader_epoch >= 0 && p.current_leader_epoch < leader_epoch {
                            return resp.with_error_code(ResponseError::FencedLeaderEpoch.code());
                        }
                        if p.current_leader_epoch > leader_epoch {
                            return resp.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                        }
                        match part.log.end_offset_for_epoch(p.leader_epoch) {
                            Some((epoch, end)) => {
                                resp.with_leader_epoch(epoch).with_end_offset(end)
                            }
                            // Older than anything the log knows: undefined (-1, -1), no error.
                            None => resp,
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}
