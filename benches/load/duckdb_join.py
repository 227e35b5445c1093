#!/usr/bin/env python3
"""Baseline for the load harness: the workload's deploy -> alert correlation as a
batch interval join in DuckDB, over the `events` Parquet files Causeway wrote.

Prints one JSON object: the pair count (the harness checks DataFusion found the
same) and the seconds of each run.

  benches/load/duckdb_join.py --events DATA_DIR/history/events --runs 3 --sql-file join.sql
"""
import argparse
import json
import sys
import time

import duckdb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", required=True, help="the events table directory")
    ap.add_argument("--sql-file", required=True, help="the join, over a table named events")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0: DuckDB's default")
    args = ap.parse_args()
    sql = open(args.sql_file).read()
    con = duckdb.connect()
    if args.threads:
        con.execute("SET threads TO %d" % args.threads)
    # A view, as DataFusion's listing table: every query reads the files again.
    con.execute(
        "CREATE VIEW events AS SELECT * FROM read_parquet('%s/*/*.parquet')"
        % args.events.replace("'", "''"))
    seconds = []
    pairs = None
    for _ in range(args.runs):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        seconds.append(time.perf_counter() - start)
        got = int(rows[0][0])
        if pairs is not None and got != pairs:
            sys.exit("duckdb gave %d pairs, then %d" % (pairs, got))
        pairs = got
    json.dump({"engine": "duckdb", "version": duckdb.__version__, "pairs": pairs,
               "seconds": seconds}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
