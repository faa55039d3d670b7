//! Broker configuration: defaults, a TOML file, `STROM_*` environment variables and flags, in
//! increasing order of precedence (the binary applies the last two).
//!
//! ```toml
//! listen = "127.0.0.1:9092"
//! advertised = "broker1.example:9092"
//! node-id = 1
//! data-dir = "./strom-data"
//! num-partitions = 1
//! auto-create-topics = true
//! max-request-size = 104857600
//!
//! group-initial-rebalance-delay-ms = 3000
//! sql-listen = "127.0.0.1:5433"   # or "off"
//!
//! [log]               # topic config defaults, Kafka's names
//! "retention.ms" = "604800000"
//! "segment.bytes" = "1073741824"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strom_log::LogConfig;

use crate::error::{Error, Result};

/// Everything `strom server` can be told.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BrokerConfig {
    /// Address the Kafka listener binds.
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to (defaults to the listen address).
    pub advertised: Option<String>,
    /// This broker's id.
    pub node_id: i32,
    /// Where partition logs live.
    pub data_dir: PathBuf,
    /// Partitions of auto-created topics and of CreateTopics requests that ask for the default.
    pub num_partitions: i32,
    /// Replication factor used when a CreateTopics request asks for the default.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`: create unknown topics on Metadata requests.
    pub auto_create_topics: bool,
    /// Largest request frame accepted; bigger frames close the connection before any
    /// allocation.
    pub max_request_size: usize,
    /// Topic config defaults, by Kafka name (`retention.ms`, `segment.bytes`, ...).
    pub log: BTreeMap<String, String>,
    /// How often retention, compaction and timed flushes run, in milliseconds.
    pub log_upkeep_interval_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` when it is created.
    pub offsets_topic_partitions: i32,
    /// `offsets.retention.minutes`: committed offsets of an empty group expire after this.
    pub offsets_retention_minutes: u64,
    /// `offsets.topic.replication.factor` (capped at the live brokers when the topic is created).
    pub offsets_topic_replication_factor: i16,
    /// The controller quorum, `ID@HOST:PORT,...` (Kafka's `controller.quorum.voters`). Unset:
    /// a single node that is its own cluster, with no quorum.
    pub controller_quorum: Option<String>,
    /// `process.roles`: `controller,broker` (combined, the default) or `broker`.
    pub process_roles: String,
    /// `broker.rack`, for rack-aware replica placement.
    pub rack: Option<String>,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced by the controller.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`: a follower behind for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`.
    pub replica_fetch_wait_max_ms: u64,
    /// `leader.imbalance.check.interval.seconds`, in milliseconds: how often preferred leaders
    /// get leadership back.
    pub leader_imbalance_check_interval_ms: u64,
    /// Raft heartbeat interval of the metadata quorum; elections take 4-8 of these.
    pub controller_raft_heartbeat_ms: u64,
    /// Address of `strom server`'s SQL listener (PostgreSQL protocol), or `off`. The broker
    /// itself does not use it; see [`BrokerConfig::sql_listen_addr`].
    pub sql_listen: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: None,
            node_id: 1,
            data_dir: PathBuf::from("./strom-data"),
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics: true,
            max_request_size: 100 * 1024 * 1024,
            log: BTreeMap::new(),
            log_upkeep_interval_ms: 30_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_topic_partitions: 50,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_topic_replication_factor: 3,
            controller_quorum: None,
            process_roles: "controller,broker".into(),
            rack: None,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            leader_imbalance_check_interval_ms: 300_000,
            controller_raft_heartbeat_ms: 100,
            sql_listen: "127.0.0.1:5433".into(),
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML file; unknown keys are refused with their name.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }

    /// The log defaults: Kafka's defaults with `log` applied.
    pub fn log_defaults(&self) -> Result<LogConfig> {
        LogConfig::with_overrides(&LogConfig::default(), &self.log)
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// The advertised host and port.
    pub fn advertised_host_port(&self) -> Result<(String, i32)> {
        match &self.advertised {
            None => Ok((self.listen.ip().to_string(), self.listen.port() as i32)),
            Some(a) => {
                let (host, port) = a.rsplit_once(':').ok_or_else(|| {
                    Error::Config(format!("advertised address {a:?} must be HOST:PORT"))
                })?;
                let port: u16 = port.parse().map_err(|_| {
                    Error::Config(format!("advertised address {a:?} has a bad port"))
                })?;
                Ok((host.trim_matches(['[', ']']).to_string(), port as i32))
            }
        }
    }

    /// Where the SQL listener binds: `None` when `sql-listen` is `off`.
    pub fn sql_listen_addr(&self) -> Result<Option<SocketAddr>> {
        if self.sql_listen.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.sql_listen.trim().parse().map(Some).map_err(|_| {
            Error::Config(format!(
                "sql-listen must be IP:PORT or off, got {:?}",
                self.sql_listen
            ))
        })
    }

    /// Checks every value; the message names the setting.
    pub fn validate(&self) -> Result<()> {
        if self.node_id < 0 {
            return Err(Error::Config(format!(
                "node-id must be >= 0, got {}",
                self.node_id
            )));
        }
        if self.num_partitions < 1 {
            return Err(Error::Config(format!(
                "num-partitions must be >= 1, got {}",
                self.num_partitions
            )));
        }
        if self.default_replication_factor < 1 {
            return Err(Error::Config(format!(
                "default-replication-factor must be >= 1, got {}",
                self.default_replication_factor
            )));
        }
        if self.max_request_size < 1024 || self.max_request_size > i32::MAX as usize {
            return Err(Error::Config(format!(
                "max-request-size must be between 1024 and {}, got {}",
                i32::MAX,
                self.max_request_size
            )));
        }
        if self.offsets_topic_partitions < 1 {
            return Err(Error::Config(format!(
                "offsets-topic-partitions must be >= 1, got {}",
                self.offsets_topic_partitions
            )));
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(Error::Config(
                "group-min-session-timeout-ms must be >= 1 and <= group-max-session-timeout-ms"
                    .into(),
            ));
        }
        if let Some(q) = &self.controller_quorum {
            let voters =
                strom_controller::parse_quorum(q).map_err(|e| Error::Config(e.to_string()))?;
            if self.is_controller() && !voters.iter().any(|(id, _)| *id == self.node_id) {
                return Err(Error::Config(format!(
                    "node {} is a controller but not in controller-quorum {q} \
                     (add it, or set process-roles to `broker` for a broker-only node)",
                    self.node_id
                )));
            }
        }
        match self.process_roles.replace(' ', "").as_str() {
            "controller,broker" | "broker,controller" | "broker" => {}
            other => {
                return Err(Error::Config(format!(
                    "process-roles must be `controller,broker` or `broker`, got {other:?}"
                )))
            }
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms
        {
            return Err(Error::Config(
                "broker-heartbeat-interval-ms must be > 0 and < broker-session-timeout-ms".into(),
            ));
        }
        if self.offsets_topic_replication_factor < 1 {
            return Err(Error::Config(
                "offsets-topic-replication-factor must be >= 1".into(),
            ));
        }
        self.log_defaults()?;
        self.advertised_host_port()?;
        self.sql_listen_addr()?;
        Ok(())
    }

    /// Whether this node runs a controller (only meaningful with a quorum).
    pub fn is_controller(&self) -> bool {
        self.process_roles.contains("controller")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_log_defaults() {
        let c: BrokerConfig = toml::from_str(
            "listen = \"0.0.0.0:19092\"\nnode-id = 3\n[log]\n\"retention.ms\" = \"1000\"\n",
        )
        .unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.log_defaults().unwrap().retention_ms, Some(1000));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = toml::from_str::<BrokerConfig>("listen-port = 1").unwrap_err();
        assert!(e.message().contains("listen-port"), "{e}");
        let c = BrokerConfig {
            log: BTreeMap::from([("retention.ms".into(), "soon".into())]),
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retention.ms"));
        let c = BrokerConfig {
            advertised: Some("nohost".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn sql_listen_is_an_address_or_off() {
        let c: BrokerConfig = toml::from_str("sql-listen = \"0.0.0.0:15433\"").unwrap();
        assert_eq!(
            c.sql_listen_addr().unwrap(),
            Some(SocketAddr::from(([0, 0, 0, 0], 15433)))
        );
        let c: BrokerConfig = toml::from_str("sql-listen = \"off\"").unwrap();
        assert_eq!(c.sql_listen_addr().unwrap(), None);
        assert_eq!(
            BrokerConfig::default().sql_listen_addr().unwrap(),
            Some(SocketAddr::from(([127, 0, 0, 1], 5433)))
        );
        let c = BrokerConfig {
            sql_listen: "localhost".into(),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sql-listen"), "{e}");
    }
}
