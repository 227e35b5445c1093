//! User topics as a source: for teams that already ship alerts, audit logs or
//! CloudTrail records through Kafka. Each message goes through the same decoder as
//! the matching HTTP receiver and its events are appended to `causeway.events`; the
//! source offset is stored only after they are acknowledged (at least once). A
//! message the decoder refuses is counted and skipped, never retried forever.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use causeway_rules::{Event, IndexedCatalog, ProcessingTime};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::{KafkaEventLog, KafkaSettings, kafka_error};
use crate::decode::{self, DecodeContext};
use crate::{Error, EventLog, Result, metrics};

/// The wire format of a user topic's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// Alertmanager webhook payloads (version 4).
    Alertmanager,
    /// Kubernetes audit `Event` or `EventList` objects.
    K8sAudit,
    /// CloudTrail `{"Records": […]}` documents.
    Cloudtrail,
    /// CloudEvents 1.0 JSON (one event or an array).
    Cloudevents,
}

impl SourceFormat {
    /// The name used in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Alertmanager => "alertmanager",
            SourceFormat::K8sAudit => "k8s-audit",
            SourceFormat::Cloudtrail => "cloudtrail",
            SourceFormat::Cloudevents => "cloudevents",
        }
    }

    fn decode(self, body: &[u8], cx: &DecodeContext<'_>) -> Result<Vec<Event>> {
        match self {
            SourceFormat::Alertmanager => decode::alertmanager::decode(body, cx),
            SourceFormat::K8sAudit => decode::k8s_audit::decode(body, cx).map(|d| d.events),
            SourceFormat::Cloudtrail => decode::cloudtrail::decode(body, cx),
            SourceFormat::Cloudevents => decode::cloudevents::decode(body, cx),
        }
    }
}

impl FromStr for SourceFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "alertmanager" => Ok(SourceFormat::Alertmanager),
            "k8s-audit" => Ok(SourceFormat::K8sAudit),
            "cloudtrail" => Ok(SourceFormat::Cloudtrail),
            "cloudevents" => Ok(SourceFormat::Cloudevents),
            other => Err(format!(
                "unknown source format {other:?}: expected alertmanager, k8s-audit, cloudtrail \
                 or cloudevents"
            )),
        }
    }
}

/// One user topic to consume.
#[derive(Debug, Clone)]
pub struct SourceTopic {
    pub topic: String,
    pub format: SourceFormat,
    /// The cluster events name when the payload does not (like `?cluster=`).
    pub cluster: Option<String>,
}

/// Consumes `source` into `log` until cancelled.
pub async fn run_source(
    settings: KafkaSettings,
    source: SourceTopic,
    log: KafkaEventLog,
    catalog: Arc<IndexedCatalog>,
    cancel: CancellationToken,
) -> Result<()> {
    let consumer: StreamConsumer = settings
        .client_config()
        .set(
            "group.id",
            format!("{}-source-{}", settings.group_id, source.topic),
        )
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(kafka_error("create source consumer"))?;
    consumer
        .subscribe(&[source.topic.as_str()])
        .map_err(kafka_error("subscribe to source topic"))?;
    let format = source.format.as_str();
    tracing::info!(topic = %source.topic, format, "consuming source topic");
    loop {
        let message = tokio::select! {
            _ = cancel.cancelled() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = %source.topic, error = %e, "source consumer error");
                continue;
            }
        };
        let cx = DecodeContext {
            catalog: &catalog,
            cluster_hint: source.cluster.as_deref(),
            received_at: ProcessingTime::now(),
        };
        let decoded = match message.payload() {
            None => Err(Error::Malformed {
                source_name: "kafka",
                reason: "empty message".into(),
            }),
            Some(body) => source.format.decode(body, &cx),
        };
        match decoded {
            Ok(events) => {
                let count = events.len();
                // Retry until the events topic takes them: skipping would lose them.
                let mut backoff = Duration::from_millis(100);
                loop {
                    match log.append(events.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(topic = %source.topic, error = %e, "cannot forward source events; retrying");
                            tokio::select! {
                                _ = cancel.cancelled() => return commit_and_close(&consumer),
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                metrics::ACCEPTED
                    .with_label_values(&[format])
                    .inc_by(count as u64);
            }
            Err(e) => {
                let reason = match e {
                    Error::Unsupported { .. } => "unsupported",
                    _ => "malformed",
                };
                metrics::KAFKA_REJECTED
                    .with_label_values(&[format, reason])
                    .inc();
                tracing::warn!(
                    topic = %source.topic,
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    "skipping a source message"
                );
            }
        }
        consumer
            .store_offset_from_message(&message)
            .map_err(kafka_error("store source offset"))?;
    }
    commit_and_close(&consumer)
}

fn commit_and_close(consumer: &StreamConsumer) -> Result<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        // Nothing stored since the last commit.
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => Ok(()),
        Err(e) => Err(kafka_error("commit source offsets")(e)),
    }
}
