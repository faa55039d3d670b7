//! One module per group of Kafka APIs; each adds `Broker` methods that turn a decoded request
//! into a response. Failures become Kafka error codes here, at the protocol edge.
//!
//! | API | module |
//! | --- | --- |
//! | ApiVersions, DescribeCluster, InitProducerId | [`cluster`] |
//! | Metadata | [`metadata`] |
//! | Produce | [`produce`] |
//! | Fetch | [`fetch`] |
//! | ListOffsets, DeleteRecords, OffsetForLeaderEpoch | [`offsets`] |
//! | CreateTopics, DeleteTopics, CreatePartitions | [`topics`] |
//! | DescribeConfigs, AlterConfigs, IncrementalAlterConfigs | [`configs`] |
//! | Metadata, topic changes, DescribeCluster, InitProducerId in a replicated cluster | [`clustered`] |
//! | FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete | [`groups`] |

pub mod cluster;
pub mod clustered;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topics;

use kafka_protocol::ResponseError;

/// The Kafka error code for a storage-layer error.
pub fn error_code(e: &strom_log::Error) -> ResponseError {
    use strom_log::Error as E;
    match e {
        E::InvalidBatch { .. } => ResponseError::CorruptMessage,
        E::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::InvalidConfig(_) => ResponseError::InvalidConfig,
        E::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
        E::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        E::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        E::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        E::UnknownProducerId { .. } => ResponseError::UnknownProducerId,
        E::Closed(_) | E::StaleLeaderEpoch { .. } => ResponseError::NotLeaderOrFollower,
        E::Corrupt { .. } | E::Io { .. } => ResponseError::KafkaStorageError,
        E::Compression { .. } => ResponseError::CorruptMessage,
        E::Internal(_) => ResponseError::UnknownServerError,
    }
}

/// Kafka's `ConfigSource` values used in DescribeConfigs / CreateTopics responses.
pub mod config_source {
    /// A topic override.
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    /// Set in the broker's configuration file or flags.
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    /// The built-in default.
    pub const DEFAULT_CONFIG: i8 = 5;
}
