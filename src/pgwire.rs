//! The Postgres wire protocol in front of the history, so `psql`, Grafana's
//! PostgreSQL data source and any Postgres driver can query what
//! `POST /api/v1/sql` answers, with the same safety.
//!
//! Why here and this way: dashboards and ad-hoc tools already speak Postgres, and
//! a driver is easier to point at us than an HTTP API. Every statement goes
//! through [`HistoryReader`] — a fresh snapshot per query (pending rows
//! included), DataFusion's read-only options (no DDL, DML or `SET`), no file or
//! URL tables, and the configured memory and time limits — so this listener adds
//! a protocol, not a second query path. `datafusion-postgres` was not used: it
//! serves one long-lived `SessionContext` that its `SET` statements change and
//! that would bypass the reader's per-query snapshot and limits; `pgwire` (the
//! protocol) and `arrow-pg` (Arrow to Postgres values) are the parts of it we need.
//!
//! What a client gets:
//! - the simple query protocol (several statements in one message run in
//!   order; the first error ends the message) and the extended one (Parse,
//!   Bind, Describe, Execute): parameters `$1`, `$2`, … are typed by DataFusion's
//!   planner and bound as values, never spliced into the SQL text;
//! - session statements answered here, changing nothing but this connection's
//!   output format: `SET`/`RESET` of a few harmless client parameters
//!   ([`HARMLESS`]), `SHOW` of the server parameters clients ask for, and
//!   `BEGIN`/`COMMIT`/`ROLLBACK` (each query reads its own snapshot anyway).
//!   Any other `SET`, and every statement that writes, is refused;
//! - errors as `ErrorResponse` with an SQLSTATE: 42601 syntax or refused
//!   statement, 25006 read-only (DDL, DML, `COPY`), 42P01 unknown table, 42703
//!   unknown column, 57014 time limit or cancel request, 53200 memory limit;
//! - at most `sql.pg_max_connections` connections at once (a semaphore); the one
//!   over the cap is answered `FATAL 53300` after its startup message;
//! - no authentication, or a cleartext password (`sql.pg_password`) when set.
//!   There is no TLS: keep the listener on loopback or behind a TLS proxy.
//!
//! The accept loop and every connection stop when the app's cancellation token
//! fires; a query in flight is dropped with its connection.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use ::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use ::pgwire::api::portal::{Format, Portal};
use ::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use ::pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use ::pgwire::api::stmt::QueryParser;
use ::pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, PgWireConnectionState,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use ::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use ::pgwire::messages::startup::Authentication;
use ::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use ::pgwire::types::format::FormatOptions;
use anyhow::Context;
use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use causeway_engine::sql::{Described, QueryResult};
use causeway_engine::{Error as EngineError, HistoryReader, QueryLimits};
use datafusion::scalar::ScalarValue;
use futures::{Sink, SinkExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The Postgres version we claim: drivers parse it to choose features.
const SERVER_VERSION: &str = concat!("16.6 (Causeway ", env!("CARGO_PKG_VERSION"), ")");
const SERVER_VERSION_NUM: &str = "160006";

/// How long a connection refused for the cap may take to send its startup
/// message and read the refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Refused connections being answered at once; past this a new one is closed
/// without an answer.
const MAX_REFUSING: usize = 64;

/// Session parameters a client may `SET` (they only change how this
/// connection's results are printed, or nothing at all).
pub(crate) const HARMLESS: [&str; 9] = [
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "standard_conforming_strings",
    "timezone",
];

/// What the listener needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_connections: usize,
    /// Asked of every client in cleartext when set.
    pub(crate) password: Option<String>,
    pub(crate) limits: QueryLimits,
}

/// A bound listener, not yet serving.
#[derive(Debug)]
pub(crate) struct Listener {
    listener: TcpListener,
    settings: Settings,
    queries: Arc<Queries>,
}

impl Listener {
    /// Binds the address; connections wait until [`Listener::serve`].
    pub(crate) async fn bind(
        addr: SocketAddr,
        reader: HistoryReader,
        settings: Settings,
    ) -> anyhow::Result<Listener> {
        anyhow::ensure!(
            settings.max_connections > 0,
            "sql.pg_max_connections: must be larger than zero"
        );
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for postgres clients on {addr}"))?;
        Ok(Listener {
            listener,
            queries: Arc::new(Queries {
                reader,
                limits: settings.limits,
            }),
            settings,
        })
    }

    /// The bound address (the port is chosen when binding port 0).
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `cancel` fires, then closes them all.
    pub(crate) async fn serve(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let max = self.settings.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let manager = Arc::new(ConnectionManager::new());
        let pids: Arc<dyn PidSecretKeyGenerator> = Arc::new(RandomPidSecretKeyGenerator::default());
        let parameters = Arc::new(server_parameters());
        let cancels = Arc::new(DefaultCancelHandler::new(manager.clone()));
        let password: Option<Arc<str>> = self.settings.password.as_deref().map(Arc::from);
        let mut connections = JoinSet::new();
        let mut refusing = 0usize;
        loop {
            let (socket, peer) = tokio::select! {
                () = cancel.cancelled() => break,
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    match joined {
                        Ok(Admission::Refused) => refusing = refusing.saturating_sub(1),
                        Ok(Admission::Admitted) => {}
                        Err(error) if error.is_panic() => {
                            tracing::error!(%error, "postgres connection task panicked");
                        }
                        Err(_) => {}
                    }
                    continue;
                }
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(%error, "cannot accept a postgres connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let permit = permits.clone().try_acquire_owned().ok();
            let admitted = permit.is_some();
            if !admitted {
                tracing::warn!(%peer, max_connections = max, "postgres connection refused: too many connections");
                if refusing >= MAX_REFUSING {
                    drop(socket);
                    continue;
                }
                refusing += 1;
            }
            let connection = Connection {
                startup: Arc::new(Startup {
                    admitted,
                    max_connections: max,
                    password: password.clone(),
                    parameters: parameters.clone(),
                    pids: pids.clone(),
                    manager: manager.clone(),
                }),
                queries: self.queries.clone(),
                cancel: cancels.clone(),
            };
            let stop = cancel.clone();
            connections.spawn(async move {
                let _permit = permit;
                let session = ::pgwire::tokio::process_socket(socket, None, connection);
                let outcome = if admitted {
                    tokio::select! {
                        r = session => r.map_err(|e| e.to_string()),
                        () = stop.cancelled() => Ok(()),
                    }
                } else {
                    tokio::select! {
                        r = tokio::time::timeout(REFUSAL_TIMEOUT, session) => {
                            r.unwrap_or(Ok(())).map_err(|e| e.to_string())
                        }
                        () = stop.cancelled() => Ok(()),
                    }
                };
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "postgres connection ended with an error");
                }
                if admitted {
                    Admission::Admitted
                } else {
                    Admission::Refused
                }
            });
        }
        connections.shutdown().await;
        tracing::info!("postgres listener stopped");
        Ok(())
    }
}

/// How a connection task was let in, reported when it ends.
#[derive(Debug, Clone, Copy)]
enum Admission {
    Admitted,
    Refused,
}

fn server_parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = SERVER_VERSION.to_owned();
    p.time_zone = "UTC".to_owned();
    p.date_style = "ISO, MDY".to_owned();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p
}

/// The handlers of one connection.
#[derive(Debug)]
struct Connection {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// Startup: the connection cap, then no authentication or a cleartext password.
struct Startup {
    admitted: bool,
    max_connections: usize,
    password: Option<Arc<str>>,
    parameters: Arc<DefaultServerParameterProvider>,
    pids: Arc<dyn PidSecretKeyGenerator>,
    manager: Arc<ConnectionManager>,
}

impl Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Startup")
            .field("admitted", &self.admitted)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Startup {
    async fn admit<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        // Registered so a cancel request (psql's Ctrl-C) stops this connection's query.
        let (handle, guard) = self.manager.register(pid, secret_key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, self.parameters.as_ref()).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !self.admitted {
                    return Err(fatal(
                        "53300",
                        format!(
                            "too many connections: all {} of sql.pg_max_connections are in use",
                            self.max_connections
                        ),
                    ));
                }
                if self.password.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    self.admit(client).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let Some(expected) = &self.password else {
                    return Err(fatal("08P01", "unexpected password message".to_owned()));
                };
                let given = message.into_password()?;
                let user = client
                    .metadata()
                    .get(::pgwire::api::METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                if password_matches(given.password.as_bytes(), expected.as_bytes()) {
                    self.admit(client).await?;
                } else {
                    tracing::warn!(peer = %client.socket_addr(), user, "postgres password refused");
                    return Err(fatal(
                        "28P01",
                        format!("password authentication failed for user \"{user}\""),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
}

/// Runs statements: the simple and the extended query protocol.
#[derive(Debug)]
struct Queries {
    reader: HistoryReader,
    limits: QueryLimits,
}

/// A statement prepared by Parse.
#[derive(Debug)]
struct Prepared {
    sql: String,
    kind: Kind,
    /// The plan's result schema and parameter types, for a query.
    described: Option<Described>,
}

#[async_trait]
impl QueryParser for Queries {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let statements = split_statements(sql);
        let sql = match statements.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => {
                return Err(user_error(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ));
            }
        };
        let kind = classify(sql);
        if let Kind::Refused { code, message } = &kind {
            return Err(user_error(code, message));
        }
        let described = match kind {
            Kind::Query => Some(
                self.reader
                    .describe(sql, self.limits)
                    .await
                    .map_err(|e| PgWireError::UserError(engine_error(e)))?,
            ),
            _ => None,
        };
        Ok(Some(Arc::new(Prepared {
            sql: sql.to_owned(),
            kind,
            described,
        })))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .described
            .as_ref()
            .map(|d| d.params.iter().map(param_pg_type).collect())
            .unwrap_or_default())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.cloned().unwrap_or_default();
        match (&stmt.kind, &stmt.described) {
            (Kind::Query, Some(d)) => {
                pg_fields(&encodable_schema(&d.schema), &format, default_format())
            }
            (Kind::Show(name), _) => Ok(vec![FieldInfo::new(
                name.clone(),
                None,
                None,
                Type::TEXT,
                field_format(&format, 0)?,
            )]),
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut responses = Vec::new();
        for sql in split_statements(query) {
            let kind = classify(sql);
            let result = match kind {
                Kind::Query => match self.reader.query(sql, self.limits).await {
                    Ok(result) => encode(result, &Format::UnifiedText, format_options(&*client))
                        .map(Response::Query)
                        .map_err(error_info),
                    Err(e) => Err(engine_error(e)),
                },
                other => session(client, other),
            };
            match result {
                Ok(response) => responses.push(response),
                Err(info) => {
                    // Like Postgres: the first failing statement ends the message.
                    responses.push(Response::Error(info));
                    break;
                }
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Arc<Prepared>;
    type QueryParser = Queries;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(Queries {
            reader: self.reader.clone(),
            limits: self.limits,
        })
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let prepared = &portal.statement.statement;
        match &prepared.kind {
            Kind::Query => {
                let params = bind_params(portal)?;
                let result = self
                    .reader
                    .query_with_params(&prepared.sql, params, self.limits)
                    .await
                    .map_err(|e| PgWireError::UserError(engine_error(e)))?;
                encode(
                    result,
                    &portal.result_column_format,
                    format_options(&*client),
                )
                .map(Response::Query)
            }
            other => session(client, other.clone()).map_err(PgWireError::UserError),
        }
    }
}

/// What a statement is, as far as this listener is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Anything for the history reader (which refuses what is not a read).
    Query,
    /// `SET` of a harmless parameter (lower-case name, value without quotes).
    Set(String, String),
    /// `SET TRANSACTION …` / `SET SESSION CHARACTERISTICS …` without `READ WRITE`.
    SetTransaction,
    /// `RESET name`, or `RESET ALL` (`None`).
    Reset(Option<String>),
    /// `SHOW` of a server or session parameter (lower-case name).
    Show(String),
    Begin,
    Commit,
    Rollback,
    /// `DISCARD ALL`: nothing to discard.
    Discard,
    Refused {
        code: &'static str,
        message: String,
    },
}

/// Answers a session statement from and into the connection's metadata.
fn session<C: ClientInfo>(client: &mut C, kind: Kind) -> Result<Response, Box<ErrorInfo>> {
    match kind {
        Kind::Set(name, value) => {
            client.metadata_mut().insert(name, value);
            Ok(Response::Execution(Tag::new("SET")))
        }
        Kind::SetTransaction => Ok(Response::Execution(Tag::new("SET"))),
        Kind::Reset(name) => {
            let metadata = client.metadata_mut();
            match name {
                Some(name) => {
                    metadata.remove(&name);
                }
                None => {
                    for name in HARMLESS {
                        metadata.remove(name);
                    }
                }
            }
            Ok(Response::Execution(Tag::new("RESET")))
        }
        Kind::Show(name) => {
            let value = show(client.metadata(), &name).unwrap_or_default();
            show_response(&name, &value).map(Response::Query)
        }
        Kind::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
        Kind::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
        Kind::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        Kind::Discard => Ok(Response::Execution(Tag::new("DISCARD ALL"))),
        Kind::Refused { code, message } => Err(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            code.to_owned(),
            message,
        ))),
        Kind::Query => Err(internal(&"a query reached the session statements")),
    }
}

/// The value `SHOW name` answers, or `None` when it is not ours to answer.
fn show(metadata: &HashMap<String, String>, name: &str) -> Option<String> {
    let session = |key: &str, default: &str| {
        Some(
            metadata
                .get(key)
                .cloned()
                .unwrap_or_else(|| default.to_owned()),
        )
    };
    match name {
        "server_version" => Some(SERVER_VERSION.to_owned()),
        "server_version_num" => Some(SERVER_VERSION_NUM.to_owned()),
        "server_encoding" => Some("UTF8".to_owned()),
        "client_encoding" => Some("UTF8".to_owned()),
        "timezone" => Some("UTC".to_owned()),
        "datestyle" => session("datestyle", "ISO, MDY"),
        "intervalstyle" => session("intervalstyle", "postgres"),
        "extra_float_digits" => session("extra_float_digits", "1"),
        "bytea_output" => session("bytea_output", "hex"),
        "application_name" => session("application_name", ""),
        "client_min_messages" => session("client_min_messages", "notice"),
        "standard_conforming_strings" | "integer_datetimes" => Some("on".to_owned()),
        "transaction_read_only" | "default_transaction_read_only" => Some("on".to_owned()),
        "transaction_isolation" | "default_transaction_isolation" => {
            Some("read committed".to_owned())
        }
        "is_superuser" => Some("off".to_owned()),
        "search_path" => Some("public".to_owned()),
        "max_identifier_length" => Some("63".to_owned()),
        _ => None,
    }
}

fn show_response(name: &str, value: &str) -> Result<QueryResponse, Box<ErrorInfo>> {
    let fields = Arc::new(vec![FieldInfo::new(
        name.to_owned(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut encoder = ::pgwire::api::results::DataRowEncoder::new(fields.clone());
    encoder.encode_field(&value).map_err(error_info)?;
    let row = encoder.take_row();
    Ok(QueryResponse::new(fields, futures::stream::iter([Ok(row)])))
}

/// Classifies one statement (no trailing semicolon) by its leading keywords.
fn classify(sql: &str) -> Kind {
    let words = leading_words(sql, 4);
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    match first {
        "set" => classify_set(sql),
        "reset" => match second {
            "all" => Kind::Reset(None),
            name if HARMLESS.contains(&name) => Kind::Reset(Some(name.to_owned())),
            name => refused_set(name),
        },
        "show" => {
            let name = match (second, words.get(2).map(String::as_str)) {
                ("time", Some("zone")) => "timezone",
                (name, _) => name,
            };
            if show(&HashMap::new(), name).is_some() {
                Kind::Show(name.to_owned())
            } else {
                Kind::Query
            }
        }
        "begin" | "start" => Kind::Begin,
        "commit" | "end" => Kind::Commit,
        "rollback" | "abort" => Kind::Rollback,
        "discard" if second == "all" => Kind::Discard,
        "insert" | "update" | "delete" | "merge" | "upsert" | "replace" | "create" | "drop"
        | "alter" | "truncate" | "copy" | "grant" | "revoke" | "vacuum" | "analyze" | "cluster"
        | "reindex" | "comment" | "lock" | "refresh" | "security" | "checkpoint" | "import"
        | "load" | "attach" | "detach" | "install" | "discard" => Kind::Refused {
            code: "25006",
            message: format!(
                "cannot execute {} in a read-only session: Causeway's SQL only reads the history",
                first.to_uppercase()
            ),
        },
        "call" | "do" | "prepare" | "execute" | "deallocate" | "declare" | "fetch" | "move"
        | "close" | "listen" | "notify" | "unlisten" | "savepoint" | "release" => Kind::Refused {
            code: "0A000",
            message: format!("{} is not supported", first.to_uppercase()),
        },
        _ => Kind::Query,
    }
}

fn classify_set(sql: &str) -> Kind {
    let rest = skip_comments(sql);
    let rest = rest.get(3..).unwrap_or("").trim_start();
    let rest = strip_keyword(rest, "session")
        .or_else(|| strip_keyword(rest, "local"))
        .unwrap_or(rest);
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("transaction") || lower.starts_with("characteristics") {
        return if lower.contains("read write") {
            Kind::Refused {
                code: "25006",
                message: "this session is read-only: READ WRITE transactions are not available"
                    .to_owned(),
            }
        } else {
            Kind::SetTransaction
        };
    }
    let (name, value) = if let Some(value) = strip_keyword(rest, "time")
        .and_then(|r| strip_keyword(r, "zone"))
        .map(str::trim)
    {
        ("timezone".to_owned(), value)
    } else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let (name, value) = rest.split_at(end);
        let value = value.trim_start();
        let value = value
            .strip_prefix('=')
            .or_else(|| strip_keyword(value, "to"))
            .unwrap_or(value)
            .trim();
        (name.trim_matches('"').to_ascii_lowercase(), value)
    };
    if !HARMLESS.contains(&name.as_str()) {
        return refused_set(&name);
    }
    let value = unquote(value);
    if value.eq_ignore_ascii_case("default") {
        return Kind::Reset(Some(name));
    }
    let bad = |why: &str| Kind::Refused {
        code: "22023",
        message: format!("invalid value for parameter \"{name}\": \"{value}\" ({why})"),
    };
    let lower = value.to_ascii_lowercase();
    match name.as_str() {
        "client_encoding" if !matches!(lower.as_str(), "utf8" | "utf-8" | "unicode") => {
            bad("only UTF8 is supported")
        }
        "timezone"
            if !matches!(
                lower.as_str(),
                "utc" | "etc/utc" | "gmt" | "etc/gmt" | "z" | "zulu" | "0" | "+00" | "+00:00"
            ) =>
        {
            bad("times are UTC; only UTC is supported")
        }
        "extra_float_digits" if !value.parse::<i8>().is_ok_and(|d| (-15..=3).contains(&d)) => {
            bad("an integer from -15 to 3")
        }
        "standard_conforming_strings" if !matches!(lower.as_str(), "on" | "true" | "1") => {
            bad("only on is supported")
        }
        "bytea_output" if !matches!(lower.as_str(), "hex" | "escape") => bad("hex or escape"),
        _ => Kind::Set(name, value),
    }
}

fn refused_set(name: &str) -> Kind {
    Kind::Refused {
        code: "42601",
        message: format!(
            "SET {name} is refused: this session is read-only; only {} can be set",
            HARMLESS.join(", ")
        ),
    }
}

/// `rest` without a leading case-insensitive `keyword` and the space after it.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    let tail = rest.get(keyword.len()..)?;
    (head.eq_ignore_ascii_case(keyword) && tail.chars().next().is_none_or(|c| !is_word_char(c)))
        .then(|| tail.trim_start())
}

/// A SET value without its quotes: `'ISO, MDY'` → `ISO, MDY`.
fn unquote(value: &str) -> String {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.replace("''", "'");
    }
    value
        .split(',')
        .map(|v| v.trim().trim_matches('\'').trim_matches('"'))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The statement without leading whitespace, comments and opening parentheses.
fn skip_comments(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if trimmed.starts_with("/*") {
            rest = trimmed
                .get(block_comment_end(trimmed.as_bytes(), 0)..)
                .unwrap_or("");
        } else {
            return trimmed;
        }
    }
}

/// Up to `n` leading words of a statement, lower-case.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    skip_comments(sql)
        .split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
        .take(n)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The byte just after the block comment starting at `start` (`/*`), nested
/// like Postgres's; the end of the input when it is not closed.
fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth = depth.saturating_sub(1);
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Splits a simple-query message into statements at the semicolons outside
/// quotes, dollar quotes and comments; drops empty and comment-only ones.
fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E');
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment_end(b, i),
            b'$' if !(i > 0 && is_word_char(char::from(b[i - 1]))) => {
                // `$tag$ … $tag$` (the tag may be empty); `$1` is a parameter.
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !is_word_char(char::from(*c)))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(end)
                        if b[end] == b'$' && b.get(i + 1).is_none_or(|c| !c.is_ascii_digit()) =>
                    {
                        let tag = &b[i..=end];
                        i = end + 1;
                        match b[i..].windows(tag.len()).position(|w| w == tag) {
                            Some(p) => i += p + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                statements.push(&sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < sql.len() {
        statements.push(&sql[start..]);
    }
    statements
        .into_iter()
        .map(str::trim)
        .filter(|s| !skip_comments(s).is_empty())
        .collect()
}

/// The bound parameters as values, typed as the client declared them or as the
/// plan inferred them.
fn bind_params(portal: &Portal<Arc<Prepared>>) -> PgWireResult<Vec<ScalarValue>> {
    // The protocol allows no, one or one format code per parameter; pgwire
    // indexes the list, so a shorter one is refused here rather than panicking there.
    if let Format::Individual(codes) = &portal.parameter_format
        && codes.len() != portal.parameter_len()
    {
        return Err(user_error(
            "08P01",
            &format!(
                "bind message has {} parameter formats but {} parameters",
                codes.len(),
                portal.parameter_len()
            ),
        ));
    }
    let stmt = &portal.statement;
    let inferred: &[Option<DataType>] = stmt
        .statement
        .described
        .as_ref()
        .map(|d| d.params.as_slice())
        .unwrap_or_default();
    (0..portal.parameter_len())
        .map(|i| {
            let target = inferred.get(i).cloned().flatten();
            let pg_type = stmt
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .unwrap_or_else(|| param_pg_type(&target));
            let value = param_value(portal, i, &pg_type)?;
            match target {
                Some(dt) if value.data_type() != dt => value.cast_to(&dt).map_err(|e| {
                    user_error(
                        "22P02",
                        &format!("parameter ${}: cannot use it as {dt}: {e}", i + 1),
                    )
                }),
                _ => Ok(value),
            }
        })
        .collect()
}

fn param_value(
    portal: &Portal<Arc<Prepared>>,
    i: usize,
    pg_type: &Type,
) -> PgWireResult<ScalarValue> {
    let raw = portal
        .parameters
        .get(i)
        .ok_or(PgWireError::ParameterIndexOutOfBound(i))?;
    let Some(raw) = raw else {
        return Ok(ScalarValue::Null);
    };
    let micros = |t: chrono::NaiveDateTime| t.and_utc().timestamp_micros();
    let utc: Option<Arc<str>> = Some("UTC".into());
    Ok(match *pg_type {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, pg_type)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, pg_type)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, pg_type)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, pg_type)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, pg_type)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, pg_type)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            ScalarValue::Utf8(portal.parameter::<String>(i, pg_type)?)
        }
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<chrono::NaiveDateTime>(i, pg_type)?
                .map(micros),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            portal
                .parameter::<chrono::DateTime<chrono::FixedOffset>>(i, pg_type)?
                .map(|t| t.timestamp_micros()),
            utc,
        ),
        Type::DATE => ScalarValue::Date32(
            portal
                .parameter::<chrono::NaiveDate>(i, pg_type)?
                .map(|d| d.to_epoch_days()),
        ),
        _ if portal.parameter_format.is_text(i) => ScalarValue::Utf8(Some(
            String::from_utf8(raw.to_vec())
                .map_err(|_| user_error("22021", "parameter text is not UTF-8"))?,
        )),
        _ => {
            return Err(user_error(
                "0A000",
                &format!(
                    "parameter ${}: binary {} values are not supported; send it as text",
                    i + 1,
                    pg_type.name()
                ),
            ));
        }
    })
}

/// The Postgres type announced for a parameter of this Arrow type.
fn param_pg_type(data_type: &Option<DataType>) -> Type {
    match data_type {
        Some(DataType::Boolean) => Type::BOOL,
        Some(DataType::Int8 | DataType::Int16 | DataType::UInt8) => Type::INT2,
        Some(DataType::Int32 | DataType::UInt16) => Type::INT4,
        Some(DataType::Int64 | DataType::UInt32 | DataType::UInt64) => Type::INT8,
        Some(DataType::Float16 | DataType::Float32) => Type::FLOAT4,
        Some(DataType::Float64) => Type::FLOAT8,
        Some(DataType::Timestamp(_, Some(_))) => Type::TIMESTAMPTZ,
        Some(DataType::Timestamp(_, None)) => Type::TIMESTAMP,
        Some(DataType::Date32 | DataType::Date64) => Type::DATE,
        _ => Type::TEXT,
    }
}

/// Whether arrow-pg encodes this type as a Postgres value of its own; the
/// others (maps, lists, structs, dictionaries, …) are sent as text.
fn encodable(data_type: &DataType) -> bool {
    use DataType as D;
    match data_type {
        D::Null
        | D::Boolean
        | D::Int8
        | D::Int16
        | D::Int32
        | D::Int64
        | D::UInt8
        | D::UInt16
        | D::UInt32
        | D::UInt64
        | D::Float32
        | D::Float64
        | D::Utf8
        | D::LargeUtf8
        | D::Utf8View
        | D::Binary
        | D::LargeBinary
        | D::BinaryView
        | D::Date32
        | D::Date64
        | D::Timestamp(_, _)
        | D::Interval(_)
        | D::Duration(_) => true,
        D::Decimal128(_, scale) => *scale >= 0,
        D::Time32(unit) => matches!(unit, TimeUnit::Second | TimeUnit::Millisecond),
        D::Time64(unit) => matches!(unit, TimeUnit::Microsecond | TimeUnit::Nanosecond),
        _ => false,
    }
}

/// The schema as sent: every field nullable, the types arrow-pg cannot encode
/// as text.
fn encodable_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let data_type = if encodable(f.data_type()) {
                    f.data_type().clone()
                } else {
                    DataType::Utf8
                };
                Field::new(f.name(), data_type, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// The batch with its non-encodable columns printed as text.
fn encodable_batch(batch: RecordBatch) -> Result<RecordBatch, Box<ErrorInfo>> {
    let schema = encodable_schema(batch.schema_ref());
    let options = arrow::util::display::FormatOptions::default();
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if encodable(column.data_type()) {
                return Ok(column.clone());
            }
            let formatter =
                arrow::util::display::ArrayFormatter::try_new(column.as_ref(), &options)
                    .map_err(|e| internal(&e))?;
            let mut text = StringBuilder::new();
            for row in 0..column.len() {
                if column.is_null(row) {
                    text.append_null();
                } else {
                    text.append_value(
                        formatter
                            .value(row)
                            .try_to_string()
                            .map_err(|e| internal(&e))?,
                    );
                }
            }
            Ok(Arc::new(text.finish()) as ArrayRef)
        })
        .collect::<Result<Vec<_>, Box<ErrorInfo>>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| internal(&e))
}

/// The result as a row stream, encoded lazily batch by batch.
fn encode(
    result: QueryResult,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(pg_fields(
        &encodable_schema(&result.schema),
        format,
        options,
    )?);
    let columns = fields.len();
    let row_fields = fields.clone();
    let rows = result.batches.into_iter().flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<::pgwire::messages::data::DataRow>> + Send> =
            match encodable_batch(batch) {
                Ok(batch) if batch.num_columns() == columns => {
                    arrow_pg::datatypes::encode_recordbatch(row_fields.clone(), batch)
                }
                Ok(_) => Box::new(std::iter::once(Err(PgWireError::UserError(internal(
                    &"a result batch does not match its schema",
                ))))),
                Err(info) => Box::new(std::iter::once(Err(PgWireError::UserError(info)))),
            };
        rows
    });
    Ok(QueryResponse::new(fields, futures::stream::iter(rows)))
}

/// Row description fields for a schema of encodable types.
fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let pg_type = arrow_pg::datatypes::field_into_pg_type(f)?;
            Ok(FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type,
                field_format(format, i)?,
            )
            .with_format_options(options.clone()))
        })
        .collect()
}

/// The format of result column `i` (an error, not a panic, when the client sent
/// fewer format codes than there are columns).
fn field_format(format: &Format, i: usize) -> PgWireResult<FieldFormat> {
    match format {
        Format::UnifiedText => Ok(FieldFormat::Text),
        Format::UnifiedBinary => Ok(FieldFormat::Binary),
        Format::Individual(codes) => codes.get(i).map(|c| FieldFormat::from(*c)).ok_or_else(|| {
            user_error(
                "08P01",
                &format!("no result format code for column {}", i + 1),
            )
        }),
    }
}

fn default_format() -> Arc<FormatOptions> {
    Arc::new(FormatOptions::default())
}

/// The output format this session chose (`SET datestyle`, `extra_float_digits`, …).
fn format_options<C: ClientInfo>(client: &C) -> Arc<FormatOptions> {
    Arc::new(FormatOptions::from_client_metadata(client.metadata()))
}

fn user_error(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.to_owned(),
    )))
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message,
    )))
}

fn internal(error: &dyn std::fmt::Display) -> Box<ErrorInfo> {
    tracing::error!(%error, "postgres statement failed");
    Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        "XX000".to_owned(),
        "internal error".to_owned(),
    ))
}

fn error_info(error: PgWireError) -> Box<ErrorInfo> {
    Box::new(error.into())
}

/// An engine error as the client sees it: the reader's message (safe to show)
/// with an SQLSTATE, or "internal error" with the detail logged.
fn engine_error(error: EngineError) -> Box<ErrorInfo> {
    let (code, message) = match error {
        EngineError::Query(message) => (sqlstate(&message), message),
        EngineError::QueryTimeout { .. } => ("57014", format!("canceling statement: {error}")),
        EngineError::Busy { .. } => ("53000", error.to_string()),
        other => {
            tracing::error!(error = %other, "postgres query failed");
            ("XX000", "internal error".to_owned())
        }
    };
    Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message))
}

/// The SQLSTATE of a refused or failed query, from DataFusion's message.
fn sqlstate(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("ddl not supported") || m.contains("dml not supported") {
        "25006"
    } else if m.contains("statement not supported") || m.starts_with("sql error") {
        "42601"
    } else if m.contains("resources exhausted") {
        "53200"
    } else if m.contains("table") && m.contains("not found") {
        "42P01"
    } else if m.contains("no field named") {
        "42703"
    } else if m.contains("invalid function") {
        "42883"
    } else if m.contains("divide by zero") {
        "22012"
    } else if m.contains("not implemented") || m.contains("unsupported") {
        "0A000"
    } else if m.starts_with("error during planning") || m.starts_with("schema error") {
        "42000"
    } else {
        "XX000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split_statements(
                "SET a = 1; SELECT 'x;y', \"c;d\" FROM t -- no; split\n; /* ; */ SELECT $$;$$, $t$;$t$, $1;"
            ),
            vec![
                "SET a = 1",
                "SELECT 'x;y', \"c;d\" FROM t -- no; split",
                "/* ; */ SELECT $$;$$, $t$;$t$, $1",
            ]
        );
        assert_eq!(
            split_statements("SELECT 'it''s; ok'"),
            vec!["SELECT 'it''s; ok'"]
        );
        assert_eq!(
            split_statements("SELECT E'a\\'; b'"),
            vec!["SELECT E'a\\'; b'"]
        );
        assert!(split_statements(" ; -- nothing\n;").is_empty());
        // Unterminated quotes and comments never panic.
        for s in ["'", "\"", "$$", "$a", "/*", "E'\\", "--", "$"] {
            assert_eq!(
                split_statements(s).len(),
                usize::from(!matches!(s, "--" | "/*"))
            );
        }
    }

    #[test]
    fn writes_are_refused_as_read_only_and_reads_go_to_the_reader() {
        for sql in [
            "DROP TABLE events",
            "  create table x (a int)",
            "COPY events TO '/tmp/x'",
            "/* hi */ INSERT INTO events VALUES (1)",
            "delete from incidents",
        ] {
            assert!(
                matches!(classify(sql), Kind::Refused { code: "25006", .. }),
                "{sql}"
            );
        }
        for sql in [
            "SELECT 1",
            "(SELECT 1)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN SELECT 1",
            "SHOW ALL",
            "select version()",
        ] {
            assert_eq!(classify(sql), Kind::Query, "{sql}");
        }
    }

    #[test]
    fn only_harmless_session_parameters_can_be_set() {
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            Kind::Set("extra_float_digits".into(), "3".into())
        );
        assert_eq!(
            classify("set application_name to 'Grafana'"),
            Kind::Set("application_name".into(), "Grafana".into())
        );
        assert_eq!(
            classify("SET SESSION DateStyle TO 'ISO, MDY'"),
            Kind::Set("datestyle".into(), "ISO, MDY".into())
        );
        assert_eq!(
            classify("SET datestyle = ISO, DMY"),
            Kind::Set("datestyle".into(), "ISO, DMY".into())
        );
        assert_eq!(
            classify("SET TIME ZONE 'UTC'"),
            Kind::Set("timezone".into(), "UTC".into())
        );
        assert_eq!(
            classify("SET application_name TO DEFAULT"),
            Kind::Reset(Some("application_name".into()))
        );
        assert_eq!(classify("SET TRANSACTION READ ONLY"), Kind::SetTransaction);
        for (sql, code) in [
            ("SET datafusion.execution.target_partitions = 64", "42601"),
            ("SET statement_timeout = 0", "42601"),
            ("SET search_path TO other", "42601"),
            ("RESET statement_timeout", "42601"),
            ("SET TIME ZONE 'Europe/Paris'", "22023"),
            ("SET client_encoding = 'LATIN1'", "22023"),
            ("SET extra_float_digits = 99", "22023"),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                "25006",
            ),
        ] {
            assert!(
                matches!(classify(sql), Kind::Refused { code: c, .. } if c == code),
                "{sql}: {:?}",
                classify(sql)
            );
        }
    }

    #[test]
    fn client_probes_are_answered_here() {
        assert_eq!(
            classify("SHOW server_version"),
            Kind::Show("server_version".into())
        );
        assert_eq!(classify("show TIME ZONE"), Kind::Show("timezone".into()));
        assert_eq!(
            classify("SHOW transaction_isolation;"),
            Kind::Show("transaction_isolation".into())
        );
        assert_eq!(classify("BEGIN READ ONLY"), Kind::Begin);
        assert_eq!(classify("commit"), Kind::Commit);
        assert_eq!(classify("ROLLBACK"), Kind::Rollback);
        assert_eq!(classify("DISCARD ALL"), Kind::Discard);
        let mut session = HashMap::new();
        assert_eq!(show(&session, "extra_float_digits").as_deref(), Some("1"));
        session.insert("extra_float_digits".to_owned(), "3".to_owned());
        assert_eq!(show(&session, "extra_float_digits").as_deref(), Some("3"));
        assert_eq!(show(&session, "datafusion.execution.batch_size"), None);
    }

    #[test]
    fn engine_errors_carry_an_sqlstate() {
        let code = |e: EngineError| engine_error(e).code;
        assert_eq!(
            code(EngineError::Query(
                "DDL not supported: CreateMemoryTable".into()
            )),
            "25006"
        );
        assert_eq!(
            code(EngineError::Query(
                "Error during planning: table 'datafusion.public./etc/passwd' not found".into()
            )),
            "42P01"
        );
        assert_eq!(
            code(EngineError::Query(
                "SQL error: ParserError(\"Expected: ...\")".into()
            )),
            "42601"
        );
        assert_eq!(
            code(EngineError::Query(
                "Schema error: No field named nope. Valid fields are ...".into()
            )),
            "42703"
        );
        assert_eq!(
            code(EngineError::Query(
                "Resources exhausted: Failed to allocate".into()
            )),
            "53200"
        );
        assert_eq!(code(EngineError::QueryTimeout { seconds: 30 }), "57014");
        let internal = engine_error(EngineError::Internal("disk on fire at /var".into()));
        assert_eq!(internal.code, "XX000");
        assert_eq!(
            internal.message, "internal error",
            "details stay in the log"
        );
    }

    #[test]
    fn unencodable_columns_are_sent_as_text() {
        use arrow::array::{MapBuilder, StringArray, UInt32Array};
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        map.keys().append_value("app");
        map.values().append_value("checkout");
        map.append(true).expect("map row");
        map.append(false).expect("null row");
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("n", Arc::new(UInt32Array::from(vec![1, 2])) as ArrayRef),
            ("attributes", Arc::new(map.finish()) as ArrayRef),
        ])
        .expect("batch");
        let schema = encodable_schema(batch.schema_ref());
        assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
        let fields = pg_fields(&schema, &Format::UnifiedText, default_format()).expect("fields");
        let types: Vec<_> = fields.iter().map(|f| f.datatype().clone()).collect();
        assert_eq!(types, vec![Type::TEXT, Type::INT8, Type::TEXT]);
        let text = encodable_batch(batch).expect("encodable");
        let column = text
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text");
        assert_eq!(column.value(0), "{app: checkout}");
        assert!(column.is_null(1));
    }

    #[test]
    fn short_result_format_lists_are_errors_not_panics() {
        let format = Format::Individual(vec![1]);
        assert_eq!(field_format(&format, 0).ok(), Some(FieldFormat::Binary));
        assert!(field_format(&format, 1).is_err());
    }

    #[test]
    fn parameters_bind_as_values_and_bad_format_lists_are_errors_not_panics() {
        use ::pgwire::api::stmt::StoredStatement;
        use ::pgwire::messages::extendedquery::Bind;
        let prepared = Arc::new(Prepared {
            sql: "SELECT $1, $2".to_owned(),
            kind: Kind::Query,
            described: None,
        });
        let statement = Arc::new(StoredStatement::new("s".to_owned(), prepared, vec![]));
        let bind = |formats: Vec<i16>| {
            Bind::new(
                None,
                None,
                formats,
                vec![Some("x' OR '1'='1".into()), None],
                vec![],
            )
        };
        let portal = Portal::try_new(&bind(vec![]), statement.clone()).expect("portal");
        assert_eq!(
            bind_params(&portal).expect("bound"),
            vec![
                ScalarValue::Utf8(Some("x' OR '1'='1".to_owned())),
                ScalarValue::Null
            ]
        );
        for formats in [vec![0, 0, 0], vec![0, 1, 0, 1]] {
            let portal = Portal::try_new(&bind(formats), statement.clone()).expect("portal");
            assert!(bind_params(&portal).is_err());
        }
    }

    #[test]
    fn passwords_compare_whole() {
        assert!(password_matches(b"secret", b"secret"));
        assert!(!password_matches(b"secre", b"secret"));
        assert!(!password_matches(b"secret!", b"secret"));
        assert!(!password_matches(b"", b"secret"));
    }
}
