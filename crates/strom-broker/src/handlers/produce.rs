//! Produce: validate and append record batches, with idempotent-producer deduplication (in the
//! log) and the `acks` contract. On a single node `acks=all` is satisfied by the local append;
//! `min.insync.replicas` is still checked against the in-sync set.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;
use strom_log::AppendOptions;

use crate::broker::{sb, Broker, Reply, Role};

impl Broker {
    /// For `acks=0` the client expects no response: nothing is sent, or, if any partition failed,
    /// the connection is closed.
    pub(crate) fn produce(&self, r: ProduceRequest, version: i16) -> Reply {
        let acks = r.acks;
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
                if partition.role != Role::Leader {
                    parts.push(fail(ResponseError::NotLeaderOrFollower, None));
                    continue;
                }
                let config = partition.log.config();
                if acks == -1 && (partition.isr.len() as u32) < config.min_insync_replicas {
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
                match partition
                    .log
                    .append(&mut buf, AppendOptions::leader(partition.leader_epoch))
                {
                    Ok(info) => {
                        if !info.duplicate {
                            appended = true;
                            partition.update_high_watermark();
                        }
                        let mut ok = resp
                            .with_base_offset(info.first_offset)
                            .with_log_append_time_ms(info.log_append_time);
                        if version >= 5 {
                            ok = ok.with_log_start_offset(info.log_start_offset);
                        }
                        parts.push(ok);
                    }
                    Err(e) => {
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
}
