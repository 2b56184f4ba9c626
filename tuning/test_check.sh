#!/usr/bin/env bash
# Tests tuning/check: on this host (read-only) and against fake /proc and /sys trees
# (SHARDMQ_CHECK_ROOT), where --apply is exercised without touching the host.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECK=$HERE/check
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

FAILED=0
pass() { echo "ok    $1"; }
fail() {
    echo "FAIL  $1"
    FAILED=$((FAILED + 1))
}

# run NAME [ENV=VALUE...] -- ARGS...: runs the check, keeps its output in $OUT and status in $RC.
OUT=""
RC=0
run() {
    local -a env=()
    while [[ $1 != -- ]]; do
        env+=("$1")
        shift
    done
    shift
    RC=0
    OUT=$(env "${env[@]}" "$CHECK" "$@" 2>&1) || RC=$?
}

expect_rc() { # want description
    if [[ $RC == "$1" ]]; then pass "$2: exit $RC"; else
        fail "$2: exit $RC, wanted $1"
        printf '%s\n' "$OUT" | sed 's/^/      | /'
    fi
}

expect_text() { # text description
    if grep -qF -- "$1" <<<"$OUT"; then pass "$2"; else
        fail "$2: output lacks '$1'"
        printf '%s\n' "$OUT" | sed 's/^/      | /'
    fi
}

# Exit 1 exactly when a FAIL row is printed.
expect_consistent() {
    local has_fail=0
    grep -qE ' FAIL$' <<<"$OUT" && has_fail=1
    if [[ $RC == 0 && $has_fail == 0 ]] || [[ $RC == 1 && $has_fail == 1 ]]; then
        pass "$1: exit $RC matches the table"
    else
        fail "$1: exit $RC with FAIL rows=$has_fail"
        printf '%s\n' "$OUT" | sed 's/^/      | /'
    fi
}

KNOBS=(
    "kernel " "shard CPUs online" kernel.io_uring_disabled "io_uring_setup" "memlock (ulimit -l)" "nofile (ulimit -n)"
    fs.nr_open fs.file-max net.core.somaxconn net.ipv4.tcp_max_syn_backlog
    net.ipv4.ip_local_port_range net.ipv4.ip_local_reserved_ports net.ipv4.tcp_mem
    net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.core.netdev_max_backlog "irq affinity" irqbalance
    "cpufreq governor" "transparent_hugepage " transparent_hugepage.defrag
    "systemd LimitNOFILE" "systemd LimitMEMLOCK" "systemd CPUAffinity" "systemd SystemCallFilter"
)
expect_all_knobs() {
    local k missing=()
    for k in "${KNOBS[@]}"; do grep -qF -- "$k" <<<"$OUT" || missing+=("$k"); done
    if ((${#missing[@]} == 0)); then pass "$1: every knob has a row"; else
        fail "$1: no row for: ${missing[*]}"
    fi
}

# ------------------------------------------------------------------ this host, read-only

run -- --help
expect_rc 0 "--help"
expect_text "--apply" "--help documents --apply"
expect_text "--shards N" "--help documents --shards"

run --
expect_consistent "check"
expect_all_knobs "check"

run -- --shards 2
expect_consistent "check --shards 2"
expect_all_knobs "check --shards 2"
expect_text "2 shard(s)" "check --shards 2 sizes for 2 shards"
expect_text ">= 4096 KiB" "check --shards 2 recommends 2 MiB of memlock per shard"

# Memlock below 2 x 256 KiB per shard blocks start-up, and the message names the fix.
RC=0
OUT=$(ulimit -S -l 256 && "$CHECK" --shards 1 2>&1) || RC=$?
expect_rc 1 "check with ulimit -l 256"
expect_text "LimitMEMLOCK" "the memlock failure names LimitMEMLOCK"
expect_text "need at least 512 KiB" "the memlock failure names the minimum"

run -- --shards 0
expect_rc 2 "--shards 0"
run -- --cpus x
expect_rc 2 "--cpus x"
run -- --shards 3 --cpus 0,1
expect_rc 2 "--shards and --cpus disagree"
run -- --frobnicate
expect_rc 2 "unknown option"
run -- --pid 999999999
expect_rc 2 "--pid of no process"
run -- --pid $$
expect_consistent "check --pid (this test's shell)"
expect_text "limits of process $$" "--pid reads that process's limits"

if ((EUID == 0)) && command -v setpriv >/dev/null 2>&1; then
    as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    RC=0
    OUT=$(as_nobody "$CHECK" --shards 2 2>&1) || RC=$?
    expect_consistent "check as an unprivileged user"
    expect_all_knobs "check as an unprivileged user"
    RC=0
    OUT=$(as_nobody "$CHECK" --apply 2>&1) || RC=$?
    expect_rc 2 "--apply as an unprivileged user"
    expect_text "needs root" "--apply as an unprivileged user says why"
fi

# ------------------------------------------------------------------ fake trees

# make_root DIR: a 4-CPU host with poor settings and systemd.
make_root() {
    local r=$1 k
    mkdir -p "$r/proc/self" "$r/proc/net" "$r/run/systemd/system" \
        "$r/sys/kernel/mm/transparent_hugepage"
    set_sysctl() { mkdir -p "$(dirname "$r/proc/sys/${1//.//}")" && printf '%s\n' "$2" >"$r/proc/sys/${1//.//}"; }
    set_sysctl kernel.osrelease 6.1.0-test
    set_sysctl kernel.io_uring_disabled 0
    set_sysctl fs.nr_open 1048576
    set_sysctl fs.file-max 9223372036854775807
    set_sysctl net.core.somaxconn 128
    set_sysctl net.ipv4.tcp_max_syn_backlog 512
    set_sysctl net.ipv4.tcp_syncookies 0
    set_sysctl net.ipv4.ip_local_port_range $'1024\t65000'
    set_sysctl net.ipv4.ip_local_reserved_ports ""
    set_sysctl net.ipv4.tcp_mem $'1000\t2000\t3000'
    set_sysctl net.ipv4.tcp_rmem $'4096\t131072\t33554432'
    set_sysctl net.ipv4.tcp_wmem $'8192\t16384\t4194304'
    set_sysctl net.core.netdev_max_backlog 1000
    cat >"$r/proc/self/limits" <<'EOF'
Limit                     Soft Limit           Hard Limit           Units
Max open files            1024                 524288               files
Max locked memory         2097152              2097152              bytes
EOF
    printf 'MemTotal:       16384000 kB\n' >"$r/proc/meminfo"
    printf '0000a000 00000002 00000000\n0000b000 00000001 00000000\n' >"$r/proc/net/softnet_stat"
    {
        echo "           CPU0       CPU1       CPU2       CPU3"
        for k in 24 25 26; do echo " $k:          1          0          0          0  PCI-MSIX  eth0-$k"; done
        echo "NMI:          0          0          0          0   Non-maskable interrupts"
    } >"$r/proc/interrupts"
    for k in 24 25 26; do
        mkdir -p "$r/proc/irq/$k"
        echo 0-3 >"$r/proc/irq/$k/smp_affinity_list"
    done
    mkdir -p "$r/sys/devices/system/cpu"
    echo 0-3 >"$r/sys/devices/system/cpu/online"
    for k in 0 1 2 3; do
        mkdir -p "$r/sys/devices/system/cpu/cpu$k/cpufreq"
        echo powersave >"$r/sys/devices/system/cpu/cpu$k/cpufreq/scaling_governor"
    done
    echo 'always [madvise] never' >"$r/sys/kernel/mm/transparent_hugepage/enabled"
    echo '[always] defer defer+madvise madvise never' >"$r/sys/kernel/mm/transparent_hugepage/defrag"
}

# A fake systemctl that answers `systemctl show` from $FAKE_SYSTEMCTL_SHOW.
mkdir -p "$TMP/bin"
cat >"$TMP/bin/systemctl" <<'EOF'
#!/bin/sh
cat "$FAKE_SYSTEMCTL_SHOW"
EOF
chmod +x "$TMP/bin/systemctl"
cat >"$TMP/show-good" <<'EOF'
LoadState=loaded
LimitNOFILESoft=1048576
LimitMEMLOCKSoft=infinity
CPUAffinity=1-3
SystemCallFilter=~@clock acct io_setup:EPERM
EOF
cat >"$TMP/show-bad" <<'EOF'
LoadState=loaded
LimitNOFILESoft=1024
LimitMEMLOCKSoft=65536
CPUAffinity=2-3
SystemCallFilter=~acct io_uring_setup:EPERM sched_setaffinity
EOF
cat >"$TMP/show-allow" <<'EOF'
LoadState=loaded
LimitNOFILESoft=1048576
LimitMEMLOCKSoft=infinity
CPUAffinity=
SystemCallFilter=accept4 bind io_uring_enter io_uring_register listen sched_setaffinity
EOF

R=$TMP/root
make_root "$R"
FAKE=(SHARDMQ_CHECK_ROOT="$R" PATH="$TMP/bin:$PATH" FAKE_SYSTEMCTL_SHOW="$TMP/show-good")

run "${FAKE[@]}" -- --cpus 1-3
expect_rc 0 "fake host, 2 MiB memlock, 3 shards"
expect_all_knobs "fake host"
expect_text "memlock (ulimit -l)                2048 KiB" "memlock read from the limits file"
expect_text "with 341 KiB of io_uring memory per shard" "memlock between the minimum and 2 MiB per shard warns"
expect_text "3 of 3 on shard CPUs" "IRQs on shard CPUs are counted"
expect_text "3 dropped so far" "softnet drops are summed"

run "${FAKE[@]}" -- --cpus 0-3 --shards 4
expect_rc 0 "fake host, 2 MiB memlock, 4 shards (exactly the minimum)"
run "${FAKE[@]}" -- --shards 5
expect_rc 1 "fake host, 2 MiB memlock, 5 shards"
expect_text "need at least 2560 KiB" "the minimum is 512 KiB per shard"

echo 2 >"$R/proc/sys/kernel/io_uring_disabled"
run "${FAKE[@]}" -- --shards 1
expect_rc 1 "io_uring_disabled=2"
expect_text "kernel.io_uring_disabled=0" "the io_uring failure names the fix"
echo 1 >"$R/proc/sys/kernel/io_uring_disabled"
run "${FAKE[@]}" -- --shards 1
expect_rc 0 "io_uring_disabled=1 is a warning"
echo 0 >"$R/proc/sys/kernel/io_uring_disabled"
rm "$R/proc/sys/kernel/io_uring_disabled"
run "${FAKE[@]}" -- --shards 1
expect_text "absent (kernel < 6.6)" "an old kernel without the sysctl"

echo 5.4.0 >"$R/proc/sys/kernel/osrelease"
run "${FAKE[@]}" -- --shards 1
expect_rc 1 "kernel 5.4"
echo 6.1.0 >"$R/proc/sys/kernel/osrelease"

run "${FAKE[@]}" -- --cpus 2-5
expect_rc 1 "shard CPUs that are not online"
expect_text "4,5 offline" "the offline shard CPUs are named"
run "${FAKE[@]}" -- --shards 6
expect_rc 1 "6 shards on 4 CPUs need 3 MiB of memlock"
expect_text "shard CPUs online" "--shards without --cpus maps shards onto the online CPUs"

run SHARDMQ_CHECK_ROOT="$R" PATH="$TMP/bin:$PATH" FAKE_SYSTEMCTL_SHOW="$TMP/show-bad" -- --cpus 1-3
expect_rc 1 "a unit with LimitMEMLOCK=64K and io_uring filtered"
expect_text "blocks io_uring_setup sched_setaffinity" "the unit's syscall filter is read"
expect_text "systemd CPUAffinity                2-3" "the unit's CPUAffinity is read"

run SHARDMQ_CHECK_ROOT="$R" PATH="$TMP/bin:$PATH" FAKE_SYSTEMCTL_SHOW="$TMP/show-allow" -- --cpus 1-3
expect_text "blocks io_uring_setup" "an allow list without io_uring_setup fails"
expect_text "systemd CPUAffinity                (all)" "an empty CPUAffinity"

# --apply on the fake tree: fixes, reports, and a second run changes nothing.
echo 2 >"$R/proc/sys/kernel/io_uring_disabled"
run "${FAKE[@]}" -- --cpus 1-3 --apply
expect_rc 0 "--apply fixes io_uring_disabled"
expect_text "kernel.io_uring_disabled: 2 -> 0" "--apply reports io_uring_disabled"
expect_text "net.core.somaxconn: 128 -> 4096" "--apply reports somaxconn"
expect_text "irq affinity: 3 IRQ(s) -> CPU(s) 0" "--apply moves IRQs off the shard CPUs"
expect_text "cpufreq governor: 4 CPU(s) -> performance" "--apply sets the governor"
expect_text "transparent_hugepage.defrag: always -> madvise" "--apply sets THP defrag"
want() { # file expected description
    local got
    got=$(tr -s ' \t' '  ' <"$R$1")
    if [[ $got == "$2" ]]; then pass "$3"; else fail "$3: $1 is '$got', wanted '$2'"; fi
}
want /proc/sys/net/core/somaxconn 4096 "somaxconn written"
want /proc/sys/net/ipv4/tcp_max_syn_backlog 4096 "tcp_max_syn_backlog written (syncookies off)"
want /proc/sys/net/ipv4/ip_local_port_range "1024 65535" "port range widened, low end kept"
want /proc/sys/net/ipv4/ip_local_reserved_ports "1883,8883" "broker ports reserved"
want /proc/sys/net/ipv4/tcp_mem "200000 300000 400000" "tcp_mem sized for 100000 connections"
want /proc/sys/net/ipv4/tcp_rmem "4096 131072 4194304" "tcp_rmem max capped"
want /proc/sys/net/ipv4/tcp_wmem "4096 16384 4194304" "tcp_wmem min lowered"
want /proc/sys/net/core/netdev_max_backlog 16384 "netdev_max_backlog written"
want /proc/irq/25/smp_affinity_list 0 "IRQ affinity written"
want /sys/devices/system/cpu/cpu2/cpufreq/scaling_governor performance "governor written"
want /sys/kernel/mm/transparent_hugepage/enabled "always [madvise] never" "THP enabled left alone"
want /sys/kernel/mm/transparent_hugepage/defrag madvise "THP defrag written"

run "${FAKE[@]}" -- --cpus 1-3 --apply
expect_rc 0 "second --apply"
expect_text "--apply: nothing to change" "--apply is idempotent"

# Without --apply nothing is written.
make_root "$TMP/ro"
before=$(find "$TMP/ro" -type f -exec cat {} + | md5sum)
run SHARDMQ_CHECK_ROOT="$TMP/ro" PATH="$TMP/bin:$PATH" FAKE_SYSTEMCTL_SHOW="$TMP/show-good" -- --cpus 1-3
after=$(find "$TMP/ro" -type f -exec cat {} + | md5sum)
if [[ $before == "$after" ]]; then pass "without --apply nothing changes"; else fail "the check wrote without --apply"; fi

echo
if ((FAILED)); then
    echo "$FAILED test(s) failed"
    exit 1
fi
echo "all tuning/check tests passed"
