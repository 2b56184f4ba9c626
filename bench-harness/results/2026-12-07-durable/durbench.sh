#!/usr/bin/env bash
# Fan-in QoS 1 into one persistent subscriber (clean session false), broker on CPU 0
# (one shard), generator on CPU 1; without a data dir, then each --sync mode.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
BIN=${BIN:-$ROOT/target/release/shardmq}
BENCH=$ROOT/target/release/shardmq-bench
OUT=${OUT:-$ROOT/target/bench/durbench}
mkdir -p $OUT
PORT=19100
for mode in off never interval always; do
  PORT=$((PORT+1))
  rm -rf /tmp/durbench-data
  args=""
  [ $mode != off ] && args="--data-dir /tmp/durbench-data --sync $mode"
  taskset -c 0 $BIN --cores 1 --cpus 0 --listen 127.0.0.1:$PORT --mqueue-len-max 100000 $args >$OUT/$mode.broker.log 2>&1 &
  bp=$!
  sleep 1
  taskset -c 1 $BENCH fan-in --port $PORT --qos 1 --clients 8 --subscribers 1 --clean-session false \
    --duration 10 --warmup 2 --write-mode ${MODE:-packet} --broker-pid $bp --label "durable-$mode" \
    --json $OUT/$mode.json > $OUT/$mode.txt 2>&1
  python3 - "$OUT/$mode.json" "$mode" <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
def g(*ks):
    for k in ks:
        if k in d: return d[k]
    return None
print(sys.argv[2], {k:v for k,v in d.items() if not isinstance(v,(dict,list))})
PY
  kill $bp; wait $bp 2>/dev/null
  du -sh /tmp/durbench-data 2>/dev/null
done
