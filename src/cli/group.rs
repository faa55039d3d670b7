//! `strom group list|describe|reset-offsets|delete`.

use std::collections::BTreeMap;

use strom_client::admin::GroupDescription;
use strom_client::{Admin, OffsetSpec, TopicPartition};

use super::{msg, Result};

/// Where `strom group reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start.
    Earliest,
    /// The log end.
    Latest,
    /// A fixed offset on every partition.
    Offset(i64),
    /// The first record at or after this time (ms since the epoch); the log end if none.
    Time(i64),
}

/// What `strom group` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCommand {
    /// List groups with their state and protocol type.
    List,
    /// Members, assignments, and committed offset, log end and lag per partition.
    Describe {
        /// The group.
        group: String,
    },
    /// Commit new offsets for every partition of `topic` (refused while the group has members).
    ResetOffsets {
        /// The group.
        group: String,
        /// The topic whose partitions move.
        topic: String,
        /// Where to.
        to: ResetTo,
    },
    /// Delete an empty group and its offsets.
    Delete {
        /// The group.
        group: String,
    },
}

/// Runs a `strom group` command against the cluster at `brokers`.
pub async fn run(brokers: &str, command: GroupCommand) -> Result<()> {
    let admin = Admin::connect(brokers).await.map_err(msg)?;
    match command {
        GroupCommand::List => {
            for g in admin.list_groups().await.map_err(msg)? {
                println!("{}\t{}\t{}", g.group, g.state, g.protocol_type);
            }
        }
        GroupCommand::Describe { group } => {
            let d = admin.describe_group(&group).await.map_err(msg)?;
            let lag = admin.consumer_lag(&group).await.map_err(msg)?;
            print!("{}", describe_text(&d, &lag));
        }
        GroupCommand::ResetOffsets { group, topic, to } => {
            let targets = reset_targets(&admin, &topic, to).await?;
            admin
                .alter_group_offsets(&group, &targets)
                .await
                .map_err(msg)?;
            for (tp, o) in &targets {
                println!("{}\t{}\t{o}", tp.topic, tp.partition);
            }
        }
        GroupCommand::Delete { group } => {
            admin
                .delete_groups(std::slice::from_ref(&group))
                .await
                .map_err(msg)?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

async fn reset_targets(
    admin: &Admin,
    topic: &str,
    to: ResetTo,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let topics = [topic.to_string()];
    Ok(match to {
        ResetTo::Earliest => admin
            .list_offsets(&topics, OffsetSpec::Earliest)
            .await
            .map_err(msg)?,
        ResetTo::Latest => admin
            .list_offsets(&topics, OffsetSpec::Latest)
            .await
            .map_err(msg)?,
        ResetTo::Time(ms) => {
            let mut at = admin
                .list_offsets(&topics, OffsetSpec::Timestamp(ms))
                .await
                .map_err(msg)?;
            // No record at or after the time: the end of the partition.
            let ends = admin
                .list_offsets(&topics, OffsetSpec::Latest)
                .await
                .map_err(msg)?;
            for (tp, o) in at.iter_mut() {
                if *o < 0 {
                    *o = ends.get(tp).copied().unwrap_or(0);
                }
            }
            at
        }
        ResetTo::Offset(o) => admin
            .describe_topic(topic)
            .await
            .map_err(msg)?
            .partitions
            .iter()
            .map(|p| (TopicPartition::new(topic, p.partition), o))
            .collect(),
    })
}

/// The text of `strom group describe`: a header line, the members, then offsets and lag.
fn describe_text(d: &GroupDescription, lag: &[strom_client::admin::PartitionLag]) -> String {
    let mut out = format!(
        "group {}: state {}, protocol {} {}\n",
        d.group, d.state, d.protocol_type, d.protocol
    );
    out.push_str(&format!(
        "{:<60} {:<20} {:<16} assignment\n",
        "member", "client", "host"
    ));
    for m in &d.members {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in &m.assignment {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let assigned = by_topic
            .iter()
            .map(|(t, ps)| format!("{t}{ps:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{:<60} {:<20} {:<16} {assigned}\n",
            m.member_id, m.client_id, m.client_host
        ));
    }
    out.push_str(&format!(
        "{:<30} {:>9} {:>12} {:>12} {:>10}\n",
        "topic", "partition", "committed", "log-end", "lag"
    ));
    for l in lag {
        let lag = l.lag.map_or_else(|| "-".to_string(), |x| x.to_string());
        out.push_str(&format!(
            "{:<30} {:>9} {:>12} {:>12} {lag:>10}\n",
            l.tp.topic, l.tp.partition, l.committed, l.end
        ));
    }
    out
}
