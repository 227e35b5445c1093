#!/usr/bin/env bash
# Instructions per event of the correlation operator (issue 5), counted by
# callgrind over one pass of the `correlation` bench's workload: a figure the
# VM's swings in speed (±30 % within minutes) do not blur, for comparing two
# builds of the operator. It counts work, not time: a change that saves
# instructions but adds cache misses can still be slower (check criterion too).
#
#   benches/instructions.sh            # this checkout
#   benches/instructions.sh BINARY     # a bench binary kept from another build
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || {
  echo "installing valgrind (Debian package)" >&2
  sudo_if_needed() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get install -y --no-install-recommends valgrind >/dev/null
}

bin="${1:-}"
if [[ -z "$bin" ]]; then
  bin=$(cargo bench --profile release -p causeway -p causeway-benches --bench correlation --no-run 2>&1 |
    sed -n 's/.*Executable benches\/correlation.rs (\(.*\))/\1/p')
fi
[[ -x "$bin" ]] || { echo "no bench binary ($bin)" >&2; exit 1; }

out=$(mktemp)
trap 'rm -f "$out" "$out.log"' EXIT
summary=$(CAUSEWAY_OPERATOR_ONCE=1 valgrind --tool=callgrind --toggle-collect='*Operator::push_batch*' \
  --callgrind-out-file="$out" "$bin" --bench operator 2>"$out.log") || { cat "$out.log" >&2; exit 1; }
echo "$summary"
events=$(sed -n 's/operator once: \([0-9]*\) events.*/\1/p' <<<"$summary")
[[ -n "$events" ]] || { echo "the bench binary did not run the operator once" >&2; exit 1; }
total=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$out")
echo "instructions in Operator::push_batch: $total over $events events = $((total / events)) per event"
echo "top functions (self):"
callgrind_annotate "$out" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,17p' | cut -c1-160
