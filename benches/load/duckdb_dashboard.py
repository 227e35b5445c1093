#!/usr/bin/env python3
"""DuckDB's side of the dashboard benchmark (benches/src/bin/dashboard.rs).

The Rust harness generates a history with Causeway's own writer, times the four
dashboard queries through Causeway's SQL surface, then runs this script on the same
Parquet files in the same run. The figures only mean something next to each other,
so the SQL here is the harness's SQL, with the few spellings that differ between the
two dialects (timestamp literals, seconds since the epoch); `incidents_latest` is
defined exactly as engine/src/sql.rs defines it.

Reads the window start and the incident of the chain from the marker file the
harness writes into the history directory. Prints one JSON document: per query the
timings of each run (ms, after an untimed warm-up), their median and the full
result, with timestamps as microseconds since the epoch, so the harness can check
both engines returned the same rows before it prints a ratio.

  benches/load/duckdb_dashboard.py --dir /tmp/history --runs 5
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import duckdb

MARKER = "causeway-dashboard-bench.json"
TABLES = ("events", "incidents", "incident_events")

# The same definition as the view engine/src/sql.rs creates for every query.
INCIDENTS_LATEST = (
    "CREATE VIEW incidents_latest AS "
    "SELECT i.* FROM incidents i "
    "JOIN (SELECT incident_id AS latest_id, max(version) AS latest_version "
    "      FROM incidents GROUP BY incident_id) m "
    "ON i.incident_id = m.latest_id AND i.version = m.latest_version"
)


def sql_string(value):
    return "'" + value.replace("'", "''") + "'"


def queries(since_us, incident):
    since = datetime.datetime.fromtimestamp(since_us / 1e6, tz=datetime.timezone.utc)
    since = "TIMESTAMPTZ " + sql_string(since.strftime("%Y-%m-%d %H:%M:%S+00"))
    incident = sql_string(incident)
    return [
        (
            "incidents_per_rule_per_day",
            f"""SELECT rule_id, date_trunc('day', opened_at) AS day, count(*) AS incidents
                FROM incidents_latest
                WHERE opened_at >= {since}
                GROUP BY rule_id, date_trunc('day', opened_at)
                ORDER BY day, rule_id""",
        ),
        (
            "top_root_cause_services",
            f"""SELECT e.entity AS service, count(*) AS incidents
                FROM incidents_latest i
                JOIN events e ON e.event_id = i.root_cause_event_id
                WHERE i.opened_at >= {since}
                GROUP BY e.entity
                ORDER BY incidents DESC, service
                LIMIT 10""",
        ),
        (
            "mean_time_to_resolve_by_severity",
            f"""SELECT severity, count(*) AS resolved,
                       avg(epoch(resolved_at) - epoch(opened_at)) AS mean_seconds
                FROM incidents_latest
                WHERE state = 'resolved' AND opened_at >= {since}
                GROUP BY severity
                ORDER BY severity""",
        ),
        (
            "incident_chain",
            f"""SELECT e.time, e.event_id, ie.role, ie.linked_by, ie.lag_seconds,
                       e.source, e.kind, e.entity, e.summary
                FROM incident_events ie
                JOIN events e ON e.event_id = ie.event_id
                WHERE ie.incident_id = {incident}
                ORDER BY e.time, e.event_id""",
        ),
    ]


def canonical(con, sql):
    """The query with its timestamp columns as microseconds since the epoch: the
    Python client cannot fetch TIMESTAMPTZ without pytz, and the harness compares
    microseconds anyway."""
    columns = con.execute(f"DESCRIBE {sql}").fetchall()
    select = []
    for name, column_type, *_ in columns:
        quoted = '"' + name.replace('"', '""') + '"'
        if column_type.startswith("TIMESTAMP"):
            select.append(f"epoch_us({quoted}) AS {quoted}")
        else:
            select.append(quoted)
    return f"SELECT {', '.join(select)} FROM ({sql}) AS q"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="the generated history directory")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per query first")
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: its default)")
    args = parser.parse_args()

    with open(os.path.join(args.dir, MARKER)) as f:
        marker = json.load(f)

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if args.threads > 0:
        con.execute(f"SET threads = {args.threads}")
    for table in TABLES:
        glob = os.path.join(args.dir, table, "*", "*.parquet")
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM "
            f"read_parquet({sql_string(glob)}, hive_partitioning = true)"
        )
    con.execute(INCIDENTS_LATEST)

    out = {
        "duckdb_version": duckdb.__version__,
        "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
        "queries": {},
    }
    for name, sql in queries(marker["since_us"], marker["chain_incident"]):
        timed = canonical(con, sql)
        for _ in range(args.warmup):
            con.execute(timed).fetchall()
        times = []
        rows = None
        for _ in range(max(args.runs, 1)):
            start = time.perf_counter()
            rows = con.execute(timed).fetchall()
            times.append((time.perf_counter() - start) * 1e3)
        out["queries"][name] = {
            "times_ms": times,
            "median_ms": statistics.median(times),
            "rows": [list(r) for r in rows],
        }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
