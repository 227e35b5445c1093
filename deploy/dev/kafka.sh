#!/usr/bin/env bash
# A Kafka-protocol broker for development, tests and CI: tansu (crates.io), one
# process, SQLite storage under $CAUSEWAY_KAFKA_DIR (or in memory, see below).
# Apache Kafka itself needs a JVM distribution that no package registry here
# carries; tansu speaks the protocol (idempotent producer, consumer groups, offset
# commits) and builds with cargo.
#
#   deploy/dev/kafka.sh install   build tansu once if it is not on PATH (~20 min cold)
#   deploy/dev/kafka.sh up        start it (idempotent); prints the bootstrap address
#   deploy/dev/kafka.sh down      stop it (its data stays for the next `up`)
#   deploy/dev/kafka.sh reset     stop it and delete its data
#   deploy/dev/kafka.sh status    exit 0 when it answers
#
# Environment: CAUSEWAY_KAFKA_PORT (default 19092), CAUSEWAY_KAFKA_DIR
# (default ${TMPDIR:-/tmp}/causeway-kafka-$PORT), CAUSEWAY_KAFKA_STORAGE: `sqlite`
# (default; data kept across `down`/`up`) or `memory` (nothing kept; the load
# harness uses it: tansu 0.6's SQLite storage panics under a 10 k events/s stream
# on two shared cores, in `idempotent_message_check` after a produce retry).
set -euo pipefail

PORT="${CAUSEWAY_KAFKA_PORT:-19092}"
DIR="${CAUSEWAY_KAFKA_DIR:-${TMPDIR:-/tmp}/causeway-kafka-$PORT}"
case "${CAUSEWAY_KAFKA_STORAGE:-sqlite}" in
  sqlite) STORAGE="sqlite://tansu.db" ;;
  memory) STORAGE="memory://tansu/" ;;
  *) echo "kafka.sh: CAUSEWAY_KAFKA_STORAGE must be sqlite or memory" >&2; exit 64 ;;
esac
PIDFILE="$DIR/tansu.pid"
TANSU_VERSION="0.6.0"

export PATH="$HOME/.cargo/bin:$PATH"

answers() {
  # The broker is up once its port accepts connections.
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

install() {
  if command -v tansu >/dev/null 2>&1; then
    return 0
  fi
  echo "kafka.sh: building tansu $TANSU_VERSION (once; about 20 minutes cold)" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
}

up() {
  if ! command -v tansu >/dev/null 2>&1; then
    echo "kafka.sh: tansu is not installed; run 'deploy/dev/kafka.sh install' first" >&2
    exit 2
  fi
  mkdir -p "$DIR"
  # Tests call `up` concurrently: without the lock two brokers start on one SQLite
  # file and the loser exits with "database is locked" (seen on a fresh machine,
  # where the first start's schema setup takes longest). Held until `up` returns.
  exec 9>"$DIR/up.lock"
  flock 9
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && answers; then
    echo "127.0.0.1:$PORT"
    return 0
  fi
  # tansu reads the SQLite path relative to its working directory; it must not
  # inherit the lock (fd 9), or every later `up` would wait for it to exit.
  (cd "$DIR" && exec nohup tansu broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "$STORAGE" \
    >"$DIR/tansu.log" 2>&1) 9>&- &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if answers; then
      echo "127.0.0.1:$PORT"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "kafka.sh: tansu exited; its log:" >&2
      cat "$DIR/tansu.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "kafka.sh: tansu did not answer on 127.0.0.1:$PORT within 10 s" >&2
  exit 1
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

reset() {
  down
  rm -f "$DIR"/tansu.db*
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  reset) reset ;;
  status) answers ;;
  *) echo "usage: $0 install|up|down|reset|status" >&2; exit 64 ;;
esac
