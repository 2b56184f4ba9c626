#!/usr/bin/env bash
# The standard benchmark suite: shardmq and Mosquitto, same cases, same run.
#
#   bench-harness/suite.sh                      # both brokers
#   BENCH_BROKERS=mosquitto bench-harness/suite.sh
#   BENCH_DURATION=3 BENCH_WARMUP=1 bench-harness/suite.sh   # quick
#
# Writes target/bench/<broker>-<case>.json (+ .hlog, broker logs),
# target/bench/compare.md and target/bench/compare.svg.
#
# Environment (all optional):
#   BENCH_BROKERS          brokers to run, comma-separated   [shardmq,mosquitto]
#   BENCH_OUT              where results go                  [target/bench]
#   BENCH_DURATION         measured seconds per case         [10]
#   BENCH_WARMUP           warmup seconds per case           [2]
#   BENCH_LATENCY_RATE     msgs/s of the latency case        [20000]
#   BENCH_CONN_RATE        connections/s of the conn storm   [2000]
#   BENCH_GEN_CPUS         generator CPUs (--cpus)           [upper half of the CPUs]
#   BENCH_BROKER_CPUS      CPUs the brokers are pinned to    [the others]
#   BENCH_MOSQUITTO_NODELAY  1: `set_tcp_nodelay true` in mosquitto.conf, as
#                          shardmq sets TCP_NODELAY too      [1]
#   MOSQUITTO              path of the mosquitto binary      [/usr/sbin/mosquitto]
#   SHARDMQ_ARGS           extra arguments for shardmq       []
#
# Exit status: 0 all requested brokers ran every case; 1 a benchmark run
# failed; 2 a requested broker could not be built or started (the others still
# ran and their results are written).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${BENCH_OUT:-$ROOT/target/bench}"
BENCH="$ROOT/target/release/shardmq-bench"
SHARDMQ="$ROOT/target/release/shardmq"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
BROKERS="${BENCH_BROKERS:-shardmq,mosquitto}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
LATENCY_RATE="${BENCH_LATENCY_RATE:-20000}"
CONN_RATE="${BENCH_CONN_RATE:-2000}"
NODELAY="${BENCH_MOSQUITTO_NODELAY:-1}"

NCPU="$(nproc)"
HALF=$(((NCPU + 1) / 2))
if ((NCPU >= 2)); then
    BENCH_BROKER_CPUS="${BENCH_BROKER_CPUS:-0-$((HALF - 1))}"
    BENCH_GEN_CPUS="${BENCH_GEN_CPUS:-$HALF-$((NCPU - 1))}"
else
    BENCH_BROKER_CPUS="${BENCH_BROKER_CPUS:-0}"
    BENCH_GEN_CPUS="${BENCH_GEN_CPUS:-0}"
fi
PIN=()
if command -v taskset >/dev/null 2>&1; then
    PIN=(taskset -c "$BENCH_BROKER_CPUS")
fi

say() { printf '\n=== %s\n' "$*" >&2; }
warn() { printf '\n!!! %s\n' "$*" >&2; }

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.hlog "$OUT"/compare.md "$OUT"/compare.svg

BROKER_PID=""
stop_broker() {
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
trap stop_broker EXIT
trap 'stop_broker; exit 130' INT TERM

# A free loopback port below the ephemeral range (nothing answers on it).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Waits until something listens on $1 and the broker process is still alive.
wait_listening() {
    local port="$1"
    for _ in $(seq 1 100); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            sleep 0.1
            kill -0 "$BROKER_PID" 2>/dev/null && return 0
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# start_broker NAME LOGFILE -> sets BROKER_PID and PORT; returns 1 on failure.
start_broker() {
    local name="$1" log="$2"
    PORT="$(free_port)"
    case "$name" in
    shardmq)
        # shellcheck disable=SC2086 # SHARDMQ_ARGS is a list of words
        "${PIN[@]}" "$SHARDMQ" --listen "127.0.0.1:$PORT" ${SHARDMQ_ARGS:-} >"$log" 2>&1 &
        ;;
    mosquitto)
        local conf="$OUT/mosquitto.conf"
        {
            echo "listener $PORT 127.0.0.1"
            echo "allow_anonymous true"
            echo "persistence false"
            echo "max_queued_messages 100000"
            if [[ "$NODELAY" == 1 ]]; then echo "set_tcp_nodelay true"; fi
        } >"$conf"
        "${PIN[@]}" "$MOSQUITTO" -c "$conf" >"$log" 2>&1 &
        ;;
    *)
        warn "unknown broker '$name'"
        return 1
        ;;
    esac
    BROKER_PID=$!
    if ! wait_listening "$PORT"; then
        warn "$name did not start on 127.0.0.1:$PORT; last lines of $log:"
        tail -n 20 "$log" >&2 || true
        stop_broker
        return 1
    fi
    return 0
}

# --- build -------------------------------------------------------------------
say "building shardmq-bench"
cargo build -p bench-harness --release

declare -A AVAILABLE=()
for b in ${BROKERS//,/ }; do
    case "$b" in
    shardmq)
        say "building shardmq (cargo build --release)"
        if cargo build --release && [[ -x "$SHARDMQ" ]]; then
            AVAILABLE[shardmq]=1
        else
            warn "SHARDMQ COULD NOT BE BUILT: its cases are skipped; continuing with the other brokers"
        fi
        ;;
    mosquitto)
        if [[ -x "$MOSQUITTO" ]]; then
            AVAILABLE[mosquitto]=1
        else
            warn "MOSQUITTO NOT FOUND at $MOSQUITTO: its cases are skipped (apt-get install mosquitto)"
        fi
        ;;
    *) warn "unknown broker '$b' in BENCH_BROKERS (known: shardmq, mosquitto)" ;;
    esac
done

# --- the cases -----------------------------------------------------------------
COMMON=(--duration "$DURATION" --warmup "$WARMUP" --cpus "$BENCH_GEN_CPUS" --no-progress)
CASES=(
    "fanin-q0|fan-in --qos 0 --payload 64 --clients 8 --subscribers 1"
    "fanin-q1|fan-in --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64"
    "fanout|fan-out --qos 0 --payload 64 --clients 1 --subscribers 64"
    "pairs|pairs --qos 0 --payload 64 --clients 16"
    "latency|pairs --qos 0 --payload 64 --clients 16 --rate $LATENCY_RATE --case latency-@${LATENCY_RATE}/s"
    "conn|conn --rate $CONN_RATE --concurrency 256 --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4"
)

FAILED=()
UNAVAILABLE=()
for b in ${BROKERS//,/ }; do
    if [[ -z "${AVAILABLE[$b]:-}" ]]; then
        UNAVAILABLE+=("$b (not built / not installed)")
        continue
    fi
    for c in "${CASES[@]}"; do
        name="${c%%|*}"
        # shellcheck disable=SC2206 # the case arguments are words
        args=(${c#*|})
        log="$OUT/$b-$name.broker.log"
        say "$b: $name"
        if ! start_broker "$b" "$log"; then
            warn "${b^^} FAILED TO START: skipping all its cases; continuing with the other brokers"
            UNAVAILABLE+=("$b (failed to start, see $log)")
            continue 2
        fi
        if ! "$BENCH" "${args[@]}" "${COMMON[@]}" --port "$PORT" --broker-pid "$BROKER_PID" \
            --label "$b" --json "$OUT/$b-$name.json" --hdr-log "$OUT/$b-$name.hlog"; then
            warn "$b: $name FAILED"
            FAILED+=("$b/$name")
        fi
        stop_broker
    done
done

# --- comparison ----------------------------------------------------------------
# Reports in suite order (case, then broker), so the table and chart follow it.
reports=()
for c in "${CASES[@]}"; do
    for b in ${BROKERS//,/ }; do
        f="$OUT/$b-${c%%|*}.json"
        if [[ -f "$f" ]]; then reports+=("$f"); fi
    done
done
if ((${#reports[@]} > 0)); then
    "$BENCH" compare "${reports[@]}" --md "$OUT/compare.md" --svg "$OUT/compare.svg"
    say "wrote $OUT/compare.md and $OUT/compare.svg"
    cat "$OUT/compare.md"
else
    warn "no results to compare"
fi

status=0
if ((${#UNAVAILABLE[@]} > 0)); then
    for u in "${UNAVAILABLE[@]}"; do warn "NOT BENCHMARKED: $u"; done
    status=2
fi
if ((${#FAILED[@]} > 0)); then
    warn "failed runs: ${FAILED[*]}"
    status=1
fi
if ((${#reports[@]} == 0)); then
    status=1
fi
exit "$status"
