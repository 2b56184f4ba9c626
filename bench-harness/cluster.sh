#!/usr/bin/env bash
# The cost of the cluster hop: a 3-node loopback cluster against one node, same run.
#
#   bench-harness/cluster.sh                       # or: make bench-cluster
#   BENCH_DURATION=3 BENCH_WARMUP=2 bench-harness/cluster.sh   # quick
#
# Builds release, then:
#   single   one shardmq node (one shard, no cluster), each case of SINGLE_CASES;
#   cluster  three nodes a, b, c (one shard each, joined through a's cluster
#            address), waited for until every node sees the others up with a
#            connected link; each case of CLUSTER_CASES with --host a,b,c, so
#            that subscribers are on a (and, for pairs, on b and c) and every
#            publisher on another node (shardmq-bench --help, --host).
# Each case runs under scripts/cluster_probe.py, which samples every node's CPU
# and RSS from /proc and the cluster counters from /metrics. Then
# scripts/takeover.py: a persistent session with BENCH_TAKEOVER_QUEUED QoS 1
# messages queued, resumed BENCH_TAKEOVER_ROUNDS times, each time on the next node
# (on the single node: where it is); CONNECT -> CONNACK p50/p99. Results in
# target/bench/cluster/: <target>-<case>.json (the bench report),
# .nodes.json (per node), node logs; the summary in target/bench/cluster.md and
# target/bench/cluster.json, with the cluster/single ratios.
#
# The brokers, all of them, are pinned to BENCH_BROKER_CPUS and the generator to
# BENCH_GEN_CPUS: the cluster gets the same CPUs as the single node, so the
# ratios are the cost of the hop (node links, the extra hand-offs), not of
# having three times the machine.
#
# Environment (all optional):
#   BENCH_OUT          where results go                      [target/bench]
#   BENCH_DURATION     measured seconds per case             [10]
#   BENCH_WARMUP       warmup seconds per case; it also covers the route
#                      summaries' propagation after the subscribers subscribe [3]
#   BENCH_CLIENTS      fan-in publishers, and pairs          [8]
#   BENCH_LATENCY_RATE msgs/s of the fixed-rate fan-in case  [10000]
#   BENCH_TAKEOVER_ROUNDS, BENCH_TAKEOVER_QUEUED  the takeover case [50, 1000]
#   BENCH_GEN_CPUS     generator CPUs (--cpus)               [upper half of the CPUs]
#   BENCH_BROKER_CPUS  CPUs every broker node is pinned to   [the others]
#   CARGO_TARGET_DIR   where cargo builds, as for cargo      [target]
#
# Exit status: 0 every case ran; 1 a case failed (the others still ran and the
# table is written); 2 the cluster did not form or a node did not start.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${BENCH_OUT:-$ROOT/target/bench}"
DIR="$OUT/cluster"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET/release/shardmq-bench"
SHARDMQ="$TARGET/release/shardmq"
PROBE="$ROOT/bench-harness/scripts/cluster_probe.py"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-3}"
CLIENTS="${BENCH_CLIENTS:-8}"
LATENCY_RATE="${BENCH_LATENCY_RATE:-10000}"
TAKEOVER_ROUNDS="${BENCH_TAKEOVER_ROUNDS:-50}"
TAKEOVER_QUEUED="${BENCH_TAKEOVER_QUEUED:-1000}"

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

# name|bench arguments. Every case runs against both targets when listed in both.
SINGLE_CASES=(
    "fanin-q0|fan-in --qos 0 --clients $CLIENTS --subscribers 1"
    "fanin-q1|fan-in --qos 1 --clients $CLIENTS --subscribers 1 --inflight 64"
    "fanin-q1-rate|fan-in --qos 1 --clients $CLIENTS --subscribers 1 --rate $LATENCY_RATE"
    "pairs-q0|pairs --qos 0 --clients $CLIENTS"
    "pairs-q1|pairs --qos 1 --clients $CLIENTS --inflight 64"
)
CLUSTER_CASES=("${SINGLE_CASES[@]}")

NODE_PIDS=()
stop_nodes() {
    for pid in "${NODE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${NODE_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    NODE_PIDS=()
}
trap stop_nodes EXIT
trap 'stop_nodes; exit 130' INT TERM

# A loopback port below the ephemeral range that nothing answers on over TCP,
# and not handed out before in this run (a node takes its cluster port for
# both UDP and TCP).
declare -A TAKEN=()
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if [[ -z "${TAKEN[$p]:-}" ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            TAKEN[$p]=1
            echo "$p"
            return 0
        fi
    done
    return 1
}

wait_listening() {
    local pid="$1" port="$2"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# start_node NAME [CLUSTER_ARGS...]: sets PORT, METRICS; appends to NODE_PIDS.
start_node() {
    local name="$1"
    shift
    PORT="$(free_port)"
    METRICS="$(free_port)"
    "${PIN[@]}" "$SHARDMQ" --listen "127.0.0.1:$PORT" --cores 1 --metrics "127.0.0.1:$METRICS" "$@" \
        >"$DIR/node-$name.log" 2>&1 &
    local pid=$!
    NODE_PIDS+=("$pid")
    if ! wait_listening "$pid" "$PORT"; then
        warn "node $name did not start on 127.0.0.1:$PORT; last lines of $DIR/node-$name.log:"
        tail -n 20 "$DIR/node-$name.log" >&2 || true
        return 1
    fi
}

FAILED=0
# run_cases TARGET NAMES PIDS METRICS HOSTS CASES...
run_cases() {
    local target="$1" names="$2" pids="$3" metrics="$4" hosts="$5"
    shift 5
    local spec name args
    for spec in "$@"; do
        name="${spec%%|*}"
        args="${spec#*|}"
        say "$target: $name"
        # shellcheck disable=SC2086 # $args is a list of words
        if ! python3 "$PROBE" run --names "$names" --pids "$pids" --metrics "$metrics" \
            --out "$DIR/$target-$name.nodes.json" -- \
            "$BENCH" $args --host "$hosts" --duration "$DURATION" --warmup "$WARMUP" \
            --cpus "$BENCH_GEN_CPUS" --no-progress --label "$target" \
            --json "$DIR/$target-$name.json" --hdr-log "$DIR/$target-$name.hlog"; then
            warn "$target: $name FAILED"
            FAILED=1
        fi
    done
}

# takeover TARGET HOSTS: the session takeover case against HOSTS.
takeover() {
    say "$1: takeover, $TAKEOVER_QUEUED queued messages, $TAKEOVER_ROUNDS rounds"
    local gen=()
    if command -v taskset >/dev/null 2>&1; then gen=(taskset -c "$BENCH_GEN_CPUS"); fi
    if ! "${gen[@]}" python3 "$ROOT/bench-harness/scripts/takeover.py" --hosts "$2" \
        --rounds "$TAKEOVER_ROUNDS" --queued "$TAKEOVER_QUEUED" --label "$1" \
        --json "$DIR/takeover-$1.json"; then
        warn "$1: takeover FAILED"
        FAILED=1
    fi
}

# --- build -------------------------------------------------------------------
say "building shardmq and shardmq-bench (release)"
cargo build --release --bin shardmq
cargo build --release -p bench-harness

mkdir -p "$DIR"
rm -f "$DIR"/*.json "$DIR"/*.hlog "$DIR"/*.log "$OUT/cluster.md" "$OUT/cluster.json"

# --- one node ------------------------------------------------------------------
say "single node, one shard, CPUs $BENCH_BROKER_CPUS; generator CPUs $BENCH_GEN_CPUS"
start_node single || exit 2
run_cases single single "${NODE_PIDS[0]}" "127.0.0.1:$METRICS" "127.0.0.1:$PORT" "${SINGLE_CASES[@]}"
takeover single "127.0.0.1:$PORT"
cp "$DIR/node-single.log" "$DIR/node-single.run.log"
stop_nodes

# --- three nodes -----------------------------------------------------------------
say "cluster: nodes a, b, c, one shard each, all on CPUs $BENCH_BROKER_CPUS"
HOSTS=()
METRICS_ALL=()
SEED=""
id=1
for name in a b c; do
    cport="$(free_port)"
    cluster=(--node-name "$name" --node-id "$id" --cluster-listen "127.0.0.1:$cport")
    if [[ -n "$SEED" ]]; then cluster+=(--cluster-seeds "$SEED"); fi
    start_node "$name" "${cluster[@]}" || exit 2
    SEED="${SEED:-127.0.0.1:$cport}"
    HOSTS+=("127.0.0.1:$PORT")
    METRICS_ALL+=("127.0.0.1:$METRICS")
    id=$((id + 1))
done
join() { local IFS=,; echo "$*"; }
if ! python3 "$PROBE" wait --names a,b,c --metrics "$(join "${METRICS_ALL[@]}")"; then
    warn "THE CLUSTER DID NOT FORM; node logs in $DIR"
    exit 2
fi
say "cluster formed: $(join "${HOSTS[@]}")"
run_cases cluster a,b,c "$(join "${NODE_PIDS[@]}")" "$(join "${METRICS_ALL[@]}")" "$(join "${HOSTS[@]}")" \
    "${CLUSTER_CASES[@]}"
takeover cluster "$(join "${HOSTS[@]}")"
# Each node's view after the runs: link states and per-link counters.
i=0
for name in a b c; do
    curl -s "http://${METRICS_ALL[$i]}/cluster" >"$DIR/status-$name.json" 2>/dev/null || true
    i=$((i + 1))
done
# What the nodes logged while they ran, without the `node down` of the shutdown.
for name in a b c; do
    cp "$DIR/node-$name.log" "$DIR/node-$name.run.log"
done
stop_nodes

# --- summary -------------------------------------------------------------------
python3 "$PROBE" table --dir "$DIR" --md "$OUT/cluster.md" --json "$OUT/cluster.json"
{
    printf '\nSession takeover: a persistent session with %s QoS 1 messages queued, resumed\n' "$TAKEOVER_QUEUED"
    printf '%s times, each time on the next node (single: where it is), scripts/takeover.py:\n\n' "$TAKEOVER_ROUNDS"
    printf '| target | CONNECT -> CONNACK p50 ms | p99 ms | CONNECT -> last message p50 ms | p99 ms | rounds that lost a message |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    for target in single cluster; do
        [[ -f "$DIR/takeover-$target.json" ]] || continue
        python3 - "$DIR/takeover-$target.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c, a = r["connack_ms"], r["all_messages_ms"]
print(f"| {r['label']} | {c['p50']:.2f} | {c['p99']:.2f} | {a['p50']:.2f} | {a['p99']:.2f} | {r['bad_rounds']} |")
PY
    done
} >>"$OUT/cluster.md"
problems="$(grep -E 'WARN|ERROR|panicked' "$DIR"/node-*.run.log | sed 's/\x1b\[[0-9;]*m//g' | head -n 30 || true)"
if [[ -n "$problems" ]]; then
    warn "warnings or errors in the node logs while the cases ran ($DIR/node-*.run.log):"
    printf '%s\n' "$problems" >&2
fi
say "wrote $OUT/cluster.md and $OUT/cluster.json"
cat "$OUT/cluster.md"
exit "$FAILED"
