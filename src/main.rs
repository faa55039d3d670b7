//! The `strom` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Inspect and manage consumer groups on any Kafka-protocol cluster.
    Group {
        /// Brokers to bootstrap from.
        #[arg(
            long,
            env = "STROM_BROKERS",
            default_value = "localhost:9092",
            global = true
        )]
        brokers: String,
        #[command(subcommand)]
        what: GroupCommand,
    },
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
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// TOML configuration file (keys: listen, advertised, node-id, data-dir, num-partitions,
    /// default-replication-factor, auto-create-topics, max-request-size, log-upkeep-interval-ms,
    /// group-min-session-timeout-ms, group-max-session-timeout-ms,
    /// group-initial-rebalance-delay-ms, offsets-topic-partitions, offsets-retention-minutes,
    /// and a [log] table of topic config defaults).
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
        server
            .run(shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

fn run_group(brokers: &str, what: GroupCommand) -> Result<(), String> {
    use strom::admin::{Admin, ResetTo};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut admin = Admin::connect(brokers).await.map_err(|e| e.to_string())?;
        match what {
            GroupCommand::List => {
                for (group, state, protocol) in
                    admin.list_groups().await.map_err(|e| e.to_string())?
                {
                    println!("{group}\t{state}\t{protocol}");
                }
            }
            GroupCommand::Describe { group } => {
                print!(
                    "{}",
                    admin
                        .describe_group(&group)
                        .await
                        .map_err(|e| e.to_string())?
                );
            }
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
                    (_, _, _, Some(t)) => {
                        let at = humantime::parse_rfc3339_weak(&t).map_err(|e| {
                            format!("--to-datetime {t:?}: {e} (expected e.g. 2026-01-31T12:00:00Z)")
                        })?;
                        let ms = at
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_err(|_| format!("--to-datetime {t:?} is before 1970"))?
                            .as_millis() as i64;
                        ResetTo::Time(ms)
                    }
                    _ => {
                        return Err(
                            "give one of --to-earliest, --to-latest, --to-offset, --to-datetime"
                                .into(),
                        )
                    }
                };
                for (p, o) in admin
                    .reset_offsets(&group, &topic, &to)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    println!("{topic}\t{p}\t{o}");
                }
            }
            GroupCommand::Delete { group } => {
                admin
                    .delete_group(&group)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("deleted group {group}");
            }
        }
        Ok(())
    })
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic is a bug; report it as one line rather than a backtrace on the console.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("internal error (a bug in strom, please report it): {info}");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Group { brokers, what } => run_group(&brokers, what),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom: {e}");
            ExitCode::FAILURE
        }
    }
}
