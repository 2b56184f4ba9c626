#!/usr/bin/env bash
# The standard benchmark suite: shardmq and Mosquitto, same cases, same run.
#
#   bench-harness/suite.sh                      # both brokers, every part
#   BENCH_BROKERS=mosquitto bench-harness/suite.sh
#   BENCH_DURATION=3 BENCH_WARMUP=1 bench-harness/suite.sh   # quick
#   PEERS=/path/to/peers BENCH_PARTS=peers bench-harness/suite.sh
#
# Three parts, each case against every broker one after the other:
#   harness      shardmq-bench cases: target/bench/<broker>-<case>.json (+ .hlog,
#                broker logs), target/bench/compare.md and compare.svg
#   peers        external generators (NanoMQ's nanomq_cli, emqtt-bench), which
#                send one packet per write per client as devices do:
#                target/bench/peers.jsonl and target/bench/peers.md. Needs
#                $PEERS/bin/nanomq_cli and $PEERS/bin/emqtt_bench (how to
#                build them: bench-harness/README.md, "External generators");
#                a case whose tool is missing is skipped, with a message.
#   connections  a device fleet (shardmq-bench connections) at each count of
#                BENCH_CONNECTIONS, with a reconnect storm; in compare.md
#
# Environment (all optional):
#   BENCH_BROKERS          brokers to run, comma-separated   [shardmq,mosquitto]
#   BENCH_PARTS            parts to run, comma-separated     [harness,peers,connections]
#   PEERS                  folder with bin/nanomq_cli and bin/emqtt_bench []
#   BENCH_PEER_DURATION    seconds per external-generator run [15]
#   BENCH_PEER_WARMUP      of which warmup                   [3]
#   BENCH_PEER_RATE_QOS    QoS of the fixed-rate peer cases  [0]
#   BENCH_CONNECTIONS      fleet sizes, comma-separated      [8000,19000]
#   BENCH_CONN_WINDOW      seconds the fleet is held         [30]
#   BENCH_KEEPALIVE        the devices' keep-alive, seconds  [30]
#   BENCH_TRICKLE_PER_MIN  publishes per device per minute   [0]
#   BENCH_SETTLE           seconds after the storm before RSS is sampled [60]
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
#   SHARDMQ_ARGS           extra arguments for shardmq (and baseline) []
#   BENCH_BASELINE         a saved shardmq binary, run as the broker
#                          `baseline` (add it to BENCH_BROKERS) to compare
#                          a change with the build before it, same run []
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
PARTS=",${BENCH_PARTS:-harness,peers,connections},"
PEER_DURATION="${BENCH_PEER_DURATION:-15}"
PEER_WARMUP="${BENCH_PEER_WARMUP:-3}"
PEER_RATE_QOS="${BENCH_PEER_RATE_QOS:-0}"
FLEETS="${BENCH_CONNECTIONS:-8000,19000}"
CONN_WINDOW="${BENCH_CONN_WINDOW:-30}"
KEEPALIVE="${BENCH_KEEPALIVE:-30}"
TRICKLE="${BENCH_TRICKLE_PER_MIN:-0}"
SETTLE="${BENCH_SETTLE:-60}"
# Every connection is a descriptor, in the broker and in the generator: the
# fleet needs the hard limit (20,000 per process on the reference machine).
ulimit -n "$(ulimit -Hn)"

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
rm -f "$OUT"/*.json "$OUT"/*.hlog "$OUT"/compare.md "$OUT"/compare.svg "$OUT"/peers.jsonl "$OUT"/peers.md

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
    baseline)
        # shellcheck disable=SC2086 # SHARDMQ_ARGS is a list of words
        "${PIN[@]}" "$BENCH_BASELINE" --listen "127.0.0.1:$PORT" ${SHARDMQ_ARGS:-} >"$log" 2>&1 &
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
    baseline)
        if [[ -x "${BENCH_BASELINE:-}" ]]; then
            AVAILABLE[baseline]=1
        else
            warn "BASELINE BINARY NOT FOUND: set BENCH_BASELINE to a saved shardmq binary; its cases are skipped"
        fi
        ;;
    *) warn "unknown broker '$b' in BENCH_BROKERS (known: shardmq, baseline, mosquitto)" ;;
    esac
done

# --- the cases -----------------------------------------------------------------
COMMON=(--warmup "$WARMUP" --cpus "$BENCH_GEN_CPUS" --no-progress)
# The coalesced cases keep the figures of earlier runs comparable; the packet
# cases send one packet per write per client, as devices do.
CASES=()
if [[ "$PARTS" == *,harness,* ]]; then
    CASES+=(
        "fanin-q0|fan-in --write-mode coalesced --qos 0 --payload 64 --clients 8 --subscribers 1"
        "fanin-q1|fan-in --write-mode coalesced --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64"
        "fanin-q0-packet|fan-in --write-mode packet --qos 0 --payload 64 --clients 8 --subscribers 1"
        "fanin-q1-packet|fan-in --write-mode packet --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64"
        "fanout|fan-out --write-mode coalesced --qos 0 --payload 64 --clients 1 --subscribers 64"
        "pairs|pairs --write-mode coalesced --qos 0 --payload 64 --clients 16"
        "latency|pairs --write-mode coalesced --qos 0 --payload 64 --clients 16 --rate $LATENCY_RATE --case latency-@${LATENCY_RATE}/s"
        "conn|conn --rate $CONN_RATE --concurrency 256 --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4"
    )
fi
if [[ "$PARTS" == *,connections,* ]]; then
    for n in ${FLEETS//,/ }; do
        # Eight source addresses: a storm reconnects every device while the
        # dropped connections still hold their ports.
        CASES+=("connections-$n|connections --clients $n --qos 1 --keepalive $KEEPALIVE --clean-session false --trickle-per-min $TRICKLE --reconnect-storm --settle $SETTLE --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8")
    done
fi

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
        window="$DURATION"
        if [[ "$name" == connections-* ]]; then window="$CONN_WINDOW"; fi
        say "$b: $name"
        if ! start_broker "$b" "$log"; then
            warn "${b^^} FAILED TO START: skipping all its cases; continuing with the other brokers"
            UNAVAILABLE+=("$b (failed to start, see $log)")
            continue 2
        fi
        if ! "$BENCH" "${args[@]}" "${COMMON[@]}" --duration "$window" --port "$PORT" --broker-pid "$BROKER_PID" \
            --label "$b" --json "$OUT/$b-$name.json" --hdr-log "$OUT/$b-$name.hlog"; then
            warn "$b: $name FAILED"
            FAILED+=("$b/$name")
        fi
        stop_broker
    done
done

# --- external generators ---------------------------------------------------------
# Each case against every broker, one right after the other; loadgen.py pins the
# broker to BENCH_BROKER_CPUS and the generator to BENCH_GEN_CPUS.
PEER_CASES=(
    "flood-q0|nanomq-cli|--scenario fanin --pubs 20 --subs 1 --qos 0"
    "flood-q1|nanomq-cli|--scenario fanin --pubs 20 --subs 1 --qos 1"
)
# Fixed rates: total msgs/s spread over 100 and 1,000 publishers (emqtt-bench
# paces each client in whole milliseconds, so these rates are exact).
for pubs in 100 1000; do
    for total in 1000 10000 50000; do
        PEER_CASES+=("rate-$total-$pubs|emqtt-bench|--scenario fanin --pubs $pubs --subs 1 --qos $PEER_RATE_QOS --rate $((total / pubs)) --latency")
    done
done
PEER_RESULTS="$OUT/peers.jsonl"
if [[ "$PARTS" == *,peers,* ]]; then
    if [[ -z "${PEERS:-}" ]]; then
        warn "PEERS IS NOT SET: the external-generator cases are skipped (see bench-harness/README.md, External generators)"
        PEER_CASES=()
    fi
    for pc in "${PEER_CASES[@]}"; do
        IFS='|' read -r name tool args <<<"$pc"
        case "$tool" in
        nanomq-cli) bin="$PEERS/bin/nanomq_cli" ;;
        *) bin="$PEERS/bin/emqtt_bench" ;;
        esac
        if [[ ! -x "$bin" ]]; then
            warn "$bin NOT FOUND: peer case $name skipped (see bench-harness/README.md, External generators)"
            continue
        fi
        for b in ${BROKERS//,/ }; do
            [[ -n "${AVAILABLE[$b]:-}" ]] || continue
            log="$OUT/$b-peer-$name.broker.log"
            say "$b: peer $name ($tool)"
            if ! start_broker "$b" "$log"; then
                warn "${b^^} FAILED TO START for peer case $name"
                FAILED+=("$b/peer-$name")
                continue
            fi
            # shellcheck disable=SC2086 # the case arguments are words
            if ! LOADGEN_LOGDIR="$OUT/peer-logs" python3 "$ROOT/bench-harness/scripts/loadgen.py" \
                --tool "$tool" $args --port "$PORT" --broker-pid "$BROKER_PID" \
                --broker-cpus "$BENCH_BROKER_CPUS" --gen-cpus "$BENCH_GEN_CPUS" \
                --duration "$PEER_DURATION" --warmup "$PEER_WARMUP" --label "$b" --json "$PEER_RESULTS"; then
                warn "$b: peer $name FAILED"
                FAILED+=("$b/peer-$name")
            fi
            stop_broker
        done
    done
    if [[ -s "$PEER_RESULTS" ]]; then
        python3 "$ROOT/bench-harness/scripts/peer_table.py" "$PEER_RESULTS" --ratio shardmq/mosquitto \
            --ratio baseline/mosquitto --ratio shardmq/baseline >"$OUT/peers.md"
        say "wrote $OUT/peers.md"
        cat "$OUT/peers.md"
    fi
fi

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
elif ((${#CASES[@]} > 0)); then
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
if ((${#reports[@]} == 0)) && [[ ! -s "$PEER_RESULTS" ]]; then
    status=1
fi
exit "$status"
