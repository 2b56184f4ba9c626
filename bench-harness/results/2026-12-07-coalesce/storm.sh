#!/usr/bin/env bash
# storm.sh new|mosq TAG : one reconnect storm of 19,000 persistent QoS 1 devices, CPU sampled every 0.2 s
B=$1; TAG=$2; PORT=$((27600+RANDOM%300))
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=${BIN:-$ROOT/target/release/shardmq}
case $B in
  new) taskset -c 0 $BIN --cores 1 --cpus 0 --listen 127.0.0.1:$PORT > $TAG.broker 2>&1 & ;;
  mosq) printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\n' $PORT >/tmp/mosq-storm.conf; taskset -c 0 mosquitto -c /tmp/mosq-storm.conf > $TAG.broker 2>&1 & ;;
esac
bp=$!; sleep 1
$ROOT/target/release/shardmq-bench connections --clients 19000 --qos 1 --keepalive 60 --clean-session false --trickle-per-min 0 --reconnect-storm --settle ${SETTLE:-2} --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8 --warmup 1 --cpus 1-1 --no-progress --duration 3 --port $PORT --broker-pid $bp > $TAG.bench 2>&1 &
bench=$!
: > $TAG.cpu
while kill -0 $bench 2>/dev/null; do
  echo "$(date +%s.%N) $(head -3 /proc/stat | tail -2 | tr '\n' ' ') B $(cut -d' ' -f14,15 /proc/$bp/stat)" >> $TAG.cpu
  sleep 0.2
done
wait $bench
kill $bp; wait $bp 2>/dev/null
grep -E 'storm|connections  ' $TAG.bench
