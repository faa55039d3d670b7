//! `strom topic create|list|describe|alter|delete`.

use std::collections::BTreeSet;

use strom_client::admin::{AlterOp, ConfigEntry};
use strom_client::cluster::TopicInfo;
use strom_client::{Admin, NewTopic, OffsetSpec};

use super::{msg, parse_key_value, Result};

/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const TOPIC: i8 = 2;

/// What `strom topic` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Name.
        name: String,
        /// Partitions (`None`: the broker's default).
        partitions: Option<i32>,
        /// Replication factor (`None`: the broker's default).
        replication_factor: Option<i16>,
        /// `KEY=VALUE` topic configs.
        configs: Vec<String>,
    },
    /// List topic names.
    List {
        /// Include internal topics (`__consumer_offsets`).
        internal: bool,
    },
    /// Partitions, leaders, replicas, ISR, offsets and non-default configs of a topic.
    Describe {
        /// Name.
        name: String,
    },
    /// Add partitions and change configs.
    Alter {
        /// Name.
        name: String,
        /// New total number of partitions.
        partitions: Option<i32>,
        /// `KEY=VALUE` configs to set.
        configs: Vec<String>,
        /// Configs to return to their default.
        delete_configs: Vec<String>,
    },
    /// Delete topics.
    Delete {
        /// Names.
        names: Vec<String>,
    },
}

/// Runs a `strom topic` command against the cluster at `brokers`.
pub async fn run(brokers: &str, command: TopicCommand) -> Result<()> {
    // Bad flags are reported before any connection is made.
    match &command {
        TopicCommand::Create { configs, .. } | TopicCommand::Alter { configs, .. } => {
            parse_configs(configs)?;
        }
        _ => {}
    }
    let admin = Admin::connect(brokers).await.map_err(msg)?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut t = NewTopic::new(&name, partitions.unwrap_or(-1))
                .replication_factor(replication_factor.unwrap_or(-1));
            for (k, v) in parse_configs(&configs)? {
                t = t.config(k, v);
            }
            admin.create_topics(&[t]).await.map_err(msg)?;
            println!("created topic {name}");
        }
        TopicCommand::List { internal } => {
            for t in admin.list_topics().await.map_err(msg)? {
                if internal || !t.internal {
                    println!("{}", t.name);
                }
            }
        }
        TopicCommand::Describe { name } => {
            let info = admin.describe_topic(&name).await.map_err(msg)?;
            print!("{}", describe(&admin, &info).await?);
        }
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => alter(&admin, &name, partitions, &configs, &delete_configs).await?,
        TopicCommand::Delete { names } => {
            if names.is_empty() {
                return Err("name at least one topic to delete".into());
            }
            // Refuse the whole request, deleting nothing, when a name is misspelt.
            let known: BTreeSet<String> = admin
                .list_topics()
                .await
                .map_err(msg)?
                .iter()
                .map(|t| t.name.clone())
                .collect();
            if let Some(unknown) = names.iter().find(|n| !known.contains(*n)) {
                return Err(format!("unknown topic {unknown}"));
            }
            admin.delete_topics(&names).await.map_err(msg)?;
            for n in &names {
                println!("deleted topic {n}");
            }
        }
    }
    Ok(())
}

fn parse_configs(configs: &[String]) -> Result<Vec<(String, String)>> {
    configs
        .iter()
        .map(|kv| parse_key_value("--config", kv))
        .collect()
}

async fn alter(
    admin: &Admin,
    name: &str,
    partitions: Option<i32>,
    configs: &[String],
    delete_configs: &[String],
) -> Result<()> {
    if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
        return Err("nothing to alter: give --partitions, --config or --delete-config".into());
    }
    let info = admin.describe_topic(name).await.map_err(msg)?;
    let mut changes: Vec<(String, AlterOp)> = parse_configs(configs)?
        .into_iter()
        .map(|(k, v)| (k, AlterOp::Set(v)))
        .collect();
    changes.extend(delete_configs.iter().map(|k| (k.clone(), AlterOp::Delete)));
    if let Some(total) = partitions {
        let now = info.partitions.len() as i32;
        if total < now {
            return Err(format!(
                "topic {name} has {now} partitions; partitions can only be added (asked for {total})"
            ));
        }
        if total > now {
            admin.create_partitions(name, total).await.map_err(msg)?;
            println!("topic {name}: {now} -> {total} partitions");
        }
    }
    if !changes.is_empty() {
        admin
            .alter_configs(TOPIC, name, &changes)
            .await
            .map_err(msg)?;
        for (k, op) in &changes {
            match op {
                AlterOp::Set(v) => println!("topic {name}: {k}={v}"),
                AlterOp::Delete => println!("topic {name}: {k} back to its default"),
            }
        }
    }
    Ok(())
}

/// The text of `strom topic describe`.
async fn describe(admin: &Admin, info: &TopicInfo) -> Result<String> {
    let topics = [info.name.clone()];
    let starts = admin
        .list_offsets(&topics, OffsetSpec::Earliest)
        .await
        .map_err(msg)?;
    let ends = admin
        .list_offsets(&topics, OffsetSpec::Latest)
        .await
        .map_err(msg)?;
    let configs = admin
        .describe_configs(TOPIC, &info.name)
        .await
        .map_err(msg)?;
    let rf = info
        .partitions
        .iter()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0);
    let n = info.partitions.len();
    let mut out = format!(
        "topic {} (id {}, {n} partition{}, replication factor {rf}{})\n",
        info.name,
        info.id,
        if n == 1 { "" } else { "s" },
        if info.internal { ", internal" } else { "" }
    );
    out.push_str(&format!(
        "{:<10} {:>6} {:<12} {:<12} {:>12} {:>12}\n",
        "partition", "leader", "replicas", "isr", "log-start", "log-end"
    ));
    let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let offset = |m: &std::collections::BTreeMap<strom_client::TopicPartition, i64>, p: i32| {
        m.get(&strom_client::TopicPartition::new(info.name.clone(), p))
            .map_or_else(|| "-".to_string(), i64::to_string)
    };
    for p in &info.partitions {
        let leader = if p.leader >= 0 {
            p.leader.to_string()
        } else {
            "none".to_string()
        };
        out.push_str(&format!(
            "{:<10} {:>6} {:<12} {:<12} {:>12} {:>12}\n",
            p.partition,
            leader,
            list(&p.replicas),
            list(&p.isr),
            offset(&starts, p.partition),
            offset(&ends, p.partition),
        ));
    }
    out.push_str(&configs_text(&configs));
    Ok(out)
}

fn configs_text(configs: &[ConfigEntry]) -> String {
    let set: Vec<&ConfigEntry> = configs.iter().filter(|c| !c.is_default).collect();
    if set.is_empty() {
        return "configs: all defaults\n".to_string();
    }
    let mut out = String::from("configs:\n");
    for c in set {
        out.push_str(&format!(
            "  {}={}\n",
            c.name,
            c.value.as_deref().unwrap_or("(sensitive)")
        ));
    }
    out
}
