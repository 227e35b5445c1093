//! `causeway`: the binary. CLI, configuration, wiring and signals; everything
//! else lives in the `rules`, `engine` and `connectors` crates.

mod actions;
mod api;
mod app;
mod config;
mod demo;
mod enrich;
mod format;
mod import;
mod kafka_engine;
mod metrics;
mod pgwire;
mod replay;
mod rules_cmd;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// mimalloc instead of glibc's malloc: malloc/free were a quarter of the CPU of
/// the receiver path under load (`perf`, benches/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Causeway correlates alerts, deploys, audit logs and costs into incidents with
/// their causal chains.
#[derive(Debug, Parser)]
#[command(name = "causeway", version, about, propagate_version = true)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CAUSEWAY_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start receivers, the correlation engine, history and the HTTP API.
    ///
    /// With no config this runs the embedded default: the event log and history
    /// under ./causeway-data, HTTP on 127.0.0.1:9470, the built-in rule pack.
    /// Point Alertmanager at http://HOST:9470/ingest/alertmanager and GitHub
    /// deployment webhooks at http://HOST:9470/ingest/github. With `kafka.brokers`
    /// set, events go through Kafka and engines sharing `kafka.group_id` split its
    /// partitions; incidents are also published to `causeway.incidents`. Stops
    /// cleanly on SIGTERM or Ctrl-C.
    Run {
        /// YAML config file (version: 1). Every key can be overridden by
        /// CAUSEWAY__SECTION__KEY environment variables.
        #[arg(long, short, env = "CAUSEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a bundled realistic scenario through the real receivers and print the
    /// incidents it produces.
    ///
    /// Starts the embedded default in ./causeway-data (adding to an earlier demo's
    /// history there, whose incidents then show as similar past ones; refusing to
    /// touch a directory that is not a demo's), posts Alertmanager and GitHub
    /// webhooks over HTTP, waits for correlation, prints each incident as a tree and
    /// leaves the history for `causeway sql`.
    Demo {
        /// Where to keep the demo's history.
        #[arg(long, default_value = "./causeway-data", env = "CAUSEWAY_DATA_DIR")]
        data_dir: PathBuf,
        /// HTTP address for the demo's receivers (a free port is used if taken).
        #[arg(long, default_value = "127.0.0.1:9470")]
        listen: SocketAddr,
    },
    /// Run read-only SQL over the incident history.
    ///
    /// Tables: events, incidents (one row per version), incidents_latest,
    /// incident_events, late_events, actions. Reads the local data dir, or a running
    /// instance with --server.
    ///
    /// Example: causeway sql "SELECT rule_id, count(*) FROM incidents_latest GROUP BY rule_id"
    Sql {
        /// The query.
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Data dir to read (when no --server is given).
        #[arg(long, default_value = "./causeway-data", env = "CAUSEWAY_DATA_DIR")]
        data_dir: PathBuf,
        /// Query a running instance instead, e.g. http://127.0.0.1:9470.
        #[arg(long, env = "CAUSEWAY_SERVER")]
        server: Option<String>,
    },
    /// Batch-ingest files through the same decoders as the receivers.
    ///
    /// Locally (the default) the events are appended to the data dir's event log and
    /// correlated before the command returns; the data dir must not be in use by a
    /// running `causeway run` (use --server to send to it instead). With
    /// `kafka.brokers` configured the events are produced to the events topic and the
    /// running engines correlate them. A file with a bad record is refused whole,
    /// naming the line.
    ///
    /// Example: causeway import cloudtrail 111122223333_CloudTrail_eu-west-1_20240501T1000Z.json.gz
    Import {
        /// cloudtrail ({"Records": [...]}, .json or .json.gz), focus (CSV),
        /// k8s-audit (JSON lines), events (CloudEvents JSON lines).
        #[arg(value_enum)]
        format: ImportKind,
        /// Files to import.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// YAML config file (catalog, data dir, rules).
        #[arg(long, short, env = "CAUSEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Send to a running instance instead, e.g. http://127.0.0.1:9470.
        #[arg(long, env = "CAUSEWAY_SERVER")]
        server: Option<String>,
        /// Cluster for sources that do not name one (Kubernetes audit).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Validate a config file (and the rules it names) exactly as startup does.
    ValidateConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Re-run correlation over stored events, deterministically, and print the
    /// incidents; with --diff, compare them with the incidents stored (a backtest).
    ///
    /// Events come from the data dir's Parquet history (or --events: another data
    /// dir, a history dir, or CloudEvents JSON lines), in the order they arrived,
    /// so the same events and rules give the same incident ids and versions. With
    /// --rules, the events are replayed under other rules and --diff shows what
    /// they would have done differently; --fail-on-diff makes that an exit code.
    ///
    /// Example: causeway replay --rules ./rules-next --diff --fail-on-diff
    Replay {
        /// Events to replay: a data dir, a history dir, or a .jsonl(.gz) file of
        /// CloudEvents (default: the data dir's history).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Data dir whose history is read (and compared with --diff).
        #[arg(long, default_value = "./causeway-data", env = "CAUSEWAY_DATA_DIR")]
        data_dir: PathBuf,
        /// Only events at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Rules to replay with (a directory or file); by default the rules the history
        /// was written with (saved in the data dir), else the configured ones.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Config file (catalog, engine settings); by default the settings the
        /// history was written with (`<data_dir>/engine/settings.yaml`).
        #[arg(long, short, env = "CAUSEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Compare with the incidents stored: added, removed and changed.
        #[arg(long)]
        diff: bool,
        /// With --diff: exit non-zero when anything differs.
        #[arg(long, requires = "diff")]
        fail_on_diff: bool,
        /// Output: causal trees, or JSON (one incident, or the diff, per line).
        #[arg(long, value_enum, default_value_t = ReplayFormat::Tree)]
        format: ReplayFormat,
        /// Also write every replayed incident version, as JSON lines, to this file.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Validate rule files, or run the examples embedded in them.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate rule files: YAML, every field, and every predicate compiled against
    /// the event schema. Exits non-zero naming the file, rule and field.
    ///
    /// Example: causeway rules check ./rules
    Check {
        /// A rules directory (every *.yaml in it) or one rule file.
        dir: PathBuf,
    },
    /// Run every rule's embedded examples through the real correlation engine, with
    /// the whole pack loaded; exits non-zero if any example gives other incidents
    /// than it expects.
    ///
    /// Example: causeway rules test ./rules
    Test {
        /// A rules directory (every *.yaml in it) or one rule file.
        dir: PathBuf,
        /// Config file whose catalog examples without their own catalog use.
        #[arg(long, short, env = "CAUSEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ImportKind {
    Cloudtrail,
    Focus,
    K8sAudit,
    Events,
}

impl From<ImportKind> for causeway_connectors::import::ImportFormat {
    fn from(k: ImportKind) -> Self {
        use causeway_connectors::import::ImportFormat as F;
        match k {
            ImportKind::Cloudtrail => F::Cloudtrail,
            ImportKind::Focus => F::Focus,
            ImportKind::K8sAudit => F::K8sAudit,
            ImportKind::Events => F::Events,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReplayFormat {
    Tree,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CAUSEWAY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,datafusion=warn,sqlparser=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("causeway")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run(config).await,
        Command::Demo { data_dir, listen } => demo::run(data_dir, listen).await,
        Command::Sql {
            query,
            format,
            data_dir,
            server,
        } => sql(&query, format, &data_dir, server.as_deref()).await,
        Command::Import {
            format,
            paths,
            config,
            server,
            cluster,
        } => {
            import::run(
                format.into(),
                &paths,
                config,
                server.as_deref(),
                cluster.as_deref(),
            )
            .await
        }
        Command::Replay {
            events,
            data_dir,
            from,
            to,
            rules,
            config,
            diff,
            fail_on_diff,
            format,
            output,
        } => {
            replay::run(replay::ReplayArgs {
                events,
                data_dir,
                from,
                to,
                rules,
                config,
                diff,
                fail_on_diff,
                json: format == ReplayFormat::Json,
                output,
            })
            .await
        }
        Command::Rules {
            command: RulesCommand::Check { dir },
        } => rules_cmd::check(&dir),
        Command::Rules {
            command: RulesCommand::Test { dir, config },
        } => rules_cmd::test(&dir, config.as_deref()),
        Command::ValidateConfig { file } => {
            let loaded = Config::load(Some(&file))?;
            println!(
                "{}: valid ({} rules, {} catalog services, listen {}, data dir {})",
                file.display(),
                loaded.rules.rules().len(),
                loaded.config.catalog.services.len(),
                loaded.config.server.listen,
                loaded.config.data_dir.display()
            );
            Ok(())
        }
    }
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let loaded = Config::load(config.as_deref())?;
    let mut running = app::start(&loaded, loaded.config.server.listen).await?;
    let cancel = running.cancel_token();
    let drain = loaded.config.server.drain_timeout;
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutdown requested; draining");
            cancel.cancel();
        }
        _ = cancel.cancelled() => {}
    }
    match tokio::time::timeout(drain + std::time::Duration::from_secs(30), running.wait()).await {
        Ok(result) => result,
        Err(_) => bail!("tasks did not stop within the drain timeout"),
    }
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

async fn sql(
    query: &str,
    format: OutputFormat,
    data_dir: &std::path::Path,
    server: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let out = match server {
        Some(url) => {
            let client = causeway_connectors::client::HttpPoster::new(url)?;
            let accept = match format {
                OutputFormat::Table => "application/vnd.apache.arrow.stream",
                OutputFormat::Json => "application/json",
                OutputFormat::Csv => "text/csv",
            };
            let body = serde_json::json!({ "query": query }).to_string();
            let resp = client
                .post_json("/api/v1/sql", &[("accept", accept)], body)
                .await?;
            if resp.status != 200 {
                let text = resp.text();
                let msg = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                bail!("{msg}");
            }
            if format == OutputFormat::Table {
                let reader = arrow::ipc::reader::StreamReader::try_new(
                    std::io::Cursor::new(resp.body),
                    None,
                )
                .context("reading the Arrow stream")?;
                let batches = reader
                    .collect::<Result<Vec<_>, _>>()
                    .context("reading the Arrow stream")?;
                format::table(&batches)?.into_bytes()
            } else {
                resp.body
            }
        }
        None => {
            if !data_dir.exists() {
                bail!(
                    "no history at {} (run `causeway demo` or `causeway run` first, or pass --data-dir / --server)",
                    data_dir.display()
                );
            }
            let reader = config::data_dir_reader(data_dir)?;
            let limits = Config::default().query_limits();
            let result = reader.query(query, limits).await?;
            match format {
                OutputFormat::Table => format::table(&result.batches)?.into_bytes(),
                OutputFormat::Json => format::json_rows(&result.batches)?,
                OutputFormat::Csv => format::csv(&result.batches)?,
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    if !out.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    Ok(())
}
