//! The engines' consumer group on `causeway.events`.
//!
//! Rebalances are handled synchronously inside `poll`, on the engine's own thread:
//! before partitions are taken away their owner flushes and saves them and the
//! group offsets are committed; when partitions arrive their owner restores them
//! and says where to start, and the consumer is assigned exactly there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use causeway_rules::{Event, ProcessingTime};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{KafkaSettings, kafka_error};
use crate::{Error, LogRecord, Result, metrics};

/// Whoever keeps per-partition state (the engine).
pub trait PartitionOwner: Send + Sync {
    /// Partitions given to this member: restore them and return where to start
    /// reading each (partitions missing from the map start at the group's
    /// committed offset, or the beginning).
    fn assigned(&self, partitions: &[u32]) -> Result<BTreeMap<u32, u64>>;

    /// Partitions about to be taken away: emit what is pending, save their state
    /// and return the offsets to commit for them.
    fn revoked(&self, partitions: &[u32]) -> Result<BTreeMap<u32, u64>>;
}

struct GroupContext {
    owner: Arc<dyn PartitionOwner>,
    topic: String,
    /// A rebalance step that failed; `poll` reports it.
    failure: Mutex<Option<Error>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        record_consumer_lag(&statistics, &self.topic);
    }
}

/// Sets the lag gauge of each partition of `topic` this consumer is fetching, from
/// librdkafka's statistics; partitions it no longer fetches lose their series.
/// Returns how many partitions were reported.
fn record_consumer_lag(statistics: &Statistics, topic: &str) -> usize {
    metrics::KAFKA_CONSUMER_LAG.reset();
    let Some(t) = statistics.topics.get(topic) else {
        return 0;
    };
    let mut reported = 0;
    for (partition, p) in &t.partitions {
        // -1 is librdkafka's internal unassigned partition; a lag of -1 is unknown.
        if *partition < 0 || p.fetch_state != "active" || p.consumer_lag < 0 {
            continue;
        }
        metrics::KAFKA_CONSUMER_LAG
            .with_label_values(&[&partition.to_string()])
            .set(p.consumer_lag);
        reported += 1;
    }
    reported
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<u32> {
    tpl.elements()
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect()
}

impl GroupContext {
    fn fail(&self, error: Error) {
        tracing::error!(%error, "rebalance step failed");
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(error);
        }
    }

    fn offsets_list(&self, offsets: &BTreeMap<u32, u64>) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.topic, *p as i32, Offset::Offset(*o as i64))?;
        }
        Ok(tpl)
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions = partitions_of(tpl);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                metrics::KAFKA_REBALANCES
                    .with_label_values(&["assign"])
                    .inc();
                tracing::info!(?partitions, "partitions assigned");
                match self.owner.assigned(&partitions) {
                    Ok(starts) => {
                        for (p, o) in starts {
                            if let Err(e) = tpl.set_partition_offset(
                                &self.topic,
                                p as i32,
                                Offset::Offset(o as i64),
                            ) {
                                self.fail(kafka_error("position partition")(e));
                            }
                        }
                    }
                    Err(e) => self.fail(e),
                }
                if let Err(e) = consumer.assign(tpl) {
                    self.fail(kafka_error("assign partitions")(e));
                }
                metrics::KAFKA_ASSIGNED_PARTITIONS.set(partitions.len() as i64);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                metrics::KAFKA_REBALANCES
                    .with_label_values(&["revoke"])
                    .inc();
                tracing::info!(?partitions, "partitions revoked");
                let lost = consumer.assignment_lost();
                match self.owner.revoked(&partitions) {
                    Ok(offsets) if !offsets.is_empty() && !lost => {
                        let committed = self
                            .offsets_list(&offsets)
                            .and_then(|list| consumer.commit(&list, CommitMode::Sync));
                        if let Err(e) = committed {
                            // The saved state holds the offsets; the next owner
                            // skips what it already covers.
                            tracing::warn!(error = %e, "offset commit on revoke failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => self.fail(e),
                }
                if let Err(e) = consumer.unassign() {
                    self.fail(kafka_error("unassign partitions")(e));
                }
                metrics::KAFKA_ASSIGNED_PARTITIONS.set(0);
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                if let Err(e) = consumer.unassign() {
                    self.fail(kafka_error("unassign partitions")(e));
                }
            }
        }
    }

    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {}
}

/// A member of the engines' consumer group.
pub struct GroupConsumer {
    consumer: BaseConsumer<GroupContext>,
    topic: String,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// Joins the group and subscribes to the events topic.
    pub fn subscribe(
        settings: &KafkaSettings,
        owner: Arc<dyn PartitionOwner>,
    ) -> Result<GroupConsumer> {
        let context = GroupContext {
            owner,
            topic: settings.topics.events.clone(),
            failure: Mutex::new(None),
        };
        let consumer: BaseConsumer<GroupContext> = settings
            .client_config()
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Statistics feed the consumer-lag gauge (a user's own setting wins).
            .set(
                "statistics.interval.ms",
                settings.property_or("statistics.interval.ms", "5000"),
            )
            // Incidents wait on this read: a broker that holds every fetch for
            // its maximum wait (tansu does, whether or not data is there) would
            // add librdkafka's default 500 ms to each event's path. Brokers that
            // answer as soon as data arrives are only asked more often while the
            // topic is quiet. A user's own setting wins.
            .set(
                "fetch.wait.max.ms",
                settings.property_or("fetch.wait.max.ms", "10"),
            )
            .create_with_context(context)
            .map_err(kafka_error("create consumer"))?;
        consumer
            .subscribe(&[settings.topics.events.as_str()])
            .map_err(kafka_error("subscribe"))?;
        Ok(GroupConsumer {
            consumer,
            topic: settings.topics.events.clone(),
        })
    }

    /// Up to `max` records, waiting at most `wait` for the first. Records that
    /// are not valid events are counted and skipped. Rebalances run inside.
    pub fn poll(&self, max: usize, wait: Duration) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while out.len() < max {
            let timeout = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let polled = self.consumer.poll(timeout);
            self.take_failure()?;
            match polled {
                None => {
                    if !out.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Transient client errors (broker down, rebalancing) are
                    // retried by librdkafka itself; return what we have, and do
                    // not spin while they last.
                    tracing::warn!(error = %e, "consumer error");
                    if out.is_empty() {
                        std::thread::sleep(
                            deadline
                                .saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(250)),
                        );
                    }
                    break;
                }
                Some(Ok(m)) => {
                    let (Ok(partition), Ok(offset)) =
                        (u32::try_from(m.partition()), u64::try_from(m.offset()))
                    else {
                        continue;
                    };
                    match decode_record(m.payload()) {
                        Ok(event) => out.push(LogRecord {
                            partition,
                            offset,
                            event,
                        }),
                        Err(reason) => {
                            metrics::KAFKA_REJECTED
                                .with_label_values(&["events", "malformed"])
                                .inc();
                            tracing::warn!(partition, offset, %reason, "skipping a record that is not a Causeway event");
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn take_failure(&self) -> Result<()> {
        let failure = self
            .consumer
            .context()
            .failure
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        failure.map_or(Ok(()), Err)
    }

    /// Commits these next offsets to the group, synchronously.
    pub fn commit(&self, offsets: &BTreeMap<u32, u64>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let list = self
            .consumer
            .context()
            .offsets_list(offsets)
            .map_err(kafka_error("commit offsets"))?;
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(kafka_error("commit offsets"))
    }

    /// Leaves the group: the owner is asked to give up its partitions first.
    pub fn close(self) -> Result<()> {
        self.consumer.unsubscribe();
        // Serve the revoke callback that the unsubscribe triggers.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(100));
            self.take_failure()?;
            match self.consumer.assignment() {
                Ok(a) if a.count() == 0 => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }
}

fn decode_record(payload: Option<&[u8]>) -> std::result::Result<Event, String> {
    let bytes = payload.ok_or("empty record")?;
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    // The ingest time travels in the event's own `ingestedat` extension.
    Event::from_cloudevent_json(text, ProcessingTime::now()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use rdkafka::statistics::{Partition, Topic};

    use super::*;

    fn partition(id: i32, state: &str, lag: i64) -> (i32, Partition) {
        (
            id,
            Partition {
                partition: id,
                fetch_state: state.into(),
                consumer_lag: lag,
                ..Partition::default()
            },
        )
    }

    #[test]
    fn consumer_lag_is_reported_for_the_partitions_being_fetched() {
        let mut stats = Statistics::default();
        stats.topics.insert(
            "causeway.events".into(),
            Topic {
                topic: "causeway.events".into(),
                partitions: [
                    partition(0, "active", 1200),
                    partition(1, "active", 0),
                    partition(2, "none", 55),
                    partition(3, "active", -1),
                    partition(-1, "active", 7),
                ]
                .into_iter()
                .collect(),
                ..Topic::default()
            },
        );
        assert_eq!(record_consumer_lag(&stats, "causeway.events"), 2);
        let lag = |p: &str| metrics::KAFKA_CONSUMER_LAG.with_label_values(&[p]).get();
        assert_eq!(lag("0"), 1200);
        assert_eq!(lag("1"), 0);
        // A partition that left the consumer loses its series at the next report.
        assert_eq!(
            record_consumer_lag(&Statistics::default(), "causeway.events"),
            0
        );
        let families = prometheus::gather();
        let series = families
            .iter()
            .find(|f| f.name() == "causeway_kafka_consumer_lag_records")
            .map_or(0, |f| f.get_metric().len());
        assert_eq!(series, 0);
    }
}
