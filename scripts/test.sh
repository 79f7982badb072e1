#!/usr/bin/env bash
# Footprint's whole test suite: formatting, lints, and every test, against a
# real Kafka-protocol broker (tansu, memory store), Redis and MariaDB, which
# scripts/services.sh installs and starts if they are missing.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # only tests whose name matches NAME
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$HOME/.cargo/bin:$PATH"
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        echo "test: installing the ${component} component" >&2
        rustup component add "${component}"
    fi
done

DIR=.footprint/test-services
env_lines="$(bash scripts/services.sh up --store memory --dir "$DIR")"
eval "$env_lines"
LOG="$(mktemp)"
summary() {
    bash scripts/services.sh down --dir "$DIR" || true
    # One closing line over every test binary: "summary: N passed, N failed, N skipped".
    awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
         END { if (p + f + s > 0) printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$LOG"
    rm -f "$LOG"
}
trap summary EXIT
echo "test: broker at $FOOTPRINT_BROKERS" >&2

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test" >&2
cargo test --workspace "$@" 2>&1 | tee "$LOG"
