//! The PostgreSQL wire protocol in front of an [`Engine`], so that `psql`, `strom sql` and any
//! PostgreSQL driver can run Strom SQL.
//!
//! ```text
//!  client ──TCP──▶ serve() ── one task per connection ──▶ pgwire: startup (no auth), framing
//!                                                             │
//!          Query ("a; b; c") ───────────────▶ Session::on_query ─▶ Engine::execute("a; b; c")
//!          ◀── per output: RowDescription, DataRow.., CommandComplete("SELECT n")   (Rows)
//!          ◀──             RowDescription, DataRow.. flushed per batch, ..          (Stream)
//!          ◀──             NoticeResponse(message), CommandComplete(tag)            (Done)
//!          ◀── ErrorResponse(SQLSTATE, one line) on the first error, then ReadyForQuery
//!
//!          Parse/Bind/Describe/Execute/Sync: the statement runs at Describe (if it returns
//!          rows, so that the columns can be described) or at Execute, once either way.
//! ```
//!
//! Values are sent in text format, or in binary where a client asks for it (tokio-postgres
//! does); `encode::Kind` lists the PostgreSQL type each Arrow type becomes. A push query streams
//! until the client sends a cancel request, sends Terminate or goes away; a second descriptor of
//! the socket notices the last two while pgwire is busy writing rows.
//!
//! There is no authentication (every user is trusted) and no TLS. Statements that drivers send
//! on their own and the engine does not know (`SET`, `RESET`) are answered here: see
//! `session_command`.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::common::ScalarValue;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::sink::{Sink, SinkExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, PgWireConnectionState,
    PgWireServerHandlers, Type, DEFAULT_NAME,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::{
    EmptyQueryResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{Engine, Output, SqlError};

mod encode;
mod script;
#[cfg(test)]
mod tests;

use encode::{encode_batch, fields, row_description, Kind};
pub use script::{split_statements, Statement};

/// Serves `engine` over the PostgreSQL protocol on `listener` until `shutdown` resolves, one
/// task per connection. A connection that breaks, or sends garbage, ends only itself. On
/// shutdown the listener closes and open connections are dropped (their push queries stop).
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(engine, listener, shutdown).await
}

/// What the server needs of an engine: [`Engine`], or a fake in tests.
#[async_trait]
pub(crate) trait Executor: Send + Sync + 'static {
    /// Runs every statement of `sql` in order, stopping at the first error.
    async fn execute(&self, sql: &str) -> crate::Result<Vec<Output>>;

    /// For a statement with parameters: their types and the result's columns
    /// ([`Engine::prepare`]).
    async fn prepare(&self, sql: &str)
        -> crate::Result<Option<(Vec<Option<DataType>>, SchemaRef)>>;

    /// Runs a statement with its parameters bound ([`Engine::execute_with`]).
    async fn execute_with(&self, sql: &str, params: Vec<ScalarValue>) -> crate::Result<Output>;
}

#[async_trait]
impl Executor for Engine {
    async fn execute(&self, sql: &str) -> crate::Result<Vec<Output>> {
        Engine::execute(self, sql).await
    }

    async fn prepare(
        &self,
        sql: &str,
    ) -> crate::Result<Option<(Vec<Option<DataType>>, SchemaRef)>> {
        Engine::prepare(self, sql).await
    }

    async fn execute_with(&self, sql: &str, params: Vec<ScalarValue>) -> crate::Result<Output> {
        Engine::execute_with(self, sql, params).await
    }
}

pub(crate) async fn serve_with<E: Executor>(
    engine: Arc<E>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let manager = Arc::new(ConnectionManager::new());
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let engine = engine.clone();
                    let manager = manager.clone();
                    conns.spawn(async move {
                        if let Err(e) = connection(engine, manager, stream).await {
                            tracing::debug!(%peer, "sql connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: the next accept may work.
                    tracing::warn!("sql listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Runs one client connection to its end.
async fn connection<E: Executor>(
    engine: Arc<E>,
    manager: Arc<ConnectionManager>,
    stream: TcpStream,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    // pgwire reads the socket only between messages; a second descriptor lets a push query see
    // the client go away while it is writing rows.
    let stream = stream.into_std()?;
    let watch = TcpStream::from_std(stream.try_clone()?)?;
    let stream = TcpStream::from_std(stream)?;
    let session = Arc::new(Session {
        engine,
        manager: manager.clone(),
        watch,
        parked: parking_lot::Mutex::new(None),
    });
    let handlers = Handlers {
        session,
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    };
    pgwire::tokio::process_socket(stream, None, handlers).await
}

/// pgwire's view of one connection: every handler is the [`Session`].
struct Handlers<E> {
    session: Arc<Session<E>>,
    cancel: Arc<DefaultCancelHandler>,
}

impl<E: Executor> PgWireServerHandlers for Handlers<E> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.session.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// The state of one connection.
struct Session<E> {
    engine: Arc<E>,
    manager: Arc<ConnectionManager>,
    /// The connection's socket again (a duplicated descriptor), only ever peeked at.
    watch: TcpStream,
    /// The result of a statement run at Describe, kept for the Execute that follows.
    parked: parking_lot::Mutex<Option<Parked>>,
}

/// A statement's result produced before its Execute arrived.
struct Parked {
    /// The prepared statement's name.
    statement: String,
    sql: String,
    /// `None`: the statement was empty.
    output: Option<Output>,
}

/// How a streamed result ended.
enum End {
    /// The stream finished after this many rows.
    Done(usize),
    /// An error (of the query, or a cancel request) to report.
    Failed(Box<ErrorInfo>),
}

impl<E: Executor> NoopStartupHandler for Session<E> {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.manager.clone())
    }
}

#[async_trait]
impl<E: Executor> SimpleQueryHandler for Session<E> {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        self.simple_query(client, &query.query).await?;
        // No transactions: every statement commits by itself, an error leaves nothing open.
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(TransactionStatus::Idle);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                TransactionStatus::Idle,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` streams the outputs itself and never calls this.
        Err(internal("simple query dispatched to do_query"))
    }
}

impl<E: Executor> Session<E> {
    /// Answers one Query message (all its statements), up to but not including ReadyForQuery.
    /// `Err` only when the client cannot be written to.
    async fn simple_query<C>(&self, client: &mut C, sql: &str) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if split_statements(sql).is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            return Ok(());
        }
        if let Some(tag) = session_command(sql) {
            client
                .feed(PgWireBackendMessage::CommandComplete(Tag::new(tag).into()))
                .await?;
            return Ok(());
        }
        let mut cancel = Cancel::new(client).await;
        let outputs = match self.execute(sql, &mut cancel).await? {
            Ok(outputs) => outputs,
            Err(info) => {
                client
                    .feed(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                return Ok(());
            }
        };
        if outputs.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for output in outputs {
            match output {
                Output::Rows { schema, batches } => {
                    let fields = fields(&schema, &Format::UnifiedText);
                    client
                        .feed(PgWireBackendMessage::RowDescription(row_description(
                            &fields,
                        )))
                        .await?;
                    let mut n = 0;
                    for batch in &batches {
                        for row in encode_batch(batch, &fields)? {
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            n += 1;
                        }
                    }
                    client
                        .feed(PgWireBackendMessage::CommandComplete(
                            Tag::new("SELECT").with_rows(n).into(),
                        ))
                        .await?;
                }
                Output::Stream { schema, mut rows } => {
                    let fields = fields(&schema, &Format::UnifiedText);
                    client
                        .send(PgWireBackendMessage::RowDescription(row_description(
                            &fields,
                        )))
                        .await?;
                    match self.stream(client, &fields, &mut rows, &mut cancel).await? {
                        End::Done(n) => {
                            client
                                .feed(PgWireBackendMessage::CommandComplete(
                                    Tag::new("SELECT").with_rows(n).into(),
                                ))
                                .await?
                        }
                        End::Failed(info) => {
                            // Like PostgreSQL: the statements after a failed one do not run.
                            client
                                .feed(PgWireBackendMessage::ErrorResponse((*info).into()))
                                .await?;
                            return Ok(());
                        }
                    }
                }
                Output::Done { tag, message } => {
                    if let Some(message) = message {
                        client
                            .feed(PgWireBackendMessage::NoticeResponse(notice(&message)))
                            .await?;
                    }
                    client
                        .feed(PgWireBackendMessage::CommandComplete(Tag::new(&tag).into()))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A statement's parameter types (those the client gave, else inferred; TEXT where
    /// neither says) and its result's columns.
    async fn prepared(&self, statement: &StoredStatement<String>) -> PgWireResult<Prepared> {
        let prepared = self
            .engine
            .prepare(&statement.statement)
            .await
            .map_err(|e| PgWireError::UserError(Box::new(sql_error(&e))))?;
        let Some((inferred, schema)) = prepared else {
            return Err(user_error(
                "0A000",
                "query parameters ($1, ...) work in SELECT statements only; write the values into the statement".into(),
            ));
        };
        let types = inferred
            .iter()
            .enumerate()
            .map(|(i, t)| {
                statement
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .unwrap_or_else(|| t.as_ref().map_or(Type::TEXT, |t| Kind::of(t).pg_type()))
            })
            .collect();
        Ok(Prepared {
            types,
            inferred,
            schema,
        })
    }

    /// Runs `sql` on the engine unless the client cancels or goes away first. The outer `Err`
    /// means the client is gone; the inner one is the error to report.
    async fn execute(
        &self,
        sql: &str,
        cancel: &mut Cancel,
    ) -> PgWireResult<Result<Vec<Output>, ErrorInfo>> {
        tokio::select! {
            r = self.engine.execute(sql) => Ok(r.map_err(|e| sql_error(&e))),
            () = cancel.requested() => Ok(Err(canceled())),
            true = client_gone(&self.watch) => Err(gone()),
        }
    }

    /// Sends the rows of a push query as they come, flushing after each batch, until the
    /// stream ends, fails, is cancelled, or the client goes away (`Err`).
    async fn stream<C>(
        &self,
        client: &mut C,
        fields: &Arc<Vec<FieldInfo>>,
        rows: &mut mpsc::Receiver<crate::Result<RecordBatch>>,
        cancel: &mut Cancel,
    ) -> PgWireResult<End>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut n = 0;
        let mut watching = true;
        loop {
            tokio::select! {
                next = rows.recv() => match next {
                    Some(Ok(batch)) => {
                        for row in encode_batch(&batch, fields)? {
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                            n += 1;
                        }
                        client.flush().await?;
                    }
                    Some(Err(e)) => return Ok(End::Failed(Box::new(sql_error(&e)))),
                    None => return Ok(End::Done(n)),
                },
                () = cancel.requested() => return Ok(End::Failed(Box::new(canceled()))),
                gone = client_gone(&self.watch), if watching => {
                    if gone {
                        return Err(self::gone());
                    }
                    // The client pipelined its next message: pgwire will read it afterwards.
                    watching = false;
                }
            }
        }
    }

    /// Runs one prepared statement (extended protocol): exactly one statement, or none.
    async fn run_one<C>(&self, client: &C, sql: &str) -> PgWireResult<Option<Output>>
    where
        C: ClientInfo,
    {
        let mut cancel = Cancel::new(client).await;
        let mut outputs = self
            .execute(sql, &mut cancel)
            .await?
            .map_err(|info| PgWireError::UserError(Box::new(info)))?;
        if outputs.len() > 1 {
            return Err(multiple_commands());
        }
        Ok(outputs.pop())
    }

    /// The result of `statement` run at Describe, if that is what was run last.
    fn unpark(&self, statement: &StoredStatement<String>) -> Option<Option<Output>> {
        let mut parked = self.parked.lock();
        match parked.take() {
            Some(p) if p.statement == statement.id && p.sql == statement.statement => {
                Some(p.output)
            }
            other => {
                *parked = other;
                None
            }
        }
    }

    fn park(&self, statement: &StoredStatement<String>, output: Option<Output>) {
        *self.parked.lock() = Some(Parked {
            statement: statement.id.clone(),
            sql: statement.statement.clone(),
            output,
        });
    }

    /// The statement's parked result, or runs it now.
    async fn output<C>(
        &self,
        client: &C,
        statement: &StoredStatement<String>,
    ) -> PgWireResult<Option<Output>>
    where
        C: ClientInfo,
    {
        match self.unpark(statement) {
            Some(output) => Ok(output),
            None => self.run_one(client, &statement.statement).await,
        }
    }

    /// Runs `statement` at Describe time if it returns rows, and parks its result for Execute;
    /// the columns (in `format`) or none.
    async fn describe<C>(
        &self,
        client: &C,
        statement: &StoredStatement<String>,
        format: &Format,
    ) -> PgWireResult<Vec<FieldInfo>>
    where
        C: ClientInfo,
    {
        if !returns_rows(&statement.statement) {
            return Ok(Vec::new());
        }
        let output = self.output(client, statement).await?;
        let fields = match &output {
            Some(Output::Rows { schema, .. } | Output::Stream { schema, .. }) => {
                fields(schema, format).as_ref().clone()
            }
            _ => Vec::new(),
        };
        self.park(statement, output);
        Ok(fields)
    }

    /// Execute of a push query: rows streamed as in the simple protocol (pgwire's portal would
    /// collect them all first).
    async fn execute_stream<C>(
        &self,
        client: &mut C,
        portal: &Portal<String>,
        schema: SchemaRef,
        mut rows: mpsc::Receiver<crate::Result<RecordBatch>>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.set_state(PgWireConnectionState::QueryInProgress);
        let fields = fields(&schema, &portal.result_column_format);
        let mut cancel = Cancel::new(client).await;
        match self.stream(client, &fields, &mut rows, &mut cancel).await? {
            End::Done(n) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("SELECT").with_rows(n).into(),
                    ))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                Ok(())
            }
            End::Failed(info) => Err(PgWireError::UserError(info)),
        }
    }
}

#[async_trait]
impl<E: Executor> ExtendedQueryHandler for Session<E> {
    type Statement = String;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser)
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        if let Some(Entry::Value(portal)) = client.portal_store().get_portal(name) {
            let fresh = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
            let plain = !has_parameters(&portal.statement.statement);
            if plain && fresh && matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
                check_no_parameters(&portal)?;
                match self.output(client, &portal.statement).await? {
                    Some(Output::Stream { schema, rows }) => {
                        return self.execute_stream(client, &portal, schema, rows).await;
                    }
                    // pgwire's Execute (max_rows, PortalSuspended) picks it up in do_query.
                    other => self.park(&portal.statement, other),
                }
            }
        }
        self._on_execute(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if has_parameters(&target.statement) {
            // Planned, not run: there are no values yet.
            let p = self.prepared(target).await?;
            let fields = fields(&p.schema, &Format::UnifiedText).as_ref().clone();
            return Ok(DescribeStatementResponse::new(p.types, fields));
        }
        let fields = self.describe(client, target, &Format::UnifiedText).await?;
        Ok(DescribeStatementResponse::new(Vec::new(), fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if has_parameters(&target.statement.statement) {
            let p = self.prepared(&target.statement).await?;
            let fields = fields(&p.schema, &target.result_column_format);
            return Ok(DescribePortalResponse::new(fields.as_ref().clone()));
        }
        check_no_parameters(target)?;
        let fields = self
            .describe(client, &target.statement, &target.result_column_format)
            .await?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let output = if has_parameters(&portal.statement.statement) {
            let p = self.prepared(&portal.statement).await?;
            let params = bind(portal, &p)?;
            // (pgwire's Execute watches for a cancel request around this.)
            let r = self
                .engine
                .execute_with(&portal.statement.statement, params)
                .await;
            Some(r.map_err(|e| PgWireError::UserError(Box::new(sql_error(&e))))?)
        } else {
            check_no_parameters(portal)?;
            self.output(client, &portal.statement).await?
        };
        Ok(match output {
            None => Response::EmptyQuery,
            Some(Output::Rows { schema, batches }) => {
                let fields = fields(&schema, &portal.result_column_format);
                let mut rows = Vec::new();
                for batch in &batches {
                    rows.extend(encode_batch(batch, &fields)?.into_iter().map(Ok));
                }
                Response::Query(QueryResponse::new(fields, futures_util::stream::iter(rows)))
            }
            // `on_execute` streams these itself.
            Some(Output::Stream { .. }) => return Err(internal("push query reached do_query")),
            Some(Output::Done { tag, message }) => {
                if let Some(message) = message {
                    client
                        .feed(PgWireBackendMessage::NoticeResponse(notice(&message)))
                        .await?;
                }
                Response::Execution(Tag::new(&tag))
            }
        })
    }
}

/// Keeps the statement text; refuses several statements in one Parse, as PostgreSQL does.
#[derive(Debug)]
pub(crate) struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<String>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if split_statements(sql).len() > 1 {
            return Err(multiple_commands());
        }
        Ok(Some(sql.to_string()))
    }

    fn get_parameter_types(&self, _stmt: &String) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _stmt: &String,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // Describe is answered by `Session::describe`, which can run the statement.
        Ok(Vec::new())
    }
}

// ---- Cancellation and disconnects --------------------------------------------------------------

/// The cancel signal of the query being run, fed by cancel requests on other connections.
struct Cancel(Option<BoxFuture<'static, bool>>);

impl Cancel {
    async fn new<C: ClientInfo>(client: &C) -> Self {
        match client.session_extensions().get::<Arc<ConnectionHandle>>() {
            // `false`: a newer query took the handle over, nothing can cancel this one.
            Some(handle) => Cancel(Some(handle.start_query().await.map(|r| r.is_ok()).boxed())),
            None => Cancel(None),
        }
    }

    /// Resolves when the client asked to cancel; never otherwise.
    async fn requested(&mut self) {
        if let Some(signal) = &mut self.0 {
            if signal.await {
                return;
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// `true` when the client closed the connection (or sent Terminate); `false` when it sent
/// something else, which stays unread for pgwire.
async fn client_gone(watch: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match watch.peek(&mut first).await {
        Ok(0) | Err(_) => true,
        Ok(_) => first[0] == b'X',
    }
}

fn gone() -> PgWireError {
    PgWireError::IoError(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the client went away",
    ))
}

// ---- Statements answered here ------------------------------------------------------------------

/// Statements that psql and drivers send on their own, answered without the engine: the
/// command tag to reply with, or `None` to run `sql` on the engine. Only these:
///
/// - `SET name ...` / `SET SESSION|LOCAL name ...` for a plain PostgreSQL setting
///   (`extra_float_digits`, `application_name`, `TIME ZONE`, ...): `SET`. Dotted or quoted
///   names (`SET datafusion.execution.batch_size = ..`) go to the engine.
/// - `RESET name` / `RESET ALL` likewise: `RESET`.
pub(crate) fn session_command(sql: &str) -> Option<&'static str> {
    let statements = split_statements(sql);
    let [statement] = statements.as_slice() else {
        return None;
    };
    let mut words = statement.text.split_whitespace();
    let tag = match words.next()?.to_ascii_uppercase().as_str() {
        "SET" => "SET",
        "RESET" => "RESET",
        _ => return None,
    };
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("SESSION") || name.eq_ignore_ascii_case("LOCAL") {
        name = words.next()?;
    }
    let name = name.split('=').next().unwrap_or(name);
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain.then_some(tag)
}

/// Whether `sql` is a statement that returns rows (and so is worth running at Describe).
fn returns_rows(sql: &str) -> bool {
    let text = split_statements(sql)
        .first()
        .map(|s| s.text.trim_start_matches('('))
        .unwrap_or("");
    let word: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    matches!(
        word.to_ascii_uppercase().as_str(),
        "SELECT" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" | "WITH" | "VALUES" | "TABLE"
    )
}

/// Whether `sql` has placeholders (`$1`, ..) outside quotes and comments.
fn has_parameters(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// A statement with parameters, planned.
struct Prepared {
    /// The parameters' types as the client sees them.
    types: Vec<Type>,
    /// The types the statement gives them, where it does.
    inferred: Vec<Option<DataType>>,
    /// The result's columns.
    schema: SchemaRef,
}

/// The bound parameters of `portal` as values of the types the statement wants (read in
/// text or binary format as `p.types` says).
fn bind(portal: &Portal<String>, p: &Prepared) -> PgWireResult<Vec<ScalarValue>> {
    let types = &p.types;
    if portal.parameters.len() != types.len() {
        return Err(user_error(
            "08P01",
            format!(
                "the statement takes {} parameters, {} were bound",
                types.len(),
                portal.parameters.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(types.len());
    for (i, (raw, t)) in portal.parameters.iter().zip(types).enumerate() {
        let binary = match &portal.parameter_format {
            Format::Individual(codes) => codes.get(i).is_some_and(|c| *c == 1),
            f => f.is_binary(i),
        };
        let bad = |what: &str| {
            user_error(
                "22P02",
                format!("parameter ${}: {what} for type {}", i + 1, t.name()),
            )
        };
        let Some(raw) = raw else {
            out.push(ScalarValue::Null);
            continue;
        };
        let v = if !binary {
            let text = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8 text"))?;
            let target = encode::data_type_of(t);
            ScalarValue::Utf8(Some(text.to_string()))
                .cast_to(&target)
                .map_err(|_| bad(&format!("'{text}' is not a value")))?
        } else {
            encode::from_binary(raw, t).ok_or_else(|| bad("a binary value that cannot be read"))?
        };
        let v = match p.inferred.get(i).cloned().flatten() {
            Some(want) if v.data_type() != want => v
                .cast_to(&want)
                .map_err(|_| bad(&format!("a value that is not a {want}")))?,
            _ => v,
        };
        out.push(v);
    }
    Ok(out)
}

fn check_no_parameters(portal: &Portal<String>) -> PgWireResult<()> {
    if portal.parameters.is_empty() {
        return Ok(());
    }
    Err(user_error(
        "08P01",
        format!(
            "the statement has no parameters ($1, ..), but {} were bound",
            portal.parameters.len()
        ),
    ))
}

// ---- Errors and notices ------------------------------------------------------------------------

/// An engine error as an ErrorResponse: SQLSTATE by whose fault it is, the one-line message.
fn sql_error(e: &SqlError) -> ErrorInfo {
    let code = match e {
        SqlError::Statement(_) | SqlError::DataFusion(_) => "42601",
        SqlError::Unsupported(_) => "0A000",
        SqlError::Format(_) => "22000",
        SqlError::Client(_) => "58000",
        SqlError::Io(_) => "58030",
        SqlError::Internal(_) => "XX000",
    };
    let message = e.to_string();
    let message = message.lines().next().unwrap_or("").trim().to_string();
    ErrorInfo::new("ERROR".into(), code.into(), message)
}

fn canceled() -> ErrorInfo {
    ErrorInfo::new(
        "ERROR".into(),
        "57014".into(),
        "canceling statement due to user request".into(),
    )
}

fn multiple_commands() -> PgWireError {
    user_error(
        "42601",
        "cannot insert multiple commands into a prepared statement".into(),
    )
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

pub(crate) fn internal(what: &str) -> PgWireError {
    user_error("XX000", format!("internal error (this is a bug): {what}"))
}

fn notice(message: &str) -> NoticeResponse {
    ErrorInfo::new("NOTICE".into(), "00000".into(), message.to_string()).into()
}
