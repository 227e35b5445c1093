#!/usr/bin/env bash
# The test command: makes sure the test prerequisites are installed, then runs
# `cargo test --workspace`. Extra arguments go to cargo test.
#
# Prerequisites, installed only when missing:
# - tansu, the Kafka-protocol broker the Kafka tests start through
#   deploy/dev/kafka.sh (built from crates.io once: about 20 minutes cold);
# - confluent-kafka from PyPI, the external client the tests read topics with;
# - moto[server] from PyPI, the S3-compatible server deploy/dev/s3.sh starts for
#   the object-store history test;
# - psql (Debian's postgresql-client), the client the Postgres wire tests drive;
# - Alertmanager (Debian's prometheus-alertmanager), which the Alertmanager test
#   puts in front of the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

deploy/dev/kafka.sh install
if ! python3 -c 'import confluent_kafka' 2>/dev/null; then
  echo "test.sh: installing confluent-kafka (PyPI)" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'confluent-kafka>=2.3,<3'
fi
deploy/dev/s3.sh install
debs=()
command -v psql >/dev/null 2>&1 || debs+=(postgresql-client)
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 ||
  debs+=(prometheus-alertmanager)
if [ ${#debs[@]} -gt 0 ]; then
  echo "test.sh: installing ${debs[*]} (Debian)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi
exec cargo test --workspace "$@"
