#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and fails on the first crash.
#
#   fuzz/run.sh [SECONDS]          e.g. `make fuzz`, or `fuzz/run.sh 300` for a longer session
#
# Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz when it is missing. Each target starts
# from the checked-in seeds (fuzz/seeds/TARGET, read only) and grows fuzz/corpus/TARGET (git-ignored).
# A crashing input is saved under fuzz/artifacts/TARGET/; reproduce it with
#   cargo +nightly fuzz run -a TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail

secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
cd "$(dirname "$0")"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# target:dictionary
targets=(policy_parse:policy inspect_decide:mcp json_strict:json rls_decode:rls profiles:policy jcs:json names:names)
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# -a: debug assertions and overflow checks on, so arithmetic slips crash too.
cargo +nightly fuzz build -a

summary=()
for entry in "${targets[@]}"; do
    t="${entry%%:*}" dict="${entry##*:}"
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${secs}s"
    if ! cargo +nightly fuzz run -a "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -dict="dicts/$dict.dict" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1; then
        tail -n 60 "$logs/$t.log"
        echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo '?')
    corpus=$(find "corpus/$t" -type f | wc -l)
    summary+=("$t: ${execs} runs in ${secs}s, no crash (corpus ${corpus})")
done
printf 'fuzz: %s\n' "${summary[@]}"
