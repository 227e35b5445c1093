#!/usr/bin/env python3
"""Load over the Kafka path of a running `causeway run` (kafka.brokers set).

Posts N scenarios (a deploy and, three minutes later, an alert, each in its own
scope: one deploy-regression incident per scenario) as CloudEvents batches to
/ingest/events from C concurrent connections, then reads the incidents topic until
every expected incident is there.

Reports: events acknowledged per second by the receivers (each request answers only
after the broker acknowledged its events, acks=all), and the time from the first
request until the last expected incident was readable on the incidents topic. It
refuses to report if any request failed or any incident is missing.

  benches/load/kafka_path.py --base http://127.0.0.1:9470 --brokers 127.0.0.1:19092 \
      --incidents causeway.incidents --scenarios 20000 --batch 100 --concurrency 8
"""
import argparse
import concurrent.futures
import json
import sys
import time
import urllib.request
import uuid

from confluent_kafka import Consumer


BASE = 1714557600  # 2024-05-01T10:00:00Z


def at(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + seconds))


def scenario(run, i):
    # Event time advances with i, as in a live stream.
    scope = "load-%s-%d" % (run, i)
    return [
        {"specversion": "1.0", "source": "load-deployer", "type": "dev.causeway.deploy",
         "time": at(i), "subject": "checkout",
         "sourceeventid": "deploy-%s-%d" % (run, i), "scope": scope, "status": "success",
         "data": {"summary": "rolled out", "attributes": {}}},
        {"specversion": "1.0", "source": "load-monitor", "type": "dev.causeway.alert",
         "time": at(i + 180), "subject": "checkout",
         "sourceeventid": "alert-%s-%d" % (run, i), "scope": scope, "status": "firing",
         "severity": "critical",
         "data": {"summary": "errors", "attributes": {"alertname": "HighErrorRate"}}},
    ]


def post(base, body):
    req = urllib.request.Request(base + "/ingest/events", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:9470")
    ap.add_argument("--brokers", default="127.0.0.1:19092")
    ap.add_argument("--incidents", default="causeway.incidents")
    ap.add_argument("--scenarios", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    run = uuid.uuid4().hex[:8]
    bodies = []
    for start in range(0, a.scenarios, a.batch):
        events = []
        for i in range(start, min(start + a.batch, a.scenarios)):
            events.extend(scenario(run, i))
        bodies.append(json.dumps(events).encode())
    expected = {"load-%s-%d" % (run, i) for i in range(a.scenarios)}

    consumer = Consumer({"bootstrap.servers": a.brokers, "group.id": "load-" + run,
                         "auto.offset.reset": "latest", "enable.auto.commit": False})
    consumer.subscribe([a.incidents])
    while not consumer.assignment():
        consumer.poll(0.2)

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(a.concurrency) as pool:
        statuses = list(pool.map(lambda b: post(a.base, b), bodies))
    t_ack = time.time() - t0
    if any(s != 200 for s in statuses):
        sys.exit("refusing to report: %d requests failed" % sum(s != 200 for s in statuses))

    seen = set()
    deadline = t0 + a.timeout
    while seen != expected and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None or m.error():
            continue
        v = json.loads(m.value())
        if v["rule_id"] == "deploy-regression" and v["scope"] in expected:
            seen.add(v["scope"])
    t_all = time.time() - t0
    consumer.close()
    if seen != expected:
        sys.exit("refusing to report: %d of %d incidents missing" % (len(expected - seen), len(expected)))
    events = 2 * a.scenarios
    print("events %d in %d requests, concurrency %d" % (events, len(bodies), a.concurrency))
    print("receivers -> Kafka (acks=all): %.0f events/s (%.2f s)" % (events / t_ack, t_ack))
    print("first request -> last incident on %s: %.2f s (%.0f events/s end to end)"
          % (a.incidents, t_all, events / t_all))


if __name__ == "__main__":
    main()
