//! Output streams: incident versions and late events, each acknowledged before the
//! engine commits the offsets that produced them.

use std::time::Duration;

use futures::executor::block_on;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{KafkaSettings, kafka_error};
use crate::{Error, Result, metrics};

/// Queues messages and waits for all of their acknowledgements at [`KafkaSink::flush`].
/// Used from the engine's own (blocking) thread.
pub struct KafkaSink {
    producer: FutureProducer,
    pending: Vec<(&'static str, DeliveryFuture)>,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> Result<KafkaSink> {
        let producer = settings.producer()?;
        Ok(KafkaSink {
            producer,
            pending: Vec::new(),
            timeout: settings.delivery_timeout,
        })
    }

    /// Queues one message; `stream` names it in metrics (`incidents`, `late`).
    pub fn send(
        &mut self,
        stream: &'static str,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<()> {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push((stream, delivery));
                    return Ok(());
                }
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    // The local queue is full: let deliveries drain, then retry.
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((e, _)) => {
                    metrics::KAFKA_PRODUCE_FAILURES
                        .with_label_values(&[stream])
                        .inc();
                    return Err(Error::Kafka {
                        operation: "produce",
                        reason: format!("{topic}: {e}"),
                    });
                }
            }
        }
    }

    /// Messages queued and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Waits until every queued message is acknowledged; the first failure is
    /// returned (the caller must then not commit the offsets behind them).
    pub fn flush(&mut self) -> Result<()> {
        let mut first_error = None;
        for (stream, delivery) in self.pending.drain(..) {
            let outcome = block_on(delivery);
            let failure = match outcome {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "producer closed before acknowledging".to_owned(),
            };
            metrics::KAFKA_PRODUCE_FAILURES
                .with_label_values(&[stream])
                .inc();
            first_error.get_or_insert(Error::Kafka {
                operation: "produce",
                reason: format!("{stream}: {failure}"),
            });
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes the producer's queue (at shutdown).
    pub fn close(&mut self) -> Result<()> {
        self.producer
            .flush(self.timeout)
            .map_err(kafka_error("flush producer"))?;
        self.flush()
    }
}
