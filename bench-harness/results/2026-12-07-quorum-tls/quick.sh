#!/usr/bin/env bash
# quick.sh OUTFILE "name|loadgen args" ... : each case against BROKERS (default "new base mosq"), same run.
# env: NEW (binary), BASE (binary), BROKERS, NEWENV (env for new broker, e.g. SHARDMQ_PARK_BATCH_US=200)
set -u
OUT=$1; shift
NEW=${NEW:-target/release/shardmq}
BASE=${BASE:-target/release/shardmq}
BROKERS=${BROKERS:-"new base mosq"}
export PEERS=${PEERS:?set PEERS to the external generators}
LG=bench-harness/scripts/loadgen.py
PORT=18900
for c in "$@"; do
  name=${c%%|*}; args=${c#*|}
  for b in $BROKERS; do
    PORT=$((PORT+1))
    case $b in
      new0) taskset -c 0 $NEW --cores 1 --cpus 0 --recv-coalesce-us 0 --listen 127.0.0.1:$PORT >/tmp/broker-$b.log 2>&1 & ;;
      new*) env ${NEWENV:-} taskset -c 0 $NEW --cores 1 --cpus 0 --listen 127.0.0.1:$PORT >/tmp/broker-$b.log 2>&1 & ;;
      base) taskset -c 0 $BASE --cores 1 --cpus 0 --listen 127.0.0.1:$PORT >/tmp/broker-$b.log 2>&1 & ;;
      mosq) printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\n' $PORT >/tmp/mosq.conf; taskset -c 0 mosquitto -c /tmp/mosq.conf >/tmp/broker-mosq.log 2>&1 & ;;
    esac
    bp=$!
    sleep 1
    r=$(python3 $LG --port $PORT --broker-pid $bp --label "$name/$b" $args 2>/tmp/lg-err.log | tail -1)
    echo "$r" >> $OUT
    echo "$name $b $(echo "$r" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print("recv/s=%s us/msg=%s cpu=%s%% gen=%s%% p50=%s p99=%s rss=%s" % (d.get("recv_rate"), d.get("us_per_msg"), d.get("broker_cpu"), d.get("loadgen_cpu"), d.get("lat_p50_ms"), d.get("lat_p99_ms"), d.get("broker_rss_mb")))' 2>&1)"
    kill $bp 2>/dev/null; wait $bp 2>/dev/null
  done
done
