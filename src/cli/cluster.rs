//! `strom cluster info`, and `strom cluster up` / `down`: a local cluster of `strom server`
//! processes on 127.0.0.1, to try replication and failover on one machine without Docker.
//!
//! ```text
//! strom cluster up --nodes 3 [--dir DIR] [--base-port 9092]     (DIR defaults to ./strom-cluster)
//!
//!   DIR/cluster.json          ids, pids and addresses: what `down` (and a second `up`) reads
//!   DIR/node-1/data/          strom server --node-id 1 --listen 127.0.0.1:9092, controller :9093
//!   DIR/node-1/server.log     its stdout and stderr, appended across runs
//!   DIR/node-2/...            Kafka 127.0.0.1:9192, controller :9193
//!   DIR/node-3/...            Kafka 127.0.0.1:9292, controller :9293
//! ```
//!
//! Every node is a combined controller and broker. `up` returns once every broker accepts
//! connections and the cluster reports all of them, printing `bootstrap.servers=...` as the
//! only line on stdout. The servers run in process groups of their own, so they outlive `up`
//! and a Ctrl-C in its terminal; `down` stops them with SIGTERM and keeps their data, so a
//! later `up` on the same directory restarts the same cluster.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use strom_client::Admin;

use super::{msg, Result};

/// Prints the cluster id, the controller and every broker (id, address, rack).
pub async fn info(brokers: &str) -> Result<()> {
    let admin = Admin::connect(brokers).await.map_err(msg)?;
    let c = admin.describe_cluster().await.map_err(msg)?;
    println!(
        "cluster id: {}",
        c.cluster_id.as_deref().unwrap_or("(none)")
    );
    println!("controller: {}", c.controller);
    println!("{:<8} {:<30} rack", "broker", "address");
    for b in &c.brokers {
        println!(
            "{:<8} {:<30} {}",
            b.id,
            b.addr,
            b.rack.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// The host every node of a local cluster listens on.
const HOST: &str = "127.0.0.1";
/// Ports are `base + 100 * (i - 1)`, so ten nodes would collide with node 1 of a neighbouring
/// plan; nine is plenty on one machine.
const MAX_NODES: u32 = 9;
/// The file in DIR describing the running cluster.
pub(crate) const STATE_FILE: &str = "cluster.json";
/// How long `up` waits for every broker.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts the line `up` writes into a node's server.log before starting it.
const LOG_HEADER: &str = "=== strom cluster up";

/// What `strom cluster up` starts.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes, 1 to 9.
    pub nodes: u32,
    /// Directory of the nodes' data and logs, and of cluster.json.
    pub dir: PathBuf,
    /// Kafka port of node 1; node i uses `base_port + 100 * (i - 1)` and the two ports after it.
    pub base_port: u16,
}

/// Starts `o.nodes` servers, waits until the cluster reports all of them and prints the
/// `bootstrap.servers=` line. On any failure the servers started so far are killed.
pub async fn up(o: UpOptions) -> Result<()> {
    let plan = plan(o.nodes, o.base_port)?;
    let shown = o.dir.display().to_string();
    let dir = std::path::absolute(&o.dir).map_err(|e| format!("{shown}: {e}"))?;
    let dir_str = dir
        .to_str()
        .ok_or_else(|| format!("{shown}: the cluster directory must be a UTF-8 path"))?;
    if let Some(old) = read_state(&dir, &shown)? {
        if old.nodes.iter().any(is_running) {
            return Err(format!(
                "a cluster is already running in {shown}; run `strom cluster down --dir {shown}` first"
            ));
        }
    }
    for p in &plan {
        check_free(p.kafka, &format!("node {}'s Kafka listener", p.id))?;
        check_free(
            p.controller,
            &format!("node {}'s controller listener", p.id),
        )?;
        if let Some(port) = sql_port(p) {
            check_free(port, &format!("node {}'s SQL listener", p.id))?;
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the strom binary: {e}"))?;
    let bootstrap = bootstrap(&plan);

    let mut started = Started::default();
    for p in &plan {
        let node = start_node(&exe, dir_str, p, &plan)?;
        started.nodes.push(node);
    }
    let state = State {
        bootstrap: bootstrap.clone(),
        nodes: started.nodes.iter().map(|n| n.state.clone()).collect(),
    };
    // Written before waiting, so that `down` can stop the servers even if this command is
    // killed while it waits.
    let state_path = dir.join(STATE_FILE);
    write_state(&state_path, &state)?;
    started.state_file = Some(state_path);

    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        spinner.set_style(style);
    }
    spinner.set_message(format!("starting {}", count_nodes(plan.len())));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let ready = tokio::select! {
        r = wait_ready(&mut started, &bootstrap, &spinner) => r,
        _ = super::interrupted() => Err(NotReady { reason: "interrupted".into(), log: None }),
    };
    spinner.finish_and_clear();
    if let Err(e) = ready {
        // Dropping `started` kills the servers and removes cluster.json.
        let hint = e.log.as_deref().map(log_hint).unwrap_or_default();
        return Err(format!("{}; stopped all nodes{hint}", e.reason));
    }
    started.keep();

    println!("bootstrap.servers={bootstrap}");
    let sql: Vec<String> = plan
        .iter()
        .filter_map(sql_port)
        .map(|port| format!("{HOST}:{port}"))
        .collect();
    eprintln!(
        "SQL (psql -h 127.0.0.1 -p PORT, or strom sql --server ADDR) on {}",
        sql.join(", ")
    );
    eprintln!(
        "{} running; data and server.log of node N in {shown}/node-N/",
        count_nodes(plan.len())
    );
    eprintln!("stop them with: strom cluster down --dir {shown}");
    Ok(())
}

/// Stops the cluster described by DIR/cluster.json: SIGTERM, then SIGKILL for a node still
/// running after 30 s. The data stays; cluster.json is removed.
pub fn down(dir: &Path) -> Result<()> {
    stop(dir, STOP_TIMEOUT)
}

fn stop(dir: &Path, timeout: Duration) -> Result<()> {
    let shown = dir.display().to_string();
    let Some(state) = read_state(dir, &shown)? else {
        return Err(format!("no cluster in {shown}"));
    };
    let mut stopping = Vec::new();
    for node in &state.nodes {
        if !is_running(node) {
            println!("node {} (pid {}) was not running", node.id, node.pid);
            continue;
        }
        match kill(node.pid, libc::SIGTERM) {
            Ok(()) => stopping.push(node),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                println!("node {} (pid {}) was not running", node.id, node.pid)
            }
            Err(e) => return Err(format!("stopping node {} (pid {}): {e}", node.id, node.pid)),
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        stopping.retain(|node| {
            let running = is_running(node);
            if !running {
                println!("stopped node {} (pid {})", node.id, node.pid);
            }
            running
        });
        if stopping.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for node in &stopping {
                // It may have exited just now; then there is nothing left to kill.
                let _ = kill(node.pid, libc::SIGKILL);
            }
            // SIGKILL is not ignorable: wait briefly so that the ports are free on return.
            let killed_by = Instant::now() + Duration::from_secs(5);
            while stopping.iter().any(|n| is_running(n)) && Instant::now() < killed_by {
                std::thread::sleep(Duration::from_millis(50));
            }
            for node in &stopping {
                println!(
                    "killed node {} (pid {}): still running {} s after SIGTERM",
                    node.id,
                    node.pid,
                    timeout.as_secs()
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = dir.join(STATE_FILE);
    fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))
}

/// The ports of one node of a local cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    pub(crate) id: u32,
    pub(crate) kafka: u16,
    pub(crate) controller: u16,
}

/// Node i (from 1) gets Kafka port `base + 100 * (i - 1)` and the controller port after it.
pub(crate) fn plan(nodes: u32, base_port: u16) -> Result<Vec<Ports>> {
    if !(1..=MAX_NODES).contains(&nodes) {
        return Err(format!("--nodes {nodes}: expected 1 to {MAX_NODES}"));
    }
    if base_port == 0 {
        return Err("--base-port 0: expected a port from 1 to 65535".to_string());
    }
    (1..=nodes)
        .map(|id| {
            let kafka = u32::from(base_port) + 100 * (id - 1);
            match (u16::try_from(kafka), u16::try_from(kafka + 1)) {
                (Ok(kafka), Ok(controller)) => Ok(Ports {
                    id,
                    kafka,
                    controller,
                }),
                _ => Err(format!(
                    "--base-port {base_port} is too high for {nodes} nodes: node {id} would need port {}",
                    kafka + 1
                )),
            }
        })
        .collect()
}

/// `1 node`, `3 nodes`.
fn count_nodes(n: usize) -> String {
    match n {
        1 => "1 node".into(),
        n => format!("{n} nodes"),
    }
}

/// `127.0.0.1:9092,127.0.0.1:9192,...`: what clients bootstrap from.
pub(crate) fn bootstrap(plan: &[Ports]) -> String {
    let addrs: Vec<String> = plan.iter().map(|p| format!("{HOST}:{}", p.kafka)).collect();
    addrs.join(",")
}

/// `1@127.0.0.1:9093,2@127.0.0.1:9193,...`: the value of `--controller-quorum`.
fn quorum(plan: &[Ports]) -> String {
    let voters: Vec<String> = plan
        .iter()
        .map(|p| format!("{}@{HOST}:{}", p.id, p.controller))
        .collect();
    voters.join(",")
}

/// The arguments of `strom` for node `p` (a combined controller and broker).
fn server_args(p: &Ports, plan: &[Ports], data_dir: &str) -> Vec<String> {
    let replication_factor = plan.len().min(3);
    vec![
        "server".into(),
        "--node-id".into(),
        p.id.to_string(),
        "--listen".into(),
        format!("{HOST}:{}", p.kafka),
        "--data-dir".into(),
        data_dir.into(),
        "--controller-quorum".into(),
        quorum(plan),
        "--default-replication-factor".into(),
        replication_factor.to_string(),
        // Every node serves SQL (the engines share the persistent queries out between them),
        // each on its own port.
        "--sql-listen".into(),
        sql_port(p).map_or("off".into(), |port| format!("{HOST}:{port}")),
    ]
}

/// Node `p`'s SQL port: two after its Kafka port (the controller's is one after).
pub(crate) fn sql_port(p: &Ports) -> Option<u16> {
    p.kafka.checked_add(2)
}

/// DIR/cluster.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The `bootstrap.servers` list.
    pub(crate) bootstrap: String,
    pub(crate) nodes: Vec<NodeState>,
}

/// One node in cluster.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeState {
    id: u32,
    pid: u32,
    /// Kafka listener, `127.0.0.1:PORT`.
    kafka: String,
    /// Controller (Raft) listener, `127.0.0.1:PORT`.
    controller: String,
    /// Absolute; also how `down` recognises the process (see [`is_running`]).
    data_dir: PathBuf,
    /// Absolute path of the node's server.log.
    log: PathBuf,
}

/// DIR/cluster.json, or `None` if there is none.
fn read_state(dir: &Path, shown: &str) -> Result<Option<State>> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {shown}/{STATE_FILE}: {e}")),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{shown}/{STATE_FILE} is not a cluster file ({e}); delete it if no cluster is running"
        )
    })
}

/// Writes cluster.json atomically (a reader never sees half of it).
pub(crate) fn write_state(path: &Path, state: &State) -> Result<()> {
    let mut text = serde_json::to_string_pretty(state)
        .map_err(|e| format!("internal error (a bug in strom): encoding cluster.json: {e}"))?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Fails, naming the port, if `port` cannot be bound on 127.0.0.1.
pub(crate) fn check_free(port: u16, what: &str) -> Result<()> {
    TcpListener::bind((HOST, port)).map(drop).map_err(|e| {
        format!("port {port} ({what}) is not free on {HOST}: {e}; stop what uses it or choose other ports with --base-port")
    })
}

/// A started node: its process and its entry in cluster.json.
pub(crate) struct Node {
    child: Child,
    pub(crate) state: NodeState,
}

/// The servers `up` started. Dropped without [`Started::keep`] (an error, Ctrl-C), it kills
/// them and removes the cluster.json it wrote.
#[derive(Default)]
pub(crate) struct Started {
    pub(crate) nodes: Vec<Node>,
    pub(crate) state_file: Option<PathBuf>,
}

impl Started {
    /// Leaves the servers running.
    fn keep(mut self) {
        self.nodes.clear();
        self.state_file = None;
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if let Some(path) = &self.state_file {
            let _ = fs::remove_file(path);
        }
    }
}

/// Starts node `p` with its data under `DIR/node-N/data`, output appended to
/// `DIR/node-N/server.log`, in a process group of its own.
pub(crate) fn start_node(exe: &Path, dir: &str, p: &Ports, plan: &[Ports]) -> Result<Node> {
    let node_dir = Path::new(dir).join(format!("node-{}", p.id));
    let data_dir = node_dir.join("data");
    fs::create_dir_all(&data_dir).map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
    let log_path = node_dir.join("server.log");
    let open_err = |e: io::Error| format!("opening {}: {e}", log_path.display());
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(open_err)?;
    let data_dir_str = format!("{dir}/node-{}/data", p.id);
    let args = server_args(p, plan, &data_dir_str);
    // Runs append to the same file: mark where this one starts.
    writeln!(
        log,
        "{LOG_HEADER} {}: {} {}",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        exe.display(),
        args.join(" ")
    )
    .map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    let stderr = log.try_clone().map_err(open_err)?;

    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .current_dir(&node_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Not in our process group: the terminal's Ctrl-C and hang-up do not reach it.
        .process_group(0);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    // A log file, not a terminal: no colour codes.
    if std::env::var_os("NO_COLOR").is_none() {
        cmd.env("NO_COLOR", "1");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting node {} ({}): {e}", p.id, exe.display()))?;
    Ok(Node {
        state: NodeState {
            id: p.id,
            pid: child.id(),
            kafka: format!("{HOST}:{}", p.kafka),
            controller: format!("{HOST}:{}", p.controller),
            data_dir: PathBuf::from(data_dir_str),
            log: log_path,
        },
        child,
    })
}

/// Why `up` gave up, and the server.log of the node to blame.
pub(crate) struct NotReady {
    pub(crate) reason: String,
    pub(crate) log: Option<PathBuf>,
}

/// Polls until every node accepts connections and the cluster reports every node as a
/// broker; fails if a node exits or [`READY_TIMEOUT`] passes.
pub(crate) async fn wait_ready(
    started: &mut Started,
    bootstrap: &str,
    spinner: &ProgressBar,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let n = started.nodes.len();
    loop {
        for node in &mut started.nodes {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(NotReady {
                    reason: format!(
                        "node {} exited ({status}) before the cluster was ready",
                        node.state.id
                    ),
                    log: Some(node.state.log.clone()),
                });
            }
        }
        let mut listening = 0;
        let mut lagging: Option<(usize, String)> = None;
        for (i, node) in started.nodes.iter().enumerate() {
            if connects(&node.state.kafka).await {
                listening += 1;
            } else if lagging.is_none() {
                lagging = Some((i, format!("not listening on {}", node.state.kafka)));
            }
        }
        if listening < n {
            spinner.set_message(format!("{listening} of {n} nodes listening"));
        } else {
            let asked = tokio::time::timeout(Duration::from_secs(5), async {
                Admin::connect(bootstrap).await?.describe_cluster().await
            })
            .await;
            match asked {
                Ok(Ok(c)) => {
                    let missing = started.nodes.iter().position(|node| {
                        !c.brokers
                            .iter()
                            .any(|b| i64::from(b.id) == i64::from(node.state.id))
                    });
                    match missing {
                        None => return Ok(()),
                        Some(i) => {
                            spinner.set_message(format!(
                                "{} of {n} brokers registered",
                                c.brokers.len().min(n)
                            ));
                            lagging = Some((i, "not registered as a broker".into()));
                        }
                    }
                }
                Ok(Err(e)) => {
                    spinner.set_message(format!("all nodes listening; asking the cluster: {e}"));
                    lagging = Some((0, format!("describing the cluster: {e}")));
                }
                Err(_) => {
                    spinner.set_message("all nodes listening; asking the cluster");
                    lagging = Some((0, "describing the cluster timed out".into()));
                }
            }
        }
        if Instant::now() >= deadline {
            let (i, why) = lagging.unwrap_or((0, "not ready".into()));
            let node = &started.nodes[i].state;
            return Err(NotReady {
                reason: format!(
                    "the cluster was not ready after {} s (node {}: {why})",
                    READY_TIMEOUT.as_secs(),
                    node.id
                ),
                log: Some(node.log.clone()),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether a TCP connection to `addr` succeeds within a second.
async fn connects(addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// `; PATH says: LINE` with the line that best explains a failure (see [`telling_line`]), or
/// `; see PATH` when the server wrote nothing.
pub(crate) fn log_hint(log: &Path) -> String {
    match telling_line(log) {
        Some(line) => format!("; {} says: {line}", log.display()),
        None => format!("; see {}", log.display()),
    }
}

/// From the end of `log`, the lines of the last run: its last error (`strom: ...`, a clap
/// `error: ...`, an `ERROR` log line), else its last non-empty line. Colour codes removed, at
/// most 300 characters.
fn telling_line(log: &Path) -> Option<String> {
    const TAIL: u64 = 16 * 1024;
    let mut f = fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let run: Vec<String> = text
        .lines()
        .rev()
        .map(|l| strip_ansi(l).trim().to_string())
        .take_while(|l| !l.starts_with(LOG_HEADER))
        .filter(|l| !l.is_empty())
        .collect();
    let is_error =
        |l: &&String| l.starts_with("strom: ") || l.starts_with("error: ") || l.contains(" ERROR ");
    let line = run.iter().find(is_error).or(run.first())?;
    Some(match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.clone(),
    })
}

/// `s` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `node.pid` is still that node's server. Where `/proc` shows command lines, the
/// process must also have been started with the node's `--data-dir`: a pid recycled by an
/// unrelated process after the server exited is never taken for the server (nor signalled).
fn is_running(node: &NodeState) -> bool {
    if kill(node.pid, 0).is_err() {
        return false;
    }
    if !Path::new("/proc/self/cmdline").exists() {
        return true;
    }
    match fs::read(format!("/proc/{}/cmdline", node.pid)) {
        Ok(raw) => {
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            is_node_command(&args, &node.data_dir)
        }
        Err(_) => false,
    }
}

/// Whether a command line has `--data-dir DATA_DIR`. (A zombie has an empty command line.)
fn is_node_command(args: &[String], data_dir: &Path) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--data-dir" && Path::new(&w[1]) == data_dir)
}

/// kill(2) for one process; signal 0 only checks that it exists and may be signalled.
#[allow(unsafe_code)]
fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // Zero and negative pids address process groups (-1: every process we may signal).
    let pid = match libc::pid_t::try_from(pid) {
        Ok(p) if p > 0 => p,
        _ => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
    };
    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(id: u32, kafka: u16, controller: u16) -> Ports {
        Ports {
            id,
            kafka,
            controller,
        }
    }

    #[test]
    fn node_i_gets_base_plus_100_times_i_minus_1_and_the_port_after() {
        assert_eq!(
            plan(3, 9092),
            Ok(vec![
                ports(1, 9092, 9093),
                ports(2, 9192, 9193),
                ports(3, 9292, 9293)
            ])
        );
        assert_eq!(plan(1, 20000), Ok(vec![ports(1, 20000, 20001)]));
        assert_eq!(plan(9, 9092).map(|p| p[8]), Ok(ports(9, 9892, 9893)));
    }

    #[test]
    fn the_plan_refuses_bad_node_counts_and_ports_past_65535() {
        assert_eq!(plan(0, 9092), Err("--nodes 0: expected 1 to 9".into()));
        assert_eq!(plan(10, 9092), Err("--nodes 10: expected 1 to 9".into()));
        assert!(plan(1, 0).unwrap_err().starts_with("--base-port 0"));
        // Node 3 would need 65334 + 200 + 1 = 65535: still fine; one more is not.
        assert!(plan(3, 65334).is_ok());
        assert_eq!(
            plan(3, 65335),
            Err("--base-port 65335 is too high for 3 nodes: node 3 would need port 65536".into())
        );
        assert!(plan(1, 65535).unwrap_err().contains("port 65536"));
    }

    #[test]
    fn bootstrap_and_quorum_list_every_node() {
        let p = plan(3, 9092).unwrap();
        assert_eq!(
            bootstrap(&p),
            "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
        );
        assert_eq!(
            quorum(&p),
            "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293"
        );
        let one = plan(1, 19092).unwrap();
        assert_eq!(bootstrap(&one), "127.0.0.1:19092");
        assert_eq!(quorum(&one), "1@127.0.0.1:19093");
    }

    #[test]
    fn server_args_make_a_combined_node_with_replication_up_to_3() {
        let p = plan(3, 9092).unwrap();
        assert_eq!(
            server_args(&p[1], &p, "/c/node-2/data"),
            [
                "server",
                "--node-id",
                "2",
                "--listen",
                "127.0.0.1:9192",
                "--data-dir",
                "/c/node-2/data",
                "--controller-quorum",
                "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293",
                "--default-replication-factor",
                "3",
                "--sql-listen",
                "127.0.0.1:9194",
            ]
        );
        let rf = |n| {
            let p = plan(n, 9092).unwrap();
            let args = server_args(&p[0], &p, "/d");
            args.iter()
                .position(|a| a == "--default-replication-factor")
                .map(|i| args[i + 1].clone())
        };
        assert_eq!(rf(1).as_deref(), Some("1"));
        assert_eq!(rf(2).as_deref(), Some("2"));
        assert_eq!(rf(5).as_deref(), Some("3"));
    }

    fn sample_state(dir: &Path, pids: &[u32]) -> State {
        State {
            bootstrap: "127.0.0.1:9092,127.0.0.1:9192".into(),
            nodes: pids
                .iter()
                .enumerate()
                .map(|(i, pid)| {
                    let id = i as u32 + 1;
                    NodeState {
                        id,
                        pid: *pid,
                        kafka: format!("127.0.0.1:{}", 9092 + 100 * i),
                        controller: format!("127.0.0.1:{}", 9093 + 100 * i),
                        data_dir: dir.join(format!("node-{id}/data")),
                        log: dir.join(format!("node-{id}/server.log")),
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn cluster_json_round_trips_and_has_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let state = sample_state(Path::new("/tmp/c"), &[4242, 4343]);
        write_state(&dir.path().join(STATE_FILE), &state).unwrap();
        assert_eq!(read_state(dir.path(), "c"), Ok(Some(state)));

        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join(STATE_FILE)).unwrap())
                .unwrap();
        assert_eq!(json["bootstrap"], "127.0.0.1:9092,127.0.0.1:9192");
        assert_eq!(
            json["nodes"][1],
            serde_json::json!({
                "id": 2,
                "pid": 4343,
                "kafka": "127.0.0.1:9192",
                "controller": "127.0.0.1:9193",
                "data_dir": "/tmp/c/node-2/data",
                "log": "/tmp/c/node-2/server.log",
            })
        );
        assert!(!dir.path().join("cluster.json.tmp").exists());
    }

    #[test]
    fn a_missing_cluster_json_is_none_and_a_broken_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_state(dir.path(), "c"), Ok(None));
        fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let e = read_state(dir.path(), "c").unwrap_err();
        assert!(e.starts_with("c/cluster.json is not a cluster file"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn down_without_cluster_json_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = down(dir.path()).unwrap_err();
        assert_eq!(e, format!("no cluster in {}", dir.path().display()));
    }

    #[test]
    fn a_taken_port_is_named() {
        let l = TcpListener::bind((HOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let e = check_free(port, "node 1's Kafka listener").unwrap_err();
        assert!(
            e.starts_with(&format!(
                "port {port} (node 1's Kafka listener) is not free on 127.0.0.1"
            )),
            "{e}"
        );
        drop(l);
        assert_eq!(check_free(port, "x"), Ok(()));
    }

    #[test]
    fn only_a_process_with_the_nodes_data_dir_is_the_node() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let d = Path::new("/c/node-1/data");
        assert!(is_node_command(
            &args(&["strom", "server", "--data-dir", "/c/node-1/data", ""]),
            d
        ));
        assert!(!is_node_command(
            &args(&["strom", "server", "--data-dir", "/c/node-2/data"]),
            d
        ));
        assert!(!is_node_command(&args(&["/c/node-1/data"]), d));
        assert!(!is_node_command(&args(&[""]), d));
    }

    #[test]
    fn pids_that_address_groups_or_nobody_are_never_signalled() {
        let dir = Path::new("/nonexistent");
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert!(kill(pid, 0).is_err(), "{pid}");
            assert!(!is_running(&sample_state(dir, &[pid]).nodes[0]), "{pid}");
        }
        // This test process exists but was not started with that --data-dir.
        let me = sample_state(dir, &[std::process::id()]);
        assert!(kill(me.nodes[0].pid, 0).is_ok());
        if Path::new("/proc/self/cmdline").exists() {
            assert!(!is_running(&me.nodes[0]));
        }
    }

    /// A stand-in for a server: `sh` with the node's `--data-dir` on its command line, running
    /// `prelude` and then until it is signalled. (A loop, so that sh never execs a command,
    /// which would change its command line, and leaves no long-lived child behind.)
    fn fake_server(data_dir: &Path, prelude: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{prelude} while :; do sleep 0.05; done"))
            .arg("sh")
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn down_stops_the_nodes_and_removes_cluster_json_and_up_refuses_while_they_run() {
        if !Path::new("/proc/self/cmdline").exists() {
            return; // is_running cannot tell a zombie child of this test from a live one
        }
        let dir = tempfile::tempdir().unwrap();
        let mut state = sample_state(dir.path(), &[0, 0]);
        let mut children = Vec::new();
        for node in &mut state.nodes {
            let child = fake_server(&node.data_dir, "");
            node.pid = child.id();
            children.push(child);
        }
        write_state(&dir.path().join(STATE_FILE), &state).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !state.nodes.iter().all(is_running) {
            assert!(Instant::now() < deadline, "the fake servers did not start");
            std::thread::sleep(Duration::from_millis(10));
        }

        let shown = dir.path().display().to_string();
        let e = super::super::block_on(up(UpOptions {
            nodes: 1,
            dir: dir.path().to_path_buf(),
            base_port: 9092,
        }))
        .unwrap_err();
        assert_eq!(
            e,
            format!("a cluster is already running in {shown}; run `strom cluster down --dir {shown}` first")
        );

        stop(dir.path(), Duration::from_secs(10)).unwrap();
        assert!(!dir.path().join(STATE_FILE).exists());
        for mut child in children {
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGTERM)
            );
        }
    }

    #[test]
    fn down_kills_a_node_that_ignores_sigterm() {
        if !Path::new("/proc/self/cmdline").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut state = sample_state(dir.path(), &[0]);
        let mut child = fake_server(&state.nodes[0].data_dir, "trap '' TERM;");
        state.nodes[0].pid = child.id();
        write_state(&dir.path().join(STATE_FILE), &state).unwrap();
        // Let sh install the trap before it is signalled.
        std::thread::sleep(Duration::from_millis(200));

        stop(dir.path(), Duration::from_millis(300)).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(!dir.path().join(STATE_FILE).exists());
    }

    #[test]
    fn the_log_line_shown_is_the_last_error_of_the_last_run_without_colour() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        assert_eq!(telling_line(&log), None);
        let header = format!("{LOG_HEADER} 2026-01-01T00:00:00Z: strom server");
        fs::write(
            &log,
            format!(
                "{}\nstrom: an error of an earlier run\n{header}\n\
                 2026 \u{1b}[31mERROR\u{1b}[0m raft: no quorum\n\
                 2026 \u{1b}[32m INFO\u{1b}[0m retrying\n\n",
                "x".repeat(20_000)
            ),
        )
        .unwrap();
        assert_eq!(
            telling_line(&log).as_deref(),
            Some("2026 ERROR raft: no quorum")
        );
        fs::write(
            &log,
            format!("{header}\nerror: unexpected argument '--x' found\n\nUsage: strom server\n\nFor more information, try '--help'.\n"),
        )
        .unwrap();
        assert_eq!(
            log_hint(&log),
            format!(
                "; {} says: error: unexpected argument '--x' found",
                log.display()
            )
        );
        fs::write(&log, format!("{header}\n{header}\n 2026 INFO started\n")).unwrap();
        assert_eq!(telling_line(&log).as_deref(), Some("2026 INFO started"));
        fs::write(&log, format!("strom: old\n{header}\n")).unwrap();
        assert_eq!(telling_line(&log), None);
        assert_eq!(log_hint(&log), format!("; see {}", log.display()));
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ok"),
            "2026  INFO ok"
        );
    }
}
