#!/usr/bin/env bash
# An S3-compatible object store for development and tests: moto's server (PyPI
# `moto[server]`), one process on loopback, objects in memory. It speaks the S3
# REST API (path-style requests, ListObjectsV2, PUT/GET/DELETE) that the history's
# `history.url: s3://…` uses; MinIO is not packaged for this machine.
#
#   deploy/dev/s3.sh install       pip-install moto[server] if it is missing
#   deploy/dev/s3.sh up            start it (idempotent); prints the endpoint URL
#   deploy/dev/s3.sh bucket NAME   create a bucket (exit 0 if it already exists)
#   deploy/dev/s3.sh down          stop it (its objects go with it)
#   deploy/dev/s3.sh status        exit 0 when it answers
#
# Environment: CAUSEWAY_S3_PORT (default 19000), CAUSEWAY_S3_DIR
# (default ${TMPDIR:-/tmp}/causeway-s3-$PORT, for the pid file and log).
set -euo pipefail

PORT="${CAUSEWAY_S3_PORT:-19000}"
DIR="${CAUSEWAY_S3_DIR:-${TMPDIR:-/tmp}/causeway-s3-$PORT}"
PIDFILE="$DIR/moto.pid"
ENDPOINT="http://127.0.0.1:$PORT"

answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

installed() {
  python3 -c 'import moto.server, boto3' 2>/dev/null
}

install() {
  if installed; then
    return 0
  fi
  echo "s3.sh: installing moto[server] (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
}

up() {
  if ! installed; then
    echo "s3.sh: moto is not installed; run 'deploy/dev/s3.sh install' first" >&2
    exit 2
  fi
  mkdir -p "$DIR"
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && answers; then
    echo "$ENDPOINT"
    return 0
  fi
  (exec nohup python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$DIR/moto.log" 2>&1) &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 200); do
    if answers; then
      echo "$ENDPOINT"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "s3.sh: moto exited; its log:" >&2
      cat "$DIR/moto.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "s3.sh: moto did not answer on $ENDPOINT within 20 s" >&2
  exit 1
}

bucket() {
  local name="${1:?usage: $0 bucket NAME}"
  python3 - "$ENDPOINT" "$name" <<'PY'
import sys
import boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
try:
    s3.create_bucket(Bucket=sys.argv[2])
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
PY
}

down() {
  if [[ -f "$PIDFILE" ]]; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  bucket) bucket "${2:-}" ;;
  down) down ;;
  status) answers ;;
  *) echo "usage: $0 install|up|bucket NAME|down|status" >&2; exit 64 ;;
esac
