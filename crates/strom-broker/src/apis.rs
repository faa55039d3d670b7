//! Which APIs and versions the broker implements. ApiVersions advertises exactly this table, and
//! requests outside it are refused before decoding.
//!
//! The ranges let librdkafka, the Java client, kafka-python and kafkajs negotiate modern
//! versions: record batch v2 everywhere, flexible (tagged-field) versions where clients use them.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiKey;

/// `(api, min version, max version)` of every implemented API.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// Whether `api` is served by the group coordinator.
pub fn is_group_api(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::SyncGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::OffsetCommit
            | ApiKey::OffsetFetch
            | ApiKey::ListGroups
            | ApiKey::DescribeGroups
            | ApiKey::DeleteGroups
            | ApiKey::OffsetDelete
    )
}

/// Whether `version` of `api` is implemented.
pub fn supports(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|&(a, lo, hi)| a == api && (lo..=hi).contains(&version))
}

/// The table in ApiVersions' shape.
pub fn advertised() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(api, lo, hi)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_one_the_codec_can_encode() {
        for &(api, lo, hi) in SUPPORTED {
            let codec = api.valid_versions();
            assert!(lo <= hi, "{api:?}");
            assert!(
                codec.min <= lo && hi <= codec.max,
                "{api:?} {lo}..{hi} vs {codec}"
            );
        }
    }
}
