//! Three `strom server` child processes forming one cluster: every node is a combined Raft
//! controller and broker, so tests can `kill -9` a partition leader or a group coordinator and
//! watch the survivors take over.
//!
//! ```text
//!   dir/
//!     cluster.toml         shared config: short session, heartbeat, ISR-lag and imbalance timers
//!     node-1/data/         --data-dir of node 1 (kept across kill9/restart)
//!     node-1.log           its stdout and stderr, appended to across restarts (RUST_LOG=warn)
//!     node-2/ ... node-3/
//! ```
//!
//! Each node is started as
//! `strom server --node-id N --listen 127.0.0.1:KPORT --data-dir DIR --controller-quorum
//! 1@127.0.0.1:C1,2@127.0.0.1:C2,3@127.0.0.1:C3 --config FILE`; a restarted node gets the same
//! id, ports and data directory. Node output goes to a log file instead of the test's output;
//! every panic here names that file and shows its tail. Dropping the cluster kills every node.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use strom::client::cluster::{Cluster, PartitionInfo};
use strom::client::{Admin, ClientConfig, NewTopic};

use super::{free_port, strom_bin};

/// Node ids of the cluster's members.
pub const NODE_IDS: [i32; 3] = [1, 2, 3];

/// How long `start` waits for all three nodes to listen and register.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a restarted node may take to listen again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// How long metadata lookups retry while a partition has no leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// The cluster settings every test runs with: failures are detected in about 1.5 s instead of
/// Kafka's 9 s, so a failover test fits in seconds.
const CLUSTER_TOML: &str = "\
broker-session-timeout-ms = 1500
broker-heartbeat-interval-ms = 250
replica-lag-time-max-ms = 2000
leader-imbalance-check-interval-ms = 1000
default-replication-factor = 3
offsets-topic-replication-factor = 3
offsets-topic-partitions = 3
group-initial-rebalance-delay-ms = 0
";

/// One member of the cluster.
struct Node {
    id: i32,
    kafka_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// How many times it was started (1 after `start`).
    starts: u32,
    /// Runs with `--process-roles broker` (not a voter of the metadata quorum).
    broker_only: bool,
    child: Option<Child>,
}

impl Node {
    fn kafka_addr(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }
}

/// Three `strom server` processes: one cluster with a three-voter controller quorum.
pub struct TestCluster {
    dir: PathBuf,
    config: PathBuf,
    quorum: String,
    nodes: Vec<Node>,
}

impl TestCluster {
    /// Starts nodes 1, 2 and 3 with data under `dir`; returns once every Kafka port accepts
    /// connections and DescribeCluster lists all three brokers (30 s at most).
    pub async fn start(dir: &Path) -> TestCluster {
        let config = dir.join("cluster.toml");
        std::fs::write(&config, CLUSTER_TOML).unwrap();
        let ports: Vec<(i32, u16, u16)> = NODE_IDS
            .iter()
            .map(|&id| (id, free_port(), free_port()))
            .collect();
        let quorum = ports
            .iter()
            .map(|(id, _, c)| format!("{id}@127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .map(|&(id, kafka_port, _)| {
                let data_dir = dir.join(format!("node-{id}")).join("data");
                std::fs::create_dir_all(&data_dir).unwrap();
                Node {
                    id,
                    kafka_port,
                    data_dir,
                    log: dir.join(format!("node-{id}.log")),
                    starts: 0,
                    broker_only: false,
                    child: None,
                }
            })
            .collect();
        let mut cluster = TestCluster {
            dir: dir.to_path_buf(),
            config,
            quorum,
            nodes,
        };
        for id in NODE_IDS {
            cluster.spawn(id);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for id in NODE_IDS {
            cluster.wait_listening(id, deadline).await;
        }
        cluster.wait_registered(deadline).await;
        cluster
    }

    /// Adds node `id` as a broker only (`--process-roles broker`: it registers with the
    /// quorum but does not vote) and waits until it is listed as a broker.
    pub async fn add_broker_only(&mut self, id: i32) {
        let data_dir = self.dir.join(format!("node-{id}")).join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        self.nodes.push(Node {
            id,
            kafka_port: free_port(),
            data_dir,
            log: self.dir.join(format!("node-{id}.log")),
            starts: 0,
            broker_only: true,
            child: None,
        });
        self.spawn(id);
        let deadline = Instant::now() + START_TIMEOUT;
        self.wait_listening(id, deadline).await;
        loop {
            let listed = match self.admin().await {
                Ok(a) => a
                    .describe_cluster()
                    .await
                    .is_ok_and(|c| c.brokers.iter().any(|b| b.id == id)),
                Err(_) => false,
            };
            if listed {
                return;
            }
            self.assert_running(id, "waiting for it to register");
            assert!(
                Instant::now() < deadline,
                "broker-only node {id} not registered in time\n{}",
                self.log_report(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster (ids are {NODE_IDS:?})"))
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster (ids are {NODE_IDS:?})"))
    }

    /// Launches node `id` (which must not be running), output appended to its log file.
    fn spawn(&mut self, id: i32) {
        let config = self.config.clone();
        let quorum = self.quorum.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        writeln!(
            log,
            "===== test harness: start #{} of node {id} =====",
            node.starts
        )
        .unwrap();
        let stdout = log.try_clone().unwrap();
        let roles: &[&str] = if node.broker_only {
            &["--process-roles", "broker"]
        } else {
            &[]
        };
        let child = Command::new(strom_bin())
            .arg("server")
            .args(roles)
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &node.kafka_addr()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--controller-quorum", &quorum])
            .env("STROM_SQL_LISTEN", "off")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", strom_bin().display()));
        node.child = Some(child);
    }

    /// Panics (with the log) if node `id` has exited.
    fn assert_running(&mut self, id: i32, doing: &str) {
        let node = self.node_mut(id);
        if let Some(child) = node.child.as_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                node.child = None;
                let report = self.log_report(id);
                panic!("node {id} exited with {status} while {doing}\n{report}");
            }
        }
    }

    /// Waits until node `id` accepts TCP connections on its Kafka port.
    async fn wait_listening(&mut self, id: i32, deadline: Instant) {
        let addr = self.node(id).kafka_addr();
        loop {
            self.assert_running(id, &format!("waiting for it to listen on {addr}"));
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {id} did not listen on {addr} in time\n{}",
                    self.log_report(id)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until DescribeCluster lists all three brokers.
    async fn wait_registered(&mut self, deadline: Instant) {
        loop {
            for id in NODE_IDS {
                self.assert_running(id, "waiting for the brokers to register");
            }
            let last = match self.admin().await {
                Ok(admin) => match admin.describe_cluster().await {
                    Ok(d) => {
                        let ids: Vec<i32> = d.brokers.iter().map(|b| b.id).collect();
                        if ids == NODE_IDS {
                            return;
                        }
                        format!("brokers {ids:?}, controller {}", d.controller)
                    }
                    Err(e) => format!("describe cluster: {e}"),
                },
                Err(e) => format!("connect: {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "the cluster did not list brokers {NODE_IDS:?} within {START_TIMEOUT:?} \
                     (last: {last})\n{}",
                    self.all_logs_report()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `host:port` of every node, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(Node::kafka_addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port` of node `id`'s Kafka listener.
    pub fn addr(&self, id: i32) -> String {
        self.node(id).kafka_addr()
    }

    /// The node listening on `addr` (`host:port`), if it is one of ours.
    pub fn node_at(&self, addr: &str) -> Option<i32> {
        let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
        self.nodes
            .iter()
            .find(|n| n.kafka_port == port)
            .map(|n| n.id)
    }

    /// Ids of the nodes whose process is running.
    pub fn running(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Path of node `id`'s log file.
    pub fn log_path(&self, id: i32) -> PathBuf {
        self.node(id).log.clone()
    }

    /// A new admin client bootstrapped from every node (a fresh one per call, so no connection
    /// to a killed node is reused).
    pub async fn admin(&self) -> strom::client::Result<Admin> {
        let mut config = ClientConfig::new(&self.bootstrap());
        config.request_timeout = Duration::from_secs(5);
        config.connect_timeout = Duration::from_secs(2);
        Admin::new(config).await
    }

    /// Creates `name` with `partitions` partitions, replication factor 3 and `configs`, then
    /// waits (15 s at most) until every partition has a leader and all three replicas in its
    /// ISR. Retriable refusals (no controller yet) are retried for 15 s.
    pub async fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut topic = NewTopic::new(name, partitions).replication_factor(3);
        for (k, v) in configs {
            topic = topic.config(*k, *v);
        }
        let deadline = Instant::now() + LEADER_TIMEOUT;
        let mut retried = false;
        loop {
            let result = match self.admin().await {
                Ok(admin) => admin.create_topics(std::slice::from_ref(&topic)).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                // An earlier attempt got through although its answer was lost.
                Err(e) if retried && e.code() == Some(ResponseError::TopicAlreadyExists) => break,
                Err(e) if e.is_retriable() && Instant::now() < deadline => retried = true,
                Err(e) => panic!(
                    "creating topic {name} (RF 3, {partitions} partitions, {configs:?}): {e}\n{}",
                    self.all_logs_report()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for p in 0..partitions {
            self.wait_for_isr(name, p, 3, LEADER_TIMEOUT).await;
        }
    }

    /// SIGKILL node `id` and reap it: no shutdown code runs.
    pub fn kill9(&mut self, id: i32) {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("kill9({id}): node {id} is not running"));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM node `id` and wait (30 s at most) for it to exit cleanly.
    pub async fn terminate(&mut self, id: i32) {
        let pid = {
            let node = self.node(id);
            let child = node
                .child
                .as_ref()
                .unwrap_or_else(|| panic!("terminate({id}): node {id} is not running"));
            child.id().to_string()
        };
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success(), "kill -TERM {pid} (node {id}) failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .node_mut(id)
                .child
                .as_mut()
                .and_then(|c| c.try_wait().unwrap());
            if let Some(status) = status {
                self.node_mut(id).child = None;
                assert!(
                    status.success(),
                    "node {id} exited with {status} after SIGTERM\n{}",
                    self.log_report(id)
                );
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {id} did not exit within 30 s of SIGTERM\n{}",
                    self.log_report(id)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts node `id` again (same id, ports and data directory) and waits until its Kafka port
    /// accepts connections. Whether it has caught up is for [`TestCluster::wait_for_isr`].
    pub async fn restart(&mut self, id: i32) {
        self.spawn(id);
        self.wait_listening(id, Instant::now() + RESTART_TIMEOUT)
            .await;
    }

    /// The partition as the metadata describes it now, or why that is unknown (no node
    /// answered, the topic or partition does not exist).
    pub async fn describe(&self, topic: &str, partition: i32) -> Result<PartitionInfo, String> {
        let admin = self.admin().await.map_err(|e| format!("connect: {e}"))?;
        let info = admin
            .describe_topic(topic)
            .await
            .map_err(|e| format!("describe topic {topic}: {e}"))?;
        info.partitions
            .iter()
            .find(|p| p.partition == partition)
            .cloned()
            .ok_or_else(|| format!("{topic} has no partition {partition}: {info:?}"))
    }

    /// The leader of `topic`/`partition`, retrying (15 s at most) while it is -1.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        self.wait_for_leader(topic, partition, |_| true, LEADER_TIMEOUT)
            .await
    }

    /// Waits until the metadata names a leader of `topic`/`partition` other than `old` (after
    /// `old` was killed: the controller fenced it and elected a replica from the ISR).
    pub async fn wait_for_new_leader(
        &self,
        topic: &str,
        partition: i32,
        old: i32,
        timeout: Duration,
    ) -> i32 {
        self.wait_for_leader(topic, partition, |l| l != old, timeout)
            .await
    }

    async fn wait_for_leader(
        &self,
        topic: &str,
        partition: i32,
        accept: impl Fn(i32) -> bool,
        timeout: Duration,
    ) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.describe(topic, partition).await {
                Ok(p) if p.leader >= 0 && accept(p.leader) => return p.leader,
                Ok(p) => format!("{p:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "{topic}-{partition}: no acceptable leader within {timeout:?}; last \
                     metadata: {last}; running nodes {:?}\n{}",
                    self.running(),
                    self.all_logs_report()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `topic`/`partition` has a leader and exactly `n` replicas in its ISR; returns
    /// the partition's metadata at that point.
    pub async fn wait_for_isr(
        &self,
        topic: &str,
        partition: i32,
        n: usize,
        timeout: Duration,
    ) -> PartitionInfo {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.describe(topic, partition).await {
                Ok(p) if p.leader >= 0 && p.isr.len() == n => return p,
                Ok(p) => format!("{p:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "{topic}-{partition}: ISR did not reach {n} replicas within {timeout:?}; \
                     last metadata: {last}; running nodes {:?}\n{}",
                    self.running(),
                    self.all_logs_report()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node coordinating `group` (FindCoordinator, retried 15 s at most while no
    /// coordinator is available).
    pub async fn coordinator_of(&self, group: &str) -> i32 {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let mut config = ClientConfig::new(&self.bootstrap());
            config.request_timeout = Duration::from_secs(5);
            config.connect_timeout = Duration::from_secs(2);
            let cluster = Cluster::new(config, false).unwrap();
            let last = match cluster.coordinator(group).await {
                Ok(conn) => match self.node_at(conn.addr()) {
                    Some(id) => return id,
                    None => format!("coordinator at unknown address {}", conn.addr()),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "no coordinator for group {group} within {LEADER_TIMEOUT:?} (last: {last})\n{}",
                    self.all_logs_report()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of node `id`'s log, with the file's path, for panic messages.
    pub fn log_report(&self, id: i32) -> String {
        let path = &self.node(id).log;
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- last lines of node {id}'s log {} ---\n{tail}\n--- end of node {id}'s log ---",
            path.display()
        )
    }

    /// [`TestCluster::log_report`] of every node.
    pub fn all_logs_report(&self) -> String {
        NODE_IDS
            .iter()
            .map(|&id| self.log_report(id))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Keep the node logs of a failed test where a person can read them: the temporary
        // directory is about to be removed.
        if std::thread::panicking() {
            for node in &self.nodes {
                if let Ok(text) = std::fs::read_to_string(&node.log) {
                    let run = self.dir.file_name().unwrap_or_default().to_string_lossy();
                    let keep = std::env::temp_dir().join(format!("{run}-node-{}.log", node.id));
                    if File::create(&keep)
                        .and_then(|mut f| f.write_all(text.as_bytes()))
                        .is_ok()
                    {
                        eprintln!("node {} log kept at {}", node.id, keep.display());
                    }
                }
            }
        }
    }
}
