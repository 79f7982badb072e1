#!/usr/bin/env bash
# Footprint's benchmark: installs and starts what is missing (tansu in
# memory, Redis, MariaDB), builds footprint in release mode, and runs
# `footprint bench`, which prints a table of medians and writes every run to
# footprint-bench.json.
#
#   scripts/bench.sh                       # engine, end to end and latency, 5 runs each
#   scripts/bench.sh --mode engine         # the engine alone, from files
#   scripts/bench.sh --runs 1 --events 200000
#
# Arguments go to `footprint bench` (see `footprint bench --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$HOME/.cargo/bin:$PATH"
DIR=.footprint/bench-services
mkdir -p .footprint
env_lines="$(bash scripts/services.sh up --store memory --dir "$DIR")"
eval "$env_lines"
trap 'bash scripts/services.sh down --dir "$DIR"' EXIT

echo "bench: building footprint (release; the first build takes a few minutes)" >&2
cargo build --release --quiet --bin footprint
./target/release/footprint bench "$@"
