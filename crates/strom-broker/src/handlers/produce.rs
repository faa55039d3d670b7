//! Produce: validate and append record batches, with idempotent-producer deduplication (in the
//! log) and the `acks` contract. On a single node `acks=all` is satisfied by the local append;
//! in a cluster the response waits until the high watermark passes the appended records (every
//! in-sync replica has them), up to the request's timeout. `min.insync.replicas` is checked
//! against the committed in-sync set before appending.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;

use std::sync::Arc;

use crate::broker::{sb, AppendRefused, Broker, Partition, Reply, Role};

impl Broker {
    /// For `acks=0` the client expects no response: nothing is sent, or, if any partition failed,
    /// the connection is closed.
    pub(crate) async fn produce(&self, r: ProduceRequest, version: i16) -> Reply {
        let acks = r.acks;
        let timeout = std::time::Duration::from_millis(r.timeout_ms.max(0) as u64);
        // (topic index, partition index, partition, offset the high watermark must reach, epoch)
        let mut waits: Vec<(usize, usize, Arc<Partition>, i64, i32)> = Vec::new();
        let valid_acks = (-1..=1).contains(&acks);
        let transactional = r.transactional_id.is_some();
        let mut responses = Vec::with_capacity(r.topic_data.len());
        let mut appended = false;
        for topic in r.topic_data {
            let name = topic.name.0.to_string();
            let mut parts = Vec::with_capacity(topic.partition_data.len());
            for pd in topic.partition_data {
                let resp = PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                // error_message exists from v8 on.
                let fail = |code: ResponseError, msg: Option<String>| {
                    resp.clone()
                        .with_error_code(code.code())
                        .with_error_message(msg.filter(|_| version >= 8).map(sb))
                };
                if !valid_acks {
                    parts.push(fail(ResponseError::InvalidRequiredAcks, None));
                    continue;
                }
                if transactional {
                    parts.push(fail(
                        ResponseError::UnsupportedVersion,
                        Some("transactions are not supported yet".into()),
                    ));
                    continue;
                }
                if crate::broker::is_internal(&name) {
                    parts.push(fail(
                        ResponseError::InvalidTopicException,
                        Some(format!("{name} is internal: clients cannot produce to it")),
                    ));
                    continue;
                }
                let Some(partition) = self.partition(&name, pd.index) else {
                    parts.push(fail(ResponseError::UnknownTopicOrPartition, None));
                    continue;
                };
                if partition.role_epoch().0 != Role::Leader {
                    parts.push(fail(ResponseError::NotLeaderOrFollower, None));
                    continue;
                }
                let config = partition.log.config();
                if acks == -1 && (partition.isr_len() as u32) < config.min_insync_replicas {
                    parts.push(fail(ResponseError::NotEnoughReplicas, None));
                    continue;
                }
                let Some(records) = pd.records else {
                    parts.push(fail(
                        ResponseError::CorruptMessage,
                        Some("no records in the partition data".into()),
                    ));
                    continue;
                };
                let mut buf = records.to_vec();
                // The role check, the append and the high-watermark update are one step
                // against leadership changes.
                match partition.append_as_leader(&mut buf, None) {
                    Ok((info, leader_epoch)) => {
                        if !info.duplicate {
                            appended = true;
                        }
                        // Always checked again after the append, even when the high watermark
                        // is already past it: the ISR may have shrunk below the minimum.
                        if acks == -1 {
                            waits.push((
                                responses.len(),
                                parts.len(),
                                partition.clone(),
                                info.last_offset + 1,
                                leader_epoch,
                            ));
                        }
                        let mut ok = resp
                            .with_base_offset(info.first_offset)
                            .with_log_append_time_ms(info.log_append_time);
                        if version >= 5 {
                            ok = ok.with_log_start_offset(info.log_start_offset);
                        }
                        parts.push(ok);
                    }
                    Err(AppendRefused::NotInRole) => {
                        parts.push(fail(ResponseError::NotLeaderOrFollower, None));
                    }
                    Err(AppendRefused::Log(e)) => {
                        let code = super::error_code(&e);
                        tracing::debug!(topic = %name, partition = pd.index, "produce refused: {e}");
                        parts.push(fail(code, Some(e.to_string())));
                    }
                }
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic.name)
                    .with_partition_responses(parts),
            );
        }
        if appended {
            self.appended.notify_waiters();
        }
        if !waits.is_empty() {
            let failed = self.await_replication(&waits, timeout).await;
            for (t, p, code) in failed {
                if let Some(resp) = responses
                    .get_mut(t)
                    .and_then(|r| r.partition_responses.get_mut(p))
                {
                    resp.error_code = code.code();
                    resp.base_offset = -1;
                }
            }
        }
        if acks == 0 {
            let failed = responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .any(|p| p.error_code != 0);
            return if failed { Reply::Close } else { Reply::Nothing };
        }
        Reply::Respond(Box::new(ResponseKind::Produce(
            ProduceResponse::default().with_responses(responses),
        )))
    }

    /// Waits until every partition's high watermark reaches its offset (`acks=all`), the
    /// deadline passes (REQUEST_TIMED_OUT) or the partition's leadership changes
    /// (NOT_LEADER_OR_FOLLOWER). Returns the failures as (topic index, partition index, error).
    async fn await_replication(
        &self,
        waits: &[(usize, usize, Arc<Partition>, i64, i32)],
        timeout: std::time::Duration,
    ) -> Vec<(usize, usize, ResponseError)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut pending = false;
            let mut failed = Vec::new();
            for (t, p, part, offset, epoch) in waits {
                let (role, now_epoch) = part.role_epoch();
                if role != Role::Leader || now_epoch != *epoch {
                    failed.push((*t, *p, ResponseError::NotLeaderOrFollower));
                } else if part.log.high_watermark() < *offset {
                    pending = true;
                    failed.push((*t, *p, ResponseError::RequestTimedOut));
                } else if (part.isr_len() as u32) < part.log.config().min_insync_replicas {
                    // Replicated, but the ISR shrank below the minimum meanwhile (Kafka's
                    // NOT_ENOUGH_REPLICAS_AFTER_APPEND): the client retries.
                    failed.push((*t, *p, ResponseError::NotEnoughReplicasAfterAppend));
                }
            }
            let timed_out = tokio::time::Instant::now() >= deadline;
            if !pending || timed_out {
                return failed;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}
