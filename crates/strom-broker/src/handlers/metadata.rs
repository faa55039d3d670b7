//! Metadata: brokers, cluster id, and topics with their partitions (auto-creating unknown
//! topics when `auto-create-topics` is on and the client allows it).

use std::collections::BTreeMap;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::broker::{sb, Broker};

/// A topic id string (32 hex digits) as a UUID, or nil.
pub(crate) fn topic_uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or(Uuid::nil())
}

impl Broker {
    pub(crate) fn metadata(&self, r: MetadataRequest, version: i16) -> MetadataResponse {
        let (host, port) = self.advertised();
        let brokers = vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(self.config.node_id))
            .with_host(sb(host))
            .with_port(port)];
        // v0: an empty list means all topics; v1+: null means all topics.
        let wanted: Option<Vec<(Option<String>, Uuid)>> = match r.topics {
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
        let topics = match wanted {
            None => self
                .logs
                .topics()
                .into_iter()
                .map(|(name, _)| self.topic_metadata(&name, version))
                .collect(),
            Some(list) => list
                .into_iter()
                .map(|(name, id)| {
                    let name = match name {
                        Some(n) => n,
                        None => match self
                            .logs
                            .topics()
                            .into_iter()
                            .find(|(_, m)| topic_uuid(&m.topic_id) == id)
                        {
                            Some((n, _)) => n,
                            None => {
                                return MetadataResponseTopic::default()
                                    .with_topic_id(id)
                                    .with_error_code(ResponseError::UnknownTopicId.code())
                            }
                        },
                    };
                    if self.logs.topic(&name).is_none() {
                        // As Kafka: an invalid name is refused as such, created or not.
                        let refused = if strom_log::validate_topic_name(&name).is_err() {
                            Some(ResponseError::InvalidTopicException)
                        } else if auto_create {
                            self.auto_create(&name).err()
                        } else {
                            None
                        };
                        if let Some(code) = refused {
                            return MetadataResponseTopic::default()
                                .with_name(Some(TopicName(sb(name))))
                                .with_error_code(code.code());
                        }
                    }
                    self.topic_metadata(&name, version)
                })
                .collect(),
        };
        let mut resp = MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics)
            .with_cluster_authorized_operations(i32::MIN);
        if version >= 1 {
            resp = resp.with_controller_id(BrokerId(self.config.node_id));
        }
        if version >= 2 {
            resp = resp.with_cluster_id(Some(sb(self.cluster_id.clone())));
        }
        resp
    }

    fn auto_create(&self, name: &str) -> Result<(), ResponseError> {
        if let Err(e) = strom_log::validate_topic_name(name) {
            tracing::debug!("not auto-creating {name:?}: {e}");
            return Err(ResponseError::InvalidTopicException);
        }
        match self
            .logs
            .create_topic(name, self.config.num_partitions, &BTreeMap::new())
        {
            Ok(_) | Err(strom_log::Error::TopicAlreadyExists(_)) => {
                tracing::info!(
                    topic = name,
                    partitions = self.config.num_partitions,
                    "auto-created topic"
                );
                self.adopt_partitions(name);
                Ok(())
            }
            Err(e) => {
                tracing::error!("auto-creating {name:?} failed: {e}");
                Err(super::error_code(&e))
            }
        }
    }

    pub(crate) fn topic_metadata(&self, name: &str, version: i16) -> MetadataResponseTopic {
        let t = MetadataResponseTopic::default()
            .with_name(Some(TopicName(sb(name))))
            .with_topic_authorized_operations(i32::MIN);
        let Some(meta) = self.logs.topic(name) else {
            return t.with_error_code(ResponseError::UnknownTopicOrPartition.code());
        };
        let partitions = (0..meta.partitions)
            .map(|p| {
                let mp = MetadataResponsePartition::default().with_partition_index(p);
                match self.partition(name, p) {
                    Some(part) => {
                        let st = part.state();
                        mp.with_leader_id(BrokerId(st.leader))
                            .with_leader_epoch(if version >= 7 { st.leader_epoch } else { -1 })
                            .with_replica_nodes(st.replicas.iter().map(|&n| BrokerId(n)).collect())
                            .with_isr_nodes(st.isr.iter().map(|&n| BrokerId(n)).collect())
                    }
                    None => mp
                        .with_error_code(ResponseError::LeaderNotAvailable.code())
                        .with_leader_id(BrokerId(-1)),
                }
            })
            .collect();
        let t = if version >= 10 {
            t.with_topic_id(topic_uuid(&meta.topic_id))
        } else {
            t
        };
        t.with_is_internal(version >= 1 && name.starts_with("__"))
            .with_partitions(partitions)
    }
}
