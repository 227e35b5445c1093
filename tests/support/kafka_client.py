#!/usr/bin/env python3
"""An external Kafka client for Causeway's tests (confluent-kafka from PyPI).

  kafka_client.py consume BROKERS TOPIC --min N --timeout S
      prints every message as one JSON line {"partition", "offset", "key", "value"}
      from the beginning of TOPIC; stops after at least N messages once the topic
      is drained, or after S seconds.
  kafka_client.py create BROKERS TOPIC
      creates TOPIC (one partition) if it does not exist.
  kafka_client.py produce BROKERS TOPIC
      produces each stdin line as one message; exits non-zero unless all were
      acknowledged.
"""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def consume(args):
    c = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "causeway-test-reader-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([args.topic])
    seen = 0
    deadline = time.time() + args.timeout
    idle_since = None
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            if seen >= args.min:
                idle_since = idle_since or time.time()
                if time.time() - idle_since > args.drain:
                    break
            continue
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                print("consumer error: %s" % m.error(), file=sys.stderr)
            continue
        idle_since = None
        seen += 1
        print(json.dumps({
            "partition": m.partition(),
            "offset": m.offset(),
            "key": m.key().decode() if m.key() is not None else None,
            "value": m.value().decode() if m.value() is not None else None,
        }), flush=True)
    c.close()


def produce(args):
    p = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            p.produce(args.topic, value=line.encode(), on_delivery=report)
    left = p.flush(30)
    if left or failed:
        print("not delivered: %d left, errors %s" % (left, failed), file=sys.stderr)
        sys.exit(1)


def create(args):
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for _, f in admin.create_topics([NewTopic(args.topic, num_partitions=1, replication_factor=1)]).items():
        try:
            f.result(30)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["consume", "produce", "create"])
    ap.add_argument("brokers")
    ap.add_argument("topic")
    ap.add_argument("--min", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--drain", type=float, default=2)
    args = ap.parse_args()
    {"consume": consume, "produce": produce, "create": create}[args.command](args)


if __name__ == "__main__":
    main()
