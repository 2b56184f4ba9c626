#!/usr/bin/env bash
# The standard benchmark suite: shardmq and Mosquitto, same cases, same run.
#
#   bench-harness/suite.sh                      # both brokers, every part
#   BENCH_BROKERS=mosquitto bench-harness/suite.sh
#   BENCH_DURATION=3 BENCH_WARMUP=1 bench-harness/suite.sh   # quick
#   PEERS=/path/to/peers BENCH_PARTS=peers bench-harness/suite.sh
#   BENCH_PARTS=security bench-harness/suite.sh             # TLS and ACL only
#
# Five parts, each case against every broker one after the other:
#   harness      shardmq-bench cases: target/bench/<broker>-<case>.json (+ .hlog,
#                broker logs), target/bench/compare.md and compare.svg
#   peers        external generators (NanoMQ's nanomq_cli, emqtt-bench), which
#                send one packet per write per client as devices do:
#                target/bench/peers.jsonl and target/bench/peers.md. Needs
#                $PEERS/bin/nanomq_cli and $PEERS/bin/emqtt_bench (how to
#                build them: bench-harness/README.md, "External generators");
#                a case whose tool is missing is skipped, with a message.
#   connections  a device fleet (shardmq-bench connections) at each count of
#                BENCH_CONNECTIONS, with a reconnect storm; in compare.md
#   security     TLS handshakes (conn --tls at BENCH_SEC_CONN_RATE and flat
#                out), fan-in over TLS, and fan-in with an ACL file of
#                BENCH_ACL_RULES rules against the same fan-in without one;
#                certificates (openssl) and the ACL are made in
#                target/bench/security/. target/bench/security.md (the
#                figures and the TLS/plain and ACL/no-ACL ratios) and
#                security.svg
#   durable      QoS 1 fan-in and fan-out to persistent sessions: shardmq in
#                memory, with --data-dir under --sync never|interval|always and
#                with a checkpoint always under way, and Mosquitto with
#                `persistence true`: target/bench/durable.md (the ratios to
#                memory)
#
# Environment (all optional):
#   BENCH_BROKERS          brokers to run, comma-separated   [shardmq,mosquitto]
#   BENCH_PARTS            parts to run, comma-separated     [harness,peers,connections,security,durable]
#   PEERS                  folder with bin/nanomq_cli and bin/emqtt_bench []
#   BENCH_PEER_DURATION    seconds per external-generator run [15]
#   BENCH_PEER_WARMUP      of which warmup                   [3]
#   BENCH_PEER_RATE_QOS    QoS of the fixed-rate peer cases  [0]
#   BENCH_CONNECTIONS      fleet sizes, comma-separated      [8000,19000]
#   BENCH_CONN_WINDOW      seconds the fleet is held         [30]
#   BENCH_KEEPALIVE        the devices' keep-alive, seconds  [30]
#   BENCH_TRICKLE_PER_MIN  publishes per device per minute   [0]
#   BENCH_SETTLE           seconds after the storm before RSS is sampled [60]
#   BENCH_SEC_CONN_RATE    TLS handshakes/s offered (security) [500]
#   BENCH_ACL_RULES        rules in the security part's ACL  [1000]
#   BENCH_TLS_KEY          the broker's key: ec (P-256) or rsa (2048 bits) [ec]
#   BENCH_OUT              where results go                  [target/bench]
#   BENCH_DURATION         measured seconds per case         [10]
#   BENCH_WARMUP           warmup seconds per case           [2]
#   BENCH_LATENCY_RATE     msgs/s of the latency case        [20000]
#   BENCH_CONN_RATE        connections/s of the conn storm   [2000]
#   BENCH_GEN_CPUS         generator CPUs (--cpus)           [upper half of the CPUs]
#   BENCH_BROKER_CPUS      CPUs the brokers are pinned to    [the others]
#   BENCH_MOSQUITTO_NODELAY  1: `set_tcp_nodelay true` in mosquitto.conf, as
#                          shardmq sets TCP_NODELAY too      [1]
#   MOSQUITTO              path of the mosquitto binary      [/usr/sbin/mosquitto]
#   SHARDMQ_ARGS           extra arguments for shardmq (and baseline) []
#   CARGO_TARGET_DIR       where cargo builds, as for cargo   [target]
#   BENCH_BASELINE         a saved shardmq binary, run as the broker
#                          `baseline` (add it to BENCH_BROKERS) to compare
#                          a change with the build before it, same run []
#
# Exit status: 0 all requested brokers ran every case; 1 a benchmark run
# failed; 2 a requested broker could not be built or started (the others still
# ran and their results are written).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${BENCH_OUT:-$ROOT/target/bench}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET/release/shardmq-bench"
SHARDMQ="$TARGET/release/shardmq"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
BROKERS="${BENCH_BROKERS:-shardmq,mosquitto}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
LATENCY_RATE="${BENCH_LATENCY_RATE:-20000}"
CONN_RATE="${BENCH_CONN_RATE:-2000}"
NODELAY="${BENCH_MOSQUITTO_NODELAY:-1}"
PARTS=",${BENCH_PARTS:-harness,peers,connections,security,durable},"
PEER_DURATION="${BENCH_PEER_DURATION:-15}"
PEER_WARMUP="${BENCH_PEER_WARMUP:-3}"
PEER_RATE_QOS="${BENCH_PEER_RATE_QOS:-0}"
FLEETS="${BENCH_CONNECTIONS:-8000,19000}"
CONN_WINDOW="${BENCH_CONN_WINDOW:-30}"
KEEPALIVE="${BENCH_KEEPALIVE:-30}"
TRICKLE="${BENCH_TRICKLE_PER_MIN:-0}"
SETTLE="${BENCH_SETTLE:-60}"
SEC_CONN_RATE="${BENCH_SEC_CONN_RATE:-500}"
ACL_RULES="${BENCH_ACL_RULES:-1000}"
TLS_KEY="${BENCH_TLS_KEY:-ec}"
SEC="$OUT/security"
# Every connection is a descriptor, in the broker and in the generator: the
# fleet needs the hard limit (20,000 per process on the reference machine).
ulimit -n "$(ulimit -Hn)"

NCPU="$(nproc)"
HALF=$(((NCPU + 1) / 2))
if ((NCPU >= 2)); then
    BENCH_BROKER_CPUS="${BENCH_BROKER_CPUS:-0-$((HALF - 1))}"
    BENCH_GEN_CPUS="${BENCH_GEN_CPUS:-$HALF-$((NCPU - 1))}"
else
    BENCH_BROKER_CPUS="${BENCH_BROKER_CPUS:-0}"
    BENCH_GEN_CPUS="${BENCH_GEN_CPUS:-0}"
fi
PIN=()
if command -v taskset >/dev/null 2>&1; then
    PIN=(taskset -c "$BENCH_BROKER_CPUS")
fi

say() { printf '\n=== %s\n' "$*" >&2; }
warn() { printf '\n!!! %s\n' "$*" >&2; }

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.hlog "$OUT"/compare.md "$OUT"/compare.svg "$OUT"/peers.jsonl "$OUT"/peers.md \
    "$OUT"/security.md "$OUT"/security.svg

BROKER_PID=""
stop_broker() {
    if [[ -n "$BROKER_PID" ]]; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
trap stop_broker EXIT
trap 'stop_broker; exit 130' INT TERM

# A free loopback port below the ephemeral range (nothing answers on it).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Waits until something listens on $1 and the broker process is still alive.
wait_listening() {
    local port="$1"
    for _ in $(seq 1 100); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            sleep 0.1
            kill -0 "$BROKER_PID" 2>/dev/null && return 0
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# start_broker NAME LOGFILE [SECURITY] -> sets BROKER_PID and PORT; returns 1 on
# failure. SECURITY: `tls` (an mqtts listener with $SEC's certificate) or `acl`
# (plain, with $SEC/acl); none: plain.
start_broker() {
    local name="$1" log="$2" security="${3:-}"
    PORT="$(free_port)"
    local args=(--listen "127.0.0.1:$PORT")
    case "$security" in
    tls)
        # A config file with only a [[listener]] block serves only that listener.
        local toml="$SEC/$name-tls.toml"
        printf '[[listener]]\nkind = "mqtts"\nbind = "127.0.0.1:%s"\ncert = "%s"\nkey = "%s"\n' \
            "$PORT" "$SEC/server.pem" "$SEC/server.key" >"$toml"
        args=(--config "$toml")
        ;;
    acl) args+=(--acl-file "$SEC/acl") ;;
    esac
    case "$name" in
    shardmq)
        # shellcheck disable=SC2086 # SHARDMQ_ARGS and DURABLE_ARGS are lists of words
        "${PIN[@]}" "$SHARDMQ" "${args[@]}" ${SHARDMQ_ARGS:-} ${DURABLE_ARGS:-} >"$log" 2>&1 &
        ;;
    baseline)
        # shellcheck disable=SC2086 # SHARDMQ_ARGS is a list of words
        "${PIN[@]}" "$BENCH_BASELINE" "${args[@]}" ${SHARDMQ_ARGS:-} >"$log" 2>&1 &
        ;;
    mosquitto)
        local conf="$OUT/mosquitto.conf"
        {
            echo "listener $PORT 127.0.0.1"
            echo "allow_anonymous true"
            if [[ -n "${MOSQUITTO_PERSIST:-}" ]]; then
                # What Mosquitto users get: its defaults (autosave every 1,800 s).
                echo "persistence true"
                echo "persistence_location $MOSQUITTO_PERSIST/"
            else
                echo "persistence false"
            fi
            echo "max_queued_messages 100000"
            if [[ "$NODELAY" == 1 ]]; then echo "set_tcp_nodelay true"; fi
            if [[ "$security" == tls ]]; then
                echo "certfile $SEC/server.pem"
                echo "keyfile $SEC/server.key"
            fi
            if [[ "$security" == acl ]]; then echo "acl_file $SEC/acl"; fi
        } >"$conf"
        "${PIN[@]}" "$MOSQUITTO" -c "$conf" >"$log" 2>&1 &
        ;;
    *)
        warn "unknown broker '$name'"
        return 1
        ;;
    esac
    BROKER_PID=$!
    if ! wait_listening "$PORT"; then
        warn "$name did not start on 127.0.0.1:$PORT; last lines of $log:"
        tail -n 20 "$log" >&2 || true
        stop_broker
        return 1
    fi
    return 0
}

# --- build -------------------------------------------------------------------
say "building shardmq-bench"
cargo build -p bench-harness --release

declare -A AVAILABLE=()
for b in ${BROKERS//,/ }; do
    case "$b" in
    shardmq)
        say "building shardmq (cargo build --release)"
        if cargo build --release && [[ -x "$SHARDMQ" ]]; then
            AVAILABLE[shardmq]=1
        else
            warn "SHARDMQ COULD NOT BE BUILT: its cases are skipped; continuing with the other brokers"
        fi
        ;;
    mosquitto)
        if [[ -x "$MOSQUITTO" ]]; then
            AVAILABLE[mosquitto]=1
        else
            warn "MOSQUITTO NOT FOUND at $MOSQUITTO: its cases are skipped (apt-get install mosquitto)"
        fi
        ;;
    baseline)
        if [[ -x "${BENCH_BASELINE:-}" ]]; then
            AVAILABLE[baseline]=1
        else
            warn "BASELINE BINARY NOT FOUND: set BENCH_BASELINE to a saved shardmq binary; its cases are skipped"
        fi
        ;;
    *) warn "unknown broker '$b' in BENCH_BROKERS (known: shardmq, baseline, mosquitto)" ;;
    esac
done

# --- the cases -----------------------------------------------------------------
COMMON=(--warmup "$WARMUP" --cpus "$BENCH_GEN_CPUS" --no-progress)
# The coalesced cases keep the figures of earlier runs comparable; the packet
# cases send one packet per write per client, as devices do.
CASES=()
if [[ "$PARTS" == *,harness,* ]]; then
    CASES+=(
        "fanin-q0|fan-in --write-mode coalesced --qos 0 --payload 64 --clients 8 --subscribers 1"
        "fanin-q1|fan-in --write-mode coalesced --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64"
        "fanin-q0-packet|fan-in --write-mode packet --qos 0 --payload 64 --clients 8 --subscribers 1"
        "fanin-q1-packet|fan-in --write-mode packet --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64"
        "fanout|fan-out --write-mode coalesced --qos 0 --payload 64 --clients 1 --subscribers 64"
        "pairs|pairs --write-mode coalesced --qos 0 --payload 64 --clients 16"
        "latency|pairs --write-mode coalesced --qos 0 --payload 64 --clients 16 --rate $LATENCY_RATE --case latency-@${LATENCY_RATE}/s"
        "conn|conn --rate $CONN_RATE --concurrency 256 --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4"
    )
fi
if [[ "$PARTS" == *,connections,* ]]; then
    for n in ${FLEETS//,/ }; do
        # Eight source addresses: a storm reconnects every device while the
        # dropped connections still hold their ports.
        CASES+=("connections-$n|connections --clients $n --qos 1 --keepalive $KEEPALIVE --clean-session false --trickle-per-min $TRICKLE --reconnect-storm --settle $SETTLE --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8")
    done
fi

FAILED=()
UNAVAILABLE=()
for b in ${BROKERS//,/ }; do
    if [[ -z "${AVAILABLE[$b]:-}" ]]; then
        UNAVAILABLE+=("$b (not built / not installed)")
        continue
    fi
    for c in "${CASES[@]}"; do
        name="${c%%|*}"
        # shellcheck disable=SC2206 # the case arguments are words
        args=(${c#*|})
        log="$OUT/$b-$name.broker.log"
        window="$DURATION"
        if [[ "$name" == connections-* ]]; then window="$CONN_WINDOW"; fi
        say "$b: $name"
        if ! start_broker "$b" "$log"; then
            warn "${b^^} FAILED TO START: skipping all its cases; continuing with the other brokers"
            UNAVAILABLE+=("$b (failed to start, see $log)")
            continue 2
        fi
        if ! "$BENCH" "${args[@]}" "${COMMON[@]}" --duration "$window" --port "$PORT" --broker-pid "$BROKER_PID" \
            --label "$b" --json "$OUT/$b-$name.json" --hdr-log "$OUT/$b-$name.hlog"; then
            warn "$b: $name FAILED"
            FAILED+=("$b/$name")
        fi
        stop_broker
    done
done

# --- durable sessions ------------------------------------------------------------
# QoS 1 to persistent sessions (clean session false, one packet per write): shardmq
# in memory and with --data-dir under each --sync mode, with small segments (a
# checkpoint always under way: its p99 against interval's), and Mosquitto with
# `persistence true`. durable.md: the table and the ratios to memory.
DURABLE_CASES=(
    "fanin-q1-persistent|fan-in --write-mode packet --qos 1 --payload 64 --clients 8 --subscribers 1 --inflight 64 --clean-session false"
    "fanout-q1-persistent|fan-out --write-mode packet --qos 1 --payload 64 --clients 1 --subscribers 8 --inflight 64 --clean-session false"
)
# variant|broker|shardmq arguments
DURABLE_VARIANTS=(
    "memory|shardmq|"
    "never|shardmq|--sync never"
    "interval|shardmq|--sync interval"
    "always|shardmq|--sync always"
    "compacting|shardmq|--sync interval --data-segment-bytes 1048576"
    "mosquitto-persistence|mosquitto|"
)
durable_reports=()
if [[ "$PARTS" == *,durable,* ]]; then
    for c in "${DURABLE_CASES[@]}"; do
        name="${c%%|*}"
        # shellcheck disable=SC2206 # the case arguments are words
        args=(${c#*|})
        for v in "${DURABLE_VARIANTS[@]}"; do
            IFS='|' read -r variant b extra <<<"$v"
            [[ -n "${AVAILABLE[$b]:-}" ]] || continue
            data="$OUT/durable/$variant-$name"
            rm -rf "$data"
            mkdir -p "$data"
            DURABLE_ARGS="--mqueue-len-max 100000"
            if [[ "$b" == shardmq && "$variant" != memory ]]; then
                DURABLE_ARGS="$DURABLE_ARGS --data-dir $data/log $extra"
            fi
            if [[ "$b" == mosquitto ]]; then MOSQUITTO_PERSIST="$data"; fi
            log="$OUT/durable-$variant-$name.broker.log"
            say "durable: $variant: $name"
            if start_broker "$b" "$log"; then
                if "$BENCH" "${args[@]}" "${COMMON[@]}" --duration "$DURATION" --port "$PORT" \
                    --broker-pid "$BROKER_PID" --label "$variant" --json "$OUT/durable-$variant-$name.json"; then
                    durable_reports+=("$OUT/durable-$variant-$name.json")
                else
                    warn "durable: $variant: $name FAILED"
                    FAILED+=("durable/$variant/$name")
                fi
                stop_broker
            else
                FAILED+=("durable/$variant/$name")
            fi
            unset DURABLE_ARGS MOSQUITTO_PERSIST
            rm -rf "$data"
        done
    done
    if ((${#durable_reports[@]} > 0)); then
        "$BENCH" compare "${durable_reports[@]}" --md "$OUT/durable-cases.md"
        python3 - "$OUT" "${durable_reports[@]}" >"$OUT/durable.md" <<'PY'
import json, sys
out, paths = sys.argv[1], sys.argv[2:]
runs = [json.load(open(p)) for p in paths]
print("# Durable sessions: QoS 1 to persistent sessions\n")
print("| case | variant | delivered msgs/s | of memory | broker CPU-us/msg | p99 (ms) | lost |")
print("|---|---|---:|---:|---:|---:|---:|")
memory = {r["case"]: r["results"]["received_per_s"] for r in runs if r["label"] == "memory"}
for r in runs:
    res = r["results"]
    base = memory.get(r["case"])
    ratio = f"{res['received_per_s'] / base:.0%}" if base else "-"
    p99 = res["latency_us"].get("p99_us") or 0
    cpu = r["broker"].get("cpu_us_per_msg") or 0
    print(f"| {r['case']} | {r['label']} | {res['received_per_s']:,.0f} | {ratio} | {cpu:.2f} | {p99 / 1000:.1f} | {res['lost']} |")
print("\nTargets: `interval` at least 80% of memory, `always` at least 30%; p99 with a")
print("checkpoint always under way (`compacting`) at most 2x `interval`'s.")
PY
        {
            printf '\n## Every figure, per case\n\n'
            cat "$OUT/durable-cases.md"
        } >>"$OUT/durable.md"
        rm -f "$OUT/durable-cases.md"
        say "wrote $OUT/durable.md"
        cat "$OUT/durable.md"
    fi
fi

# --- external generators ---------------------------------------------------------
# Each case against every broker, one right after the other; loadgen.py pins the
# broker to BENCH_BROKER_CPUS and the generator to BENCH_GEN_CPUS.
PEER_CASES=(
    "flood-q0|nanomq-cli|--scenario fanin --pubs 20 --subs 1 --qos 0"
    "flood-q1|nanomq-cli|--scenario fanin --pubs 20 --subs 1 --qos 1"
)
# Fixed rates: total msgs/s spread over 100 and 1,000 publishers (emqtt-bench
# paces each client in whole milliseconds, so these rates are exact).
for pubs in 100 1000; do
    for total in 1000 10000 50000; do
        PEER_CASES+=("rate-$total-$pubs|emqtt-bench|--scenario fanin --pubs $pubs --subs 1 --qos $PEER_RATE_QOS --rate $((total / pubs)) --latency")
    done
done
PEER_RESULTS="$OUT/peers.jsonl"
if [[ "$PARTS" == *,peers,* ]]; then
    if [[ -z "${PEERS:-}" ]]; then
        warn "PEERS IS NOT SET: the external-generator cases are skipped (see bench-harness/README.md, External generators)"
        PEER_CASES=()
    fi
    for pc in "${PEER_CASES[@]}"; do
        IFS='|' read -r name tool args <<<"$pc"
        case "$tool" in
        nanomq-cli) bin="$PEERS/bin/nanomq_cli" ;;
        *) bin="$PEERS/bin/emqtt_bench" ;;
        esac
        if [[ ! -x "$bin" ]]; then
            warn "$bin NOT FOUND: peer case $name skipped (see bench-harness/README.md, External generators)"
            continue
        fi
        for b in ${BROKERS//,/ }; do
            [[ -n "${AVAILABLE[$b]:-}" ]] || continue
            log="$OUT/$b-peer-$name.broker.log"
            say "$b: peer $name ($tool)"
            if ! start_broker "$b" "$log"; then
                warn "${b^^} FAILED TO START for peer case $name"
                FAILED+=("$b/peer-$name")
                continue
            fi
            # shellcheck disable=SC2086 # the case arguments are words
            if ! LOADGEN_LOGDIR="$OUT/peer-logs" python3 "$ROOT/bench-harness/scripts/loadgen.py" \
                --tool "$tool" $args --port "$PORT" --broker-pid "$BROKER_PID" \
                --broker-cpus "$BENCH_BROKER_CPUS" --gen-cpus "$BENCH_GEN_CPUS" \
                --duration "$PEER_DURATION" --warmup "$PEER_WARMUP" --label "$b" --json "$PEER_RESULTS"; then
                warn "$b: peer $name FAILED"
                FAILED+=("$b/peer-$name")
            fi
            stop_broker
        done
    done
    if [[ -s "$PEER_RESULTS" ]]; then
        python3 "$ROOT/bench-harness/scripts/peer_table.py" "$PEER_RESULTS" --ratio shardmq/mosquitto \
            --ratio baseline/mosquitto --ratio shardmq/baseline >"$OUT/peers.md"
        say "wrote $OUT/peers.md"
        cat "$OUT/peers.md"
    fi
fi

# --- security --------------------------------------------------------------------
# The same certificate and the same ACL for every broker, made for this run.
ACL_USER=bench
ACL_PREFIX=secbench

# A CA and a server certificate for 127.0.0.1 (an IP SAN) signed by it, in $SEC.
make_certificates() {
    local newkey
    case "$TLS_KEY" in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *)
        warn "BENCH_TLS_KEY must be ec or rsa, not '$TLS_KEY'"
        return 1
        ;;
    esac
    openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj "/CN=shardmq-bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$SEC/ca.key" -out "$SEC/ca.pem" 2>>"$SEC/openssl.log" || return 1
    openssl req "${newkey[@]}" -nodes -subj "/CN=127.0.0.1" \
        -keyout "$SEC/server.key" -out "$SEC/server.csr" 2>>"$SEC/openssl.log" || return 1
    printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$SEC/server.ext"
    openssl x509 -req -in "$SEC/server.csr" -CA "$SEC/ca.pem" -CAkey "$SEC/ca.key" -CAcreateserial \
        -days 2 -extfile "$SEC/server.ext" -out "$SEC/server.pem" 2>>"$SEC/openssl.log" || return 1
    # Mosquitto started as root reads its files as the `mosquitto` user; the key
    # is made for this run and thrown away with it.
    chmod 644 "$SEC/server.key"
}

# An ACL of $ACL_RULES rules in Mosquitto's syntax: 30% `pattern` lines, 30% the
# `topic` rules of 100 other users, and the rest the bench user's, whose grant of
# $ACL_PREFIX/# is the middle rule of its section, the section in the middle of
# the file. No pattern matches the bench topics.
write_acl() {
    local patterns=$((ACL_RULES * 3 / 10)) users=100
    local per_user=$((ACL_RULES * 3 / 10 / users))
    local mine=$((ACL_RULES - patterns - users * per_user)) i u k
    {
        echo "# $ACL_RULES rules, made by bench-harness/suite.sh"
        for ((i = 0; i < patterns; i++)); do echo "pattern readwrite fleet/$i/%u/#"; done
        for ((u = 0; u < users; u++)); do
            if ((u == users / 2)); then
                echo "user $ACL_USER"
                for ((k = 0; k < mine; k++)); do
                    if ((k == mine / 2)); then
                        echo "topic readwrite $ACL_PREFIX/#"
                    else
                        echo "topic readwrite other/$k/#"
                    fi
                done
            fi
            echo "user device$u"
            for ((k = 0; k < per_user; k++)); do echo "topic readwrite devices/device$u/$k/#"; done
        done
    } >"$1"
    chmod 644 "$1"
}

SEC_CASES=()
if [[ "$PARTS" == *,security,* ]]; then
    rm -rf "$SEC"
    mkdir -p "$SEC"
    if ! command -v openssl >/dev/null 2>&1; then
        warn "OPENSSL NOT FOUND: the security cases are skipped (apt-get install openssl)"
    elif ! make_certificates; then
        warn "COULD NOT MAKE THE CERTIFICATES (see $SEC/openssl.log): the security cases are skipped"
    elif ((ACL_RULES < 10)); then
        warn "BENCH_ACL_RULES must be at least 10: the security cases are skipped"
    else
        write_acl "$SEC/acl"
        fanin="fan-in --write-mode coalesced --qos 0 --payload 64 --clients 8 --subscribers 1"
        storm="conn --concurrency 256 --source-addrs 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4"
        tls="--tls --cafile $SEC/ca.pem"
        user="--username $ACL_USER --topic-prefix $ACL_PREFIX"
        # file|broker listener (tls, acl or plain)|case name|arguments
        SEC_CASES=(
            "sec-conn-tls|tls|conn tls @${SEC_CONN_RATE}/s|$storm --rate $SEC_CONN_RATE $tls"
            "sec-conn-tls-max|tls|conn tls max|$storm --rate 0 $tls"
            "sec-conn-max||conn max|$storm --rate 0"
            "sec-fanin-q0-tls|tls|fan-in qos0 coalesced tls|$fanin $tls"
            "sec-fanin-q0-user||fan-in qos0 coalesced user, no ACL|$fanin $user"
            "sec-fanin-q0-acl|acl|fan-in qos0 coalesced user, ACL of $ACL_RULES rules|$fanin $user"
        )
    fi
fi
# Each case against every broker, one right after the other.
for c in "${SEC_CASES[@]}"; do
    IFS='|' read -r name security case_name args <<<"$c"
    for b in ${BROKERS//,/ }; do
        [[ -n "${AVAILABLE[$b]:-}" ]] || continue
        log="$OUT/$b-$name.broker.log"
        say "$b: $name ($case_name)"
        if ! start_broker "$b" "$log" "$security"; then
            warn "${b^^} FAILED TO START for security case $name"
            FAILED+=("$b/$name")
            continue
        fi
        # shellcheck disable=SC2086 # the case arguments are words
        if ! "$BENCH" $args "${COMMON[@]}" --duration "$DURATION" --port "$PORT" --broker-pid "$BROKER_PID" \
            --label "$b" --case "$case_name" --json "$OUT/$b-$name.json" --hdr-log "$OUT/$b-$name.hlog"; then
            warn "$b: $name FAILED"
            FAILED+=("$b/$name")
        fi
        stop_broker
    done
done
sec_reports=()
for c in "${SEC_CASES[@]}"; do
    for b in ${BROKERS//,/ }; do
        f="$OUT/$b-${c%%|*}.json"
        if [[ -f "$f" ]]; then sec_reports+=("$f"); fi
    done
done
if ((${#sec_reports[@]} > 0)); then
    python3 "$ROOT/bench-harness/scripts/security_table.py" --dir "$OUT" --brokers "$BROKERS" \
        --acl-rules "$ACL_RULES" --tls-key "$TLS_KEY" >"$OUT/security.md"
    "$BENCH" compare "${sec_reports[@]}" --md "$OUT/security-cases.md" --svg "$OUT/security.svg"
    {
        printf '\n## Every figure, per case\n\n'
        cat "$OUT/security-cases.md"
    } >>"$OUT/security.md"
    rm -f "$OUT/security-cases.md"
    say "wrote $OUT/security.md and $OUT/security.svg"
    cat "$OUT/security.md"
elif ((${#SEC_CASES[@]} > 0)); then
    warn "no security results"
fi

# --- comparison ----------------------------------------------------------------
# Reports in suite order (case, then broker), so the table and chart follow it.
reports=()
for c in "${CASES[@]}"; do
    for b in ${BROKERS//,/ }; do
        f="$OUT/$b-${c%%|*}.json"
        if [[ -f "$f" ]]; then reports+=("$f"); fi
    done
done
if ((${#reports[@]} > 0)); then
    "$BENCH" compare "${reports[@]}" --md "$OUT/compare.md" --svg "$OUT/compare.svg"
    say "wrote $OUT/compare.md and $OUT/compare.svg"
    cat "$OUT/compare.md"
elif ((${#CASES[@]} > 0)); then
    warn "no results to compare"
fi

status=0
if ((${#UNAVAILABLE[@]} > 0)); then
    for u in "${UNAVAILABLE[@]}"; do warn "NOT BENCHMARKED: $u"; done
    status=2
fi
if ((${#FAILED[@]} > 0)); then
    warn "failed runs: ${FAILED[*]}"
    status=1
fi
if ((${#reports[@]} == 0 && ${#sec_reports[@]} == 0 && ${#durable_reports[@]} == 0)) && [[ ! -s "$PEER_RESULTS" ]]; then
    status=1
fi
exit "$status"
