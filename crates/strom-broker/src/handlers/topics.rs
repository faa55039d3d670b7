//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::ResponseError;
use strom_log::LogConfig;

use super::metadata::topic_uuid;
use crate::broker::{sb, Broker};

/// Brokers in the cluster; replication factors above it are refused.
const BROKER_COUNT: i16 = 1;

type Refusal = (ResponseError, String);

impl Broker {
    pub(crate) fn create_topics(
        &self,
        r: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let result = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
                match self.create_one(&name, &t, r.validate_only) {
                    Ok((partitions, rf, config, overrides)) => {
                        // Partition count, replication factor and configs came in v5, ids in v7.
                        let mut result = result;
                        if version >= 5 {
                            result = result
                                .with_num_partitions(partitions)
                                .with_replication_factor(rf)
                                .with_configs(Some(describe_for_create(&config, &overrides)));
                        }
                        if version >= 7 {
                            let id = self.logs.topic(&name).map(|m| topic_uuid(&m.topic_id));
                            result = result.with_topic_id(id.unwrap_or_default());
                        }
                        result
                    }
                    Err((code, msg)) => {
                        tracing::debug!(topic = %name, "create refused: {msg}");
                        result
                            .with_error_code(code.code())
                            .with_error_message(Some(sb(msg)))
                    }
                }
            })
            .collect();
        CreateTopicsResponse::default().with_topics(topics)
    }

    fn create_one(
        &self,
        name: &str,
        t: &CreatableTopic,
        validate_only: bool,
    ) -> Result<(i32, i16, LogConfig, BTreeMap<String, String>), Refusal> {
        strom_log::validate_topic_name(name)
            .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
        if self.logs.topic(name).is_some() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        let (partitions, rf) = if t.assignments.is_empty() {
            let p = if t.num_partitions == -1 {
                self.config.num_partitions
            } else {
                t.num_partitions
            };
            let rf = if t.replication_factor == -1 {
                self.config.default_replication_factor
            } else {
                t.replication_factor
            };
            (p, rf)
        } else {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err((
                    ResponseError::InvalidRequest,
                    "give either replica assignments or partition count and replication factor"
                        .into(),
                ));
            }
            for (i, a) in t.assignments.iter().enumerate() {
                if a.partition_index != i as i32
                    || a.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>() != [self.config.node_id]
                {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "partition {} must be assigned to broker {} only",
                            a.partition_index, self.config.node_id
                        ),
                    ));
                }
            }
            (t.assignments.len() as i32, 1)
        };
        if partitions < 1 {
            return Err((
                ResponseError::InvalidPartitions,
                format!("partition count must be at least 1, got {partitions}"),
            ));
        }
        if rf < 1 || rf > BROKER_COUNT {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {rf} is not between 1 and the {BROKER_COUNT} available broker(s)"),
            ));
        }
        let mut overrides = BTreeMap::new();
        for c in &t.configs {
            let Some(v) = &c.value else { continue };
            overrides.insert(c.name.to_string(), v.to_string());
        }
        let config = LogConfig::with_overrides(self.logs.defaults(), &overrides)
            .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
        if !validate_only {
            self.logs
                .create_topic(name, partitions, &overrides)
                .map_err(|e| (super::error_code(&e), e.to_string()))?;
            self.adopt_partitions(name);
            tracing::info!(topic = name, partitions, "created topic");
        }
        Ok((partitions, rf, config, overrides))
    }

    pub(crate) fn delete_topics(
        &self,
        r: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let targets = delete_targets(r, version);
        let responses = targets
            .into_iter()
            .map(|(name, id)| {
                let name = name.or_else(|| {
                    self.logs
                        .topics()
                        .into_iter()
                        .find(|(_, m)| topic_uuid(&m.topic_id) == id)
                        .map(|(n, _)| n)
                });
                let res = DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_name(name.clone().map(|n| TopicName(sb(n))));
                let Some(name) = name else {
                    return res.with_error_code(ResponseError::UnknownTopicId.code());
                };
                if crate::broker::is_internal(&name) {
                    return res.with_error_code(ResponseError::InvalidTopicException.code());
                }
                match self.logs.delete_topic(&name) {
                    Ok(()) => {
                        self.drop_partitions(&name);
                        tracing::info!(topic = %name, "deleted topic");
                        res
                    }
                    Err(e) => res
                        .with_error_code(super::error_code(&e).code())
                        .with_error_message((version >= 5).then(|| sb(e.to_string()))),
                }
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    }

    pub(crate) fn create_partitions(
        &self,
        r: CreatePartitionsRequest,
        _v: i16,
    ) -> CreatePartitionsResponse {
        let results = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let res = CreatePartitionsTopicResult::default().with_name(t.name);
                let refuse = |code: ResponseError, msg: String| {
                    res.clone()
                        .with_error_code(code.code())
                        .with_error_message(Some(sb(msg)))
                };
                if crate::broker::is_internal(&name) {
                    return refuse(
                        ResponseError::InvalidTopicException,
                        format!("{name} is internal: its partition count cannot change"),
                    );
                }
                let Some(meta) = self.logs.topic(&name) else {
                    return refuse(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {name:?}"),
                    );
                };
                if t.count <= meta.partitions {
                    return refuse(
                        ResponseError::InvalidPartitions,
                        format!(
                            "topic {name:?} has {} partitions; the new count {} must be larger",
                            meta.partitions, t.count
                        ),
                    );
                }
                if let Some(a) = &t.assignments {
                    if a.iter().any(|x| {
                        x.broker_ids.iter().map(|b| b.0).collect::<Vec<_>>()
                            != [self.config.node_id]
                    }) {
                        return refuse(
                            ResponseError::InvalidReplicaAssignment,
                            format!(
                                "new partitions must be assigned to broker {} only",
                                self.config.node_id
                            ),
                        );
                    }
                }
                if r.validate_only {
                    return res;
                }
                match self.logs.create_partitions(&name, t.count) {
                    Ok(()) => {
                        self.adopt_partitions(&name);
                        res
                    }
                    Err(e) => refuse(super::error_code(&e), e.to_string()),
                }
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }
}

/// The topics a DeleteTopics request names: by name (and, from v6, by id).
pub(crate) fn delete_targets(
    r: DeleteTopicsRequest,
    version: i16,
) -> Vec<(Option<String>, uuid::Uuid)> {
    if version >= 6 {
        r.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        r.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    }
}

fn describe_for_create(
    config: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    strom_log::config::KEYS
        .iter()
        .map(|k| {
            CreatableTopicConfigs::default()
                .with_name(sb(*k))
                .with_value(config.get(k).map(sb))
                .with_config_source(if overrides.contains_key(*k) {
                    super::config_source::DYNAMIC_TOPIC_CONFIG
                } else {
                    super::config_source::DEFAULT_CONFIG
                })
        })
        .collect()
}
