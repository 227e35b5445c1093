//! Reading a topic from its end without joining a group: what a dashboard or the
//! load harness does to watch the incident stream as it is written.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{KafkaSettings, kafka_error, partition_count};
use crate::Result;

/// One message read by a [`TopicTail`].
#[derive(Debug, Clone)]
pub struct TailMessage {
    /// The partition it was read from.
    pub partition: u32,
    /// The message's key (empty when it has none).
    pub key: Vec<u8>,
    /// The message's value.
    pub payload: Vec<u8>,
    /// The message's timestamp (milliseconds since the Unix epoch): when its
    /// producer created it, unless the topic stamps log-append time.
    pub timestamp_ms: Option<i64>,
}

/// A group-less reader of every partition of one topic, from where it ends now.
pub struct TopicTail {
    consumer: BaseConsumer,
    topic: String,
}

impl std::fmt::Debug for TopicTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicTail")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl TopicTail {
    /// Assigns every partition of `topic` at its current end (or its beginning
    /// with `from_start`): only messages written afterwards are read.
    pub fn new(settings: &KafkaSettings, topic: &str, from_start: bool) -> Result<TopicTail> {
        let partitions = partition_count(settings, topic)?;
        let consumer: BaseConsumer = settings
            .client_config()
            // Never committed: the id only satisfies brokers that want one.
            .set("group.id", format!("causeway-tail-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .map_err(kafka_error("create consumer"))?;
        let start = if from_start {
            Offset::Beginning
        } else {
            Offset::End
        };
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(topic, p as i32, start)
                .map_err(kafka_error("assign"))?;
        }
        consumer.assign(&list).map_err(kafka_error("assign"))?;
        Ok(TopicTail {
            consumer,
            topic: topic.to_owned(),
        })
    }

    /// The next message, waiting at most `wait`.
    pub fn poll(&self, wait: Duration) -> Result<Option<TailMessage>> {
        match self.consumer.poll(wait) {
            None => Ok(None),
            Some(Err(e)) => Err(kafka_error("consume")(e)),
            Some(Ok(m)) => Ok(Some(TailMessage {
                partition: u32::try_from(m.partition()).unwrap_or_default(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis(),
            })),
        }
    }
}
