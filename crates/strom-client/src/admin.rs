//! The admin client: topics, partitions, configs, groups, offsets, lag and record deletion.
//!
//! Topic and config changes go to the controller (any broker forwards them in Strom); group
//! operations go to the group's coordinator; offset operations to each partition's leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;

use crate::cluster::{BrokerInfo, Cluster, TopicInfo};
use crate::config::{ClientConfig, ConsumerConfig};
use crate::error::{check, Error, Result};
use crate::types::TopicPartition;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn broker_error(context: String, code: i16, message: Option<&StrBytes>) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None if code == 0 => Ok(()),
        Some(e) => Err(Error::broker(context, e, message.map(|m| m.to_string()))),
        None => Err(Error::Protocol(format!(
            "{context}: unknown error code {code}"
        ))),
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1: the broker's default).
    pub partitions: i32,
    /// Replication factor (-1: the broker's default).
    pub replication_factor: i16,
    /// Topic configs by Kafka name (`cleanup.policy`, `retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the default replication factor.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
    /// Sets the replication factor.
    pub fn replication_factor(mut self, rf: i16) -> Self {
        self.replication_factor = rf;
        self
    }
    /// Adds a config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// One config entry as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka name.
    pub name: String,
    /// Value (`None` when sensitive or unset).
    pub value: Option<String>,
    /// Whether it is inherited (a broker setting or built-in default) rather than set on this
    /// resource itself.
    pub is_default: bool,
    /// Kafka's config source: 1 topic override, 2 broker override, 3 cluster-wide dynamic
    /// default, 4 broker's static config, 5 built-in default (0 unknown, e.g. DescribeConfigs v0).
    pub source: i8,
    /// Whether it cannot be changed.
    pub read_only: bool,
}

/// How [`Admin::alter_configs`] changes an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// Sets the value.
    Set(String),
    /// Returns to the default.
    Delete,
}

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group: String,
    /// State (`Stable`, `Empty`, ...), when the broker reports it.
    pub state: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Partitions assigned (decoded when it is a consumer group).
    pub assignment: Vec<TopicPartition>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// State.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol (assignor) name.
    pub protocol: String,
    /// Members.
    pub members: Vec<GroupMember>,
}

/// Lag of one partition for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Partition.
    pub tp: TopicPartition,
    /// Committed offset (-1 when none).
    pub committed: i64,
    /// Log end offset (high watermark).
    pub end: i64,
    /// `end - committed`, when both are known.
    pub lag: Option<i64>,
}

/// Which offset [`Admin::list_offsets`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The log end (high watermark).
    Latest,
    /// The record with the largest timestamp.
    MaxTimestamp,
    /// The first record with a timestamp at or after this one (-1 if none).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// Cluster information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Controller node id.
    pub controller: i32,
    /// Brokers.
    pub brokers: Vec<BrokerInfo>,
}

/// The admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
    timeout: Duration,
}

impl Admin {
    /// Connects to the cluster (fails at once when no bootstrap server answers).
    pub async fn new(config: ClientConfig) -> Result<Admin> {
        let timeout = config.request_timeout;
        let cluster = Cluster::new(config, false)?;
        cluster.any().await?;
        Ok(Admin { cluster, timeout })
    }

    /// Shorthand for `Admin::new(ClientConfig::new(bootstrap))`.
    pub async fn connect(bootstrap: &str) -> Result<Admin> {
        Admin::new(ClientConfig::new(bootstrap)).await
    }

    fn timeout_ms(&self) -> i32 {
        self.timeout.as_millis().min(i32::MAX as u128) as i32
    }

    async fn controller(&self) -> Result<Arc<crate::conn::Connection>> {
        self.cluster.refresh(Some(&[])).await?;
        let (id, _) = self.cluster.controller();
        if id >= 0 {
            if let Ok(c) = self.cluster.broker(id).await {
                return Ok(c);
            }
        }
        self.cluster.any().await
    }

    /// Creates topics; fails on the first topic the broker refuses (with its reason).
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<()> {
        let conn = self.controller().await?;
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName(s(&t.name)))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(s(k))
                                            .with_value(Some(s(v)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let (_, resp) = conn.send(&req, 2..=7).await?;
        for t in &resp.topics {
            broker_error(
                format!("create topic {}", t.name.0),
                t.error_code,
                t.error_message.as_ref(),
            )?;
        }
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let _ = self.cluster.refresh(Some(&names)).await;
        Ok(())
    }

    /// Deletes topics by name.
    pub async fn delete_topics(&self, names: &[String]) -> Result<()> {
        let conn = self.controller().await?;
        let version = conn.version::<DeleteTopicsRequest>(1..=6)?;
        let mut req = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
        if version >= 6 {
            req = req.with_topics(
                names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(TopicName(s(n)))))
                    .collect(),
            );
        } else {
            req = req.with_topic_names(names.iter().map(|n| TopicName(s(n))).collect());
        }
        let resp = conn.send_raw(&req, version).await?;
        for r in &resp.responses {
            let name = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            broker_error(
                format!("delete topic {name}"),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<()> {
        let conn = self.controller().await?;
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_count(total)]);
        let (_, resp) = conn.send(&req, 0..=3).await?;
        for r in &resp.results {
            broker_error(
                format!("create partitions of {topic}"),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        let _ = self.cluster.refresh(Some(&[topic.to_string()])).await;
        Ok(())
    }

    /// Brokers, controller and cluster id.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let conn = self.cluster.any().await?;
        if conn.version::<DescribeClusterRequest>(0..=1).is_ok() {
            let (_, r) = conn.send(&DescribeClusterRequest::default(), 0..=1).await?;
            broker_error(
                "describe cluster".into(),
                r.error_code,
                r.error_message.as_ref(),
            )?;
            let mut brokers: Vec<BrokerInfo> = r
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id.0,
                    addr: format!("{}:{}", b.host, b.port),
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect();
            brokers.sort_by_key(|b| b.id);
            return Ok(ClusterDescription {
                cluster_id: Some(r.cluster_id.to_string()),
                controller: r.controller_id.0,
                brokers,
            });
        }
        self.cluster.refresh(Some(&[])).await?;
        let (controller, cluster_id) = self.cluster.controller();
        Ok(ClusterDescription {
            cluster_id,
            controller,
            brokers: self.cluster.brokers(),
        })
    }

    /// Every topic (internal ones included), sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<Arc<TopicInfo>>> {
        self.cluster.refresh(None).await?;
        Ok(self.cluster.topics())
    }

    /// Partitions, leaders, replicas and ISR of `topic`.
    pub async fn describe_topic(&self, topic: &str) -> Result<Arc<TopicInfo>> {
        self.cluster.refresh(Some(&[topic.to_string()])).await?;
        self.cluster
            .cached(topic)
            .ok_or_else(|| Error::UnknownTopic(topic.to_string()))
    }

    /// A topic's configs (resource type 2) or a broker's (type 4, name = node id).
    pub async fn describe_configs(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<ConfigEntry>> {
        let conn = self.cluster.any().await?;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configuration_keys(None),
        ]);
        let (v, resp) = conn.send(&req, 1..=4).await?;
        let r = resp
            .results
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("DescribeConfigs answered nothing".into()))?;
        broker_error(
            format!("describe configs of {name}"),
            r.error_code,
            r.error_message.as_ref(),
        )?;
        Ok(r.configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                // Set on this resource: DYNAMIC_TOPIC_CONFIG (1) for topics,
                // DYNAMIC_BROKER_CONFIG (2) for brokers.
                is_default: v >= 1 && !matches!(c.config_source, 1 | 2),
                source: if v >= 1 { c.config_source } else { 0 },
                read_only: c.read_only,
            })
            .collect())
    }

    /// Changes configs of a topic (type 2) or broker (type 4) incrementally.
    pub async fn alter_configs(
        &self,
        resource_type: i8,
        name: &str,
        changes: &[(String, AlterOp)],
    ) -> Result<()> {
        let conn = self.controller().await?;
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(
                    changes
                        .iter()
                        .map(|(k, op)| match op {
                            AlterOp::Set(v) => AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(0)
                                .with_value(Some(s(v))),
                            AlterOp::Delete => AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(1)
                                .with_value(None),
                        })
                        .collect(),
                ),
        ]);
        let (_, resp) = conn.send(&req, 0..=1).await?;
        for r in &resp.responses {
            broker_error(
                format!("alter configs of {name}"),
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Offsets of every partition of `topics` by `spec`.
    pub async fn list_offsets(
        &self,
        topics: &[String],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut wanted = Vec::new();
        for t in topics {
            let info = self.describe_topic(t).await?;
            for p in &info.partitions {
                wanted.push((TopicPartition::new(t.clone(), p.partition), spec.wire()));
            }
        }
        self.list_partition_offsets(&wanted).await
    }

    /// Offsets of specific partitions (`-1` latest, `-2` earliest, `-3` max timestamp, or a time).
    pub async fn list_partition_offsets(
        &self,
        wanted: &[(TopicPartition, i64)],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        // Leadership may be moving (a failover, a preferred-leader election): partitions that
        // fail with a retriable error are asked again after a metadata refresh.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut out = BTreeMap::new();
        let mut todo: Vec<(TopicPartition, i64)> = wanted.to_vec();
        loop {
            let got = crate::consumer::list_offsets(&self.cluster, &todo, 0).await;
            let mut again = Vec::new();
            for (tp, r) in got {
                match r {
                    Ok(o) => {
                        out.insert(tp, o);
                    }
                    Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                        let spec = todo.iter().find(|(t, _)| *t == tp).map_or(-1, |(_, s)| *s);
                        again.push((tp, spec));
                    }
                    Err(e) => return Err(e),
                }
            }
            if again.is_empty() {
                return Ok(out);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let topics: Vec<String> = again.iter().map(|(tp, _)| tp.topic.clone()).collect();
            let _ = self.cluster.refresh(Some(&topics)).await;
            todo = again;
        }
    }

    /// Deletes records before `before` in each partition (up to the high watermark).
    /// Returns the new log start offsets.
    pub async fn delete_records(
        &self,
        before: &BTreeMap<TopicPartition, i64>,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<(&TopicPartition, i64)>> = BTreeMap::new();
        let topics: Vec<String> = before.keys().map(|tp| tp.topic.clone()).collect();
        self.cluster.refresh(Some(&topics)).await?;
        for (tp, off) in before {
            let leader = self.cluster.leader(&tp.topic, tp.partition);
            if leader < 0 {
                return Err(Error::UnknownTopic(tp.to_string()));
            }
            by_leader.entry(leader).or_default().push((tp, *off));
        }
        let mut out = BTreeMap::new();
        for (leader, items) in by_leader {
            let conn = self.cluster.broker(leader).await?;
            let mut topics: BTreeMap<&str, Vec<DeleteRecordsPartition>> = BTreeMap::new();
            for (tp, off) in items {
                topics.entry(&tp.topic).or_default().push(
                    DeleteRecordsPartition::default()
                        .with_partition_index(tp.partition)
                        .with_offset(off),
                );
            }
            let req = DeleteRecordsRequest::default()
                .with_timeout_ms(self.timeout_ms())
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            DeleteRecordsTopic::default()
                                .with_name(TopicName(s(t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            let (_, resp) = conn.send(&req, 0..=2).await?;
            for t in resp.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    check(p.error_code, || format!("delete records of {tp}"))?;
                    out.insert(tp, p.low_watermark);
                }
            }
        }
        Ok(out)
    }

    /// Every group known to the brokers.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.cluster.refresh(Some(&[])).await?;
        let mut out = Vec::new();
        let mut brokers: Vec<i32> = self.cluster.brokers().iter().map(|b| b.id).collect();
        if brokers.is_empty() {
            brokers.push(-1);
        }
        for id in brokers {
            let conn = if id >= 0 {
                self.cluster.broker(id).await?
            } else {
                self.cluster.any().await?
            };
            let (_, r) = conn.send(&ListGroupsRequest::default(), 0..=4).await?;
            check(r.error_code, || "list groups".into())?;
            for g in r.groups {
                out.push(GroupListing {
                    group: g.group_id.0.to_string(),
                    state: g.group_state.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out.dedup_by(|a, b| a.group == b.group);
        Ok(out)
    }

    /// Members and assignments of a group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let conn = self.cluster.coordinator(group).await?;
        let (_, r) = conn
            .send(
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
                0..=5,
            )
            .await?;
        let g = r
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("DescribeGroups answered nothing".into()))?;
        broker_error(
            format!("describe group {group}"),
            g.error_code,
            g.error_message.as_ref(),
        )?;
        let consumer = g.protocol_type.as_str() == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| {
                let mut a = m.member_assignment.clone();
                let assignment = if consumer && a.len() >= 2 {
                    let v = a.get_i16();
                    ConsumerProtocolAssignment::decode(&mut a, v)
                        .map(|x| {
                            x.assigned_partitions
                                .iter()
                                .flat_map(|t| {
                                    t.partitions
                                        .iter()
                                        .map(|p| TopicPartition::new(t.topic.0.to_string(), *p))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                GroupMember {
                    member_id: m.member_id.to_string(),
                    instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment,
                }
            })
            .collect();
        Ok(GroupDescription {
            group: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members,
        })
    }

    /// Deletes groups (each must have no members).
    pub async fn delete_groups(&self, groups: &[String]) -> Result<()> {
        for group in groups {
            let conn = self.cluster.coordinator(group).await?;
            let (_, r) = conn
                .send(
                    &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
                    0..=2,
                )
                .await?;
            for res in &r.results {
                check(res.error_code, || format!("delete group {group}"))?;
            }
        }
        Ok(())
    }

    fn group_client(&self, group: &str) -> Result<crate::consumer::GroupHandle> {
        let mut cfg = ConsumerConfig::new("");
        cfg.client = self.cluster.config.clone();
        cfg.group_id = Some(group.to_string());
        crate::consumer::GroupHandle::new(group, self.cluster.clone(), cfg)
    }

    /// A group's committed offsets (every partition it committed).
    pub async fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let h = self.group_client(group)?;
        Ok(h.committed_all().await?.into_iter().collect())
    }

    /// Commits offsets for a group that has no active members (offset resets).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let d = self.describe_group(group).await?;
        if !d.members.is_empty() {
            return Err(Error::Usage(format!(
                "group {group} has {} active member(s); stop its consumers first",
                d.members.len()
            )));
        }
        self.group_client(group)?.commit(offsets).await
    }

    /// Lag per partition of everything the group committed.
    pub async fn consumer_lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let committed = self.group_offsets(group).await?;
        let wanted: Vec<(TopicPartition, i64)> =
            committed.keys().map(|tp| (tp.clone(), -1)).collect();
        let ends: HashMap<TopicPartition, i64> =
            crate::consumer::list_offsets(&self.cluster, &wanted, 0)
                .await
                .into_iter()
                .filter_map(|(tp, r)| r.ok().map(|o| (tp, o)))
                .collect();
        Ok(committed
            .into_iter()
            .map(|(tp, c)| {
                let end = ends.get(&tp).copied().unwrap_or(-1);
                PartitionLag {
                    lag: (c >= 0 && end >= 0).then(|| (end - c).max(0)),
                    tp,
                    committed: c,
                    end,
                }
            })
            .collect())
    }
}
