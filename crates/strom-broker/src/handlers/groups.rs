//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
//! ListGroups, DescribeGroups, DeleteGroups and OffsetDelete: translation between the wire and
//! the coordinator's state machine (`group::machine`).

use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::{
    delete_groups_response, describe_groups_response, find_coordinator_response,
    join_group_response, leave_group_response, list_groups_response, offset_commit_response,
    offset_delete_response, offset_fetch_response, BrokerId, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use crate::broker::{sb, Broker};
use crate::group::machine::{Answer, CommitRequest, JoinRequest, SyncRequest};
use crate::group::now_ms;

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

/// In a cluster, the group APIs keyed by one group answer NOT_COORDINATOR on a broker that
/// does not coordinate that group; this builds that answer (`None`: serve the request).
pub(crate) fn not_coordinator(body: &RequestKind, version: i16) -> Option<ResponseKind> {
    let e = ResponseError::NotCoordinator.code();
    Some(match body {
        RequestKind::JoinGroup(_) => ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(e)
                .with_generation_id(-1)
                .with_protocol_name(Some(sb("")))
                .with_member_id(sb("")),
        ),
        RequestKind::SyncGroup(_) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(e))
        }
        RequestKind::Heartbeat(_) => {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(e))
        }
        RequestKind::LeaveGroup(_) => {
            ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(e))
        }
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        offset_commit_response::OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        offset_commit_response::OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(e)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetFetch(r) if version < 8 => ResponseKind::OffsetFetch(
            OffsetFetchResponse::default().with_error_code(e).with_topics(
                r.topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        offset_fetch_response::OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|p| {
                                        offset_fetch_response::OffsetFetchResponsePartition::default()
                                            .with_partition_index(*p)
                                            .with_committed_offset(-1)
                                            .with_error_code(e)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetDelete(_) => {
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(e))
        }
        _ => return None,
    })
}

/// The group a single-group request is about.
pub(crate) fn group_of(body: &RequestKind, version: i16) -> Option<String> {
    Some(match body {
        RequestKind::JoinGroup(r) => r.group_id.to_string(),
        RequestKind::SyncGroup(r) => r.group_id.to_string(),
        RequestKind::Heartbeat(r) => r.group_id.to_string(),
        RequestKind::LeaveGroup(r) => r.group_id.to_string(),
        RequestKind::OffsetCommit(r) => r.group_id.to_string(),
        RequestKind::OffsetFetch(r) if version < 8 => r.group_id.to_string(),
        RequestKind::OffsetDelete(r) => r.group_id.to_string(),
        _ => return None,
    })
}

impl Broker {
    pub(crate) async fn find_coordinator(
        &self,
        r: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let keys: Vec<String> = if version >= 4 {
            r.coordinator_keys.iter().map(|k| k.to_string()).collect()
        } else {
            vec![r.key.to_string()]
        };
        // Key type 0 is a group; 1 (transactions) is not served yet.
        let mut found = Vec::with_capacity(keys.len());
        for key in &keys {
            let c = if r.key_type != 0 {
                Err(ResponseError::CoordinatorNotAvailable)
            } else if let Some(node) = self.cluster() {
                self.group_coordinator(node, key)
                    .await
                    .ok_or(ResponseError::CoordinatorNotAvailable)
            } else {
                let (host, port) = self.advertised();
                Ok((self.config.node_id, host, port))
            };
            found.push(c);
        }
        if version >= 4 {
            let coordinators = keys
                .into_iter()
                .zip(found)
                .map(|(key, c)| {
                    let out = find_coordinator_response::Coordinator::default().with_key(sb(key));
                    match c {
                        Ok((id, host, port)) => out
                            .with_node_id(BrokerId(id))
                            .with_host(sb(host))
                            .with_port(port),
                        Err(e) => out
                            .with_node_id(BrokerId(-1))
                            .with_host(sb(""))
                            .with_port(-1)
                            .with_error_code(e.code()),
                    }
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        match found
            .pop()
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
        {
            Ok((id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(id))
                .with_host(sb(host))
                .with_port(port),
            Err(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_host(sb(""))
                .with_port(-1),
        }
    }

    pub(crate) async fn join_group(
        &self,
        r: JoinGroupRequest,
        version: i16,
        client_id: String,
        host: String,
    ) -> JoinGroupResponse {
        let req = JoinRequest {
            group_id: r.group_id.0.to_string(),
            member_id: r.member_id.to_string(),
            instance_id: r.group_instance_id.map(|s| s.to_string()),
            client_id,
            client_host: host,
            session_timeout_ms: r.session_timeout_ms,
            // v0 has no rebalance timeout: it is the session timeout.
            rebalance_timeout_ms: if version >= 1 {
                r.rebalance_timeout_ms
            } else {
                r.session_timeout_ms
            },
            protocol_type: r.protocol_type.to_string(),
            protocols: r
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: version >= 4,
        };
        let now = now_ms();
        let group = req.group_id.clone();
        let answer = self
            .groups()
            .parked(&group, |m, token| m.join(now, token, req))
            .await;
        let Some(Answer::Join(res)) = answer else {
            return JoinGroupResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        };
        let mut resp = JoinGroupResponse::default()
            .with_error_code(code(res.error))
            .with_generation_id(res.generation)
            .with_protocol_name(if version >= 7 {
                res.protocol.clone().map(sb)
            } else {
                Some(sb(res.protocol.clone().unwrap_or_default()))
            })
            .with_leader(sb(res.leader))
            .with_member_id(sb(res.member_id))
            .with_members(
                res.members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        join_group_response::JoinGroupResponseMember::default()
                            .with_member_id(sb(id))
                            .with_group_instance_id(if version >= 5 {
                                instance.map(sb)
                            } else {
                                None
                            })
                            .with_metadata(metadata)
                    })
                    .collect(),
            );
        if version >= 7 {
            resp = resp.with_protocol_type(res.protocol_type.map(sb));
        }
        resp
    }

    pub(crate) async fn sync_group(&self, r: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let group = r.group_id.0.to_string();
        let member = r.member_id.to_string();
        let instance = r.group_instance_id.map(|s| s.to_string());
        let assignments = r
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        let now = now_ms();
        let parked_for = group.clone();
        let answer = self
            .groups()
            .parked(&parked_for, |m, token| {
                m.sync(
                    now,
                    token,
                    SyncRequest {
                        group_id: group,
                        generation: r.generation_id,
                        member_id: member,
                        instance_id: instance,
                        assignments,
                    },
                )
            })
            .await;
        let Some(Answer::Sync(res)) = answer else {
            return SyncGroupResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        };
        let mut resp = SyncGroupResponse::default()
            .with_error_code(code(res.error))
            .with_assignment(res.assignment);
        if version >= 5 {
            resp = resp
                .with_protocol_type(res.protocol_type.map(sb))
                .with_protocol_name(res.protocol.map(sb));
        }
        resp
    }

    pub(crate) fn heartbeat(&self, r: HeartbeatRequest) -> HeartbeatResponse {
        let now = now_ms();
        let instance = r.group_instance_id.map(|s| s.to_string());
        let e = self.groups().call(|m| {
            (
                m.heartbeat(
                    now,
                    &r.group_id.0,
                    r.generation_id,
                    &r.member_id,
                    instance.as_deref(),
                ),
                Default::default(),
            )
        });
        HeartbeatResponse::default().with_error_code(code(e))
    }

    pub(crate) fn leave_group(&self, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let now = now_ms();
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            r.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        let errors = self
            .groups()
            .call(|m| m.leave(now, &r.group_id.0, &leaving));
        if version >= 3 {
            let members = leaving
                .into_iter()
                .zip(&errors)
                .map(|((id, instance), e)| {
                    leave_group_response::MemberResponse::default()
                        .with_member_id(sb(id))
                        .with_group_instance_id(instance.map(sb))
                        .with_error_code(code(*e))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        } else {
            LeaveGroupResponse::default().with_error_code(code(errors.first().copied().flatten()))
        }
    }

    pub(crate) fn offset_commit(&self, r: OffsetCommitRequest) -> OffsetCommitResponse {
        let now = now_ms();
        let mut offsets = Vec::new();
        let mut unknown = Vec::new();
        for t in &r.topics {
            for p in &t.partitions {
                if self.partition(&t.name.0, p.partition_index).is_none() {
                    unknown.push((t.name.0.to_string(), p.partition_index));
                    continue;
                }
                offsets.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                ));
            }
        }
        let keys: Vec<(String, i32)> = offsets.iter().map(|o| (o.0.clone(), o.1)).collect();
        let req = CommitRequest {
            group_id: r.group_id.0.to_string(),
            generation: r.generation_id_or_member_epoch,
            member_id: r.member_id.to_string(),
            instance_id: r.group_instance_id.map(|s| s.to_string()),
            offsets,
        };
        let (errors, persisted) = self.groups().call_checked(|m| m.commit(now, req));
        // An offset that could not be written must not be acknowledged.
        let errors: Vec<Option<ResponseError>> = if persisted {
            errors
        } else {
            errors
                .into_iter()
                .map(|e| e.or(Some(ResponseError::CoordinatorNotAvailable)))
                .collect()
        };
        let mut result: Vec<(String, i32, i16)> = keys
            .into_iter()
            .zip(errors)
            .map(|((t, p), e)| (t, p, code(e)))
            .collect();
        result.extend(
            unknown
                .into_iter()
                .map(|(t, p)| (t, p, ResponseError::UnknownTopicOrPartition.code())),
        );
        let mut topics: Vec<offset_commit_response::OffsetCommitResponseTopic> = Vec::new();
        for (t, p, c) in result {
            let part = offset_commit_response::OffsetCommitResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(c);
            match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    offset_commit_response::OffsetCommitResponseTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(vec![part]),
                ),
            }
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    pub(crate) fn offset_fetch(&self, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        let group = r.group_id.0.to_string();
        let wanted: Vec<(String, Vec<i32>)> = match r.topics {
            Some(ts) => ts
                .into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect(),
            // Null: every partition with a committed offset.
            None => self.groups().read(|m| {
                let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
                if let Some(g) = m.group(&group) {
                    for (t, p) in g.offsets.keys() {
                        match by_topic.iter_mut().find(|x| &x.0 == t) {
                            Some(x) => x.1.push(*p),
                            None => by_topic.push((t.clone(), vec![*p])),
                        }
                    }
                }
                by_topic
            }),
        };
        let topics = self.groups().read(|m| {
            wanted
                .into_iter()
                .map(|(t, parts)| {
                    let partitions = parts
                        .into_iter()
                        .map(|p| {
                            let base =
                                offset_fetch_response::OffsetFetchResponsePartition::default()
                                    .with_partition_index(p);
                            match m.committed(&group, &t, p) {
                                Some(o) => base
                                    .with_committed_offset(o.offset)
                                    .with_committed_leader_epoch(if version >= 5 {
                                        o.leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(Some(sb(o.metadata.clone()))),
                                None => base
                                    .with_committed_offset(-1)
                                    .with_committed_leader_epoch(-1)
                                    .with_metadata(Some(sb(""))),
                            }
                        })
                        .collect();
                    offset_fetch_response::OffsetFetchResponseTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(partitions)
                })
                .collect()
        });
        OffsetFetchResponse::default().with_topics(topics)
    }

    pub(crate) fn list_groups(&self, r: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let filter: Vec<String> = r.states_filter.iter().map(|s| s.to_string()).collect();
        let groups = self.groups().read(|m| {
            m.groups()
                .filter(|g| {
                    filter.is_empty()
                        || filter
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(g.state.name()))
                })
                .map(|g| {
                    let mut l = list_groups_response::ListedGroup::default()
                        .with_group_id(GroupId(sb(g.id.clone())))
                        .with_protocol_type(sb(g.protocol_type.clone().unwrap_or_default()));
                    if version >= 4 {
                        l = l.with_group_state(sb(g.state.name()));
                    }
                    l
                })
                .collect()
        });
        ListGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn describe_groups(
        &self,
        r: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let groups = self.groups().read(|m| {
            r.groups
                .iter()
                .map(|id| {
                    let d = describe_groups_response::DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_authorized_operations(i32::MIN);
                    let Some(g) = m.group(&id.0) else {
                        return d.with_group_state(sb("Dead"));
                    };
                    let members = g
                        .members
                        .values()
                        .map(|mem| {
                            let protocol = g.protocol.clone().unwrap_or_default();
                            describe_groups_response::DescribedGroupMember::default()
                                .with_member_id(sb(mem.member_id.clone()))
                                .with_group_instance_id(if version >= 4 {
                                    mem.instance_id.clone().map(sb)
                                } else {
                                    None
                                })
                                .with_client_id(sb(mem.client_id.clone()))
                                .with_client_host(sb(mem.client_host.clone()))
                                .with_member_metadata(
                                    mem.protocols
                                        .iter()
                                        .find(|(n, _)| *n == protocol)
                                        .map(|(_, m)| m.clone())
                                        .unwrap_or_default(),
                                )
                                .with_member_assignment(mem.assignment.clone())
                        })
                        .collect();
                    d.with_group_state(sb(g.state.name()))
                        .with_protocol_type(sb(g.protocol_type.clone().unwrap_or_default()))
                        .with_protocol_data(sb(g.protocol.clone().unwrap_or_default()))
                        .with_members(members)
                })
                .collect()
        });
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn delete_groups(&self, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let results = r
            .groups_names
            .into_iter()
            .map(|id| {
                let e = self.groups().call(|m| m.delete_group(&id.0));
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code(e))
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }

    pub(crate) fn offset_delete(&self, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let group = r.group_id.0.to_string();
        if self.groups().read(|m| m.group(&group).is_none()) {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code());
        }
        // Topics the group's members subscribe to (consumer protocol metadata).
        let subscribed: Vec<String> = self.groups().read(|m| {
            let Some(g) = m.group(&group) else {
                return Vec::new();
            };
            let protocol = g.protocol.clone().unwrap_or_default();
            g.members
                .values()
                .flat_map(|mem| {
                    let meta = mem
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, m)| m.clone());
                    meta.and_then(|mut b| {
                        let version = if b.len() >= 2 {
                            i16::from_be_bytes([b[0], b[1]])
                        } else {
                            0
                        };
                        let skip = 2.min(b.len());
                        bytes::Buf::advance(&mut b, skip);
                        ConsumerProtocolSubscription::decode(&mut b, version).ok()
                    })
                    .map(|s| {
                        s.topics
                            .into_iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                })
                .collect()
        });
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let is_sub = subscribed.contains(&name);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let e = self
                            .groups()
                            .call(|m| m.delete_offset(&group, &name, p.partition_index, is_sub));
                        offset_delete_response::OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code(e))
                    })
                    .collect();
                offset_delete_response::OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }
}
