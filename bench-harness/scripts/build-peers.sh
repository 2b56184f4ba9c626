#!/usr/bin/env bash
# Builds the external load generators that the suite's `peers` part runs:
# NanoMQ's `nanomq_cli` (C, tag 0.25.3) and EMQ's emqtt-bench (Erlang, 0.4.34),
# from git repositories on this machine (nothing is downloaded here).
#
#   PEERS_SRC=/path/to/repos PEERS=/path/to/peers bench-harness/scripts/build-peers.sh
#
# PEERS_SRC holds one git repository (a clone, or a bare mirror) per project,
# named after it: nanomq, NanoNNG (github nanomq/...), emqtt-bench, emqtt
# (github emqx/...), getopt (github zmstone/getopt), gun, cowlib (github
# ninenines/...), jsx (github talentdeficit/jsx). Each must hold the tag or
# commit below. Needs cmake, a C compiler and erlang-nox (Debian:
# `apt-get install cmake erlang-nox`).
#
# Writes PEERS/bin/nanomq_cli, PEERS/bin/emqtt_bench (a wrapper that runs the
# erlc-built emqtt-bench from PEERS/src/emqtt-bench-build) and the sources
# under PEERS/src. Keep PEERS outside the repository: nothing in it is committed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="${PEERS_SRC:?set PEERS_SRC to the folder of git repositories}"
PEERS="${PEERS:?set PEERS to the output folder}"
mkdir -p "$PEERS/bin" "$PEERS/src"
PEERS="$(cd "$PEERS" && pwd)"

# unpack REPO REV DEST [pathspec...]: the tree of REV, fresh.
unpack() {
    local repo="$SRC/$1" rev="$2" dest="$3"
    shift 3
    rm -rf "$dest"
    mkdir -p "$dest"
    git -C "$repo" archive "$rev" -- "${@:-.}" | tar -x -C "$dest"
}

echo "== nanomq_cli (nanomq 0.25.3, NanoNNG 599bd96)"
N="$PEERS/src/nanomq"
unpack nanomq 0.25.3 "$N"
# NanoNNG is nanomq's nng submodule at this commit. Its bundled SQLite is
# not built (NNG_ENABLE_SQLITE=OFF), so its 9 MB amalgamation is left out.
rm -rf "$N/nng"
unpack NanoNNG 599bd9671da0d028127b3f98d9a44dbe7d3010f8 "$N/nng" . ':!src/supplemental/sqlite/sqlite3.c'
mkdir -p "$N/build"
(
    cd "$N/build"
    cmake -DCMAKE_BUILD_TYPE=Release -DBUILD_BENCH=ON -DNNG_ENABLE_SQLITE=OFF -DENABLE_JWT=OFF \
        -DNNG_TESTS=OFF -DNNG_ENABLE_TLS=OFF .. >cmake.log
    make -j"$(nproc)" >make.log
)
install -m 755 "$N/build/nanomq_cli/nanomq_cli" "$PEERS/bin/nanomq_cli"

echo "== emqtt-bench 0.4.34 (erlc only, no rebar3)"
E="$PEERS/src/emqtt-bench-build"
rm -rf "$E"
mkdir -p "$E"
unpack emqtt-bench 0.4.34 "$E/emqtt_bench"
unpack emqtt 1.14.0 "$E/emqtt"
unpack getopt v1.0.2.1 "$E/getopt"
unpack gun 2.1.0 "$E/gun"
unpack cowlib 2.13.0 "$E/cowlib"
unpack jsx v3.1.0 "$E/jsx"
D="$E" bash "$HERE/peers/emqtt_bench_build.sh"
install -m 755 "$HERE/peers/emqtt_bench.wrapper" "$PEERS/bin/emqtt_bench"

echo "built: $PEERS/bin/nanomq_cli $PEERS/bin/emqtt_bench (export PEERS=$PEERS)"
