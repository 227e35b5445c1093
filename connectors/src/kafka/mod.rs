//! Kafka: the event log, the incident and late-event streams, partition state, and
//! user topics as a source. Only this module links rdkafka.
//!
//! # Delivery guarantee: at least once, end to end
//!
//! - A receiver answers 2xx only after the broker acknowledged every event of the
//!   request (`acks=all`, idempotent producer, key = correlation scope); if that
//!   does not happen within `delivery_timeout` it answers 503 and the sender retries.
//! - An engine consumes `causeway.events` as a member of one consumer group. Its
//!   state is kept per partition. At every commit it first waits until every
//!   incident version and late event it produced is acknowledged on
//!   `causeway.incidents` / `causeway.late`, then writes each owned partition's
//!   state (correlator, clocks and the next source offset, in one message) to the
//!   state topic, and only then commits the group offsets.
//! - On revoke an engine does that commit for the partitions it loses before letting
//!   them go; on assign it restores their state from the state topic's last message
//!   and starts reading at the offset that state records.
//! - A crash between emitting and committing replays events from the last saved
//!   state. Correlation is deterministic, so the replay emits the same incident ids
//!   and versions again: consumers de-duplicate on (`incident_id`, `version`).

mod group;
mod log;
mod sink;
mod source;
mod state;
mod tail;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

pub use group::{GroupConsumer, PartitionOwner};
pub use log::KafkaEventLog;
pub use sink::KafkaSink;
pub use source::{SourceFormat, SourceTopic, run_source};
pub use state::StateStore;
pub use tail::TopicTail;

use crate::{Error, Result};

/// Topic names; the defaults are those of CONTRACT.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub events: String,
    pub incidents: String,
    pub late: String,
    pub actions: String,
    /// Partition state of the engines (one message per partition and commit).
    pub state: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            events: "causeway.events".into(),
            incidents: "causeway.incidents".into(),
            late: "causeway.late".into(),
            actions: "causeway.actions".into(),
            state: "causeway.state".into(),
        }
    }
}

/// How to reach the cluster and what to call things there.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// librdkafka properties passed through as given (SASL, SSL, tuning).
    pub properties: BTreeMap<String, String>,
    pub topics: Topics,
    /// Consumer group of the engines.
    pub group_id: String,
    /// Partitions of topics Causeway creates.
    pub partitions: u32,
    /// Replication factor of topics Causeway creates.
    pub replication_factor: u32,
    /// How long a produce may take before it counts as failed.
    pub delivery_timeout: Duration,
}

impl KafkaSettings {
    /// The client configuration every Causeway client starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", "causeway");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The user's value of a client property, or `default`.
    pub(crate) fn property_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.properties.get(key).map_or(default, String::as_str)
    }

    /// A producer configuration: idempotent, `acks=all`, bounded delivery time.
    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true");
        c.set("acks", "all");
        c.set(
            "message.timeout.ms",
            self.delivery_timeout.as_millis().max(1).to_string(),
        );
        // Our callers wait for acknowledgements; a short linger batches a burst.
        // Not shorter: at 2 ms librdkafka's broker thread woke so often that it
        // spent 0.3 of a core more at 2 k events/s (measured with the latency
        // harness), and the CPU it took from the engine cost more latency than
        // the 3 ms it saved. A user's own setting wins.
        c.set("linger.ms", self.property_or("linger.ms", "5"));
        c
    }
}

impl KafkaSettings {
    /// An idempotent `acks=all` producer (see [`KafkaSettings::producer_config`]).
    pub(crate) fn producer(&self) -> Result<rdkafka::producer::FutureProducer> {
        self.producer_config()
            .create()
            .map_err(kafka_error("create producer"))
    }
}

pub(crate) fn kafka_error(
    operation: &'static str,
) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    move |e| Error::Kafka {
        operation,
        reason: e.to_string(),
    }
}

/// Creates Causeway's topics when they are missing. The state topic gets as many
/// partitions as the events topic, whatever either was created with.
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .map_err(kafka_error("create admin client"))?;
    let timeout = settings.delivery_timeout.max(Duration::from_secs(5));
    let existing = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(kafka_error("fetch metadata"))?;
    let partitions_of = |name: &str| {
        existing
            .topics()
            .iter()
            .find(|t| t.name() == name && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as i32)
    };
    let event_partitions =
        partitions_of(&settings.topics.events).unwrap_or(settings.partitions.max(1) as i32);
    if let Some(state) = partitions_of(&settings.topics.state)
        && state != event_partitions
    {
        return Err(Error::Kafka {
            operation: "check topics",
            reason: format!(
                "{} has {state} partitions but {} has {event_partitions}; they must match",
                settings.topics.state, settings.topics.events
            ),
        });
    }
    let wanted = [
        (&settings.topics.events, event_partitions),
        (&settings.topics.state, event_partitions),
        (&settings.topics.incidents, event_partitions),
        (&settings.topics.late, 1),
        (&settings.topics.actions, 1),
    ];
    let replication = settings.replication_factor.max(1) as i32;
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .filter(|(name, _)| partitions_of(name).is_none())
        .map(|(name, n)| {
            let topic = NewTopic::new(name, *n, TopicReplication::Fixed(replication));
            if *name == &settings.topics.state {
                // Only the last state per partition (the key) is ever read.
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(timeout)))
        .await
        .map_err(kafka_error("create topics"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Kafka {
                    operation: "create topics",
                    reason: format!("{name}: {code}"),
                });
            }
        }
    }
    Ok(())
}

/// The number of partitions of a topic.
pub fn partition_count(settings: &KafkaSettings, topic: &str) -> Result<u32> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .map_err(kafka_error("create admin client"))?;
    let md = admin
        .inner()
        .fetch_metadata(
            Some(topic),
            settings.delivery_timeout.max(Duration::from_secs(5)),
        )
        .map_err(kafka_error("fetch metadata"))?;
    md.topics()
        .first()
        .map(|t| t.partitions().len() as u32)
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::Kafka {
            operation: "fetch metadata",
            reason: format!("topic {topic} does not exist"),
        })
}
