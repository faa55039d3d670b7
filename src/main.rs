//! The `strom` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strom::cli;

/// Keeps a request that claims billions of elements from aborting the broker (see the module).
#[global_allocator]
static ALLOC: strom_broker::alloc::LazyHugeAlloc = strom_broker::alloc::LazyHugeAlloc;

/// Strom: a Kafka-compatible log and stream-processing engine.
#[derive(Debug, Parser)]
#[command(name = "strom", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker that speaks the Kafka protocol (single node).
    ///
    /// Settings come from defaults, then `--config FILE` (TOML), then `STROM_*` environment
    /// variables, then flags.
    Server(Box<ServerArgs>),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(flatten)]
        brokers: Brokers,
        #[command(subcommand)]
        what: TopicCommand,
    },
    /// Produce lines of standard input (or --file) as records, one per line.
    ///
    /// Nothing is printed on success (with --verbose: topic, partition and offset of each
    /// record); the exit status is non-zero, with a one-line error, if any record failed.
    Produce(ProduceArgs),
    /// Print records of a topic, as text or one JSON object per line.
    ///
    /// Without --group: every partition (or --partition), starting at --from (default: end).
    /// With --group: as a group member, starting at the committed offsets (else --from), and
    /// committing as it goes and on exit (Ctrl-C included).
    Consume(ConsumeArgs),
    /// Inspect and manage consumer groups on any Kafka-protocol cluster.
    Group {
        #[command(flatten)]
        brokers: Brokers,
        #[command(subcommand)]
        what: GroupCommand,
    },
    /// Describe the cluster, or start and stop a local one.
    Cluster {
        #[command(flatten)]
        brokers: Brokers,
        #[command(subcommand)]
        what: ClusterCommand,
    },
    /// Run SQL on a server's SQL engine: an interactive shell, or the statements of -c or -f.
    ///
    /// Connects to `strom server`'s SQL listener (PostgreSQL protocol). Results print as
    /// tables on stdout; notices and errors go to stderr as one line each. Rows of a push query
    /// print as they arrive until Ctrl-C. With -c or -f, the first error ends the command with
    /// exit status 1; the shell goes on.
    Sql(SqlArgs),
    /// Measure throughput against a baseline taken in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List groups with their state.
    List,
    /// Members, assignments, and committed offset, log end and lag per partition.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets (refused while it has active members).
    ResetOffsets {
        /// The group.
        group: String,
        /// The topic whose partitions move.
        #[arg(long)]
        topic: String,
        /// To the log start.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To the log end.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To this offset on every partition.
        #[arg(long, group = "to", value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// To the first record at or after this RFC 3339 time (e.g. 2026-01-31T12:00:00Z).
        #[arg(long, group = "to", value_name = "TIME")]
        to_datetime: Option<String>,
    },
    /// Delete an empty group and its offsets.
    Delete {
        /// The group.
        group: String,
    },
}

/// Where the client commands connect.
#[derive(Debug, clap::Args)]
struct Brokers {
    /// Brokers to bootstrap from (comma-separated).
    #[arg(
        long,
        env = "STROM_BROKERS",
        default_value = "localhost:9092",
        global = true,
        value_name = "HOST:PORT[,...]"
    )]
    brokers: String,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic.
        name: String,
        /// Number of partitions [default: the broker's num.partitions].
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor [default: the broker's default.replication.factor].
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config by Kafka name, e.g. retention.ms=86400000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topic names.
    List {
        /// Include internal topics (__consumer_offsets).
        #[arg(long)]
        internal: bool,
    },
    /// Partitions (leader, replicas, ISR, log start and end offsets) and non-default configs.
    Describe {
        /// The topic.
        name: String,
    },
    /// Add partitions and set or remove configs.
    Alter {
        /// The topic.
        name: String,
        /// New total number of partitions (partitions can only be added).
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic config, e.g. retention.ms=86400000 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Return a topic config to its default (repeatable).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
    /// Delete topics and all their records.
    Delete {
        /// The topics.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct ProduceArgs {
    #[command(flatten)]
    brokers: Brokers,
    /// The topic (created if the broker auto-creates topics).
    topic: String,
    /// Read lines from this file instead of standard input.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value ("\t" is a tab); a line without
    /// it is an error.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Send every record to this partition [default: by key; records without a key stick to
    /// a partition per batch].
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgement to wait for: 0, 1 or all (idempotence is on only with all).
    #[arg(long, default_value = "all")]
    acks: String,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// How long a batch waits for more records, in milliseconds.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Print "topic<TAB>partition<TAB>offset" of each record once acknowledged.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, clap::Args)]
struct ConsumeArgs {
    #[command(flatten)]
    brokers: Brokers,
    /// The topic.
    topic: String,
    /// Where to start: beginning, end, an offset, or an RFC 3339 time such as
    /// 2026-01-31T12:00:00Z [default: end; with --group, the committed offsets first].
    #[arg(long, value_name = "WHERE")]
    from: Option<String>,
    /// Consume as a member of this consumer group, committing offsets.
    #[arg(long)]
    group: Option<String>,
    /// Exit after this many records.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Output: text (the value per line) or json (one object per line: topic, partition,
    /// offset, timestamp, key, value, headers; bytes that are not UTF-8 in base64, flagged by
    /// "key_encoding"/"value_encoding": "base64").
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
    /// With --format text, print "key<TAB>value".
    #[arg(long)]
    print_key: bool,
    /// Exit successfully after this long without a new record (counted from when the consumer
    /// has joined its group and first heard from its partitions) [default: wait forever].
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    /// The value, one per line.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Cluster id, controller and brokers (id, address, rack).
    Info,
    /// Start a local cluster of `strom server` processes on 127.0.0.1 and print its
    /// `bootstrap.servers=...` line once every broker is up.
    ///
    /// Node i (from 1) listens on BASE_PORT + 100*(i-1) (Kafka), the port after it
    /// (controller) and the one after that (SQL: `psql -p PORT`, `strom sql --server`); its
    /// data and server.log go under DIR/node-i. The servers keep running after this command
    /// exits; stop them with `strom cluster down`.
    Up {
        /// Number of nodes (1 to 9); each is a controller and a broker.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Directory for the nodes' data, logs and cluster.json.
        #[arg(long, default_value = "strom-cluster")]
        dir: PathBuf,
        /// Kafka port of node 1.
        #[arg(long, default_value_t = 9092, value_name = "PORT")]
        base_port: u16,
    },
    /// Stop the local cluster started by `strom cluster up` (its data is kept).
    Down {
        /// The directory given to `strom cluster up`.
        #[arg(long, default_value = "strom-cluster")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Append and read throughput of a partition log versus plain write()/read() of a file.
    Log {
        /// Directory to benchmark in (a scratch directory inside it is removed afterwards).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// MiB written per measurement.
        #[arg(long, default_value_t = 512)]
        mib: u64,
        /// Bytes per record value.
        #[arg(long, default_value_t = 1024)]
        record_bytes: usize,
        /// Approximate bytes per batch.
        #[arg(long, default_value_t = 16 * 1024)]
        batch_bytes: usize,
        /// Rounds per measurement (sides alternate; the median round is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Producer, consumer and end-to-end throughput and latency against a cluster.
    #[command(flatten)]
    Client(strom::bench_client::ClientBench),
    /// acks=all on replication factor 3 against acks=1 on replication factor 1, on a local
    /// cluster of `strom server` processes that this command starts and stops.
    Replication(strom::bench_cluster::ReplicationBench),
    /// The Streams API end to end (embedded) against a hand-written loop over the same records.
    Streams(strom::bench_streams::StreamsBench),
    /// Nexmark q0-q8 as continuous Strom SQL (embedded) against DataFusion batch runs.
    Nexmark(strom::bench_nexmark::NexmarkBench),
}

#[derive(Debug, clap::Args)]
struct SqlArgs {
    /// The server's SQL listener.
    #[arg(
        long,
        env = "STROM_SQL_SERVER",
        default_value = "127.0.0.1:5433",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// Run the statements of this file, one at a time.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "command"
    )]
    file: Option<PathBuf>,
    /// Run these statements (sent as one query).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    command: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// TOML configuration file (keys: listen, advertised, node-id, data-dir, num-partitions,
    /// default-replication-factor, auto-create-topics, max-request-size, log-upkeep-interval-ms,
    /// group-min-session-timeout-ms, group-max-session-timeout-ms,
    /// group-initial-rebalance-delay-ms, offsets-topic-partitions, offsets-retention-minutes,
    /// offsets-topic-replication-factor, controller-quorum, process-roles, rack,
    /// broker-session-timeout-ms, broker-heartbeat-interval-ms, replica-lag-time-max-ms,
    /// replica-fetch-wait-max-ms, leader-imbalance-check-interval-ms,
    /// controller-raft-heartbeat-ms, sql-listen, and a [log] table of topic config defaults).
    #[arg(long, env = "STROM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long, env = "STROM_LISTEN", value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Address clients are told to connect to [default: the listen address].
    #[arg(long, env = "STROM_ADVERTISED", value_name = "HOST:PORT")]
    advertised: Option<String>,
    /// This broker's node id [default: 1].
    #[arg(long, env = "STROM_NODE_ID")]
    node_id: Option<i32>,
    /// Data directory [default: ./strom-data].
    #[arg(long, env = "STROM_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Partitions of auto-created topics and of topics created with the default [default: 1].
    #[arg(long, env = "STROM_NUM_PARTITIONS")]
    num_partitions: Option<i32>,
    /// Replication factor for topics created with the default [default: 1].
    #[arg(long, env = "STROM_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<i16>,
    /// auto.create.topics.enable: create unknown topics on metadata requests [default: true].
    #[arg(long, env = "STROM_AUTO_CREATE_TOPICS", value_name = "BOOL")]
    auto_create_topics: Option<bool>,
    /// Largest request accepted, in bytes [default: 104857600].
    #[arg(long, env = "STROM_MAX_REQUEST_SIZE", value_name = "BYTES")]
    max_request_size: Option<usize>,
    /// Default retention.ms of topics (-1: keep forever) [default: 604800000].
    #[arg(long, env = "STROM_RETENTION_MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Default retention.bytes of each partition (-1: no limit) [default: -1].
    #[arg(long, env = "STROM_RETENTION_BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Default segment.bytes [default: 1073741824].
    #[arg(long, env = "STROM_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// Default flush.messages: fsync after this many records [default: never; the OS flushes].
    #[arg(long, env = "STROM_FLUSH_MESSAGES")]
    flush_messages: Option<u64>,
    /// Default flush.ms: fsync at least this often [default: never; the OS flushes].
    #[arg(long, env = "STROM_FLUSH_MS")]
    flush_ms: Option<u64>,
    /// Any other topic config default, Kafka's name (repeatable, or comma-separated in the
    /// environment variable).
    #[arg(
        long = "log-config",
        env = "STROM_LOG_CONFIG",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    log_config: Vec<String>,
    /// The metadata quorum's voters, ID@HOST:PORT,... (Kafka's controller.quorum.voters). This
    /// node's entry is where its controller listens. Without it the server is a single node.
    #[arg(long, env = "STROM_CONTROLLER_QUORUM", value_name = "ID@HOST:PORT,...")]
    controller_quorum: Option<String>,
    /// process.roles: `controller,broker` (combined) or `broker` [default: controller,broker].
    #[arg(long, env = "STROM_PROCESS_ROLES", value_name = "ROLES")]
    process_roles: Option<String>,
    /// broker.rack: replicas of a partition are spread over racks.
    #[arg(long, env = "STROM_RACK")]
    rack: Option<String>,
    /// Address of the SQL listener (PostgreSQL protocol; `strom sql`, psql), or `off`
    /// [default: 127.0.0.1:5433].
    #[arg(long, env = "STROM_SQL_LISTEN", value_name = "HOST:PORT|off")]
    sql_listen: Option<String>,
}

impl ServerArgs {
    fn into_config(self) -> Result<strom_broker::BrokerConfig, String> {
        let mut c = match &self.config {
            Some(path) => strom_broker::BrokerConfig::from_file(path).map_err(|e| e.to_string())?,
            None => strom_broker::BrokerConfig::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.advertised {
            c.advertised = Some(v);
        }
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.num_partitions {
            c.num_partitions = v;
        }
        if let Some(v) = self.default_replication_factor {
            c.default_replication_factor = v;
        }
        if let Some(v) = self.auto_create_topics {
            c.auto_create_topics = v;
        }
        if let Some(v) = self.max_request_size {
            c.max_request_size = v;
        }
        if let Some(v) = self.controller_quorum {
            c.controller_quorum = Some(v);
        }
        if let Some(v) = self.process_roles {
            c.process_roles = v;
        }
        if let Some(v) = self.rack {
            c.rack = Some(v);
        }
        if let Some(v) = self.sql_listen {
            c.sql_listen = v;
        }
        let mut log = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                c.log.insert(k.to_string(), v);
            }
        };
        log("retention.ms", self.retention_ms.map(|v| v.to_string()));
        log(
            "retention.bytes",
            self.retention_bytes.map(|v| v.to_string()),
        );
        log("segment.bytes", self.segment_bytes.map(|v| v.to_string()));
        log("flush.messages", self.flush_messages.map(|v| v.to_string()));
        log("flush.ms", self.flush_ms.map(|v| v.to_string()));
        for kv in self.log_config {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--log-config {kv:?}: expected KEY=VALUE"))?;
            c.log.insert(k.trim().to_string(), v.trim().to_string());
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

fn run_server(args: ServerArgs) -> Result<(), String> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strom")
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let broker = tokio::task::spawn_blocking(move || strom_broker::Broker::open(config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let broker = std::sync::Arc::new(broker);
        broker.start_upkeep();
        let server = strom_broker::Server::bind(broker.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", broker.config().listen))?;
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(
            %addr,
            node_id = broker.config().node_id,
            cluster_id = broker.cluster_id(),
            data_dir = %data_dir.display(),
            "strom broker ready"
        );
        // Bound now, so that a taken port fails the start as the Kafka one does; served once
        // the engine has connected to this broker, which needs the broker serving first.
        let sql_listener = match broker
            .config()
            .sql_listen_addr()
            .map_err(|e| e.to_string())?
        {
            Some(sql_addr) => Some(
                tokio::net::TcpListener::bind(sql_addr)
                    .await
                    .map_err(|e| format!("cannot listen on {sql_addr} (sql-listen): {e}"))?,
            ),
            None => None,
        };
        let (stop_sql, sql_stopping) = tokio::sync::watch::channel(false);
        // In a cluster every node's engine reads the same catalog: they share the queries out.
        // (Named by the node id, which ends the query ids it makes.)
        let shared = broker
            .config()
            .controller_quorum
            .is_some()
            .then(|| broker.config().node_id);
        let sql = sql_listener.map(|listener| {
            tokio::spawn(run_sql(
                listener,
                local_bootstrap(addr),
                shared,
                sql_stopping,
            ))
        });
        server
            .run(async move {
                shutdown_signal().await;
                // The engine commits its queries' progress through the broker: it stops first.
                let _ = stop_sql.send(true);
                if let Some(sql) = sql {
                    let limit = std::time::Duration::from_secs(10);
                    if tokio::time::timeout(limit, sql).await.is_err() {
                        tracing::warn!("strom sql did not stop within 10 s");
                    }
                }
            })
            .await
            .map_err(|e| e.to_string())
    })
}

/// Where the SQL engine finds this broker: its own listener (on loopback if it listens on all
/// addresses).
fn local_bootstrap(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, addr.port()).to_string()
}

/// Starts the SQL engine on this broker (retrying while the cluster is not ready for it), then
/// serves it on `listener` until `stop` turns true, and stops the engine.
async fn run_sql(
    listener: tokio::net::TcpListener,
    bootstrap: String,
    shared: Option<i32>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        // A dropped sender means the server is going away too.
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    let mut delay = std::time::Duration::from_millis(500);
    let engine = loop {
        let mut config = strom_sql::EngineConfig::new(bootstrap.clone());
        if let Some(node) = shared {
            config = config.shared(strom_sql::HostingConfig {
                name: Some(node.to_string()),
                ..Default::default()
            });
        }
        tokio::select! {
            started = strom_sql::Engine::start(config) => match started {
                Ok(engine) => break engine,
                Err(e) => tracing::warn!("strom sql: the engine did not start: {e}; retrying in {delay:?}"),
            },
            () = stopped(stop.clone()) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(stop.clone()) => return,
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    };
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "strom sql ready"),
        Err(_) => tracing::info!("strom sql ready"),
    }
    if let Err(e) = strom_sql::pg::serve(engine.clone(), listener, stopped(stop)).await {
        tracing::error!("strom sql: {e}");
    }
    engine.shutdown().await;
}

fn group_command(what: GroupCommand) -> Result<cli::group::GroupCommand, String> {
    use cli::group::{GroupCommand as G, ResetTo};
    Ok(match what {
        GroupCommand::List => G::List,
        GroupCommand::Describe { group } => G::Describe { group },
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_datetime) {
                (true, ..) => ResetTo::Earliest,
                (_, true, ..) => ResetTo::Latest,
                (_, _, Some(o), _) => ResetTo::Offset(o),
                (_, _, _, Some(t)) => ResetTo::Time(cli::parse_time_ms("--to-datetime", &t)?),
                _ => {
                    return Err(
                        "give one of --to-earliest, --to-latest, --to-offset, --to-datetime".into(),
                    )
                }
            };
            G::ResetOffsets { group, topic, to }
        }
        GroupCommand::Delete { group } => G::Delete { group },
    })
}

fn topic_command(what: TopicCommand) -> cli::topic::TopicCommand {
    use cli::topic::TopicCommand as T;
    match what {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => T::Create {
            name,
            partitions,
            replication_factor,
            configs,
        },
        TopicCommand::List { internal } => T::List { internal },
        TopicCommand::Describe { name } => T::Describe { name },
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => T::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        },
        TopicCommand::Delete { names } => T::Delete { names },
    }
}

fn produce_options(a: ProduceArgs) -> (String, cli::produce::ProduceOptions) {
    (
        a.brokers.brokers,
        cli::produce::ProduceOptions {
            topic: a.topic,
            file: a.file,
            key_separator: a.key_separator,
            headers: a.headers,
            partition: a.partition,
            acks: a.acks,
            compression: a.compression,
            linger_ms: a.linger_ms,
            verbose: a.verbose,
        },
    )
}

fn consume_options(a: ConsumeArgs) -> (String, cli::consume::ConsumeOptions) {
    (
        a.brokers.brokers,
        cli::consume::ConsumeOptions {
            topic: a.topic,
            from: a.from,
            group: a.group,
            count: a.count,
            partition: a.partition,
            format: match a.format {
                OutputFormat::Text => cli::consume::Format::Text,
                OutputFormat::Json => cli::consume::Format::Json,
            },
            print_key: a.print_key,
            timeout_ms: a.timeout_ms,
        },
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client commands print results on stdout; stderr carries only warnings and errors.
    let default_level = match cli.command {
        Command::Server(_) | Command::Bench { .. } => "info",
        _ => "warn",
    };
    // openraft narrates every vote and heartbeat at info, and repeats an unreachable peer's
    // error twice a second; Strom logs what matters (elections, fencing) itself. RUST_LOG with
    // an `openraft` directive shows it all.
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default_level.to_string());
    if !filter.contains("openraft") {
        filter.push_str(",openraft=error,openraft::replication=off");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic is a bug; report it as one line rather than a backtrace on the console.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error (a bug in strom, please report it): {info}");
    }));
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        // Prints its own errors: `ERROR: ...` from the server is not a `strom:` error.
        Command::Sql(a) => {
            return cli::sql::run(cli::sql::SqlOptions {
                server: a.server,
                file: a.file,
                command: a.command,
            })
        }
        Command::Topic { brokers, what } => {
            cli::block_on(cli::topic::run(&brokers.brokers, topic_command(what)))
        }
        Command::Produce(args) => {
            let (brokers, o) = produce_options(args);
            cli::block_on(cli::produce::run(&brokers, o))
        }
        Command::Consume(args) => {
            let (brokers, o) = consume_options(args);
            cli::block_on(cli::consume::run(&brokers, o))
        }
        Command::Group { brokers, what } => {
            group_command(what).and_then(|g| cli::block_on(cli::group::run(&brokers.brokers, g)))
        }
        Command::Cluster { brokers, what } => match what {
            ClusterCommand::Info => cli::block_on(cli::cluster::info(&brokers.brokers)),
            ClusterCommand::Up {
                nodes,
                dir,
                base_port,
            } => cli::block_on(cli::cluster::up(cli::cluster::UpOptions {
                nodes,
                dir,
                base_port,
            })),
            ClusterCommand::Down { dir } => cli::cluster::down(&dir),
        },
        Command::Bench {
            what:
                BenchCommand::Log {
                    dir,
                    mib,
                    record_bytes,
                    batch_bytes,
                    rounds,
                },
        } => strom::bench::LogBench {
            dir,
            total_bytes: mib << 20,
            record_bytes,
            batch_bytes,
            rounds,
        }
        .run()
        .map(|report| print!("{report}"))
        .map_err(|e| e.to_string()),
        Command::Bench {
            what: BenchCommand::Client(b),
        } => cli::block_on(async move { strom::bench_client::run(b).await.map(|_| ()) }),
        Command::Bench {
            what: BenchCommand::Replication(b),
        } => cli::block_on(async move { strom::bench_cluster::run(b).await.map(|_| ()) }),
        Command::Bench {
            what: BenchCommand::Streams(b),
        } => cli::block_on(async move {
            strom::bench_streams::run(b)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        Command::Bench {
            what: BenchCommand::Nexmark(b),
        } => cli::block_on(async move {
            strom::bench_nexmark::run(b)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom: {e}");
            ExitCode::FAILURE
        }
    }
}
