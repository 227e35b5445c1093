//! Partition state on a topic: engine state for events partition *p* is written to
//! partition *p* of the state topic, one message per commit, so the state to
//! restore is always that partition's last message — no compaction or scan needed.

use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaSettings, kafka_error};
use crate::{Error, Result};

/// Reads and writes partition state.
pub struct StateStore {
    producer: FutureProducer,
    reader: BaseConsumer,
    topic: String,
    timeout: Duration,
    /// Saves queued and not yet acknowledged, by partition.
    in_flight: Vec<(u32, DeliveryFuture)>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    pub fn new(settings: &KafkaSettings) -> Result<StateStore> {
        let mut producer = settings.producer_config();
        // State grows with open incidents and buffered events, and is saved whole
        // at every commit: compress it, with lz4 — gzip of a 10 k events/s stream's
        // state (tens of MB a second) took a core of the producer's thread, and the
        // saves fell behind until they timed out. Allow large messages.
        producer.set("compression.type", "lz4");
        producer.set("message.max.bytes", "67108864");
        let producer: FutureProducer = producer.create().map_err(kafka_error("create producer"))?;
        let reader: BaseConsumer = settings
            .client_config()
            .set("group.id", format!("{}-state-reader", settings.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // The read waits on one known record: do not let a broker that holds
            // fetches for their maximum wait stall each assignment by 500 ms.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", "67108864")
            .set("receive.message.max.bytes", "134217728")
            .create()
            .map_err(kafka_error("create state reader"))?;
        Ok(StateStore {
            producer,
            reader,
            topic: settings.topics.state.clone(),
            timeout: settings.delivery_timeout.max(Duration::from_secs(5)),
            in_flight: Vec::new(),
        })
    }

    /// Queues one partition's state; [`StateStore::settle`] learns whether it was
    /// acknowledged. Saves of one partition land in the order queued.
    pub fn queue(&mut self, partition: u32, state: &[u8]) -> Result<()> {
        let key = partition.to_string();
        let record = FutureRecord::to(&self.topic)
            .partition(partition as i32)
            .key(key.as_str())
            .payload(state);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| kafka_error("save partition state")(e))?;
        self.in_flight.push((partition, delivery));
        Ok(())
    }

    /// Whether every queued save is acknowledged, waiting for them with `wait`;
    /// the first failed save is an error (the offsets behind it must not be
    /// committed).
    pub fn settle(&mut self, wait: bool) -> Result<bool> {
        let mut failure = None;
        self.in_flight.retain_mut(|(partition, delivery)| {
            let outcome = if wait {
                Some(block_on(&mut *delivery))
            } else {
                block_on(futures::future::poll_immediate(&mut *delivery))
            };
            match outcome {
                None => true,
                Some(Ok(Ok(_))) => false,
                Some(Ok(Err((e, _)))) => {
                    failure.get_or_insert(Error::Kafka {
                        operation: "save partition state",
                        reason: format!("partition {partition}: {e}"),
                    });
                    false
                }
                Some(Err(_)) => {
                    failure.get_or_insert(Error::Kafka {
                        operation: "save partition state",
                        reason: format!(
                            "partition {partition}: producer closed before acknowledging"
                        ),
                    });
                    false
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(self.in_flight.is_empty()),
        }
    }

    /// The last state written for a partition, if any.
    pub fn load(&self, partition: u32) -> Result<Option<Vec<u8>>> {
        let (low, high) = self
            .reader
            .fetch_watermarks(&self.topic, partition as i32, self.timeout)
            .map_err(kafka_error("read state offsets"))?;
        if high <= low {
            return Ok(None);
        }
        let last = high - 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(last))
            .map_err(kafka_error("position state reader"))?;
        self.reader
            .assign(&tpl)
            .map_err(kafka_error("position state reader"))?;
        let deadline = Instant::now() + self.timeout;
        let found = loop {
            let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
                break Err(Error::Kafka {
                    operation: "read partition state",
                    reason: format!(
                        "{} partition {partition}: offset {last} not returned within {:?}",
                        self.topic, self.timeout
                    ),
                });
            };
            match self.reader.poll(remaining.min(Duration::from_millis(200))) {
                None => continue,
                Some(Err(e)) => break Err(kafka_error("read partition state")(e)),
                Some(Ok(m)) => {
                    if m.partition() == partition as i32 && m.offset() == last {
                        break Ok(m.payload().map(<[u8]>::to_vec));
                    }
                }
            }
        };
        self.reader
            .unassign()
            .map_err(kafka_error("release state reader"))?;
        found
    }
}
