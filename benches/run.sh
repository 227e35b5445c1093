#!/usr/bin/env bash
# Reproduces every figure of benches/RESULTS.md on this machine, in one go:
# criterion benchmarks, the end-to-end load harness (every mode, baselines beside
# it), the operator's instructions per event (callgrind), and the dashboard
# benchmark against DuckDB. Release build. Writes the harness, instruction-count
# and dashboard reports to benches/results-<date>.md; criterion's own reports land
# in target/criterion/.
#
#   benches/run.sh            # everything (about an hour on the 2-core VM)
#   benches/run.sh load       # only the load harness
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out="benches/results-$(date -u +%Y-%m-%d).md"

python3 -c 'import duckdb' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check 'duckdb>=1.1,<2'

cargo build --release --bin causeway -p causeway -p causeway-benches --bins

if [[ "$what" == all || "$what" == criterion ]]; then
  # The root package is selected too so the benches resolve the same dependency
  # features as the release binaries above and reuse their build (`-p
  # causeway-benches` alone rebuilds DataFusion, ~45 min here).
  cargo bench --profile release -p causeway -p causeway-benches --benches -- --warm-up-time 3 --measurement-time 10 2>&1 |
    tee "target/criterion-$(date -u +%Y%m%dT%H%M).log"
fi
if [[ "$what" == all || "$what" == load ]]; then
  target/release/causeway-load --report "$out" all
fi
if [[ "$what" == all || "$what" == instructions ]]; then
  benches/instructions.sh | tee -a "$out"
fi
if [[ "$what" == all || "$what" == dashboard ]]; then
  target/release/causeway-dashboard-bench --format markdown | tee -a "$out"
fi
echo "reports: $out, target/criterion/"
