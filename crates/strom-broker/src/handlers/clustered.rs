//! The cluster-mode side of the admin and metadata APIs: answers come from the metadata image,
//! and changes are forwarded to the active controller (whichever broker the client asked),
//! returning once this broker's image includes them.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest,
    MetadataResponse, ProducerId, TopicName,
};
use kafka_protocol::ResponseError;
use strom_controller::{Command, Image, NewTopic, Outcome, Refusal};
use strom_log::LogConfig;

use super::metadata::topic_uuid;
use super::topics::delete_targets;
use crate::broker::{sb, Broker};
use crate::cluster::ClusterNode;
use crate::group::store;

fn code_of(r: &Refusal) -> ResponseError {
    ResponseError::try_from_code(r.code).unwrap_or(ResponseError::UnknownServerError)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Broker {
    pub(crate) async fn metadata_clustered(
        &self,
        node: &ClusterNode,
        r: MetadataRequest,
        version: i16,
    ) -> MetadataResponse {
        let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match r.topics {
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(
                t.into_iter()
                    .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                    .collect(),
            ),
        };
        let auto_create =
            self.config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
        if let (Some(list), true) = (&wanted, auto_create) {
            let image = node.image();
            let missing: Vec<String> = list
                .iter()
                .filter_map(|(n, _)| n.clone())
                .filter(|n| !image.topics.contains_key(n))
                .filter(|n| strom_log::validate_topic_name(n).is_ok())
                .collect();
            if !missing.is_empty() {
                let topics = missing
                    .iter()
                    .map(|name| NewTopic {
                        name: name.clone(),
                        id: new_id(),
                        partitions: self.config.num_partitions,
                        replication_factor: self.default_rf(&image),
                        assignment: None,
                        configs: BTreeMap::new(),
                    })
                    .collect();
                match node.propose(Command::CreateTopics { topics }).await {
                    Ok(_) => tracing::info!(topics = ?missing, "auto-created topics"),
                    Err(e) => tracing::warn!("auto-creating {missing:?} failed: {e}"),
                }
            }
        }
        let image = node.image();
        let brokers = image
            .active_brokers()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(sb(b.host.clone()))
                    .with_port(b.port)
                    .with_rack(b.rack.clone().map(sb))
            })
            .collect();
        let topics = match wanted {
            None => image
                .topics
                .keys()
                .map(|n| topic_metadata_from(&image, n, version))
                .collect(),
            Some(list) => list
                .into_iter()
                .map(|(name, id)| {
                    let name = name.or_else(|| {
                        image
                            .topics
                            .iter()
                            .find(|(_, t)| topic_uuid(&t.id) == id)
                            .map(|(n, _)| n.clone())
                    });
                    let Some(name) = name else {
                        return MetadataResponseTopic::default()
                            .with_topic_id(id)
                            .with_error_code(ResponseError::UnknownTopicId.code());
                    };
                    if strom_log::validate_topic_name(&name).is_err() {
                        return MetadataResponseTopic::default()
                            .with_name(Some(TopicName(sb(name))))
                            .with_error_code(ResponseError::InvalidTopicException.code());
                    }
                    topic_metadata_from(&image, &name, version)
                })
                .collect(),
        };
        let mut resp = MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics)
            .with_cluster_authorized_operations(i32::MIN);
        if version >= 1 {
            resp = resp.with_controller_id(BrokerId(node.active_controller().unwrap_or(-1)));
        }
        if version >= 2 {
            resp = resp.with_cluster_id(Some(sb(cluster_id(&image, self))));
        }
        resp
    }

    fn default_rf(&self, image: &Image) -> i16 {
        let live = image.active_brokers().count().max(1) as i16;
        self.config.default_replication_factor.min(live)
    }

    pub(crate) async fn create_topics_clustered(
        &self,
        node: &ClusterNode,
        r: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let image = node.image();
        let mut results: Vec<CreatableTopicResult> = Vec::new();
        let mut proposals: Vec<(usize, NewTopic, LogConfig)> = Vec::new();
        for t in r.topics {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let refuse = |code: ResponseError, msg: String| {
                result
                    .clone()
                    .with_error_code(code.code())
                    .with_error_message(Some(sb(msg)))
            };
            if let Err(e) = strom_log::validate_topic_name(&name) {
                results.push(refuse(ResponseError::InvalidTopicException, e.to_string()));
                continue;
            }
            if image.topics.contains_key(&name) {
                results.push(refuse(
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                ));
                continue;
            }
            let overrides: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let config = match LogConfig::with_overrides(self.logs.defaults(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    results.push(refuse(ResponseError::InvalidConfig, e.to_string()));
                    continue;
                }
            };
            let assignment = (!t.assignments.is_empty()).then(|| {
                let mut a: Vec<_> = t.assignments.iter().collect();
                a.sort_by_key(|x| x.partition_index);
                a.into_iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect::<Vec<i32>>())
                    .collect::<Vec<_>>()
            });
            let partitions = if t.num_partitions == -1 {
                self.config.num_partitions
            } else {
                t.num_partitions
            };
            let rf = if t.replication_factor == -1 {
                self.default_rf(&image)
            } else {
                t.replication_factor
            };
            let topic = NewTopic {
                name,
                id: new_id(),
                partitions,
                replication_factor: rf,
                assignment,
                configs: overrides,
            };
            results.push(result);
            proposals.push((results.len() - 1, topic, config));
        }
        if r.validate_only || proposals.is_empty() {
            return CreateTopicsResponse::default().with_topics(results);
        }
        let cmd = Command::CreateTopics {
            topics: proposals.iter().map(|(_, t, _)| t.clone()).collect(),
        };
        let outcome = node.propose(cmd).await;
        let image = node.image();
        for (i, topic, _config) in proposals {
            let res = results[i].clone();
            let refusal = match &outcome {
                Ok(Outcome::Topics(list)) => list
                    .iter()
                    .find(|(n, _)| *n == topic.name)
                    .and_then(|(_, r)| r.clone()),
                Ok(other) => Some(Refusal {
                    code: ResponseError::UnknownServerError.code(),
                    message: format!("{other:?}"),
                }),
                Err(e) => Some(Refusal {
                    code: ResponseError::RequestTimedOut.code(),
                    message: e.to_string(),
                }),
            };
            results[i] = match refusal {
                Some(r) => res
                    .with_error_code(code_of(&r).code())
                    .with_error_message(Some(sb(r.message))),
                None => {
                    tracing::info!(topic = %topic.name, "created topic");
                    let t = image.topics.get(&topic.name);
                    let mut res = res;
                    if version >= 5 {
                        res = res
                            .with_num_partitions(
                                t.map_or(topic.partitions, |t| t.partitions.len() as i32),
                            )
                            .with_replication_factor(
                                t.and_then(|t| t.partitions.first())
                                    .map_or(topic.replication_factor, |p| p.replicas.len() as i16),
                            );
                    }
                    if version >= 7 {
                        res = res.with_topic_id(topic_uuid(&topic.id));
                    }
                    res
                }
            };
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    pub(crate) async fn delete_topics_clustered(
        &self,
        node: &ClusterNode,
        r: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let image = node.image();
        let targets = delete_targets(r, version);
        let mut responses = Vec::new();
        let mut names = Vec::new();
        for (name, id) in targets {
            let name = name.or_else(|| {
                image
                    .topics
                    .iter()
                    .find(|(_, t)| topic_uuid(&t.id) == id)
                    .map(|(n, _)| n.clone())
            });
            let res = DeletableTopicResult::default()
                .with_topic_id(id)
                .with_name(name.clone().map(|n| TopicName(sb(n))));
            let Some(name) = name else {
                responses.push(res.with_error_code(ResponseError::UnknownTopicId.code()));
                continue;
            };
            if crate::broker::is_internal(&name) {
                responses.push(res.with_error_code(ResponseError::InvalidTopicException.code()));
                continue;
            }
            names.push(name);
            responses.push(res);
        }
        if names.is_empty() {
            return DeleteTopicsResponse::default().with_responses(responses);
        }
        let outcome = node
            .propose(Command::DeleteTopics {
                names: names.clone(),
            })
            .await;
        for res in responses.iter_mut() {
            let Some(name) = res.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if !names.contains(&name) || res.error_code != 0 {
                continue;
            }
            let refusal = match &outcome {
                Ok(Outcome::Topics(list)) => list
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, r)| r.clone()),
                Ok(_) => None,
                Err(e) => Some(Refusal {
                    code: ResponseError::RequestTimedOut.code(),
                    message: e.to_string(),
                }),
            };
            if let Some(r) = refusal {
                res.error_code = code_of(&r).code();
                if version >= 5 {
                    res.error_message = Some(sb(r.message));
                }
            } else {
                tracing::info!(topic = %name, "deleted topic");
            }
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    pub(crate) async fn create_partitions_clustered(
        &self,
        node: &ClusterNode,
        r: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut results = Vec::new();
        for t in r.topics {
            let name = t.name.0.to_string();
            let res = CreatePartitionsTopicResult::default().with_name(t.name);
            let refuse = |code: ResponseError, msg: String| {
                res.clone()
                    .with_error_code(code.code())
                    .with_error_message(Some(sb(msg)))
            };
            if crate::broker::is_internal(&name) {
                results.push(refuse(
                    ResponseError::InvalidTopicException,
                    format!("{name} is internal: its partition count cannot change"),
                ));
                continue;
            }
            if r.validate_only {
                let ok = node
                    .image()
                    .topics
                    .get(&name)
                    .is_some_and(|x| (x.partitions.len() as i32) < t.count);
                results.push(if ok {
                    res
                } else {
                    refuse(
                        ResponseError::InvalidPartitions,
                        format!(
                            "topic {name:?} is unknown or already has {} or more partitions",
                            t.count
                        ),
                    )
                });
                continue;
            }
            let assignment = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect::<Vec<i32>>())
                    .collect::<Vec<_>>()
            });
            let cmd = Command::CreatePartitions {
                topic: name.clone(),
                total: t.count,
                assignment,
            };
            results.push(match node.propose(cmd).await {
                Ok(Outcome::Refused(r)) => refuse(code_of(&r), r.message),
                Ok(_) => res,
                Err(e) => refuse(ResponseError::RequestTimedOut, e.to_string()),
            });
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    pub(crate) fn describe_cluster_clustered(
        &self,
        node: &ClusterNode,
        r: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let image = node.image();
        DescribeClusterResponse::default()
            .with_endpoint_type(if version >= 1 { r.endpoint_type } else { 1 })
            .with_cluster_id(sb(cluster_id(&image, self)))
            .with_controller_id(BrokerId(node.active_controller().unwrap_or(-1)))
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(
                image
                    .active_brokers()
                    .map(|b| {
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.id))
                            .with_host(sb(b.host.clone()))
                            .with_port(b.port)
                            .with_rack(b.rack.clone().map(sb))
                    })
                    .collect(),
            )
    }

    /// Producer ids come in blocks from the controller, so no two brokers hand out the same.
    pub(crate) async fn init_producer_id_clustered(
        &self,
        node: &ClusterNode,
        r: InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        let resp = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if r.transactional_id.is_some() {
            return resp.with_error_code(ResponseError::UnsupportedVersion.code());
        }
        if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX - 1 {
            return resp
                .with_producer_id(r.producer_id)
                .with_producer_epoch(r.producer_epoch + 1);
        }
        if let Some(id) = self.next_cluster_producer_id() {
            return resp.with_producer_id(ProducerId(id)).with_producer_epoch(0);
        }
        match node
            .allocate_producer_ids(crate::broker::PRODUCER_ID_BLOCK)
            .await
        {
            Ok(start) => {
                self.refill_producer_ids(start);
                match self.next_cluster_producer_id() {
                    Some(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
                    None => resp.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
                }
            }
            Err(e) => {
                tracing::warn!("allocating producer ids: {e}");
                resp.with_error_code(ResponseError::CoordinatorNotAvailable.code())
            }
        }
    }

    /// The coordinator of `group`: the leader of its `__consumer_offsets` partition, creating
    /// the topic (replicated) on first use. `None` while there is none.
    pub(crate) async fn group_coordinator(
        &self,
        node: &ClusterNode,
        group: &str,
    ) -> Option<(i32, String, i32)> {
        let mut image = node.image();
        if !image.topics.contains_key(store::TOPIC) {
            let live = image.active_brokers().count().max(1) as i16;
            let topic = NewTopic {
                name: store::TOPIC.to_string(),
                id: new_id(),
                partitions: self.config.offsets_topic_partitions,
                replication_factor: self.config.offsets_topic_replication_factor.min(live),
                assignment: None,
                configs: BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("segment.bytes".to_string(), (100 * 1024 * 1024).to_string()),
                ]),
            };
            if let Err(e) = node
                .propose(Command::CreateTopics {
                    topics: vec![topic],
                })
                .await
            {
                tracing::warn!("creating {}: {e}", store::TOPIC);
            }
            image = node.image();
        }
        let t = image.topics.get(store::TOPIC)?;
        let p = store::partition_for(group, t.partitions.len() as i32);
        let leader = t.partitions.get(p as usize)?.leader;
        let b = image.brokers.get(&leader).filter(|b| !b.fenced)?;
        Some((b.id, b.host.clone(), b.port))
    }
}

fn cluster_id(image: &Image, broker: &Broker) -> String {
    if image.cluster_id.is_empty() {
        broker.cluster_id().to_string()
    } else {
        image.cluster_id.clone()
    }
}

fn topic_metadata_from(image: &Image, name: &str, version: i16) -> MetadataResponseTopic {
    let t = MetadataResponseTopic::default()
        .with_name(Some(TopicName(sb(name))))
        .with_topic_authorized_operations(i32::MIN);
    let Some(info) = image.topics.get(name) else {
        return t.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let partitions = info
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mp = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                .with_replica_nodes(p.replicas.iter().map(|&n| BrokerId(n)).collect())
                .with_isr_nodes(p.isr.iter().map(|&n| BrokerId(n)).collect())
                .with_offline_replicas(
                    p.replicas
                        .iter()
                        .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                        .map(|&n| BrokerId(n))
                        .collect(),
                );
            if p.leader < 0 {
                mp.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                mp
            }
        })
        .collect();
    let t = if version >= 10 {
        t.with_topic_id(topic_uuid(&info.id))
    } else {
        t
    };
    t.with_is_internal(version >= 1 && name.starts_with("__"))
        .with_partitions(partitions)
}
