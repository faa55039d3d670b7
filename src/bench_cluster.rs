//! `strom bench replication`: what replication costs a producer, measured against a baseline
//! taken in the same run on the same cluster.
//!
//! ```text
//! strom bench replication [--nodes 3] [--records N | --duration D] [--record-size B] ...
//!
//!   DIR/strom-bench-replication-PID-N/     scratch directory (DIR: --dir, else the system's
//!     cluster.json, node-i/data,             temporary directory), laid out as `strom cluster
//!     node-i/server.log                      up` lays out its directory; removed afterwards
//!
//!   1. start N `strom server` processes on free ports of 127.0.0.1 (the code behind
//!      `strom cluster up`), wait until every broker is registered
//!   2. create bench-rf1 (replication factor 1) and bench-rf3 (replication factor 3,
//!      min.insync.replicas=2), --partitions each; wait until every replica is in sync, then
//!      until one record per partition is acknowledged (warm-up, not measured)
//!   3. (a) baseline: `strom bench produce` with acks=1 to bench-rf1
//!      (b)           `strom bench produce` with acks=all to bench-rf3, same producer settings
//!   4. stop the servers (also on an error or Ctrl-C), print both runs and (b)/(a)
//! ```
//!
//! Both sides produce to the same brokers over the same connections' worth of partitions, so
//! the ratio isolates the replication round trip (followers fetching, the leader waiting for
//! the ISR). As Kafka's clients do, the acks=all producer is idempotent and the acks=1 one is
//! not; everything else (linger.ms, batch.size, compression, producers) is identical. Latency is
//! per record from `send` to its acknowledgement, as `strom bench produce` measures it.
//!
//! When the run fails, the servers' logs are kept (their data is removed) and the error says
//! where. Performance is reported, never asserted: the ratio depends on the machine, and three
//! brokers and the producer share its cores.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use strom_client::admin::{Admin, NewTopic};
use strom_client::config::parse_compression;
use strom_client::{Acks, Producer, ProducerRecord};

use crate::bench_client::{self, thousands, BenchArgs, BenchSummary};
use crate::cli::cluster::{self, Ports};

/// The baseline's topic: replication factor 1, produced to with acks=1.
pub const BASELINE_TOPIC: &str = "bench-rf1";
/// The replicated topic: replication factor 3, min.insync.replicas=2, produced to with acks=all.
pub const REPLICATED_TOPIC: &str = "bench-rf3";
/// Replicas of [`REPLICATED_TOPIC`]'s partitions.
const REPLICATION_FACTOR: i16 = 3;
/// `min.insync.replicas` of [`REPLICATED_TOPIC`].
const MIN_INSYNC_REPLICAS: u32 = 2;
/// Most nodes `strom cluster up` starts.
const MAX_NODES: u32 = 9;
/// How long the new topics may take until every replica is in sync.
const IN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka ports are picked from here: below Linux's ephemeral range (32768 and up), so that the
/// client's own outgoing connections do not take them between the check and the server's bind.
const PORT_RANGE: std::ops::Range<u32> = 20_000..30_000;
/// Base ports tried before giving up.
const PORT_ATTEMPTS: u64 = 64;
/// The error after Ctrl-C or SIGTERM.
const INTERRUPTED: &str = "interrupted";

/// `strom bench replication`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationBench {
    /// Nodes of the local cluster (3 to 9), each a controller and a broker.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Records per run.
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,
    /// Run each side for this long instead of a record count (e.g. 30s).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<humantime::Duration>,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    pub record_size: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// compression.type: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = codec_name)]
    pub compression: String,
    /// linger.ms [default: the client's, 5].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// batch.size in bytes [default: the client's, 16384].
    #[arg(long, value_name = "BYTES")]
    pub batch_size: Option<usize>,
    /// Concurrent producer clients (each with its own connections).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub producers: usize,
    /// Where the scratch directory of the nodes' data and logs goes [default: the system's
    /// temporary directory]; it is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print a machine-readable summary (one JSON object) on stdout and no progress bar.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// A compression name accepted by the producer, normalised.
fn codec_name(s: &str) -> Result<String, String> {
    parse_compression(s).map_err(|e| e.to_string())?;
    Ok(s.trim().to_ascii_lowercase())
}

impl ReplicationBench {
    /// The produce benchmark's settings for one side.
    fn side_args(&self, brokers: &str, topic: &str, acks: Acks) -> Result<BenchArgs, String> {
        Ok(BenchArgs {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            records: self.records,
            duration: self.duration,
            record_size: self.record_size,
            partitions: self.partitions,
            acks,
            compression: parse_compression(&self.compression).map_err(|e| e.to_string())?,
            linger_ms: self.linger_ms,
            batch_size: self.batch_size,
            in_flight: None,
            producers: self.producers,
            json: self.json,
            no_progress: self.no_progress,
        })
    }

    /// Refuses settings that cannot run, before any server is started.
    fn check(&self) -> Result<(), String> {
        if !(3..=MAX_NODES).contains(&self.nodes) {
            return Err(format!(
                "--nodes {}: expected 3 to {MAX_NODES} (the replicated topic has 3 replicas)",
                self.nodes
            ));
        }
        self.side_args("127.0.0.1:1", BASELINE_TOPIC, Acks::Leader)?
            .check()
    }

    fn progress_wanted(&self) -> bool {
        !self.json && !self.no_progress && std::io::stderr().is_terminal()
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Side {
    /// The topic produced to.
    pub topic: String,
    /// `1` or `all`.
    pub acks: String,
    /// Replicas of each partition.
    pub replication_factor: i16,
    /// The topic's `min.insync.replicas`.
    pub min_insync_replicas: u32,
    /// Whether the producer was idempotent (as Kafka's clients: only with acks=all).
    pub idempotence: bool,
    /// Milliseconds until one record per partition was acknowledged, before measuring (see
    /// [`warm_up`]).
    pub warmup_ms: f64,
    /// What `strom bench produce` measured.
    #[serde(flatten)]
    pub result: BenchSummary,
}

impl Side {
    fn label(&self) -> String {
        let mut s = format!("acks={} rf {}", self.acks, self.replication_factor);
        if self.min_insync_replicas > 1 {
            s.push_str(&format!(" min.isr {}", self.min_insync_replicas));
        }
        s
    }
}

/// The result of `strom bench replication`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicationReport {
    /// Nodes of the local cluster.
    pub nodes: u32,
    /// Partitions of each topic.
    pub partitions: i32,
    /// Bytes per record value.
    pub record_size: usize,
    /// Producer clients per side.
    pub producers: usize,
    /// compression.type.
    pub compression: String,
    /// linger.ms of the producers.
    pub linger_ms: u64,
    /// batch.size of the producers.
    pub batch_size: usize,
    /// (a): acks=1 to the topic with replication factor 1.
    pub baseline: Side,
    /// (b): acks=all to the topic with replication factor 3.
    pub replicated: Side,
    /// records/s of (b) over (a); the same for MiB/s, the records being equal in size.
    pub throughput_ratio: f64,
    /// p99 latency of (b) over (a).
    pub p99_ratio: Option<f64>,
}

/// `b / a`, or `None` when `a` is zero.
fn ratio(b: f64, a: f64) -> Option<f64> {
    (a > 0.0).then(|| b / a)
}

impl ReplicationReport {
    fn new(b: &ReplicationBench, baseline: Side, replicated: Side, cfg: (u64, usize)) -> Self {
        let p99 = |s: &Side| s.result.latency_ms.as_ref().map(|l| l.p99);
        let p99_ratio = match (p99(&replicated), p99(&baseline)) {
            (Some(r), Some(a)) => ratio(r, a),
            _ => None,
        };
        ReplicationReport {
            nodes: b.nodes,
            partitions: b.partitions,
            record_size: b.record_size,
            producers: b.producers,
            compression: b.compression.clone(),
            linger_ms: cfg.0,
            batch_size: cfg.1,
            throughput_ratio: ratio(
                replicated.result.records_per_sec,
                baseline.result.records_per_sec,
            )
            .unwrap_or(0.0),
            p99_ratio,
            baseline,
            replicated,
        }
    }
}

impl fmt::Display for ReplicationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replication: {} local nodes, {} partitions, {}-byte records, {} producer{}, \
             linger.ms {}, batch.size {}, compression {}",
            self.nodes,
            self.partitions,
            self.record_size,
            self.producers,
            if self.producers == 1 { "" } else { "s" },
            self.linger_ms,
            self.batch_size,
            self.compression
        )?;
        writeln!(
            f,
            "{:<28} {:>10} {:>11} {:>8} {:>9} {:>9} {:>9}",
            "", "records", "rec/s", "MiB/s", "p50 ms", "p99 ms", "p99.9 ms"
        )?;
        for (tag, side) in [("(a)", &self.baseline), ("(b)", &self.replicated)] {
            let r = &side.result;
            let lat = |pick: fn(&bench_client::Latency) -> f64| {
                r.latency_ms
                    .as_ref()
                    .map_or("-".to_string(), |l| format!("{:.1}", pick(l)))
            };
            writeln!(
                f,
                "{:<28} {:>10} {:>11} {:>8.1} {:>9} {:>9} {:>9}",
                format!("{tag} {}", side.label()),
                r.records,
                thousands(r.records_per_sec),
                r.mib_per_sec,
                lat(|l| l.p50),
                lat(|l| l.p99),
                lat(|l| l.p999)
            )?;
        }
        let (a, b) = (&self.baseline.result, &self.replicated.result);
        let lat_ratio =
            |pick: fn(&bench_client::Latency) -> f64| match (&b.latency_ms, &a.latency_ms) {
                (Some(lb), Some(la)) => {
                    ratio(pick(lb), pick(la)).map_or("-".to_string(), |x| format!("{x:.2}"))
                }
                _ => "-".to_string(),
            };
        write!(
            f,
            "{:<28} {:>10} {:>11.2} {:>8.2} {:>9} {:>9} {:>9}",
            "(b)/(a)",
            "",
            self.throughput_ratio,
            ratio(b.mib_per_sec, a.mib_per_sec).unwrap_or(0.0),
            lat_ratio(|l| l.p50),
            lat_ratio(|l| l.p99),
            lat_ratio(|l| l.p999)
        )
    }
}

/// Runs the benchmark and prints the table (or, with `--json`, one JSON object) on stdout.
/// Errors are one line.
pub async fn run(b: ReplicationBench) -> Result<ReplicationReport, String> {
    b.check()?;
    let scratch = Scratch::create(b.dir.as_deref())?;
    let result = on_cluster(&b, &scratch.path).await;
    // The servers are stopped by now (on_cluster's `Started` is dropped).
    let report = match result {
        Ok(r) => {
            scratch.remove();
            r
        }
        // Ctrl-C is no failure to investigate.
        Err(e) if e == INTERRUPTED => {
            scratch.remove();
            return Err(e);
        }
        Err(e) => return Err(scratch.keep_logs(e)),
    };
    if b.json {
        let json = serde_json::to_string(&report)
            .map_err(|e| format!("internal error (this is a bug): report as JSON: {e}"))?;
        println!("{json}");
    } else {
        println!("{report}");
    }
    Ok(report)
}

/// Starts the cluster in `dir`, measures, and stops the cluster (dropping `Started` kills the
/// servers), whatever happened.
async fn on_cluster(b: &ReplicationBench, dir: &Path) -> Result<ReplicationReport, String> {
    let dir_str = dir.to_str().ok_or_else(|| {
        format!(
            "{}: the scratch directory must be a UTF-8 path",
            dir.display()
        )
    })?;
    let plan = free_plan(b.nodes)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the strom binary: {e}"))?;
    let bootstrap = cluster::bootstrap(&plan);
    let mut started = cluster::Started::default();
    for p in &plan {
        started
            .nodes
            .push(cluster::start_node(&exe, dir_str, p, &plan)?);
    }
    // So that `strom cluster down --dir` can stop the servers should this process be killed.
    let state_path = dir.join(cluster::STATE_FILE);
    cluster::write_state(
        &state_path,
        &cluster::State {
            bootstrap: bootstrap.clone(),
            nodes: started.nodes.iter().map(|n| n.state.clone()).collect(),
        },
    )?;
    started.state_file = Some(state_path);

    let show = b.progress_wanted();
    let outcome = tokio::select! {
        r = async {
            let spinner = spinner(show, format!("starting {} nodes", b.nodes));
            let ready = cluster::wait_ready(&mut started, &bootstrap, &spinner).await;
            spinner.finish_and_clear();
            if let Err(e) = ready {
                let hint = e.log.as_deref().map(cluster::log_hint).unwrap_or_default();
                return Err(format!("{}{hint}", e.reason));
            }
            measure(b, &bootstrap, show).await
        } => r,
        _ = crate::cli::interrupted() => Err(INTERRUPTED.to_string()),
    };
    drop(started);
    outcome
}

/// Creates the topics and runs both sides.
async fn measure(
    b: &ReplicationBench,
    bootstrap: &str,
    show: bool,
) -> Result<ReplicationReport, String> {
    let spinner = spinner(
        show,
        format!("creating topics {BASELINE_TOPIC} and {REPLICATED_TOPIC}"),
    );
    let admin = Admin::connect(bootstrap)
        .await
        .map_err(|e| format!("connecting to {bootstrap}: {e}"))?;
    let min_isr = MIN_INSYNC_REPLICAS.to_string();
    admin
        .create_topics(&[
            NewTopic::new(BASELINE_TOPIC, b.partitions).replication_factor(1),
            NewTopic::new(REPLICATED_TOPIC, b.partitions)
                .replication_factor(REPLICATION_FACTOR)
                .config("min.insync.replicas", min_isr),
        ])
        .await
        .map_err(|e| format!("creating the topics: {e}"))?;
    wait_in_sync(&admin, BASELINE_TOPIC, b.partitions, 1).await?;
    spinner.set_message(format!(
        "waiting for {REPLICATED_TOPIC}'s replicas to be in sync"
    ));
    wait_in_sync(&admin, REPLICATED_TOPIC, b.partitions, REPLICATION_FACTOR).await?;
    let a_args = b.side_args(bootstrap, BASELINE_TOPIC, Acks::Leader)?;
    let b_args = b.side_args(bootstrap, REPLICATED_TOPIC, Acks::All)?;
    spinner.set_message("warm-up: one record per partition of each topic");
    let a_warmup = warm_up(&a_args).await?;
    let b_warmup = warm_up(&b_args).await?;
    spinner.finish_and_clear();

    let a = bench_client::produce_run(&a_args, "(a) acks=1").await?;
    let r = bench_client::produce_run(&b_args, "(b) acks=all").await?;

    let a_cfg = a_args.producer_config();
    let b_cfg = b_args.producer_config();
    let baseline = Side {
        topic: BASELINE_TOPIC.into(),
        acks: "1".into(),
        replication_factor: 1,
        min_insync_replicas: 1,
        idempotence: a_cfg.idempotence,
        warmup_ms: a_warmup,
        result: a,
    };
    let replicated = Side {
        topic: REPLICATED_TOPIC.into(),
        acks: "all".into(),
        replication_factor: REPLICATION_FACTOR,
        min_insync_replicas: MIN_INSYNC_REPLICAS,
        idempotence: b_cfg.idempotence,
        warmup_ms: b_warmup,
        result: r,
    };
    let linger_ms = u64::try_from(a_cfg.linger.as_millis()).unwrap_or(u64::MAX);
    Ok(ReplicationReport::new(
        b,
        baseline,
        replicated,
        (linger_ms, a_cfg.batch_size),
    ))
}

/// Waits until `topic` has `partitions` partitions, each with a leader and `replicas` replicas
/// in sync: acks=all with min.insync.replicas=2 is refused until then.
async fn wait_in_sync(
    admin: &Admin,
    topic: &str,
    partitions: i32,
    replicas: i16,
) -> Result<(), String> {
    let deadline = Instant::now() + IN_SYNC_TIMEOUT;
    let want = usize::try_from(replicas).unwrap_or(0);
    loop {
        let lagging = match admin.describe_topic(topic).await {
            Ok(info) if info.partitions.len() < usize::try_from(partitions).unwrap_or(0) => {
                format!("{} of {partitions} partitions exist", info.partitions.len())
            }
            Ok(info) => match info
                .partitions
                .iter()
                .find(|p| p.leader < 0 || p.isr.len() < want)
            {
                None => return Ok(()),
                Some(p) if p.leader < 0 => format!("partition {} has no leader", p.partition),
                Some(p) => format!(
                    "partition {} has {} of {want} replicas in sync",
                    p.partition,
                    p.isr.len()
                ),
            },
            Err(strom_client::Error::UnknownTopic(_)) => "the topic is not known yet".to_string(),
            Err(e) => return Err(format!("describing topic {topic}: {e}")),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic} not ready after {} s: {lagging}",
                IN_SYNC_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends one record to every partition of `args.topic` with `args`' producer settings and
/// waits for all acknowledgements; returns how long that took, in milliseconds.
///
/// Every replica counts as in sync from the moment a topic is created, before the followers
/// have fetched anything: the first acks=all records wait for the followers' fetchers to start,
/// and without this those hundreds of milliseconds would land in the measured latency.
async fn warm_up(args: &BenchArgs) -> Result<f64, String> {
    let start = Instant::now();
    let producer = Producer::new(args.producer_config())
        .await
        .map_err(|e| format!("starting a producer for {}: {e}", args.brokers))?;
    let mut acks = Vec::new();
    for p in 0..args.partitions {
        let record = ProducerRecord::new(args.topic.clone(), &b"warm-up"[..]).partition(p);
        acks.push(
            producer
                .send(record)
                .await
                .map_err(|e| format!("warming up {}: {e}", args.topic))?,
        );
    }
    for (p, ack) in acks.into_iter().enumerate() {
        ack.await
            .map_err(|e| format!("warming up {} partition {p}: {e}", args.topic))?;
    }
    producer
        .close()
        .await
        .map_err(|e| format!("closing the warm-up producer: {e}"))?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// A spinner on stderr with `msg`, or a hidden one.
fn spinner(show: bool, msg: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        spinner.set_style(style);
    }
    spinner.set_message(msg);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// The `attempt`-th base port to try for `nodes` nodes: node i's Kafka port is
/// `base + 100 * (i - 1)` and its controller port the one after, all inside [`PORT_RANGE`].
fn candidate_base(seed: u64, attempt: u64, nodes: u32) -> u16 {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start - 100 * nodes);
    let offset = seed.wrapping_add(attempt.wrapping_mul(7919)) % span;
    // Within PORT_RANGE, which fits in u16.
    u16::try_from(u64::from(PORT_RANGE.start) + offset).unwrap_or(u16::MAX)
}

/// A port plan for `nodes` nodes whose ports are all free on 127.0.0.1 now.
fn free_plan(nodes: u32) -> Result<Vec<Ports>, String> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into())
        ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9);
    for attempt in 0..PORT_ATTEMPTS {
        let plan = cluster::plan(nodes, candidate_base(seed, attempt, nodes))?;
        let free = plan.iter().all(|p| {
            cluster::check_free(p.kafka, "").is_ok()
                && cluster::check_free(p.controller, "").is_ok()
        });
        if free {
            return Ok(plan);
        }
    }
    Err(format!(
        "found no free ports for {nodes} nodes in {}..{} on 127.0.0.1 ({PORT_ATTEMPTS} tries)",
        PORT_RANGE.start, PORT_RANGE.end
    ))
}

/// The scratch directory of one run.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// `PARENT/strom-bench-replication-PID-N`, PARENT being `parent` or the temporary directory.
    fn create(parent: Option<&Path>) -> Result<Scratch, String> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let shown = parent.display().to_string();
        std::fs::create_dir_all(&parent).map_err(|e| format!("creating {shown}: {e}"))?;
        let parent = std::path::absolute(&parent).map_err(|e| format!("{shown}: {e}"))?;
        let pid = std::process::id();
        for n in 0..1000 {
            let path = parent.join(format!("strom-bench-replication-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Scratch { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
        }
        Err(format!(
            "{shown} already holds 1000 scratch directories of process {pid}; remove them"
        ))
    }

    fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }

    /// After a failure: removes the nodes' data, keeps their logs, and adds where to `error`.
    fn keep_logs(self, error: String) -> String {
        let mut logs = false;
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for node in entries.flatten() {
                let _ = std::fs::remove_dir_all(node.path().join("data"));
                logs |= node.path().join("server.log").exists();
            }
        }
        if logs {
            format!(
                "{error} (server logs kept in {}/node-N/server.log)",
                self.path.display()
            )
        } else {
            self.remove();
            error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_client::Latency;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: ReplicationBench,
    }

    #[test]
    fn flags_parse_and_both_sides_share_the_producer_settings() {
        let b = Cli::try_parse_from(["strom"]).unwrap().bench;
        assert_eq!((b.nodes, b.records, b.record_size), (3, 300_000, 1024));
        assert_eq!(b.partitions, 6);
        b.check().unwrap();

        let b = Cli::try_parse_from([
            "strom",
            "--nodes",
            "4",
            "--duration",
            "2s",
            "--compression",
            "LZ4",
            "--linger-ms",
            "10",
            "--batch-size",
            "65536",
            "--json",
        ])
        .unwrap()
        .bench;
        assert_eq!(b.compression, "lz4");
        let a = b.side_args("h:1", BASELINE_TOPIC, Acks::Leader).unwrap();
        let r = b.side_args("h:1", REPLICATED_TOPIC, Acks::All).unwrap();
        let (ca, cr) = (a.producer_config(), r.producer_config());
        assert_eq!((ca.linger, ca.batch_size), (cr.linger, cr.batch_size));
        assert_eq!(ca.linger, Duration::from_millis(10));
        assert_eq!(ca.batch_size, 65536);
        assert_eq!(ca.compression, cr.compression);
        assert_eq!((ca.acks, cr.acks), (Acks::Leader, Acks::All));
        assert!(!ca.idempotence && cr.idempotence);
        assert_eq!(a.duration, r.duration);

        assert!(Cli::try_parse_from(["strom", "--compression", "brotli"]).is_err());
        for nodes in ["1", "2", "10"] {
            let b = Cli::try_parse_from(["strom", "--nodes", nodes])
                .unwrap()
                .bench;
            assert!(b.check().unwrap_err().starts_with("--nodes"), "{nodes}");
        }
        let b = Cli::try_parse_from(["strom", "--partitions", "0"])
            .unwrap()
            .bench;
        assert!(b.check().is_err());
    }

    #[test]
    fn candidate_ports_stay_in_range_for_every_node() {
        for nodes in 3..=MAX_NODES {
            for seed in [0, 1, 7, u64::MAX, 0x1234_5678_9abc] {
                for attempt in 0..PORT_ATTEMPTS {
                    let base = candidate_base(seed, attempt, nodes);
                    let plan = cluster::plan(nodes, base).unwrap();
                    assert!(u32::from(plan[0].kafka) >= PORT_RANGE.start);
                    let last = plan.last().unwrap();
                    assert!(
                        u32::from(last.controller) < PORT_RANGE.end,
                        "{base} {nodes}"
                    );
                }
            }
        }
        assert_ne!(candidate_base(5, 0, 3), candidate_base(5, 1, 3));
    }

    fn side(acks: &str, rf: i16, min_isr: u32, rps: f64, p99: f64) -> Side {
        Side {
            topic: format!("bench-rf{rf}"),
            acks: acks.into(),
            replication_factor: rf,
            min_insync_replicas: min_isr,
            idempotence: acks == "all",
            warmup_ms: 1.0,
            result: BenchSummary {
                mode: "produce".into(),
                records: 1000,
                bytes: 1000 * 1024,
                seconds: 1000.0 / rps,
                records_per_sec: rps,
                mib_per_sec: rps * 1024.0 / (1024.0 * 1024.0),
                latency_ms: Some(Latency {
                    p50: p99 / 4.0,
                    p99,
                    p999: p99 * 2.0,
                    max: p99 * 3.0,
                }),
            },
        }
    }

    #[test]
    fn report_gives_the_ratios_of_b_over_a() {
        let b = Cli::try_parse_from(["strom"]).unwrap().bench;
        let r = ReplicationReport::new(
            &b,
            side("1", 1, 1, 200_000.0, 4.0),
            side("all", 3, 2, 50_000.0, 10.0),
            (5, 16384),
        );
        assert_eq!(r.throughput_ratio, 0.25);
        assert_eq!(r.p99_ratio, Some(2.5));
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].contains("3 local nodes, 6 partitions, 1024-byte records"));
        assert!(lines[2].starts_with("(a) acks=1 rf 1 "), "{text}");
        assert!(lines[2].contains("200,000"), "{text}");
        assert!(
            lines[3].starts_with("(b) acks=all rf 3 min.isr 2"),
            "{text}"
        );
        assert!(lines[3].contains("50,000"), "{text}");
        let ratios: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(ratios, ["(b)/(a)", "0.25", "0.25", "2.50", "2.50", "2.50"]);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["throughput_ratio"], 0.25);
        assert_eq!(json["replicated"]["acks"], "all");
        assert_eq!(json["replicated"]["min_insync_replicas"], 2);
        assert_eq!(json["baseline"]["records_per_sec"], 200_000.0);
        assert_eq!(json["baseline"]["latency_ms"]["p99"], 4.0);
    }

    #[test]
    fn scratch_keeps_only_logs_after_a_failure() {
        let parent = tempfile::tempdir().unwrap();
        let s = Scratch::create(Some(parent.path())).unwrap();
        let path = s.path.clone();
        let node = path.join("node-1");
        std::fs::create_dir_all(node.join("data")).unwrap();
        std::fs::write(node.join("server.log"), "boom\n").unwrap();
        let e = s.keep_logs("it failed".into());
        assert_eq!(
            e,
            format!(
                "it failed (server logs kept in {}/node-N/server.log)",
                path.display()
            )
        );
        assert!(node.join("server.log").exists());
        assert!(!node.join("data").exists());

        let s = Scratch::create(Some(parent.path())).unwrap();
        assert_ne!(s.path, path);
        let second = s.path.clone();
        assert_eq!(s.keep_logs("early".into()), "early");
        assert!(!second.exists());
    }
}
