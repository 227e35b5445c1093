//! Configuration: one YAML file (`version: 1`), layered as embedded defaults →
//! file → `CAUSEWAY__SECTION__KEY` environment variables, validated once at load.
//! `causeway validate-config` runs exactly this code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use causeway_engine::{
    HistoryLocation, ObjectHistory, ObjectStoreSpec, QueryLimits, WatermarkConfig,
};
use causeway_rules::{Catalog, CorrelatorConfig, RulePack};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// File format version; only 1 exists.
    pub(crate) version: u32,
    /// Where the event log, history and checkpoints live.
    pub(crate) data_dir: PathBuf,
    pub(crate) server: ServerConfig,
    pub(crate) receivers: ReceiversConfig,
    pub(crate) engine: EngineConfig,
    pub(crate) sql: SqlConfig,
    /// Kafka as event log and output streams; the embedded log when `brokers` is unset.
    #[serde(default)]
    pub(crate) kafka: KafkaConfig,
    pub(crate) catalog: Catalog,
    /// Runbook triggering: the kill switch and webhook delivery.
    #[serde(default)]
    pub(crate) runbooks: RunbooksConfig,
    /// Where the Parquet history is kept.
    #[serde(default)]
    pub(crate) history: HistoryConfig,
}

/// `history:` — where the Parquet history lives. Unset: `<data_dir>/history`.
/// With `url: s3://bucket/prefix` the files go to an S3-compatible store
/// (credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN`; endpoint and region from `AWS_ENDPOINT` / `AWS_REGION` or
/// `options`). The engine checkpoint stays in the data dir, which remembers the
/// URL: `causeway sql` and `causeway replay` on that data dir find the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HistoryConfig {
    pub(crate) url: Option<String>,
    /// Client settings (`endpoint`, `region`, `allow_http`, …); never credentials.
    pub(crate) options: std::collections::BTreeMap<String, String>,
}

impl HistoryConfig {
    /// The object store to keep the history in, if one is configured.
    pub(crate) fn spec(&self) -> Option<ObjectStoreSpec> {
        self.url.as_ref().map(|url| ObjectStoreSpec {
            url: url.clone(),
            options: self.options.clone(),
        })
    }
}

/// The history location for `spec`, with its S3 client.
pub(crate) fn connect_history(spec: ObjectStoreSpec) -> anyhow::Result<HistoryLocation> {
    let store = causeway_connectors::object_store::s3_store(&spec.url, &spec.options)?;
    Ok(HistoryLocation::Object(ObjectHistory::new(spec, store)?))
}

/// A reader of a data dir's committed history, wherever its files are (the data
/// dir records an object-store location when it has one).
pub(crate) fn data_dir_reader(data_dir: &Path) -> anyhow::Result<causeway_engine::HistoryReader> {
    Ok(
        match causeway_engine::driver::stored_history_location(data_dir)? {
            Some(spec) => {
                causeway_engine::HistoryReader::from_data_dir_at(data_dir, connect_history(spec)?)?
            }
            None => causeway_engine::HistoryReader::from_data_dir(data_dir)?,
        },
    )
}

/// `runbooks:` — the global kill switch and how webhooks are delivered. Runbooks
/// themselves are declared in rule files, next to the rules that name them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RunbooksConfig {
    /// Start with every trigger refused (also `POST /api/v1/kill-switch`).
    pub(crate) kill_switch: bool,
    /// Attempts per webhook delivery, the first included.
    pub(crate) max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub(crate) initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) request_timeout: Duration,
    /// Deliveries in progress at once.
    pub(crate) concurrency: usize,
}

impl Default for RunbooksConfig {
    fn default() -> Self {
        let p = causeway_connectors::webhook::RetryPolicy::default();
        RunbooksConfig {
            kill_switch: false,
            max_attempts: p.max_attempts,
            initial_backoff: p.initial_backoff,
            max_backoff: p.max_backoff,
            request_timeout: p.request_timeout,
            concurrency: 16,
        }
    }
}

impl RunbooksConfig {
    /// The delivery retry policy.
    pub(crate) fn retry_policy(&self) -> causeway_connectors::webhook::RetryPolicy {
        causeway_connectors::webhook::RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            request_timeout: self.request_timeout,
        }
    }
}

/// `kafka:` — brokers, topic names, the engines' group, pass-through librdkafka
/// properties (SASL/SSL: `CAUSEWAY__KAFKA__PROPERTIES__SASL_PASSWORD` sets
/// `sasl.password`) and user topics to consume as sources.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KafkaConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) brokers: Option<String>,
    pub(crate) group_id: String,
    /// Partitions of the topics Causeway creates (existing topics keep theirs).
    pub(crate) partitions: u32,
    pub(crate) replication_factor: u32,
    /// A produce not acknowledged within this fails (receivers answer 503).
    #[serde(with = "humantime_serde")]
    pub(crate) delivery_timeout: Duration,
    pub(crate) topics: TopicsConfig,
    pub(crate) properties: std::collections::BTreeMap<String, String>,
    pub(crate) sources: Vec<KafkaSourceConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TopicsConfig {
    pub(crate) events: String,
    pub(crate) incidents: String,
    pub(crate) late: String,
    pub(crate) actions: String,
    pub(crate) state: String,
}

/// A user topic consumed into `causeway.events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaSourceConfig {
    pub(crate) topic: String,
    /// alertmanager, k8s-audit, cloudtrail or cloudevents.
    pub(crate) format: String,
    /// The cluster of events whose payload names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cluster: Option<String>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        let t = causeway_connectors::kafka::Topics::default();
        TopicsConfig {
            events: t.events,
            incidents: t.incidents,
            late: t.late,
            actions: t.actions,
            state: t.state,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            group_id: "causeway-engine".into(),
            partitions: 6,
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(10),
            topics: TopicsConfig::default(),
            properties: Default::default(),
            sources: Vec::new(),
        }
    }
}

impl KafkaConfig {
    /// The connector settings, or `None` for the embedded log.
    pub(crate) fn settings(
        &self,
    ) -> anyhow::Result<Option<causeway_connectors::kafka::KafkaSettings>> {
        let Some(brokers) = self.brokers.as_deref().filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        if self.group_id.is_empty() {
            bail!("kafka.group_id: must not be empty");
        }
        if self.partitions == 0 {
            bail!("kafka.partitions: must be larger than zero");
        }
        if self.delivery_timeout.is_zero() {
            bail!("kafka.delivery_timeout: must be longer than zero");
        }
        let t = &self.topics;
        for (field, name) in [
            ("events", &t.events),
            ("incidents", &t.incidents),
            ("late", &t.late),
            ("actions", &t.actions),
            ("state", &t.state),
        ] {
            if name.is_empty() {
                bail!("kafka.topics.{field}: must not be empty");
            }
        }
        Ok(Some(causeway_connectors::kafka::KafkaSettings {
            brokers: brokers.to_owned(),
            // librdkafka names use dots only; environment variables cannot.
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.replace('_', "."), v.clone()))
                .collect(),
            topics: causeway_connectors::kafka::Topics {
                events: t.events.clone(),
                incidents: t.incidents.clone(),
                late: t.late.clone(),
                actions: t.actions.clone(),
                state: t.state.clone(),
            },
            group_id: self.group_id.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            delivery_timeout: self.delivery_timeout,
        }))
    }

    /// The user topics to consume.
    pub(crate) fn source_topics(
        &self,
    ) -> anyhow::Result<Vec<causeway_connectors::kafka::SourceTopic>> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.topic.is_empty() {
                    bail!("kafka.sources[{i}].topic: must not be empty");
                }
                if [
                    &self.topics.events,
                    &self.topics.incidents,
                    &self.topics.late,
                    &self.topics.state,
                ]
                .contains(&&s.topic)
                {
                    bail!(
                        "kafka.sources[{i}].topic: {} is one of Causeway's own topics",
                        s.topic
                    );
                }
                let format = s
                    .format
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("kafka.sources[{i}].format: {e}"))?;
                Ok(causeway_connectors::kafka::SourceTopic {
                    topic: s.topic.clone(),
                    format,
                    cluster: s.cluster.clone(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// HTTP listen address for receivers, API and metrics.
    pub(crate) listen: SocketAddr,
    /// How long to wait for in-flight requests on shutdown.
    #[serde(with = "humantime_serde")]
    pub(crate) drain_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiversConfig {
    /// Largest request body; larger gets 413.
    pub(crate) max_body_bytes: usize,
    /// Requests handled at once over all receivers; more get 429.
    pub(crate) max_concurrent_requests: usize,
    /// Requests per second per receiver; more get 429. Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_requests_per_second: Option<u32>,
    pub(crate) github: GithubConfig,
    /// Credentials required per receiver (alertmanager, prometheus, github, argocd,
    /// k8s_audit, k8s_event, cloudtrail, cost, events).
    #[serde(default)]
    pub(crate) auth: std::collections::BTreeMap<String, AuthConfig>,
}

/// How a receiver authenticates its senders. Secrets come inline, from a file, or
/// from the environment (`CAUSEWAY__RECEIVERS__AUTH__<SOURCE>__TOKEN`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum AuthConfig {
    Bearer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_file: Option<PathBuf>,
    },
    Basic {
        username: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
    },
}

/// Receiver names that take credentials.
const RECEIVERS: [&str; 9] = [
    "alertmanager",
    "prometheus",
    "github",
    "argocd",
    "k8s_audit",
    "k8s_event",
    "cloudtrail",
    "cost",
    "events",
];

fn secret(field: &str, inline: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<String> {
    match (inline.as_deref().filter(|s| !s.is_empty()), file) {
        (Some(_), Some(_)) => bail!("{field}: give the secret inline or as a file, not both"),
        (Some(s), None) => Ok(s.to_owned()),
        (None, Some(path)) => {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("{field}_file: cannot read {}", path.display()))?;
            let s = s.trim().to_owned();
            if s.is_empty() {
                bail!("{field}_file: {} is empty", path.display());
            }
            Ok(s)
        }
        (None, None) => bail!("{field}: missing (set it, its _file, or the environment variable)"),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GithubConfig {
    /// Webhook secret; prefer `secret_file` or `CAUSEWAY__RECEIVERS__GITHUB__SECRET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    /// File holding the webhook secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineConfig {
    /// Directory of rule files (`*.yaml`); the built-in pack when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rules_dir: Option<PathBuf>,
    /// Uncaused alerts join their group if it was active this recently.
    #[serde(with = "humantime_serde")]
    pub(crate) group_interval: Duration,
    /// No incident absorbs events for longer than this after opening.
    #[serde(with = "humantime_serde")]
    pub(crate) max_duration: Duration,
    /// An incident quiet this long is resolved (rules may set their own).
    #[serde(with = "humantime_serde")]
    pub(crate) resolve_after: Duration,
    /// How long an applied effect stays buffered for a cause that arrives after it
    /// (a late deploy or audit record).
    #[serde(with = "humantime_serde")]
    pub(crate) effect_retention: Duration,
    /// Hard cap on buffered events per partition (reorder buffer and join
    /// records); past it the oldest buffered effects are evicted, counted in
    /// `causeway_engine_state_evictions_total{reason="cap"}`.
    pub(crate) max_buffered_events: usize,
    /// How often pending history is committed to Parquet (sooner once 64 MiB of rows
    /// wait: see `Engine::commit_due`).
    #[serde(with = "humantime_serde")]
    pub(crate) commit_interval: Duration,
    /// History older than this (by its partition day) is deleted, checked every 5 minutes;
    /// kept forever when unset.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) history_retention: Option<Duration>,
    pub(crate) watermark: WatermarkConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlConfig {
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
    pub(crate) memory_limit_bytes: usize,
    /// SQL queries running at once over every surface (HTTP, Postgres, the
    /// enrichment's history lookups); one that finds no slot within 2s is refused
    /// (HTTP 503, SQLSTATE 53000): set it below the core count to keep cores for
    /// ingestion.
    #[serde(default = "default_max_concurrent_queries")]
    pub(crate) max_concurrent_queries: usize,
    /// Postgres wire-protocol listener for the same read-only SQL (off when unset;
    /// usually `127.0.0.1:5433`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pg_listen: Option<SocketAddr>,
    /// Postgres connections served at once; more are refused (SQLSTATE 53300).
    #[serde(default = "default_pg_max_connections")]
    pub(crate) pg_max_connections: usize,
    /// Cleartext password every Postgres client must give; none asked when unset.
    /// Prefer `pg_password_file` or `CAUSEWAY__SQL__PG_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pg_password: Option<String>,
    /// File holding that password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pg_password_file: Option<PathBuf>,
}

fn default_max_concurrent_queries() -> usize {
    causeway_engine::sql::DEFAULT_MAX_CONCURRENT_QUERIES
}

fn default_pg_max_connections() -> usize {
    16
}

impl Default for Config {
    fn default() -> Self {
        let c = CorrelatorConfig::default();
        Config {
            version: 1,
            data_dir: PathBuf::from("./causeway-data"),
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 9470)),
                drain_timeout: Duration::from_secs(10),
            },
            receivers: ReceiversConfig {
                max_body_bytes: 10 << 20,
                max_concurrent_requests: 256,
                max_requests_per_second: None,
                github: GithubConfig::default(),
                auth: Default::default(),
            },
            runbooks: RunbooksConfig::default(),
            engine: EngineConfig {
                rules_dir: None,
                group_interval: c.group_interval,
                max_duration: c.max_duration,
                resolve_after: c.resolve_after,
                effect_retention: c.effect_retention,
                max_buffered_events: c.max_buffered,
                commit_interval: Duration::from_secs(1),
                history_retention: None,
                watermark: WatermarkConfig::default(),
            },
            sql: SqlConfig {
                timeout: QueryLimits::default().timeout,
                memory_limit_bytes: QueryLimits::default().memory_bytes,
                max_concurrent_queries: default_max_concurrent_queries(),
                pg_listen: None,
                pg_max_connections: default_pg_max_connections(),
                pg_password: None,
                pg_password_file: None,
            },
            kafka: KafkaConfig::default(),
            history: HistoryConfig::default(),
            catalog: Catalog {
                default_cluster: "default".into(),
                ..Catalog::default()
            },
        }
    }
}

/// A loaded, validated configuration with its rules.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) rules: RulePack,
    pub(crate) github_secret: Option<String>,
    pub(crate) auth: std::collections::BTreeMap<String, causeway_connectors::receiver::Credential>,
    /// The Postgres listener's password (`sql.pg_password` or its file), if any.
    pub(crate) pg_password: Option<String>,
}

impl Config {
    /// Defaults, then the file (if any), then `CAUSEWAY__*` environment variables.
    pub(crate) fn figment(file: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            f = f.merge(Yaml::file_exact(path));
        }
        f.merge(Env::prefixed("CAUSEWAY__").split("__"))
    }

    /// Loads and validates: the same code path for `run` and `validate-config`.
    pub(crate) fn load(file: Option<&Path>) -> anyhow::Result<Loaded> {
        if let Some(path) = file
            && !path.exists()
        {
            bail!("config file {} does not exist", path.display());
        }
        let config: Config = Config::figment(file).extract().map_err(|e| {
            let mut msg = String::new();
            for err in e {
                if !msg.is_empty() {
                    msg.push('\n');
                }
                msg.push_str(&err.to_string());
            }
            anyhow::anyhow!(msg)
        })?;
        config.validate()
    }

    /// Checks everything that can be checked without starting.
    pub(crate) fn validate(self) -> anyhow::Result<Loaded> {
        if self.version != 1 {
            bail!(
                "version: unsupported config version {} (expected 1)",
                self.version
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir: must not be empty");
        }
        if self.receivers.max_body_bytes == 0 {
            bail!("receivers.max_body_bytes: must be larger than zero");
        }
        if self.engine.commit_interval.is_zero() {
            bail!("engine.commit_interval: must be longer than zero");
        }
        if self.catalog.default_cluster.is_empty() {
            bail!("catalog.default_cluster: must not be empty");
        }
        for (i, s) in self.catalog.services.iter().enumerate() {
            if s.name.is_empty() {
                bail!("catalog.services[{i}].name: must not be empty");
            }
        }
        self.kafka.settings()?;
        if self.kafka.brokers.is_some() || !self.kafka.sources.is_empty() {
            let sources = self.kafka.source_topics()?;
            if !sources.is_empty() && self.kafka.settings()?.is_none() {
                bail!("kafka.sources: needs kafka.brokers");
            }
        }
        if self.engine.max_buffered_events == 0 {
            bail!("engine.max_buffered_events: must be larger than zero");
        }
        if self.engine.effect_retention.is_zero() {
            bail!("engine.effect_retention: must be longer than zero");
        }
        if let Some(spec) = self.history.spec() {
            spec.parse().context("history.url")?;
            causeway_connectors::object_store::s3_store(&spec.url, &spec.options)
                .context("history.options")?;
        }
        // Predicates are compiled now, so a bad rule fails here and not at first event.
        let rules = load_rules(self.engine.rules_dir.as_deref())?;
        if self.engine.rules_dir.is_none() {
            compile_rules(&rules)?;
        }
        let github_secret = match (
            &self.receivers.github.secret,
            &self.receivers.github.secret_file,
        ) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("receivers.github.secret_file: {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            _ => None,
        };
        if self.receivers.max_concurrent_requests == 0 {
            bail!("receivers.max_concurrent_requests: must be larger than zero");
        }
        let mut auth = std::collections::BTreeMap::new();
        for (source, a) in &self.receivers.auth {
            let field = format!("receivers.auth.{source}");
            if !RECEIVERS.contains(&source.as_str()) {
                bail!(
                    "{field}: unknown receiver (expected one of {})",
                    RECEIVERS.join(", ")
                );
            }
            use causeway_connectors::receiver::Credential;
            let credential = match a {
                AuthConfig::Bearer { token, token_file } => {
                    Credential::Bearer(secret(&format!("{field}.token"), token, token_file)?)
                }
                AuthConfig::Basic {
                    username,
                    password,
                    password_file,
                } => Credential::Basic {
                    username: username.clone(),
                    password: secret(&format!("{field}.password"), password, password_file)?,
                },
            };
            auth.insert(source.clone(), credential);
        }
        if self.sql.pg_max_connections == 0 {
            bail!("sql.pg_max_connections: must be larger than zero");
        }
        let pg_password = self.sql.pg_password.clone().filter(|p| !p.is_empty());
        let pg_password = match (&pg_password, &self.sql.pg_password_file) {
            (None, None) => None,
            (inline, file) => Some(secret("sql.pg_password", inline, file)?),
        };
        Ok(Loaded {
            config: self,
            rules,
            github_secret,
            auth,
            pg_password,
        })
    }
}

/// Loads every `*.yaml`/`*.yml` file of a directory (sorted), or the built-in pack.
pub(crate) fn load_rules(dir: Option<&Path>) -> anyhow::Result<RulePack> {
    match dir {
        None => Ok(RulePack::builtin()?),
        Some(dir) => load_rule_files(dir).map_err(|e| anyhow::anyhow!("engine.rules_dir: {e:#}")),
    }
}

/// Loads one rule file, or every `*.yaml`/`*.yml` file of a directory (sorted),
/// and compiles every predicate: errors name the file, rule and field.
pub(crate) fn load_rule_files(path: &Path) -> anyhow::Result<RulePack> {
    let paths: Vec<PathBuf> = if path.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        if paths.is_empty() {
            bail!("no *.yaml rule files in {}", path.display());
        }
        paths
    } else if path.exists() {
        vec![path.to_owned()]
    } else {
        bail!("{} does not exist", path.display());
    };
    let texts = paths
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| (p.display().to_string(), t))
                .with_context(|| format!("cannot read {}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let files: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let pack = RulePack::from_files(&files)?;
    compile_rules(&pack)?;
    Ok(pack)
}

/// Compiles every predicate of a pack; an error names the file too.
pub(crate) fn compile_rules(
    pack: &RulePack,
) -> anyhow::Result<causeway_engine::predicate::CompiledRules> {
    causeway_engine::predicate::CompiledRules::compile(pack).map_err(|e| match &e {
        causeway_engine::Error::InvalidPredicate { rule_id, .. } => {
            let file = pack
                .rules()
                .iter()
                .position(|r| &r.id == rule_id)
                .map(|i| pack.file_of(i).to_owned())
                .unwrap_or_default();
            anyhow::anyhow!("{file}: {e}")
        }
        _ => anyhow::Error::from(e),
    })
}

impl Config {
    /// The correlator settings.
    pub(crate) fn correlator(&self) -> CorrelatorConfig {
        CorrelatorConfig {
            group_interval: self.engine.group_interval,
            max_duration: self.engine.max_duration,
            resolve_after: self.engine.resolve_after,
            max_lateness: self.engine.watermark.max_lateness(),
            effect_retention: self.engine.effect_retention,
            max_buffered: self.engine.max_buffered_events,
        }
    }

    /// SQL limits.
    pub(crate) fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            timeout: self.sql.timeout,
            memory_bytes: self.sql.memory_limit_bytes,
        }
    }
}

/// What correlation ran with, saved in the data dir at start so `causeway replay`
/// reproduces the stored incidents without being told the catalog and rules again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredSettings {
    pub(crate) engine: EngineConfig,
    pub(crate) catalog: Catalog,
    /// The rule pack as one rule file.
    pub(crate) rules: String,
}

impl StoredSettings {
    const FILE: &'static str = "engine/settings.yaml";

    /// Writes the running configuration's settings (atomically: temp file, rename).
    pub(crate) fn save(loaded: &Loaded) -> anyhow::Result<()> {
        let settings = StoredSettings {
            engine: loaded.config.engine.clone(),
            catalog: loaded.config.catalog.clone(),
            rules: serde_yaml::to_string(&serde_json::json!({
                "version": 1,
                "rules": loaded.rules.rules(),
            }))?,
        };
        let path = loaded.config.data_dir.join(Self::FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, serde_yaml::to_string(&settings)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// The settings a data dir was last run with, if it records them.
    pub(crate) fn load(data_dir: &Path) -> anyhow::Result<Option<StoredSettings>> {
        let path = data_dir.join(Self::FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_yaml::from_str(&text)
                .map(Some)
                .with_context(|| format!("cannot read the stored settings {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The stored rule pack.
    pub(crate) fn rule_pack(&self) -> anyhow::Result<RulePack> {
        let pack = RulePack::from_files(&[("stored settings", self.rules.as_str())])?;
        compile_rules(&pack)?;
        Ok(pack)
    }

    /// The correlator tuning these settings give.
    pub(crate) fn correlator(&self) -> CorrelatorConfig {
        Config {
            engine: self.engine.clone(),
            ..Config::default()
        }
        .correlator()
    }
}
