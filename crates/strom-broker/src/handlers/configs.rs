//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only view of
//! the broker's own settings).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;
use strom_log::LogConfig;

use super::config_source::{DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG};
use crate::broker::{sb, Broker};

/// `ConfigResource.Type` values.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Kafka's `ConfigType` of a topic config, for DescribeConfigs v3+.
fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => 7,            // LIST
        "min.cleanable.dirty.ratio" => 6, // DOUBLE
        "message.timestamp.type" => 2,    // STRING
        "max.message.bytes"
        | "min.insync.replicas"
        | "index.interval.bytes"
        | "segment.index.bytes"
        | "segment.bytes" => 3, // INT
        _ => 5,                           // LONG
    }
}

type Refusal = (ResponseError, String);

impl Broker {
    pub(crate) fn describe_configs(
        &self,
        r: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let results = r
            .resources
            .into_iter()
            .map(|res| {
                let name = res.resource_name.to_string();
                let out = DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let keys: Option<Vec<String>> = res
                    .configuration_keys
                    .map(|k| k.into_iter().map(|s| s.to_string()).collect());
                let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
                let entries = match res.resource_type {
                    TOPIC => match self.topic_entries(&name) {
                        Ok(e) => e,
                        Err((code, msg)) => {
                            return out
                                .with_error_code(code.code())
                                .with_error_message(Some(sb(msg)))
                        }
                    },
                    BROKER if name.is_empty() || name == self.config.node_id.to_string() => {
                        self.broker_entries()
                    }
                    BROKER => {
                        return out
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(sb(format!(
                                "this is broker {}",
                                self.config.node_id
                            ))))
                    }
                    other => {
                        return out
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(sb(format!(
                                "resource type {other} is not supported"
                            ))))
                    }
                };
                let configs = entries
                    .into_iter()
                    .filter(|(k, ..)| wanted(k))
                    .map(|(k, v, source, read_only)| {
                        let mut c = DescribeConfigsResourceResult::default()
                            .with_name(sb(k.clone()))
                            .with_value(Some(sb(v.clone())))
                            .with_read_only(read_only)
                            .with_config_source(source);
                        if version >= 3 {
                            c = c.with_config_type(config_type(&k));
                        }
                        if r.include_synonyms && version >= 1 {
                            c = c.with_synonyms(vec![DescribeConfigsSynonym::default()
                                .with_name(sb(k))
                                .with_value(Some(sb(v)))
                                .with_source(source)]);
                        }
                        c
                    })
                    .collect();
                out.with_configs(configs)
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    /// A topic's config overrides: from the cluster metadata, or the local log manager.
    pub(crate) fn topic_overrides(&self, name: &str) -> Option<BTreeMap<String, String>> {
        match self.cluster() {
            Some(node) => node.image().topics.get(name).map(|t| t.configs.clone()),
            None => self.logs.topic(name).map(|m| m.configs),
        }
    }

    /// (key, value, source, read-only) for every config of a topic.
    fn topic_entries(&self, name: &str) -> Result<Vec<(String, String, i8, bool)>, Refusal> {
        let overrides = self.topic_overrides(name).ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name:?}"),
            )
        })?;
        let config = LogConfig::with_overrides(self.logs.defaults(), &overrides)
            .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
        Ok(strom_log::config::KEYS
            .iter()
            .map(|k| {
                let source = if overrides.contains_key(*k) {
                    DYNAMIC_TOPIC_CONFIG
                } else if self.config.log.contains_key(*k) {
                    STATIC_BROKER_CONFIG
                } else {
                    DEFAULT_CONFIG
                };
                (
                    k.to_string(),
                    config.get(k).unwrap_or_default(),
                    source,
                    false,
                )
            })
            .collect())
    }

    fn broker_entries(&self) -> Vec<(String, String, i8, bool)> {
        let c = &self.config;
        let d = self.logs.defaults();
        let mut v = vec![
            ("node.id".to_string(), c.node_id.to_string()),
            ("num.partitions".into(), c.num_partitions.to_string()),
            (
                "default.replication.factor".into(),
                c.default_replication_factor.to_string(),
            ),
            (
                "auto.create.topics.enable".into(),
                c.auto_create_topics.to_string(),
            ),
            (
                "socket.request.max.bytes".into(),
                c.max_request_size.to_string(),
            ),
            ("message.max.bytes".into(), d.max_message_bytes.to_string()),
            (
                "min.insync.replicas".into(),
                d.min_insync_replicas.to_string(),
            ),
        ];
        for (broker_key, topic_key) in [
            ("log.retention.ms", "retention.ms"),
            ("log.retention.bytes", "retention.bytes"),
            ("log.segment.bytes", "segment.bytes"),
            ("log.cleanup.policy", "cleanup.policy"),
            ("log.flush.interval.messages", "flush.messages"),
            ("log.flush.interval.ms", "flush.ms"),
        ] {
            v.push((broker_key.into(), d.get(topic_key).unwrap_or_default()));
        }
        v.into_iter()
            .map(|(k, val)| (k, val, STATIC_BROKER_CONFIG, true))
            .collect()
    }

    /// Validates and (unless `validate_only`) applies a topic's new override set.
    async fn apply_topic_overrides(
        &self,
        name: &str,
        overrides: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        LogConfig::with_overrides(self.logs.defaults(), overrides)
            .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
        if let (false, Some(node)) = (validate_only, self.cluster()) {
            let cmd = strom_controller::Command::SetTopicConfigs {
                topic: name.to_string(),
                configs: overrides.clone(),
            };
            return match node.propose(cmd).await {
                Ok(strom_controller::Outcome::Done) => Ok(()),
                Ok(strom_controller::Outcome::Refused(r)) => Err((
                    ResponseError::try_from_code(r.code)
                        .unwrap_or(ResponseError::UnknownServerError),
                    r.message,
                )),
                Ok(other) => Err((ResponseError::UnknownServerError, format!("{other:?}"))),
                Err(e) => Err((ResponseError::RequestTimedOut, e.to_string())),
            };
        }
        if !validate_only {
            self.logs
                .set_topic_configs(name, overrides)
                .map_err(|e| (super::error_code(&e), e.to_string()))?;
        }
        Ok(())
    }

    fn check_alterable(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        match resource_type {
            TOPIC => self.topic_overrides(name).ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name:?}"),
                )
            }),
            BROKER => Err((
                ResponseError::InvalidRequest,
                "broker settings are static: change the config file or flags and restart".into(),
            )),
            other => Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported"),
            )),
        }
    }

    pub(crate) async fn alter_configs(&self, r: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut responses = Vec::with_capacity(r.resources.len());
        for res in r.resources {
            responses.push({
                let name = res.resource_name.to_string();
                let out = alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let result = self.check_alterable(res.resource_type, &name).map(|_| {
                    // AlterConfigs replaces the whole override set.
                    res.configs
                        .iter()
                        .filter_map(|c| {
                            c.value
                                .as_ref()
                                .map(|v| (c.name.to_string(), v.to_string()))
                        })
                        .collect::<BTreeMap<String, String>>()
                });
                let result = match result {
                    Ok(o) => self.apply_topic_overrides(&name, &o, r.validate_only).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => out,
                    Err((code, msg)) => out
                        .with_error_code(code.code())
                        .with_error_message(Some(sb(msg))),
                }
            });
        }
        AlterConfigsResponse::default().with_responses(responses)
    }

    pub(crate) async fn incremental_alter_configs(
        &self,
        r: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::with_capacity(r.resources.len());
        for res in r.resources {
            responses.push({
                let name = res.resource_name.to_string();
                let out = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let result = self.check_alterable(res.resource_type, &name).and_then(|mut overrides| {
                    let defaults = self.logs.defaults().clone();
                    for c in &res.configs {
                        let key = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string());
                        let current = || {
                            overrides
                                .get(&key)
                                .cloned()
                                .or_else(|| defaults.get(&key))
                                .unwrap_or_default()
                        };
                        let list = |s: String| -> Vec<String> {
                            s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect()
                        };
                        match c.config_operation {
                            0 => {
                                let v = value.ok_or_else(|| (ResponseError::InvalidConfig, format!("{key}: SET needs a value")))?;
                                overrides.insert(key, v);
                            }
                            1 => {
                                overrides.remove(&key);
                            }
                            2 | 3 => {
                                if config_type(&key) != 7 {
                                    return Err((ResponseError::InvalidConfig, format!("{key} is not a list; APPEND and SUBTRACT apply to lists")));
                                }
                                let mut items = list(current());
                                for x in list(value.unwrap_or_default()) {
                                    if c.config_operation == 2 && !items.contains(&x) {
                                        items.push(x);
                                    } else if c.config_operation == 3 {
                                        items.retain(|i| *i != x);
                                    }
                                }
                                overrides.insert(key, items.join(","));
                            }
                            op => return Err((ResponseError::InvalidRequest, format!("unknown config operation {op}"))),
                        }
                    }
                    Ok(overrides)
                });
                let result = match result {
                    Ok(o) => self.apply_topic_overrides(&name, &o, r.validate_only).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => out,
                    Err((code, msg)) => out.with_error_code(code.code()).with_error_message(Some(sb(msg))),
                }
            });
        }
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}
