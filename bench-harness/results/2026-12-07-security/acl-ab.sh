#!/usr/bin/env bash
# acl-ab.sh OUT [BIN]: fan-in QoS 0 coalesced with and without the 1,000-rule ACL, alternating
OUT=$1; BIN=${2:-target/release/shardmq}; mkdir -p $OUT
B=target/release/shardmq-bench
ACL=${ACL:-target/bench/security/acl}
printf 'acl_file = "%s"\n' $ACL > $OUT/acl.toml
printf '\n' > $OUT/plain.toml
port=33000
for round in 1 2 3; do
for mode in plain acl; do
  port=$((port+1))
  $BIN --config $OUT/$mode.toml --cores 1 --cpus 0 --listen 127.0.0.1:$port --log-level warn >$OUT/$mode-$round.log 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  $B fan-in --write-mode coalesced --qos 0 --payload 64 --clients 8 --subscribers 1 --username bench --topic-prefix secbench --warmup 2 --duration 6 --cpus 1 --no-progress --port $port --broker-pid $pid --label $mode --json $OUT/$mode-$round.json >/dev/null 2>&1
  kill $pid; wait $pid 2>/dev/null
  python3 -c "
import json; d=json.load(open('$OUT/$mode-$round.json')); print('$mode $round', round(d['results']['received_per_s']), 'cpu/msg', round(d['broker']['cpu_us_per_msg'],3))"
done; done
