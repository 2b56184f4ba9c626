#!/usr/bin/env bash
# join.sh BIN N : start 3 nodes at once N times; seconds until every node sees 2 up
BIN=$1
for r in $(seq 1 $2); do
base=$((40000 + RANDOM % 5000)); pids=()
for i in 0 1 2; do
  seeds=""; [ $i -gt 0 ] && seeds="--cluster-seeds 127.0.0.1:$((base+100))"
  $BIN --listen 127.0.0.1:$((base+i)) --cores 1 --metrics 127.0.0.1:$((base+200+i)) --node-name n$i --node-id $((i+1)) --cluster-listen 127.0.0.1:$((base+100+i)) --cluster-failure-timeout-ms 1000 $seeds >/tmp/join-n$i.log 2>&1 &
  pids+=($!)
done
t0=$(date +%s.%N); ok=""
for k in $(seq 1 300); do
  n=0; for i in 0 1 2; do u=$(curl -s 127.0.0.1:$((base+200+i))/metrics | grep "^shardmq_cluster_nodes_up " | awk '{print $2}'); [ "$u" = "2" ] && n=$((n+1)); done
  if [ $n = 3 ]; then ok=$(echo "$(date +%s.%N) - $t0" | bc); break; fi
  sleep 0.05
done
echo "run $r: all up after ${ok:-NEVER(15s)} s"; if [ -z "$ok" ]; then for i in 0 1 2; do curl -s 127.0.0.1:$((base+200+i))/cluster | python3 -c "import json,sys; d=json.load(sys.stdin); print(d[\"node\"], [(m[\"name\"], m[\"addr\"], m[\"state\"], m[\"link\"]) for m in d[\"members\"]])"; done; mkdir -p fail; cp /tmp/join-n*.log fail/; fi
kill ${pids[@]}; wait 2>/dev/null
done
