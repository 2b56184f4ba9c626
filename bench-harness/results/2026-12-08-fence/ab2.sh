#!/usr/bin/env bash
# ab2.sh OUT ROUNDS "name|shards|loadgen args" ... : NEW vs BASE alternated (order flips each round).
set -u
OUT=$1; ROUNDS=$2; shift 2
NEW=${NEW:-/work/baseline/shardmq-fence}
BASE=${BASE:-/work/baseline/shardmq-e375b85}
export PEERS=/work/peers
LG=/work/main/bench-harness/scripts/loadgen.py
PORT=19100
for r in $(seq 1 $ROUNDS); do
  if [ $((r % 2)) -eq 1 ]; then order="new base"; else order="base new"; fi
  for c in "$@"; do
    IFS='|' read -r name shards args <<<"$c"
    if [ "$shards" = 2 ]; then cpus=0,1; else cpus=0; fi
    for b in $order; do
      PORT=$((PORT+1))
      bin=$NEW; [ $b = base ] && bin=$BASE
      taskset -c $cpus $bin --cores $shards --cpus $cpus --listen 127.0.0.1:$PORT >/tmp/broker-$b.log 2>&1 &
      bp=$!
      sleep 1
      gen=1; [ "$shards" = 2 ] && gen=0,1
      res=$(python3 $LG --port $PORT --broker-pid $bp --broker-cpus $cpus --gen-cpus $gen --label "$name/$b/r$r" $args 2>/tmp/lg-err.log | tail -1)
      echo "$res" >> $OUT.jsonl
      echo "r$r $name $b $(echo "$res" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print("recv/s=%s us/msg=%s cpu=%s%% gen=%s%% p50=%s p99=%s" % (d.get("recv_rate"), d.get("us_per_msg"), d.get("broker_cpu"), d.get("loadgen_cpu"), d.get("lat_p50_ms"), d.get("lat_p99_ms")))' 2>&1)" | tee -a $OUT.txt
      kill $bp 2>/dev/null; wait $bp 2>/dev/null
    done
  done
done
