#!/usr/bin/env bash
cd "$(dirname "$0")"
C=("floodq0|--tool nanomq-cli --scenario fanin --pubs 20 --subs 1 --qos 0" "floodq1|--tool nanomq-cli --scenario fanin --pubs 20 --subs 1 --qos 1" "r10k100|--tool emqtt-bench --scenario fanin --pubs 100 --subs 1 --qos 0 --rate 100 --latency")
NEW=shardmq-head11 BASE=shardmq-8b3c558 BROKERS="new base mosq" bash quick.sh same-run.jsonl "${C[@]}"
NEW=shardmq-head11 BASE=shardmq-8b3c558 BROKERS="mosq base new" bash quick.sh same-run.jsonl "${C[@]}"
