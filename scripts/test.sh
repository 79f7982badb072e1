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

# promtool, Prometheus' linter of the metrics format, from Debian's
# `prometheus` package: the tests run it on /metrics. The package is only
# unpacked under .footprint/tools, so no Prometheus server is set up.
promtool_path() {
    if command -v promtool >/dev/null 2>&1; then
        command -v promtool
        return
    fi
    local tools=.footprint/tools
    if [ ! -x "$tools/promtool" ]; then
        echo "test: fetching promtool (Debian package prometheus)" >&2
        rm -rf "$tools/dl"
        mkdir -p "$tools/dl"
        if ! (cd "$tools/dl" && apt-get download prometheus >&2); then
            local sudo=()
            [ "$(id -u)" -eq 0 ] || sudo=(sudo)
            "${sudo[@]}" apt-get update -q >&2
            (cd "$tools/dl" && apt-get download prometheus >&2)
        fi
        dpkg-deb -x "$tools"/dl/prometheus_*.deb "$tools/dl/root"
        cp "$tools/dl/root/usr/bin/promtool" "$tools/promtool"
        rm -rf "$tools/dl"
    fi
    printf '%s\n' "$PWD/$tools/promtool"
}
# Chromium and its WebDriver, from Debian's packages: the operator
# console's tests drive the page in a real headless browser.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    echo "test: installing chromium and chromium-driver (Debian packages) for the console's browser tests" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2; then
        "${sudo[@]}" apt-get update -q >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2
    fi
fi

FOOTPRINT_PROMTOOL="$(promtool_path)"
export FOOTPRINT_PROMTOOL
echo "test: promtool at $FOOTPRINT_PROMTOOL" >&2

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
# --no-fail-fast: one failing test binary does not hide the ones after it.
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$LOG"
