#!/usr/bin/env bash
# Footprint's failure drills at full size (the test suite runs CI-sized
# versions of the same drills): kill -9 at 20 points, a 20 s broker restart,
# a broker crash while every producer is busy, store outages over 80% of a
# 400,000-event run, 500,000 events with 1%
# garbage, a killed cluster, and the collector's drills (a 20 s broker outage
# under 5,000 events/s of HTTP ingest). Against the same real services as the
# tests, which scripts/services.sh installs and starts if they are missing.
#
#   scripts/drills.sh          # every drill
#   scripts/drills.sh NAME     # the drills whose test name contains NAME
#
# Each drill prints a `DRILL …` line; at the end the figures are printed as
# the README's "Faults survived" table (also kept in .footprint/drills.md,
# and as JSON lines in .footprint/drills.jsonl).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$HOME/.cargo/bin:$PATH"
DIR=.footprint/drill-services
env_lines="$(bash scripts/services.sh up --store memory --dir "$DIR")"
eval "$env_lines"
trap 'bash scripts/services.sh down --dir "$DIR"' EXIT

mkdir -p .footprint
TABLE=$PWD/.footprint/drills.md
REPORT=$PWD/.footprint/drills.jsonl
: >"$TABLE"
: >"$REPORT"
export FOOTPRINT_DRILL_SIZE=full FOOTPRINT_DRILL_TABLE=$TABLE FOOTPRINT_DRILL_REPORT=$REPORT

echo "drills: building" >&2
cargo build --quiet --bin footprint
cargo test --quiet -p footprint-tests --no-run
started=$SECONDS
for t in drill_kill drill_broker drill_broker_crash store_drills drill_poison cluster collect; do
    echo "drills: $t (full size; $((SECONDS - started)) s so far)" >&2
    cargo test --quiet -p footprint-tests --test "$t" -- --test-threads 1 --nocapture "$@"
done

echo
echo "| drill | events | diffs | lost | stale | double-counted | recovery | other figures | size | command |"
echo "|---|---|---|---|---|---|---|---|---|---|"
cat "$TABLE"
echo "drills: done in $((SECONDS - started)) s" >&2
