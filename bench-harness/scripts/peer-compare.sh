#!/usr/bin/env bash
# shardmq against Mosquitto with the load generator on CPUs of its own, so neither
# broker's figures are limited by the generator (on a 2-CPU machine suite.sh cannot
# give the generator more than one CPU, and Mosquitto's per-packet writes saturate it).
#
#   SHARDMQ=target/release/shardmq BENCH=target/release/shardmq-bench \
#   MOSQUITTO=/usr/sbin/mosquitto BROKER_CPU=0 GEN_CPUS=8-15 bench-harness/scripts/peer-compare.sh OUTDIR
#
# Each broker runs on one CPU (shardmq: one shard); shardmq also runs with 2 shards on
# BROKER_CPU and the next CPU. Writes OUTDIR/*.json and OUTDIR/compare.md.
set -euo pipefail
OUT="${1:?usage: peer-compare.sh OUTDIR}"
SHARDMQ="${SHARDMQ:-target/release/shardmq}"
BENCH="${BENCH:-target/release/shardmq-bench}"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
CPU="${BROKER_CPU:-0}"
GEN="${GEN_CPUS:-8-15}"
DURATION="${DURATION:-5}"
mkdir -p "$OUT"
port=18900

run() { # label, broker command..., then -- scenario args
    local label="$1" case="$2"; shift 2
    local broker=()
    while [[ "$1" != "--" ]]; do broker+=("$1"); shift; done
    shift
    port=$((port + 1))
    "${broker[@]//PORT/$port}" >"$OUT/$label-$case.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    "$BENCH" "$@" --port "$port" --duration "$DURATION" --warmup 1 --cpus "$GEN" --broker-pid "$pid" \
        --label "$label" --case "$case" --no-progress --json "$OUT/$label-$case.json" >/dev/null ||
        echo "run failed: $label $case" >&2
    kill "$pid"; wait "$pid" || true
}

conf="$OUT/mosquitto.conf"
printf 'listener PORT 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nset_tcp_nodelay true\n' >"$conf"
for case in "fanin-q0|fan-in --qos 0 --payload 64 --clients 8 --subscribers 1" \
            "fanin-q1|fan-in --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64" \
            "fanout|fan-out --qos 0 --payload 64 --clients 1 --subscribers 64" \
            "latency-20k|pairs --qos 0 --payload 64 --clients 16 --rate 20000"; do
    name="${case%%|*}"; read -r -a args <<<"${case#*|}"
    port=$((port + 1)); sed "s/PORT/$port/" "$conf" >"$OUT/m-$name.conf"; port=$((port - 1))
    run mosquitto "$name" taskset -c "$CPU" "$MOSQUITTO" -c "$OUT/m-$name.conf" -- "${args[@]}"
    run shardmq-1shard "$name" taskset -c "$CPU" "$SHARDMQ" --listen 127.0.0.1:PORT --cpus "$CPU" --log-level warn -- "${args[@]}"
    run shardmq-2shards "$name" taskset -c "$CPU-$((CPU + 1))" "$SHARDMQ" --listen 127.0.0.1:PORT --cpus "$CPU,$((CPU + 1))" --log-level warn -- "${args[@]}"
done
"$BENCH" compare "$OUT"/*.json --md "$OUT/compare.md" --svg "$OUT/compare.svg"
