#!/usr/bin/env bash
# cl.sh BIN CASEARGS... : 3-node cluster on CPU 0, one bench case with --host a,b,c; samples link metrics
BIN=$1; shift
B=target/release/shardmq-bench
base=$((40000 + RANDOM % 5000))
pids=()
for i in 0 1 2; do
  seeds=""; [ $i -gt 0 ] && seeds="--cluster-seeds 127.0.0.1:$((base+100))"
  taskset -c 0 $BIN --listen 127.0.0.1:$((base+i)) --cores 1 --metrics 127.0.0.1:$((base+200+i)) --node-name n$i --node-id $((i+1)) --cluster-listen 127.0.0.1:$((base+100+i)) --cluster-failure-timeout-ms 1000 $seeds ${NODEARGS:-} >/tmp/cl-n$i.log 2>&1 &
  pids+=($!)
done
sleep 3
(sleep 8; for i in 0 1 2; do curl -s 127.0.0.1:$((base+200+i))/metrics | grep -E "^shardmq_cluster_link_queued_bytes|^shardmq_reader_pauses|^shardmq_backlog_pauses|^shardmq_cluster_nodes_up|^shardmq_socket_coalesc|^shardmq_cluster_messages_(in|out)" | tr '\n' ' '; echo; done) & sp=$!
$B "$@" --host 127.0.0.1:$base,127.0.0.1:$((base+1)),127.0.0.1:$((base+2)) --duration 8 --warmup 3 --cpus 1-1 --no-progress 2>&1 | grep -E "received  |latency|sent  " ; for p in ${pids[@]}; do echo "cpu $(awk '{print $14+$15}' /proc/$p/stat)"; done
wait $sp 2>/dev/null
kill ${pids[@]}; wait 2>/dev/null
