#!/usr/bin/env bash
# Runs the Footprint demo: installs and starts what is missing (tansu with a
# file store, Redis, MariaDB), builds footprint, and runs the main job on the
# embedded defaults over a generated clickstream with a live view.
# Extra arguments go to `footprint demo` (see `footprint demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$HOME/.cargo/bin:$PATH"
DIR=.footprint/demo-services
mkdir -p .footprint
env_lines="$(bash scripts/services.sh up --store sqlite --db .footprint/demo.db --dir "$DIR")"
eval "$env_lines"
trap 'bash scripts/services.sh down --dir "$DIR"' EXIT

echo "demo: building footprint (release; the first build takes a few minutes)" >&2
cargo build --release --quiet --bin footprint
./target/release/footprint demo "$@"
