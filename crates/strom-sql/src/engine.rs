//! The engine: one per server, shared by every SQL session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int32Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::config::SessionConfig;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use strom_client::{
    Admin, Consumer, ConsumerConfig, NewTopic, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use tokio::sync::{mpsc, watch};

use crate::catalog::{self, Entry, SourceDef, CATALOG_TOPIC};
use crate::errors::{describe, with_position};
use crate::hosting::{Hosting, HostingConfig};
use crate::parse::{self, Parsed, QueryText, ShowWhat, SourceKind, Stmt};
use crate::runner::{self, QueryCtx, SinkSpec, Stats};
use crate::slot::{Binding, Slot, SlotTable};
use crate::window::{WindowFunction, WindowSpec};
use crate::{Result, SqlError};

/// Settings of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Kafka bootstrap address of the cluster the topics live in.
    pub bootstrap: String,
    /// How often continuous queries commit their offsets and state.
    pub commit_interval: Duration,
    /// Default partition count of topics the engine creates.
    pub default_partitions: i32,
    /// How long [`Engine::start`] waits for the cluster.
    pub connect_timeout: Duration,
    /// `None`: this engine runs every persistent query itself. `Some`: it shares them with the
    /// other engines of the cluster, each query running on one of them (see [`crate::hosting`]).
    pub hosting: Option<HostingConfig>,
}

impl EngineConfig {
    /// Defaults for a cluster at `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        EngineConfig {
            bootstrap: bootstrap.into(),
            commit_interval: Duration::from_secs(1),
            default_partitions: 1,
            connect_timeout: Duration::from_secs(30),
            hosting: None,
        }
    }

    /// Shares persistent queries with the cluster's other engines.
    pub fn shared(mut self, hosting: HostingConfig) -> Self {
        self.hosting = Some(hosting);
        self
    }
}

/// What one statement produced.
#[derive(Debug)]
pub enum Output {
    /// A finished result set (`SELECT` over stored history, `SHOW`, `DESCRIBE`).
    Rows {
        /// Column names and types.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
    },
    /// A push query (`SELECT .. EMIT CHANGES`): rows keep coming until the receiver is dropped.
    Stream {
        /// Column names and types.
        schema: SchemaRef,
        /// Batches as they are produced; an error ends the stream.
        rows: mpsc::Receiver<Result<RecordBatch>>,
    },
    /// A command that returns no rows; `tag` is its PostgreSQL command tag (`CREATE STREAM`, ..).
    Done {
        /// The command tag.
        tag: String,
        /// A one-line message for the user (`Created query q1 writing topic 'out'`), if any.
        message: Option<String>,
    },
}

/// What `SHOW QUERIES` reports about one persistent query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryInfo {
    /// The query's id (`q1`, ...), used by `TERMINATE`.
    pub id: String,
    /// The statement that started it.
    pub sql: String,
    /// Where its rows go (a topic name or a directory).
    pub sink: String,
    /// `RUNNING`, `FAILED: reason`, or `ELSEWHERE` (another server of the cluster runs it).
    pub state: String,
    /// Input records processed since it (re)started.
    pub records_in: u64,
    /// Rows written since it (re)started.
    pub rows_out: u64,
    /// Records dropped (or routed to the late topic) because their windows had closed.
    pub late: u64,
}

struct Running {
    sql: String,
    sink: String,
    /// Sources it reads and the one it writes.
    reads: Vec<String>,
    writes: Option<String>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A SQL engine over one cluster.
pub struct Engine {
    config: EngineConfig,
    admin: Arc<Admin>,
    producer: Arc<Producer>,
    sources: Mutex<BTreeMap<String, Arc<SourceDef>>>,
    /// Queries running here.
    queries: Mutex<BTreeMap<String, Running>>,
    /// Every persistent query of the catalog (id, statement), wherever it runs.
    catalog_queries: Mutex<BTreeMap<String, String>>,
    /// With shared hosting: the loop that places queries, and the slots this engine owns.
    hosting: Mutex<Option<Arc<Hosting>>>,
    owned: Mutex<Option<BTreeSet<i32>>>,
    /// Queries that failed to start here, and when: retried after a pause.
    start_failures: Mutex<HashMap<String, std::time::Instant>>,
    next_id: AtomicU64,
    /// Serialises statements that change the catalog.
    ddl: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bootstrap", &self.config.bootstrap)
            .finish()
    }
}

impl Engine {
    /// Connects to the cluster, loads the catalog from its topic and restarts every persistent
    /// query from its committed offsets and state.
    pub async fn start(config: EngineConfig) -> Result<Arc<Engine>> {
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let admin = loop {
            match Admin::connect(&config.bootstrap).await {
                Ok(a) if a.describe_cluster().await.is_ok() => break a,
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(_) => {
                    return Err(SqlError::Statement(format!(
                        "cannot reach the cluster at {}",
                        config.bootstrap
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        };
        let producer =
            Producer::new(ProducerConfig::new(&config.bootstrap).linger(Duration::from_millis(2)))
                .await?;
        let engine = Arc::new(Engine {
            admin: Arc::new(admin),
            producer: Arc::new(producer),
            sources: Mutex::new(BTreeMap::new()),
            queries: Mutex::new(BTreeMap::new()),
            catalog_queries: Mutex::new(BTreeMap::new()),
            hosting: Mutex::new(None),
            owned: Mutex::new(None),
            start_failures: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            ddl: tokio::sync::Mutex::new(()),
            config,
        });
        engine
            .ensure_topic(CATALOG_TOPIC, 1, &[("cleanup.policy", "compact")])
            .await?;
        let (entries, catalog_end) = engine.load_catalog().await?;
        let mut queries = Vec::new();
        for e in entries {
            engine.apply_entry(&e.key(), Some(&e));
            if let Entry::Query { id, sql } = e {
                queries.push((id, sql));
            }
        }
        if let Some(hosting) = engine.config.hosting.clone() {
            // The hosting loop starts the queries of the slots this engine gets.
            engine
                .ensure_topic(crate::hosting::HOSTS_TOPIC, crate::hosting::HOST_SLOTS, &[])
                .await?;
            let h = Hosting::start(
                &engine,
                engine.config.bootstrap.clone(),
                hosting,
                catalog_end,
            );
            *engine.hosting.lock() = Some(Arc::new(h));
            return Ok(engine);
        }
        for (id, sql) in queries {
            if let Err(e) = engine.restart_query(&id, &sql).await {
                tracing::warn!(query = %id, error = %e, "persistent query could not restart");
            }
        }
        Ok(engine)
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Runs every statement of `sql` (separated by `;`) in order, stopping at the first error.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for p in parse::parse_script(sql)? {
            let idents = p.idents.clone();
            let r = self
                .execute_one(p)
                .await
                .map_err(|e| with_position(e, &idents))?;
            out.push(r);
        }
        Ok(out)
    }

    /// For one ad-hoc `SELECT` with placeholders (`$1`, `$2`, ..): their types, in order
    /// (`None` where the statement does not say), and the result's columns. `None` when `sql`
    /// is anything else (it then takes no parameters).
    pub async fn prepare(&self, sql: &str) -> Result<Option<(Vec<Option<DataType>>, SchemaRef)>> {
        let Some(p) = Self::one_select(sql)? else {
            return Ok(None);
        };
        let idents = p.idents.clone();
        let Stmt::Select(q) = p.stmt else {
            return Ok(None);
        };
        let st = datafusion::sql::sqlparser::ast::Statement::Query(q.query);
        let (_, plan) = self
            .adhoc_plan(st)
            .await
            .map_err(|e| with_position(e, &idents))?;
        let types = plan.get_parameter_types()?;
        let mut ordered = Vec::with_capacity(types.len());
        for i in 1..=types.len() {
            let t = types.get(&format!("${i}")).ok_or_else(|| {
                SqlError::Statement(format!(
                    "parameters must be numbered from $1 without gaps: ${i} is missing"
                ))
            })?;
            ordered.push(t.clone());
        }
        Ok(Some((ordered, Arc::new(plan.schema().as_arrow().clone()))))
    }

    /// Runs one ad-hoc `SELECT` with its placeholders bound to `params` ($1 first).
    pub async fn execute_with(&self, sql: &str, params: Vec<ScalarValue>) -> Result<Output> {
        let p = Self::one_select(sql)?.ok_or_else(|| {
            SqlError::Unsupported("parameters ($1, ..) in anything but a SELECT".into())
        })?;
        let idents = p.idents.clone();
        let Stmt::Select(q) = p.stmt else {
            return Err(SqlError::Unsupported(
                "parameters ($1, ..) in anything but a SELECT".into(),
            ));
        };
        let st = datafusion::sql::sqlparser::ast::Statement::Query(q.query);
        let names = self.names();
        let run = async {
            let (ctx, plan) = self.adhoc_plan(st).await?;
            let plan = plan
                .with_param_values(params)
                .map_err(|e| describe(e, &names))?;
            self.adhoc_run(&ctx, plan).await
        };
        run.await.map_err(|e| with_position(e, &idents))
    }

    /// `sql` parsed, if it is exactly one ad-hoc `SELECT` (not a push query).
    fn one_select(sql: &str) -> Result<Option<Parsed>> {
        let mut parsed = parse::parse_script(sql)?;
        match (parsed.pop(), parsed.is_empty()) {
            (Some(p), true) if matches!(&p.stmt, Stmt::Select(q) if !q.emit_changes) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// The persistent queries and their counters (those another server runs have none).
    pub fn queries(&self) -> Vec<QueryInfo> {
        let mut out: Vec<QueryInfo> = self
            .queries
            .lock()
            .iter()
            .map(|(id, r)| QueryInfo {
                id: id.clone(),
                sql: r.sql.clone(),
                sink: r.sink.clone(),
                state: r.stats.state(),
                records_in: r.stats.records_in.load(Ordering::Relaxed),
                rows_out: r.stats.rows_out.load(Ordering::Relaxed),
                late: r.stats.late.load(Ordering::Relaxed),
            })
            .collect();
        if self.config.hosting.is_some() {
            let catalog = self.catalog_queries.lock().clone();
            for (id, sql) in catalog {
                if !out.iter().any(|q| q.id == id) {
                    out.push(QueryInfo {
                        id,
                        sink: sink_of(&sql),
                        sql,
                        state: "ELSEWHERE".into(),
                        records_in: 0,
                        rows_out: 0,
                        late: 0,
                    });
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
        }
        out
    }

    /// Applies one catalog record (a `None` value deletes), as the hosting loop reads them.
    pub(crate) fn apply_catalog_record(&self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key.map(String::from_utf8_lossy) else {
            return;
        };
        let entry = match value.map(serde_json::from_slice::<Entry>) {
            Some(Ok(e)) => Some(e),
            Some(Err(err)) => {
                tracing::warn!(key = %key, error = %err, "unreadable catalog entry skipped");
                return;
            }
            None => None,
        };
        self.apply_entry(&key, entry.as_ref());
    }

    /// Brings the in-memory catalog in line with one entry (`None`: deleted).
    fn apply_entry(&self, key: &str, entry: Option<&Entry>) {
        match entry {
            Some(Entry::Source(def)) => {
                self.sources
                    .lock()
                    .insert(def.name.clone(), Arc::new(def.clone()));
            }
            Some(Entry::Query { id, sql }) => {
                // `q7`, or `q7_2` when made by engine `2` of a cluster.
                let number = id.strip_prefix('q').and_then(|n| n.split('_').next());
                if let Some(n) = number.and_then(|n| n.parse::<u64>().ok()) {
                    self.next_id.fetch_max(n + 1, Ordering::SeqCst);
                }
                self.catalog_queries.lock().insert(id.clone(), sql.clone());
            }
            None => {
                if let Some(name) = key.strip_prefix("source/") {
                    self.sources.lock().remove(name);
                } else if let Some(id) = key.strip_prefix("query/") {
                    self.catalog_queries.lock().remove(id);
                }
            }
        }
    }

    /// Whether this engine runs query `id`'s slot (always, without shared hosting).
    fn hosts(&self, id: &str) -> bool {
        if self.config.hosting.is_none() {
            return true;
        }
        self.owned
            .lock()
            .as_ref()
            .is_some_and(|o| o.contains(&crate::hosting::slot_of(id)))
    }

    /// Stops (without terminating) the queries of `slots`: another engine takes them over.
    pub(crate) fn release_slots(&self, slots: &BTreeSet<i32>) {
        if let Some(owned) = self.owned.lock().as_mut() {
            owned.retain(|s| !slots.contains(s));
        }
        let mut running = self.queries.lock();
        let ids: Vec<String> = running
            .keys()
            .filter(|id| slots.contains(&crate::hosting::slot_of(id)))
            .cloned()
            .collect();
        for id in ids {
            if let Some(r) = running.remove(&id) {
                tracing::info!(query = %id, "strom sql: query handed over to another server");
                let _ = r.stop.send(true);
                tokio::spawn(async move {
                    let _ = r.task.await;
                });
            }
        }
    }

    /// Starts the catalog's queries of the slots in `owned` that do not run here, and stops
    /// those that run here but left the catalog or the slots.
    pub(crate) async fn reconcile(&self, owned: &BTreeSet<i32>) {
        *self.owned.lock() = Some(owned.clone());
        let catalog = self.catalog_queries.lock().clone();
        let gone: Vec<(String, Running)> = {
            let mut running = self.queries.lock();
            let ids: Vec<String> = running
                .keys()
                .filter(|id| {
                    !catalog.contains_key(*id) || !owned.contains(&crate::hosting::slot_of(id))
                })
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| running.remove(&id).map(|r| (id, r)))
                .collect()
        };
        for (id, r) in gone {
            tracing::info!(query = %id, "strom sql: query stopped here");
            let _ = r.stop.send(true);
            let _ = r.task.await;
            if !catalog.contains_key(&id) {
                // Terminated (through any server), not moved: nothing of it is needed again.
                self.clean_up(&id).await;
            }
        }
        for (id, sql) in catalog {
            if !owned.contains(&crate::hosting::slot_of(&id))
                || self.queries.lock().contains_key(&id)
            {
                continue;
            }
            let recent = self
                .start_failures
                .lock()
                .get(&id)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10));
            if recent {
                continue;
            }
            // Serialised with statements, so a query being created here is not started twice.
            let _g = self.ddl.lock().await;
            if self.queries.lock().contains_key(&id)
                || !self.catalog_queries.lock().contains_key(&id)
            {
                continue;
            }
            tracing::info!(query = %id, "strom sql: starting query here");
            match self.restart_query(&id, &sql).await {
                Ok(()) => {
                    self.start_failures.lock().remove(&id);
                }
                Err(e) => {
                    tracing::warn!(query = %id, error = %e, "persistent query could not start");
                    self.start_failures
                        .lock()
                        .insert(id, std::time::Instant::now());
                }
            }
        }
    }

    /// Stops every query (without terminating them: they resume when the engine starts again).
    pub async fn shutdown(&self) {
        // First the hosting loop, so that it starts nothing more (and leaves the group: the
        // other engines take the slots over).
        let hosting = self.hosting.lock().take();
        if let Some(h) = hosting {
            h.stop().await;
        }
        let running: Vec<Running> = std::mem::take(&mut *self.queries.lock())
            .into_values()
            .collect();
        for r in &running {
            let _ = r.stop.send(true);
        }
        for r in running {
            let _ = r.task.await;
        }
        let _ = self.producer.flush().await;
    }

    async fn execute_one(&self, p: Parsed) -> Result<Output> {
        match p.stmt {
            Stmt::Show(what) => self.show(what).await,
            Stmt::Describe(name) => self.describe(&name),
            Stmt::Select(q) if q.emit_changes => self.push_query(q).await,
            Stmt::Select(q) => self.adhoc(datafusion::sql::sqlparser::ast::Statement::Query(q.query)).await,
            Stmt::Other(st) => match *st {
                st @ (datafusion::sql::sqlparser::ast::Statement::Explain { .. }
                | datafusion::sql::sqlparser::ast::Statement::Query(_)) => self.adhoc(st).await,
                other => Err(SqlError::Unsupported(format!(
                    "`{}`: Strom SQL runs CREATE/DROP STREAM|TABLE, INSERT INTO .. SELECT, SELECT, SHOW, DESCRIBE, TERMINATE and EXPLAIN",
                    first_words(&other.to_string())
                ))),
            },
            Stmt::Create {
                kind,
                name,
                if_not_exists,
                columns,
                constraints,
                options,
                query,
            } => {
                let _g = self.ddl.lock().await;
                catalog::check_options(&options)?;
                if self.sources.lock().contains_key(&name) {
                    if if_not_exists {
                        return Ok(done(&format!("CREATE {}", kind.keyword()), None));
                    }
                    return Err(SqlError::Statement(format!(
                        "{} `{name}` already exists",
                        kind.keyword().to_lowercase()
                    )));
                }
                let opt = |k: &str| options.get(k).map(|v| v.value.clone());
                match query {
                    None => {
                        let (schema, pk) = catalog::declared(&columns, &constraints)?;
                        if schema.fields().is_empty() {
                            return Err(SqlError::Statement(format!(
                                "{name}: declare its columns, e.g. CREATE STREAM {name} (id BIGINT, ts TIMESTAMP) WITH (topic='{name}')"
                            )));
                        }
                        let def = self.source_def(kind, &name, &schema, pk, &opt, &p.text)?;
                        let partitions = self.partitions_option(&opt)?;
                        self.ensure_topic(&def.topic, partitions, &table_configs(kind)).await?;
                        self.save(&Entry::Source(def.clone())).await?;
                        self.sources.lock().insert(name.clone(), Arc::new(def));
                        Ok(done(&format!("CREATE {}", kind.keyword()), None))
                    }
                    Some(q) => {
                        if !columns.is_empty() {
                            return Err(SqlError::Statement(
                                "CREATE .. AS SELECT takes its columns from the query: drop the column list".into(),
                            ));
                        }
                        let id = self.new_id();
                        let msg = self
                            .start_query(&id, &p.text, q, Target::Create { kind, name, opt: options.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect() }, true)
                            .await?;
                        Ok(done(&format!("CREATE {}", kind.keyword()), Some(msg)))
                    }
                }
            }
            Stmt::Insert { target, query } => {
                let _g = self.ddl.lock().await;
                let id = self.new_id();
                let msg = self.start_query(&id, &p.text, query, Target::Insert(target), true).await?;
                Ok(done("INSERT 0 0", Some(msg)))
            }
            Stmt::Drop {
                kind,
                name,
                if_exists,
                delete_topic,
            } => {
                let _g = self.ddl.lock().await;
                let def = self.sources.lock().get(&name).cloned();
                let Some(def) = def.filter(|d| d.kind == kind) else {
                    if if_exists {
                        return Ok(done(&format!("DROP {}", kind.keyword()), None));
                    }
                    return Err(SqlError::Statement(format!(
                        "unknown {} `{name}`{}",
                        kind.keyword().to_lowercase(),
                        crate::errors::suggest(&name, self.sources.lock().keys().map(String::as_str))
                    )));
                };
                let mut users: Vec<String> = self
                    .queries
                    .lock()
                    .iter()
                    .filter(|(_, r)| r.reads.contains(&name) || r.writes.as_deref() == Some(name.as_str()))
                    .map(|(id, _)| id.clone())
                    .collect();
                // Queries another server runs: those whose statement names it.
                let catalog = self.catalog_queries.lock().clone();
                for (id, sql) in catalog {
                    if !users.contains(&id) && names_source(&sql, &name) {
                        users.push(id);
                    }
                }
                users.sort();
                if !users.is_empty() {
                    return Err(SqlError::Statement(format!(
                        "`{name}` is used by {}: TERMINATE {} first",
                        users.join(", "),
                        users.join(", ")
                    )));
                }
                self.forget(&Entry::Source((*def).clone()).key()).await?;
                self.sources.lock().remove(&name);
                if delete_topic {
                    self.admin.delete_topics(std::slice::from_ref(&def.topic)).await?;
                }
                Ok(done(&format!("DROP {}", kind.keyword()), None))
            }
            Stmt::Terminate(which) => {
                let _g = self.ddl.lock().await;
                let known: Vec<String> = {
                    let mut ids: BTreeSet<String> = self.queries.lock().keys().cloned().collect();
                    ids.extend(self.catalog_queries.lock().keys().cloned());
                    ids.into_iter().collect()
                };
                let ids: Vec<String> = match which {
                    Some(id) => {
                        if !known.contains(&id) {
                            return Err(SqlError::Statement(format!(
                                "unknown query `{id}`{}",
                                crate::errors::suggest(&id, known.iter().map(String::as_str))
                            )));
                        }
                        vec![id]
                    }
                    None => known,
                };
                for id in &ids {
                    let r = self.queries.lock().remove(id);
                    let here = r.is_some();
                    if let Some(r) = r {
                        let _ = r.stop.send(true);
                        let _ = r.task.await;
                    }
                    self.forget(&format!("query/{id}")).await?;
                    if here {
                        self.clean_up(id).await;
                    }
                }
                Ok(done("TERMINATE", Some(format!("terminated {}", if ids.is_empty() { "nothing".to_string() } else { ids.join(", ") }))))
            }
        }
    }

    /// Deletes what a terminated query kept in the cluster: its consumer group and its state
    /// topic. (A query another server runs is cleaned up there, once it stops.)
    async fn clean_up(&self, id: &str) {
        let _ = self.admin.delete_groups(&[runner::group_of(id)]).await;
        let _ = self.admin.delete_topics(&[runner::state_topic(id)]).await;
    }

    fn new_id(&self) -> String {
        let suffix = match self.config.hosting.as_ref().and_then(|h| h.name.as_ref()) {
            Some(name) => format!("_{name}"),
            None => String::new(),
        };
        loop {
            let n = self.next_id.fetch_add(1, Ordering::SeqCst);
            let id = format!("q{n}{suffix}");
            if !self.catalog_queries.lock().contains_key(&id) {
                return id;
            }
        }
    }

    fn partitions_option(&self, opt: &dyn Fn(&str) -> Option<String>) -> Result<i32> {
        match opt("partitions") {
            Some(p) => p.parse::<i32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                SqlError::Statement(format!("partitions='{p}' must be a positive number"))
            }),
            None => Ok(self.config.default_partitions),
        }
    }

    fn source_def(
        &self,
        kind: SourceKind,
        name: &str,
        schema: &Schema,
        pk: Option<String>,
        opt: &dyn Fn(&str) -> Option<String>,
        sql: &str,
    ) -> Result<SourceDef> {
        let format = opt("format").unwrap_or_else(|| "json".into());
        let fmt = crate::format::Format::parse(&format)?;
        crate::format::Decoder::new(fmt, Arc::new(schema.clone()))?;
        let names = || schema.fields().iter().map(|f| f.name().as_str());
        let col = |c: String, what: &str| -> Result<String> {
            let c = c.to_ascii_lowercase();
            if schema.field_with_name(&c).is_err() {
                return Err(SqlError::Statement(format!(
                    "{what}='{c}': no such column{}",
                    crate::errors::suggest(&c, names())
                )));
            }
            Ok(c)
        };
        let key = match (opt("key"), pk) {
            (Some(k), _) => Some(col(k, "key")?),
            (None, pk) => pk,
        };
        if kind == SourceKind::Table && key.is_none() {
            return Err(SqlError::Statement(format!(
                "table `{name}` needs a primary key: `id BIGINT PRIMARY KEY` or WITH (key='id')"
            )));
        }
        let (mut timestamp, mut delay) = (None, 0);
        if let Some(w) = opt("watermark") {
            let (c, d) = catalog::watermark(&w)?;
            timestamp = Some(col(c, "watermark")?);
            delay = d;
        }
        if let Some(t) = opt("timestamp") {
            let t = col(t, "timestamp")?;
            if timestamp.as_ref().is_some_and(|w| w != &t) {
                return Err(SqlError::Statement(
                    "the watermark must be on the timestamp column".into(),
                ));
            }
            timestamp = Some(t);
        }
        if let Some(t) = &timestamp {
            if !matches!(
                schema.field_with_name(t).map(|f| f.data_type().clone()),
                Ok(DataType::Timestamp(..))
            ) {
                return Err(SqlError::Statement(format!(
                    "timestamp column `{t}` must be a TIMESTAMP"
                )));
            }
        }
        Ok(SourceDef {
            name: name.to_string(),
            kind,
            columns: catalog::columns_of(schema),
            topic: opt("topic").unwrap_or_else(|| name.to_string()),
            format,
            key,
            timestamp,
            watermark_delay_ms: delay,
            sql: sql.to_string(),
        })
    }

    async fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        if self.admin.describe_topic(topic).await.is_ok() {
            return Ok(());
        }
        let mut t = NewTopic::new(topic, partitions);
        for (k, v) in configs {
            t = t.config(*k, *v);
        }
        match self.admin.create_topics(&[t]).await {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().to_lowercase().contains("already exists") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn save(&self, e: &Entry) -> Result<()> {
        let v = serde_json::to_vec(e).map_err(|e| SqlError::Internal(e.to_string()))?;
        let f = self
            .producer
            .send(ProducerRecord::new(CATALOG_TOPIC, v).key(e.key().into_bytes()))
            .await?;
        f.await?;
        self.apply_entry(&e.key(), Some(e));
        Ok(())
    }

    async fn forget(&self, key: &str) -> Result<()> {
        let mut r = ProducerRecord::new(CATALOG_TOPIC, Vec::new()).key(key.as_bytes().to_vec());
        r.value = None;
        self.producer.send(r).await?.await?;
        self.apply_entry(key, None);
        Ok(())
    }

    /// The catalog's entries, and the offset after the last one read.
    async fn load_catalog(&self) -> Result<(Vec<Entry>, i64)> {
        let topics = vec![CATALOG_TOPIC.to_string()];
        let ends = self.admin.list_offsets(&topics, OffsetSpec::Latest).await?;
        let end = ends.values().copied().next().unwrap_or(0);
        let mut latest: BTreeMap<String, (i64, Option<Entry>)> = BTreeMap::new();
        if end > 0 {
            let tp = TopicPartition::new(CATALOG_TOPIC, 0);
            let mut c = Consumer::new(ConsumerConfig::new(&self.config.bootstrap)).await?;
            c.assign(std::slice::from_ref(&tp))?;
            c.seek_to_beginning(std::slice::from_ref(&tp))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while c.position(&tp).unwrap_or(0) < end && tokio::time::Instant::now() < deadline {
                for r in c.poll(Duration::from_millis(200)).await? {
                    let Some(k) = r
                        .key
                        .as_ref()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                    else {
                        continue;
                    };
                    let e = match &r.value {
                        Some(v) => match serde_json::from_slice::<Entry>(v) {
                            Ok(e) => Some(e),
                            Err(err) => {
                                tracing::warn!(key = %k, error = %err, "unreadable catalog entry skipped");
                                continue;
                            }
                        },
                        None => None,
                    };
                    latest.insert(k, (r.offset, e));
                }
            }
            let _ = c.close().await;
        }
        let mut v: Vec<(i64, Entry)> = latest
            .into_values()
            .filter_map(|(o, e)| e.map(|e| (o, e)))
            .collect();
        v.sort_by_key(|(o, _)| *o);
        Ok((v.into_iter().map(|(_, e)| e).collect(), end))
    }

    async fn show(&self, what: ShowWhat) -> Result<Output> {
        let strings = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
        let (fields, cols): (Vec<Field>, Vec<ArrayRef>) = match what {
            ShowWhat::Topics | ShowWhat::AllTopics => {
                let all = what == ShowWhat::AllTopics;
                let mut topics: Vec<(String, i32)> = self
                    .admin
                    .list_topics()
                    .await?
                    .iter()
                    .filter(|t| all || !is_internal_topic(&t.name, t.internal))
                    .map(|t| (t.name.clone(), t.partitions.len() as i32))
                    .collect();
                topics.sort();
                (
                    vec![
                        Field::new("name", DataType::Utf8, false),
                        Field::new("partitions", DataType::Int32, false),
                    ],
                    vec![
                        strings(topics.iter().map(|t| t.0.clone()).collect()),
                        Arc::new(Int32Array::from(
                            topics.iter().map(|t| t.1).collect::<Vec<_>>(),
                        )),
                    ],
                )
            }
            ShowWhat::Streams | ShowWhat::Tables => {
                let kind = if what == ShowWhat::Streams {
                    SourceKind::Stream
                } else {
                    SourceKind::Table
                };
                let defs: Vec<Arc<SourceDef>> = self
                    .sources
                    .lock()
                    .values()
                    .filter(|d| d.kind == kind)
                    .cloned()
                    .collect();
                let names = ["name", "topic", "format", "key", "timestamp"];
                (
                    names
                        .iter()
                        .map(|n| Field::new(*n, DataType::Utf8, true))
                        .collect(),
                    vec![
                        strings(defs.iter().map(|d| d.name.clone()).collect()),
                        strings(defs.iter().map(|d| d.topic.clone()).collect()),
                        strings(defs.iter().map(|d| d.format.clone()).collect()),
                        Arc::new(StringArray::from(
                            defs.iter().map(|d| d.key.clone()).collect::<Vec<_>>(),
                        )),
                        Arc::new(StringArray::from(
                            defs.iter().map(|d| d.timestamp.clone()).collect::<Vec<_>>(),
                        )),
                    ],
                )
            }
            ShowWhat::Queries => {
                let q = self.queries();
                let u = |f: &dyn Fn(&QueryInfo) -> u64| {
                    Arc::new(UInt64Array::from(q.iter().map(f).collect::<Vec<_>>())) as ArrayRef
                };
                (
                    vec![
                        Field::new("id", DataType::Utf8, false),
                        Field::new("state", DataType::Utf8, false),
                        Field::new("sink", DataType::Utf8, false),
                        Field::new("records_in", DataType::UInt64, false),
                        Field::new("rows_out", DataType::UInt64, false),
                        Field::new("late", DataType::UInt64, false),
                        Field::new("sql", DataType::Utf8, false),
                    ],
                    vec![
                        strings(q.iter().map(|i| i.id.clone()).collect()),
                        strings(q.iter().map(|i| i.state.clone()).collect()),
                        strings(q.iter().map(|i| i.sink.clone()).collect()),
                        u(&|i| i.records_in),
                        u(&|i| i.rows_out),
                        u(&|i| i.late),
                        strings(q.iter().map(|i| i.sql.clone()).collect()),
                    ],
                )
            }
        };
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), cols)?;
        Ok(Output::Rows {
            schema,
            batches: vec![batch],
        })
    }

    fn describe(&self, name: &str) -> Result<Output> {
        let found = self.sources.lock().get(name).cloned();
        let def = found.ok_or_else(|| {
            SqlError::Statement(format!(
                "unknown stream or table `{name}`{}",
                crate::errors::suggest(name, self.sources.lock().keys().map(String::as_str))
            ))
        })?;
        let schema = crate::format::with_meta(def.schema()?.as_ref());
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut notes = Vec::new();
        for f in schema.fields() {
            names.push(f.name().clone());
            types.push(sql_type_name(f.data_type()));
            notes.push(if def.key.as_deref() == Some(f.name()) {
                "key"
            } else if def.timestamp.as_deref() == Some(f.name()) {
                "event time"
            } else if f.name().starts_with('_') {
                "record metadata"
            } else {
                ""
            });
        }
        let out = Arc::new(Schema::new(vec![
            Field::new("column", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            out.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(types)),
                Arc::new(StringArray::from(notes)),
            ],
        )?;
        Ok(Output::Rows {
            schema: out,
            batches: vec![batch],
        })
    }

    fn session(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false)
            .set_bool("datafusion.execution.coalesce_batches", false)
            .set_bool("datafusion.optimizer.repartition_joins", false)
            .set_bool("datafusion.optimizer.repartition_aggregations", false);
        SessionContext::new_with_config(config)
    }

    fn names(&self) -> Vec<String> {
        self.sources.lock().keys().cloned().collect()
    }

    /// A SELECT over stored history.
    async fn adhoc(&self, st: datafusion::sql::sqlparser::ast::Statement) -> Result<Output> {
        let (ctx, plan) = self.adhoc_plan(st).await?;
        self.adhoc_run(&ctx, plan).await
    }

    /// Runs a plan of [`Engine::adhoc_plan`].
    async fn adhoc_run(
        &self,
        ctx: &SessionContext,
        plan: datafusion::logical_expr::LogicalPlan,
    ) -> Result<Output> {
        let names = self.names();
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| describe(e, &names))?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| describe(e, &names))?;
        Ok(Output::Rows { schema, batches })
    }

    /// Plans a SELECT over stored history: the context with every stream and table, and the
    /// logical plan.
    async fn adhoc_plan(
        &self,
        st: datafusion::sql::sqlparser::ast::Statement,
    ) -> Result<(SessionContext, datafusion::logical_expr::LogicalPlan)> {
        let ctx = self.session();
        let defs = self.sources.lock().clone();
        for (name, def) in &defs {
            let t = crate::history::TopicTable::new(
                def.clone(),
                self.admin.clone(),
                self.config.bootstrap.clone(),
                None,
            )?;
            ctx.register_table(name.as_str(), Arc::new(t))?;
        }
        let (admin, bootstrap, d2) = (
            self.admin.clone(),
            self.config.bootstrap.clone(),
            defs.clone(),
        );
        let resolve: Arc<crate::window::Resolver> =
            Arc::new(move |source: &str, spec: WindowSpec| {
                let def = lookup(&d2, source)?;
                Ok(Arc::new(crate::history::TopicTable::new(
                    def,
                    admin.clone(),
                    bootstrap.clone(),
                    Some(spec),
                )?) as _)
            });
        for (name, f) in WindowFunction::all(resolve) {
            ctx.register_udtf(name, f);
        }
        let names = self.names();
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(st)))
            .await
            .map_err(|e| describe(e, &names))?;
        Ok((ctx, plan))
    }

    /// Plans `q` as a continuous query.
    async fn plan_continuous(&self, q: &QueryText) -> Result<crate::continuous::Pipeline> {
        let ctx = self.session();
        let defs = self.sources.lock().clone();
        let used: Arc<Mutex<Vec<Arc<Slot>>>> = Arc::new(Mutex::new(Vec::new()));
        for (name, def) in &defs {
            let schema = crate::format::with_meta(def.schema()?.as_ref());
            let slot = Slot::new(
                schema,
                Binding {
                    source: name.clone(),
                    table: def.kind == SourceKind::Table,
                    window: None,
                },
            );
            ctx.register_table(name.as_str(), Arc::new(SlotTable::new(slot, used.clone())))?;
        }
        let (d2, u2) = (defs.clone(), used.clone());
        let resolve: Arc<crate::window::Resolver> =
            Arc::new(move |source: &str, spec: WindowSpec| {
                let def = lookup(&d2, source)?;
                if def.kind == SourceKind::Table {
                    return Err(datafusion::error::DataFusionError::Plan(format!(
                        "`{source}` is a table: windows apply to streams"
                    )));
                }
                let base = crate::format::with_meta(
                    def.schema()
                        .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?
                        .as_ref(),
                );
                let schema = spec.schema(&base)?;
                let slot = Slot::new(
                    schema,
                    Binding {
                        source: source.to_string(),
                        table: false,
                        window: Some(spec),
                    },
                );
                Ok(Arc::new(SlotTable::new(slot, u2.clone())) as _)
            });
        for (name, f) in WindowFunction::all(resolve) {
            ctx.register_udtf(name, f);
        }
        let names = self.names();
        let st = datafusion::sql::sqlparser::ast::Statement::Query(q.query.clone());
        let logical = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(st)))
            .await
            .map_err(|e| describe(e, &names))?;
        let logical = ctx
            .state()
            .optimize(&logical)
            .map_err(|e| describe(e, &names))?;
        crate::continuous::plan(&ctx, logical, used, &defs, q.emit_changes)
            .await
            .map_err(|e| match e {
                SqlError::DataFusion(m) => SqlError::Statement(m),
                other => other,
            })
    }

    async fn push_query(&self, q: QueryText) -> Result<Output> {
        let pipeline = self.plan_continuous(&q).await?;
        let schema = pipeline.schema.clone();
        let (tx, rx) = mpsc::channel(16);
        let id = format!("push-{}", uuid_like());
        let ctx = QueryCtx {
            id,
            bootstrap: self.config.bootstrap.clone(),
            admin: self.admin.clone(),
            producer: self.producer.clone(),
            commit_interval: self.config.commit_interval,
            persistent: false,
            stats: Arc::new(Stats::default()),
            late_topic: None,
        };
        let (_stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            // The query ends when the client goes away (the channel closes).
            let _keep = _stop_tx;
            runner::run(ctx, pipeline, SinkSpec::Channel(tx), stop_rx).await;
        });
        Ok(Output::Stream { schema, rows: rx })
    }

    async fn restart_query(&self, id: &str, sql: &str) -> Result<()> {
        let mut parsed = parse::parse_script(sql)?;
        let p = parsed
            .pop()
            .ok_or_else(|| SqlError::Internal("empty query statement".into()))?;
        let (q, target) = match p.stmt {
            Stmt::Create {
                kind,
                name,
                options,
                query: Some(q),
                ..
            } => (
                q,
                Target::Restart {
                    kind,
                    name,
                    opt: options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.value.clone()))
                        .collect(),
                },
            ),
            Stmt::Insert { target, query } => (query, Target::Insert(target)),
            _ => {
                return Err(SqlError::Internal(format!(
                    "catalog query {id} is not a query"
                )))
            }
        };
        self.start_query(id, &p.text, q, target, false).await?;
        Ok(())
    }

    /// Plans and starts a persistent query; returns the message for the user.
    async fn start_query(
        &self,
        id: &str,
        sql: &str,
        q: QueryText,
        target: Target,
        fresh: bool,
    ) -> Result<String> {
        let pipeline = self.plan_continuous(&q).await?;
        let reads: Vec<String> = pipeline.inputs.iter().map(|i| i.def.name.clone()).collect();
        let out_schema = pipeline.schema.clone();
        let (sink, writes, sink_desc, late_topic) = match target {
            Target::Create {
                kind,
                ref name,
                ref opt,
            }
            | Target::Restart {
                kind,
                ref name,
                ref opt,
            } => {
                let get = |k: &str| opt.get(k).cloned();
                let late_topic = get("late_topic");
                if let Some(lt) = &late_topic {
                    self.ensure_topic(lt, 1, &[]).await?;
                }
                if get("connector").is_some_and(|c| c.eq_ignore_ascii_case("parquet")) {
                    let path = get("path").ok_or_else(|| {
                        SqlError::Statement("connector='parquet' needs path='directory'".into())
                    })?;
                    let spec = crate::sink::ParquetSpec::from_options(&path, &get)?;
                    (
                        SinkSpec::Parquet(spec),
                        None,
                        format!("parquet:{path}"),
                        late_topic,
                    )
                } else if let Some(c) = get("connector") {
                    return Err(SqlError::Statement(format!(
                        "unknown connector '{c}': use 'kafka' (the default) or 'parquet'"
                    )));
                } else {
                    // The output becomes a stream (or table) over its topic.
                    let fields: Vec<Field> = out_schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect();
                    if let Some(bad) = fields.iter().find(|f| f.name().starts_with('_')) {
                        return Err(SqlError::Statement(format!(
                            "output column `{}`: names starting with `_` are reserved; alias it",
                            bad.name()
                        )));
                    }
                    let schema = Schema::new(fields);
                    let key = opt.get("key").cloned().or_else(|| {
                        if kind == SourceKind::Table || pipeline.updating() {
                            runner::key_columns(&pipeline)
                                .first()
                                .map(|i| out_schema.field(*i).name().clone())
                        } else {
                            None
                        }
                    });
                    let mut o2 = opt.clone();
                    if let Some(k) = &key {
                        o2.insert("key".into(), k.clone());
                    }
                    let getter = |k: &str| o2.get(k).cloned();
                    let def = self.source_def(kind, name, &schema, None, &getter, sql)?;
                    if fresh {
                        let partitions = match get("partitions") {
                            Some(_) => self.partitions_option(&get)?,
                            None => self.input_partitions(&pipeline).await,
                        };
                        let mut cfg = table_configs(kind);
                        if pipeline.updating() {
                            cfg = vec![("cleanup.policy", "compact")];
                        }
                        self.ensure_topic(&def.topic, partitions, &cfg).await?;
                        self.save(&Entry::Source(def.clone())).await?;
                    }
                    let topic = def.topic.clone();
                    let def = Arc::new(def);
                    self.sources.lock().insert(name.clone(), def.clone());
                    (SinkSpec::Topic(def), Some(name.clone()), topic, late_topic)
                }
            }
            Target::Insert(ref name) => {
                let found = self.sources.lock().get(name).cloned();
                let def = found.ok_or_else(|| {
                    SqlError::Statement(format!(
                        "unknown stream `{name}`{}: CREATE STREAM it first, or use CREATE STREAM {name} AS SELECT",
                        crate::errors::suggest(name, self.sources.lock().keys().map(String::as_str))
                    ))
                })?;
                let target_schema = def.schema()?;
                if target_schema.fields().len() != out_schema.fields().len() {
                    return Err(SqlError::Statement(format!(
                        "INSERT INTO {name}: the query has {} columns, `{name}` has {}",
                        out_schema.fields().len(),
                        target_schema.fields().len()
                    )));
                }
                for (a, b) in out_schema.fields().iter().zip(target_schema.fields()) {
                    if !arrow::compute::can_cast_types(a.data_type(), b.data_type()) {
                        return Err(SqlError::Statement(format!(
                            "INSERT INTO {name}: column `{}` is {}, cannot become `{}` {}",
                            a.name(),
                            sql_type_name(a.data_type()),
                            b.name(),
                            sql_type_name(b.data_type())
                        )));
                    }
                }
                let topic = def.topic.clone();
                (SinkSpec::Topic(def), Some(name.clone()), topic, None)
            }
        };
        if fresh {
            self.save(&Entry::Query {
                id: id.to_string(),
                sql: sql.to_string(),
            })
            .await?;
        }
        if !self.hosts(id) {
            // Its slot's owner starts it once it reads the catalog entry.
            return Ok(format!(
                "created query {id} writing {sink_desc} (another server of the cluster runs it)"
            ));
        }
        let stats = Arc::new(Stats::default());
        let ctx = QueryCtx {
            id: id.to_string(),
            bootstrap: self.config.bootstrap.clone(),
            admin: self.admin.clone(),
            producer: self.producer.clone(),
            commit_interval: self.config.commit_interval,
            persistent: true,
            stats: stats.clone(),
            late_topic,
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(runner::run(ctx, pipeline, sink, stop_rx));
        self.queries.lock().insert(
            id.to_string(),
            Running {
                sql: sql.to_string(),
                sink: sink_desc.clone(),
                reads,
                writes,
                stats,
                stop,
                task,
            },
        );
        Ok(format!("started query {id} writing {sink_desc}"))
    }

    async fn input_partitions(&self, p: &crate::continuous::Pipeline) -> i32 {
        let mut n = self.config.default_partitions;
        for i in &p.inputs {
            if let Ok(t) = self.admin.describe_topic(&i.def.topic).await {
                n = n.max(t.partitions.len() as i32);
            }
        }
        n
    }
}

enum Target {
    Create {
        kind: SourceKind,
        name: String,
        opt: BTreeMap<String, String>,
    },
    Restart {
        kind: SourceKind,
        name: String,
        opt: BTreeMap<String, String>,
    },
    Insert(String),
}

fn lookup(
    defs: &BTreeMap<String, Arc<SourceDef>>,
    source: &str,
) -> datafusion::error::Result<Arc<SourceDef>> {
    defs.get(source).cloned().ok_or_else(|| {
        datafusion::error::DataFusionError::Plan(format!(
            "unknown stream `{source}`{}",
            crate::errors::suggest(source, defs.keys().map(String::as_str))
        ))
    })
}

fn table_configs(kind: SourceKind) -> Vec<(&'static str, &'static str)> {
    match kind {
        SourceKind::Table => vec![("cleanup.policy", "compact")],
        SourceKind::Stream => Vec::new(),
    }
}

fn done(tag: &str, message: Option<String>) -> Output {
    Output::Done {
        tag: tag.to_string(),
        message,
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{n:x}")
}

/// The SQL spelling of an Arrow type.
pub fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::Timestamp(..) => "TIMESTAMP".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        other => other.to_string(),
    }
}

/// Topics `SHOW TOPICS` leaves out: Kafka's internal ones (`__consumer_offsets`) and the ones
/// Strom SQL keeps for itself (its catalog, each query's state).
fn is_internal_topic(name: &str, internal: bool) -> bool {
    internal || name.starts_with("__") || name.starts_with("_strom_")
}

/// The sink named by a query's statement, for queries that run elsewhere: the target of
/// `CREATE STREAM x ..` or `INSERT INTO x ..`.
fn sink_of(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(4).collect();
    match words.as_slice() {
        [c, _, name, ..] if c.eq_ignore_ascii_case("CREATE") => name.to_string(),
        [i, into, name, ..]
            if i.eq_ignore_ascii_case("INSERT") && into.eq_ignore_ascii_case("INTO") =>
        {
            name.to_string()
        }
        _ => String::new(),
    }
}

/// Whether statement `sql` names `source` (as an identifier, in any case).
fn names_source(sql: &str, source: &str) -> bool {
    parse::parse_script(sql).is_ok_and(|ps| {
        ps.iter()
            .any(|p| p.idents.iter().any(|(i, _)| i.eq_ignore_ascii_case(source)))
    })
}
