#!/usr/bin/env bash
# Where a broker's CPU goes per delivered message, under an external load
# generator (one packet per write per client, as devices send).
#
#   PEERS=/path/to/peers bench-harness/scripts/profile.sh BROKER CASE [OUTDIR]
#
# BROKER: a shardmq binary (run with --listen 127.0.0.1:PORT $SHARDMQ_ARGS) or
#         the word `mosquitto` (/usr/sbin/mosquitto, or $MOSQUITTO).
# CASE:   fanin-flood   nanomq_cli, 20 publishers -> 1 subscriber, QoS 0, flat out
#         rate-100x100  emqtt-bench, 100 publishers x 100 msgs/s -> 1 subscriber, QoS 0
#
# The broker runs on BROKER_CPUS (0), the generator on GEN_CPUS (1). From the
# start of the generator's measured window (after its clients connected and
# WARMUP (3) seconds), for SECONDS_EACH (5) seconds, `perf record -g` samples
# the broker's stacks every 250 us of its CPU time; then, for as long again,
# `perf stat` counts its syscalls by kind, context switches, CPU time and
# io_uring events, while `perf record` collects the opcode of every io_uring
# submission. Sampling uses task-clock (a VM has no hardware counters): on a
# shard that parks thousands of times a second it came closest to the samples
# the shard's CPU time predicts; cpu-clock with call graphs gave about 40% of
# them, system-wide sampling of its CPU under 10%. The report gives both
# counts. Where perf cannot count syscalls, `strace -c -f` counts them
# instead. Per-message figures divide by the messages delivered in the
# counting window, from the generator's steady delivery rate.
#
# Writes OUTDIR/profile-<label>-<case>.md (the breakdown) and the raw files
# beside it. OUTDIR defaults to target/profile.
set -euo pipefail
BROKER="${1:?usage: profile.sh BROKER CASE [OUTDIR]}"
CASE="${2:?usage: profile.sh BROKER CASE [OUTDIR]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${3:-$ROOT/target/profile}"
S="${SECONDS_EACH:-5}"
WARMUP="${WARMUP:-3}"
BROKER_CPUS="${BROKER_CPUS:-0}"
GEN_CPUS="${GEN_CPUS:-1}"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
: "${PEERS:?set PEERS (see bench-harness/README.md, External generators)}"
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 2; }
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

case "$CASE" in
fanin-flood) LOAD=(--tool nanomq-cli --scenario fanin --pubs 20 --subs 1 --qos 0) ;;
rate-100x100) LOAD=(--tool emqtt-bench --scenario fanin --pubs 100 --subs 1 --qos 0 --rate 100 --latency) ;;
*) echo "unknown case $CASE (fanin-flood, rate-100x100)" >&2; exit 2 ;;
esac
if [[ "$BROKER" == mosquitto ]]; then LABEL=mosquitto; else LABEL="$(basename "$BROKER")"; fi
P="$OUT/profile-$LABEL-$CASE"
PORT=$((20000 + RANDOM % 12000))

BROKER_PID=""
LOAD_PID=""
cleanup() {
    [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null || true
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [[ "$BROKER" == mosquitto ]]; then
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nset_tcp_nodelay true\n' \
        "$PORT" >"$P.mosquitto.conf"
    taskset -c "$BROKER_CPUS" "$MOSQUITTO" -c "$P.mosquitto.conf" >"$P.broker.log" 2>&1 &
else
    # shellcheck disable=SC2086 # SHARDMQ_ARGS is a list of words
    taskset -c "$BROKER_CPUS" "$BROKER" --listen "127.0.0.1:$PORT" ${SHARDMQ_ARGS:-} >"$P.broker.log" 2>&1 &
fi
BROKER_PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

# The load runs through both phases; loadgen.py reports the steady delivery
# rate over its own window, which holds both.
rm -f "$P.window"
LOADGEN_LOGDIR="$OUT/logs" python3 "$ROOT/bench-harness/scripts/loadgen.py" "${LOAD[@]}" \
    --port "$PORT" --broker-pid "$BROKER_PID" --broker-cpus "$BROKER_CPUS" --gen-cpus "$GEN_CPUS" \
    --duration $((WARMUP + 2 * S + 3)) --warmup "$WARMUP" --label "$LABEL" \
    --window-file "$P.window" >"$P.load.json" &
LOAD_PID=$!
# The generators take seconds to start their clients: count from the start of
# loadgen.py's measured window, not from its launch.
for _ in $(seq 1 600); do
    [[ -e "$P.window" ]] && break
    kill -0 "$LOAD_PID" 2>/dev/null || { echo "loadgen.py ended early: $(cat "$P.load.json")" >&2; exit 1; }
    sleep 0.1
done

# Phase 1: where the time goes. It comes first: sampled right after the
# tracepoint counting, a flooded shard gave 30 samples instead of 3,000.
perf record -q -g -e task-clock -c 250000 -p "$BROKER_PID" -o "$P.perf.data" -- sleep "$S" \
    >/dev/null 2>&1 || true

# Phase 2: counts.
EVENTS="task-clock,context-switches,cpu-migrations,syscalls:sys_enter_*"
EVENTS="$EVENTS,io_uring:io_uring_submit_req,io_uring:io_uring_complete,io_uring:io_uring_poll_arm"
EVENTS="$EVENTS,io_uring:io_uring_task_add,io_uring:io_uring_task_work_run,io_uring:io_uring_cqring_wait"
perf record -q -e io_uring:io_uring_submit_req -p "$BROKER_PID" -o "$P.sqe.data" -- sleep "$S" \
    >/dev/null 2>&1 &
SQE_PID=$!
if ! perf stat -x, -e "$EVENTS" -p "$BROKER_PID" -o "$P.stat.csv" -- sleep "$S" 2>"$P.stat.err" ||
    ! grep -q 'syscalls:sys_enter' "$P.stat.csv"; then
    echo "perf cannot count syscalls here: falling back to strace -c -f" >&2
    timeout -s INT "$S" strace -c -f -p "$BROKER_PID" -o "$P.strace.txt" || true
fi
wait "$SQE_PID" || true

perf script -i "$P.perf.data" -F event 2>/dev/null | grep -c task-clock >"$P.samples.txt" || true
perf script -i "$P.sqe.data" -F trace 2>/dev/null |
    grep -o 'opcode [A-Z_0-9]*' | sort | uniq -c | sort -rn >"$P.sqe-opcodes.txt" || true
perf report -i "$P.perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' >"$P.self.txt" || true
perf report -i "$P.perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' | head -60 >"$P.top-children.txt" || true

wait "$LOAD_PID" || true
LOAD_PID=""

python3 - "$P" "$S" "$LABEL" "$CASE" <<'PY'
import json, re, sys
p, secs, label, case = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
load = json.loads(open(p + ".load.json").read().strip().splitlines()[-1])
delivered = load["recv_rate"] * secs
counts = {}
try:
    for line in open(p + ".stat.csv"):
        f = line.strip().split(",")
        if len(f) > 3 and f[0] and f[0][0].isdigit():
            counts[f[2]] = float(f[0])
except OSError:
    pass
sysc = {k.split("sys_enter_", 1)[1]: v for k, v in counts.items() if "sys_enter_" in k and v > 0}
try:  # strace -c fallback: "% time seconds usecs/call calls errors syscall"
    for line in open(p + ".strace.txt"):
        f = line.split()
        if len(f) >= 5 and re.match(r"^[0-9.]+$", f[0]) and f[-1] != "total":
            sysc[f[-1]] = float(f[3])
except OSError:
    pass
per = lambda v: v / delivered if delivered else float("nan")
out = []
w = out.append
w("# Profile: %s, %s\n" % (label, case))
w("Generator: `%s`, %d publishers -> %d subscriber, QoS %d, %s; its window: %s msgs/s sent, %s msgs/s delivered,"
  " broker %s%% of a core, %s CPU-us per delivered msg, generator %s%% of a core.\n" % (
      load["tool"], load["pubs"], load["subs"], load["qos"],
      "flat out" if not load["rate_per_pub"] else "%g msgs/s each" % load["rate_per_pub"],
      f'{load["pub_rate"]:,}', f'{load["recv_rate"]:,}', load["broker_cpu"], load["us_per_msg"], load["loadgen_cpu"]))
w("Counting window: %g s, %s messages delivered in it (the generator's steady rate x window).\n" % (secs, f"{delivered:,.0f}"))
w("| per delivered message | value |\n|---|---:|")
if "task-clock" in counts:
    w("| broker CPU-us (perf task-clock) | %.2f |" % (per(counts["task-clock"]) * 1000))
for k in ("context-switches", "cpu-migrations"):
    if k in counts:
        w("| %s | %.3f |" % (k, per(counts[k])))
w("| syscalls, all | %.3f |" % per(sum(sysc.values())))
for k, v in sorted(sysc.items(), key=lambda kv: -kv[1])[:12]:
    w("| syscall %s | %.3f |" % (k, per(v)))
for k in ("io_uring_submit_req", "io_uring_complete", "io_uring_poll_arm", "io_uring_task_add",
          "io_uring_task_work_run", "io_uring_cqring_wait"):
    if counts.get("io_uring:" + k):
        w("| io_uring %s | %.3f |" % (k[9:], per(counts["io_uring:" + k])))
try:
    ops = [l.split() for l in open(p + ".sqe-opcodes.txt") if l.strip()]
    for n, _, op in ops[:8]:
        w("| io_uring SQE %s | %.3f |" % (op, per(float(n))))
except (OSError, ValueError):
    pass
w("\nTop symbols by self time (`perf record -g`, task-clock every 250 us of broker CPU, %g s):\n\n```" % secs)
self_lines = open(p + ".self.txt").read().splitlines()
kernel = sum(float(l.split("%")[0]) for l in self_lines if "[k]" in l)
w("\n".join(self_lines[:40]))
samples = int(open(p + ".samples.txt").read().strip() or 0)
expected = (load["broker_cpu"] or 0) / 100.0 * secs / 250e-6
w("```\n\n%d samples (the broker's CPU share in the generator's window predicts about %.0f);"
  " kernel share %.0f%%.\n\n"
  "Top symbols including callees:\n\n```" % (samples, expected, kernel))
w(open(p + ".top-children.txt").read().rstrip())
w("```")
open(p + ".md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
