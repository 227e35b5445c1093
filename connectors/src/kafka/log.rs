//! `causeway.events` as the event log's write side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use causeway_rules::Event;
use futures::future::{BoxFuture, join_all};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{KafkaSettings, kafka_error};
use crate::{Error, EventLog, Result, metrics};

/// Receivers append here: one message per event, key = scope, value = CloudEvents
/// JSON. An append resolves once the broker acknowledged every message of it.
#[derive(Clone)]
pub struct KafkaEventLog {
    producer: FutureProducer,
    topic: Arc<str>,
    timeout: Duration,
    available: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaEventLog")
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaEventLog {
    /// A producer for the events topic.
    pub fn new(settings: &KafkaSettings) -> Result<KafkaEventLog> {
        let producer = settings.producer()?;
        Ok(KafkaEventLog {
            producer,
            topic: settings.topics.events.as_str().into(),
            timeout: settings.delivery_timeout,
            available: Arc::new(AtomicBool::new(true)),
        })
    }

    async fn append_all(&self, events: Vec<Event>) -> Result<()> {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in &events {
            let payload = event.to_cloudevent_json();
            let record = FutureRecord::to(&self.topic)
                .key(event.scope.as_str())
                .payload(payload.as_str());
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(self.unavailable(e.to_string())),
            }
        }
        // Every message has its own `message.timeout.ms`; this outer bound only
        // guards against a delivery report that never comes.
        let outcome =
            tokio::time::timeout(self.timeout + Duration::from_secs(1), join_all(deliveries))
                .await
                .map_err(|_| {
                    self.unavailable(format!("no acknowledgement within {:?}", self.timeout))
                })?;
        for result in outcome {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.unavailable(e.to_string())),
                Err(_) => return Err(self.unavailable("producer closed".into())),
            }
        }
        self.available.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn unavailable(&self, reason: String) -> Error {
        self.available.store(false, Ordering::Relaxed);
        metrics::KAFKA_PRODUCE_FAILURES
            .with_label_values(&["events"])
            .inc();
        Error::LogUnavailable {
            reason: format!("kafka topic {}: {reason}", self.topic),
        }
    }

    /// Waits for every queued message (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(kafka_error("flush producer"))
    }
}

impl EventLog for KafkaEventLog {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.append_all(events))
    }

    fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    fn end_offsets(&self) -> BTreeMap<u32, u64> {
        // Not tracked locally; the broker knows (consumer lag is its metric).
        BTreeMap::new()
    }
}
