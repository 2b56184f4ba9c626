#!/usr/bin/env bash
# pstat.sh ROUNDS SHARDS "loadgen args": perf stat of NEW and BASE (alternated) during a loadgen run.
ROUNDS=$1; SH=$2; ARGS=$3
cpus=0; gen=1; [ "$SH" = 2 ] && cpus=0,1 && gen=0,1
PORT=19400
for r in $(seq 1 $ROUNDS); do
  order="${A:-e375b85} ${B:-fence}"; [ $((r%2)) = 0 ] && order="${B:-fence} ${A:-e375b85}"
  for b in $order; do
    PORT=$((PORT+1))
    taskset -c $cpus /work/baseline/shardmq-$b --cores $SH --cpus $cpus --listen 127.0.0.1:$PORT >/tmp/pb.log 2>&1 & bp=$!
    sleep 1
    PEERS=/work/peers python3 /work/main/bench-harness/scripts/loadgen.py --port $PORT --broker-pid $bp --broker-cpus $cpus --gen-cpus $gen $ARGS --duration 12 --warmup 2 > /tmp/lg-$b.json 2>/dev/null &
    lp=$!
    sleep 6
    perf stat -x, -e 'syscalls:sys_enter_membarrier,syscalls:sys_enter_io_uring_enter,context-switches,task-clock' -p $bp sleep 6 2>/tmp/ps-$b.txt
    wait $lp
    rate=$(tail -1 /tmp/lg-$b.json | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["recv_rate"])')
    python3 - "$b" "$rate" <<'PY'
import sys
b, rate = sys.argv[1], float(sys.argv[2])
vals = {}
for line in open(f"/tmp/ps-{b}.txt"):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        vals[f[2]] = float(f[0])
msgs = rate * 6
print(f"{b:8} rate={rate:9.0f} task-us/msg={vals['task-clock']*1000/msgs:6.2f} cs/msg={vals['context-switches']/msgs:5.3f} enter/msg={vals['syscalls:sys_enter_io_uring_enter']/msgs:5.3f} membarrier/msg={vals['syscalls:sys_enter_membarrier']/msgs:5.3f}")
PY
    kill $bp; wait $bp 2>/dev/null
  done
done
