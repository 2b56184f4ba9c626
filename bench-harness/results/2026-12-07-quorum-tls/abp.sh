#!/usr/bin/env bash
# abp.sh LABEL BIN MODE: make bench's fan-in QoS 0 case (MODE packet|coalesced), once
L=$1; BIN=$2; MODE=$3; PORT=$((21000+RANDOM%1000))
taskset -c 0 $BIN --cores 1 --cpus 0 --listen 127.0.0.1:$PORT > /tmp/ab-$L.log 2>&1 & bp=$!
sleep 1
target/release/shardmq-bench fan-in --write-mode $MODE --qos 0 --payload 64 --clients 8 --subscribers 1 --cpus 1-1 --warmup 2 --duration 6 --port $PORT --broker-pid $bp --no-progress 2>&1 | grep -E 'received  |broker CPU' | sed 's/  */ /g' | tr '\n' ' ' | sed "s/^/$L $MODE /"; echo
kill $bp; wait $bp 2>/dev/null
