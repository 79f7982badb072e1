#!/usr/bin/env bash
# Fuzzes the event decoder and the retry-record codec (not part of the test
# suite, which runs 2,000 cases of each): by default 10,000,000 cases per
# property, in release mode. FOOTPRINT_FUZZ_CASES sets another count.
#
#   scripts/fuzz.sh
#
# A failing case is shrunk, printed, and saved under the test's
# `regressions` directory, so that every later run tries it first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$HOME/.cargo/bin:$PATH"
export FOOTPRINT_FUZZ_CASES=${FOOTPRINT_FUZZ_CASES:-10000000}
echo "fuzz: building (release)" >&2
cargo test --release --quiet -p footprint-dataflows --test fuzz_decoder --no-run
cargo test --release --quiet -p footprint-connectors --test fuzz_retry_codec --no-run
for target in "footprint-dataflows fuzz_decoder" "footprint-connectors fuzz_retry_codec"; do
    set -- $target
    started=$SECONDS
    echo "fuzz: $2, $FOOTPRINT_FUZZ_CASES cases per property (started $(date +%T))" >&2
    cargo test --release --quiet -p "$1" --test "$2" -- --test-threads 2
    echo "fuzz: $2 done in $((SECONDS - started)) s, no panic" >&2
done
