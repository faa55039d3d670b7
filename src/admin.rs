//! A minimal Kafka-protocol admin connection for the `strom` command line (groups today; the
//! full client arrives as `strom-client`). It talks to any Kafka-protocol broker.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    list_offsets_request, metadata_request, offset_commit_request, ApiKey, BrokerId,
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What can go wrong talking to a broker, said in one line.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The broker could not be reached.
    #[error("cannot reach {broker}: {reason}")]
    Connect {
        /// Address.
        broker: String,
        /// Why.
        reason: String,
    },
    /// The broker answered with an error code.
    #[error("{0}")]
    Broker(String),
    /// The user asked for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The bytes on the wire were not what the protocol says.
    #[error("protocol error: {0}")]
    Protocol(String),
}

type Result<T> = std::result::Result<T, AdminError>;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn check(code: i16, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let name = kafka_protocol::ResponseError::try_from_code(code)
        .map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    Err(AdminError::Broker(format!("{what}: {name}")))
}

/// One connection to one broker.
pub struct Admin {
    stream: TcpStream,
    correlation: i32,
}

impl Admin {
    /// Connects to the first reachable broker of a comma-separated list.
    pub async fn connect(brokers: &str) -> Result<Self> {
        let mut last = (brokers.to_string(), String::from("no broker given"));
        for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(b)).await {
                Ok(Ok(stream)) => {
                    return Ok(Admin {
                        stream,
                        correlation: 0,
                    })
                }
                Ok(Err(e)) => last = (b.to_string(), e.to_string()),
                Err(_) => last = (b.to_string(), "timed out".to_string()),
            }
        }
        Err(AdminError::Connect {
            broker: last.0,
            reason: last.1,
        })
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(s("strom-cli")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        let proto = |e: anyhow::Error| AdminError::Protocol(e.to_string());
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(proto)?;
        req.encode(&mut buf, version).map_err(proto)?;
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let io = |e: std::io::Error| AdminError::Protocol(e.to_string());
        self.stream.write_all(&buf).await.map_err(io)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(io)?;
        let n = i32::from_be_bytes(len);
        if !(0..=256 << 20).contains(&n) {
            return Err(AdminError::Protocol(format!("response length {n}")));
        }
        let mut body = vec![0u8; n as usize];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        let mut body = bytes::Bytes::from(body);
        let api =
            ApiKey::try_from(R::KEY).map_err(|_| AdminError::Protocol("unknown api".into()))?;
        let h = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(proto)?;
        if h.correlation_id != self.correlation {
            return Err(AdminError::Protocol("response out of order".into()));
        }
        let resp = R::Response::decode(&mut body, version).map_err(proto)?;
        let _ = body.remaining();
        Ok(resp)
    }

    /// (group, state, protocol type) of every group.
    pub async fn list_groups(&mut self) -> Result<Vec<(String, String, String)>> {
        let r = self.call(&ListGroupsRequest::default(), 4).await?;
        check(r.error_code, "ListGroups")?;
        Ok(r.groups
            .into_iter()
            .map(|g| {
                (
                    g.group_id.0.to_string(),
                    g.group_state.to_string(),
                    g.protocol_type.to_string(),
                )
            })
            .collect())
    }

    /// A group's description plus committed offsets, log ends and lag per partition.
    pub async fn describe_group(&mut self, group: &str) -> Result<String> {
        let r = self
            .call(
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
                5,
            )
            .await?;
        let g = r
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| AdminError::Protocol("no group in the answer".into()))?;
        check(g.error_code, "DescribeGroups")?;
        let mut out = format!(
            "group {group}: state {}, protocol {} {}\n",
            g.group_state.as_str(),
            g.protocol_type.as_str(),
            g.protocol_data.as_str()
        );
        out.push_str(&format!(
            "{:<60} {:<20} {:<16} assignment\n",
            "member", "client", "host"
        ));
        for m in &g.members {
            let mut a = m.member_assignment.clone();
            let assigned = if a.len() >= 2 {
                let v = a.get_i16();
                ConsumerProtocolAssignment::decode(&mut a, v)
                    .map(|x| {
                        x.assigned_partitions
                            .iter()
                            .map(|tp| format!("{}{:?}", tp.topic.0.as_str(), tp.partitions))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|_| "(not a consumer assignment)".into())
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{:<60} {:<20} {:<16} {assigned}\n",
                m.member_id.as_str(),
                m.client_id.as_str(),
                m.client_host.as_str()
            ));
        }
        let offsets = self.committed(group).await?;
        out.push_str(&format!(
            "{:<30} {:>9} {:>12} {:>12} {:>10}\n",
            "topic", "partition", "committed", "log-end", "lag"
        ));
        let topics: Vec<String> = offsets.keys().map(|(t, _)| t.clone()).collect();
        let ends = self.list_offsets(&topics, -1).await?;
        for ((t, p), committed) in &offsets {
            let end = ends.get(&(t.clone(), *p)).copied().unwrap_or(-1);
            let lag = if *committed >= 0 && end >= 0 {
                (end - committed).to_string()
            } else {
                "-".into()
            };
            out.push_str(&format!(
                "{t:<30} {p:>9} {committed:>12} {end:>12} {lag:>10}\n"
            ));
        }
        Ok(out)
    }

    async fn committed(&mut self, group: &str) -> Result<BTreeMap<(String, i32), i64>> {
        let r = self
            .call(
                &OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None),
                7,
            )
            .await?;
        check(r.error_code, "OffsetFetch")?;
        Ok(r.topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partitions
                    .into_iter()
                    .map(move |p| ((name.clone(), p.partition_index), p.committed_offset))
            })
            .collect())
    }

    async fn partitions(&mut self, topic: &str) -> Result<Vec<i32>> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(s(topic))))]))
            .with_allow_auto_topic_creation(false);
        let r = self.call(&req, 9).await?;
        let t = r
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| AdminError::Protocol("no topic in the answer".into()))?;
        check(t.error_code, &format!("topic {topic}"))?;
        Ok(t.partitions.iter().map(|p| p.partition_index).collect())
    }

    /// Offsets by ListOffsets `timestamp` (-1 latest, -2 earliest, or a time) of every partition
    /// of `topics`.
    async fn list_offsets(
        &mut self,
        topics: &[String],
        timestamp: i64,
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let mut req_topics = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for t in topics {
            if !seen.insert(t.clone()) {
                continue;
            }
            let parts = self.partitions(t).await?;
            req_topics.push(
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|p| {
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    ),
            );
        }
        if req_topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let r = self
            .call(
                &ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(req_topics),
                7,
            )
            .await?;
        let mut out = BTreeMap::new();
        for t in r.topics {
            for p in t.partitions {
                check(
                    p.error_code,
                    &format!("ListOffsets {}/{}", t.name.0.as_str(), p.partition_index),
                )?;
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
        Ok(out)
    }

    /// Commits new offsets for `topic` on behalf of `group`, which must have no active members.
    /// `to`: `earliest`, `latest`, an offset, or an RFC 3339 time.
    pub async fn reset_offsets(
        &mut self,
        group: &str,
        topic: &str,
        to: &ResetTo,
    ) -> Result<Vec<(i32, i64)>> {
        let r = self
            .call(
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
                5,
            )
            .await?;
        if let Some(g) = r.groups.first() {
            if !g.members.is_empty() {
                return Err(AdminError::Usage(format!(
                    "group {group} has {} active member(s); stop its consumers before resetting offsets",
                    g.members.len()
                )));
            }
        }
        let targets: BTreeMap<(String, i32), i64> = match to {
            ResetTo::Earliest => self.list_offsets(&[topic.to_string()], -2).await?,
            ResetTo::Latest => self.list_offsets(&[topic.to_string()], -1).await?,
            ResetTo::Time(ms) => {
                let mut at = self.list_offsets(&[topic.to_string()], *ms).await?;
                // No record at or after the time: the end of the partition.
                let ends = self.list_offsets(&[topic.to_string()], -1).await?;
                for (k, v) in at.iter_mut() {
                    if *v < 0 {
                        *v = ends.get(k).copied().unwrap_or(0);
                    }
                }
                at
            }
            ResetTo::Offset(o) => self
                .partitions(topic)
                .await?
                .into_iter()
                .map(|p| ((topic.to_string(), p), *o))
                .collect(),
        };
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(
                        targets
                            .iter()
                            .map(|((_, p), o)| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o)
                            })
                            .collect(),
                    ),
            ]);
        let r = self.call(&req, 8).await?;
        for t in &r.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    &format!("committing {}/{}", t.name.0.as_str(), p.partition_index),
                )?;
            }
        }
        Ok(targets.into_iter().map(|((_, p), o)| (p, o)).collect())
    }

    /// Deletes a group (it must be empty).
    pub async fn delete_group(&mut self, group: &str) -> Result<()> {
        let r = self
            .call(
                &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
                2,
            )
            .await?;
        let res = r
            .results
            .first()
            .ok_or_else(|| AdminError::Protocol("no result".into()))?;
        check(res.error_code, &format!("deleting group {group}"))
    }
}

/// Where `strom group reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start.
    Earliest,
    /// The log end.
    Latest,
    /// A fixed offset on every partition.
    Offset(i64),
    /// The first record at or after this time (ms).
    Time(i64),
}
