//! Fetch: whole batches from each requested partition, bounded by `max_bytes` and
//! `partition_max_bytes`, waiting up to `max_wait_ms` for `min_bytes` (woken by appends).
//! Fetch sessions (KIP-227) are declined: the response's session id is 0, so clients send full
//! fetch requests, which is always allowed.

use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use strom_log::ReadLimit;

use crate::broker::{Broker, Role};

impl Broker {
    pub(crate) async fn fetch(&self, r: FetchRequest, version: i16) -> FetchResponse {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
        loop {
            // Register for wake-ups before reading, so an append between the read and the wait
            // is not missed.
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (resp, bytes, errors) = self.fetch_once(&r, version);
            if bytes >= r.min_bytes.max(0) as usize
                || errors
                || tokio::time::Instant::now() >= deadline
            {
                return resp;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.fetch_once(&r, version).0;
            }
        }
    }

    /// One pass over the requested partitions: the response, the bytes in it, and whether any
    /// partition failed (which ends the wait early, as in Kafka).
    fn fetch_once(&self, r: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
        let replica = r.replica_id.0.max(r.replica_state.replica_id.0);
        let follower = replica >= 0;
        let now = crate::group::now_ms();
        let mut hw_moved = false;
        let mut budget = r.max_bytes.max(0) as u64;
        let mut total = 0usize;
        let mut errors = false;
        let mut topics = Vec::with_capacity(r.topics.len());
        for t in &r.topics {
            let name = t.topic.0.to_string();
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let mut pd = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_aborted_transactions(Some(Vec::new()));
                let Some(part) = self.partition(&name, p.partition) else {
                    errors = true;
                    parts.push(pd.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                    continue;
                };
                let (role, epoch) = part.role_epoch();
                if role != Role::Leader {
                    errors = true;
                    parts.push(pd.with_error_code(ResponseError::NotLeaderOrFollower.code()));
                    continue;
                }
                // KIP-320: a client or follower with another epoch's view is told so.
                if version >= 9 && p.current_leader_epoch >= 0 && p.current_leader_epoch != epoch {
                    errors = true;
                    let code = if p.current_leader_epoch < epoch {
                        ResponseError::FencedLeaderEpoch
                    } else {
                        ResponseError::UnknownLeaderEpoch
                    };
                    parts.push(pd.with_error_code(code.code()));
                    continue;
                }
                if follower {
                    // A follower ahead of the leader has records the leader lacks: it must
                    // reconcile first, and is not counted (as in Kafka).
                    if p.fetch_offset > part.log.log_end_offset() {
                        errors = true;
                        parts.push(pd.with_error_code(ResponseError::OffsetOutOfRange.code()));
                        continue;
                    }
                    // The fetch offset is the follower's log end: it may move the high
                    // watermark, or qualify the follower to rejoin the ISR.
                    let outcome =
                        part.leader_update(|ls| ls.on_fetch(replica, p.fetch_offset, now));
                    if let Some((moved, proposal)) = outcome {
                        hw_moved |= moved;
                        if let (Some(isr), Some(node)) = (proposal, self.cluster()) {
                            tracing::info!(topic = %name, partition = p.partition, ?isr, "expanding the ISR");
                            node.clone()
                                .alter_isr(name.clone(), p.partition, part.clone(), isr);
                        }
                    }
                }
                let limit = if follower {
                    ReadLimit::LogEnd
                } else {
                    ReadLimit::HighWatermark
                };
                let max = (p.partition_max_bytes.max(0) as u64).min(budget);
                let log = &part.log;
                pd = pd
                    .with_high_watermark(log.high_watermark())
                    .with_last_stable_offset(log.high_watermark());
                if version >= 5 {
                    pd = pd.with_log_start_offset(log.log_start_offset());
                }
                // KIP-74: only the first partition with data may exceed the budget (by one batch).
                let first = total == 0;
                match log
                    .read_with(p.fetch_offset, max, limit, first)
                    .and_then(|rd| rd.bytes())
                {
                    Ok(bytes) => {
                        total += bytes.len();
                        budget = budget.saturating_sub(bytes.len() as u64);
                        parts.push(pd.with_records(Some(bytes)));
                    }
                    Err(e) => {
                        errors = true;
                        parts.push(pd.with_error_code(super::error_code(&e).code()));
                    }
                }
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(parts),
            );
        }
        if hw_moved {
            self.appended.notify_waiters();
        }
        (
            FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics),
            total,
            errors,
        )
    }
}
