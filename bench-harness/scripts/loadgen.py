#!/usr/bin/env python3
"""Bounded MQTT load test against 127.0.0.1:PORT with an external load generator:
emqtt-bench (github emqx/emqtt-bench 0.4.34) or NanoMQ's `nanomq_cli bench` (0.25.3).
Both send one MQTT packet per write per client, as devices do. How to build them:
bench-harness/README.md, "External generators"; they are expected as
$PEERS/bin/emqtt_bench and $PEERS/bin/nanomq_cli.

One run = M subscriber clients (one emqtt_bench 'sub' VM) + N publisher clients (one
emqtt_bench 'pub' VM), both killed after --duration seconds.  Reports, over the
steady-state window (after --warmup seconds):
  pub_rate  : PUBLISH/s sent by the publishers (emqtt_bench 'pub' counter)
  recv_rate : PUBLISH/s received by all subscribers (deliveries, i.e. fan-out counted)
  lat_*     : end-to-end latency (ms resolution) from --payload-hdrs ts; avg from the
              bench's own 'publish_latency avg' lines, p50/p95/p99/max from its QoE log
              (one sample per subscriber per ms)
  broker_cpu: broker CPU (% of one core) from /proc/PID/stat over the window
  us_per_msg: broker CPU microseconds per delivered message
  loadgen_cpu: CPU of the two emqtt_bench VMs (% of one core)

Scenarios (topic layout):
  fanin : N pubs -> bench/<run>/fanin/<i>, 1..M subs on bench/<run>/fanin/#
  fanout: N pubs -> bench/<run>/fanout,    M subs on bench/<run>/fanout
  pairs : N pubs -> bench/<run>/p2p/<i>,   N subs each on its own topic (M ignored)

--rate R: messages/s per publisher (0 = as fast as possible; emqtt-bench -I interval is
ms granularity, so R is rounded to 1000/int(1000/R)).
--pin: pin the broker's threads to --broker-cpus (default CPU 0) and the load generator
to --gen-cpus (default CPU 1) with taskset -- the default, so that on a 2-core machine the
broker gets exactly one core.
"""
import argparse, csv, json, os, re, signal, subprocess, sys, tempfile, time

PEERS = os.environ.get("PEERS", "")
BENCH = os.path.join(PEERS, "bin", "emqtt_bench")
NANOCLI = os.path.join(PEERS, "bin", "nanomq_cli")
CLK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime (incl. all threads)
    except OSError:
        return None


def tree_ticks(root):
    """CPU ticks of root and all descendants (emqtt_bench = sh -> erl -> beam.smp)."""
    total = 0
    stack = [root]
    seen = set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        t = cpu_ticks(p)
        if t is not None:
            total += t
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as fh:
                stack += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return total


def broker_pid_for_port(port):
    out = subprocess.run(["ss", "-Hltnp", "sport = :%d" % port], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def rss_kb(pid):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def parse_tdiff(s):
    sec = 0
    for num, unit in re.findall(r"(\d+)([smhd])", s):
        sec += int(num) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return sec


def parse_counter(path, name):
    """[(t_seconds, total)] for lines like '12s recv total=123 rate=..'"""
    pts = []
    txt = open(path, errors="replace").read().replace("\r", "\n")
    for m in re.finditer(r"^(\S+) %s total=(\d+) rate=" % name, txt, re.M):
        pts.append((parse_tdiff(m.group(1)), int(m.group(2))))
    return pts


def parse_nano(path, name):
    """nanomq_cli bench prints one 'sent: total=N, rate=R(msg/sec)' / 'recv: ...' line per second"""
    txt = open(path, errors="replace").read().replace("\r", "\n")
    vals = [int(x) for x in re.findall(r"^%s: total=(\d+), rate=" % name, txt, re.M)]
    return [(i + 1, v) for i, v in enumerate(vals)]


def parse_latency_avg(path):
    txt = open(path, errors="replace").read().replace("\r", "\n")
    return [int(x) for x in re.findall(r"publish_latency avg=(\d+)ms", txt)]


def window_rate(pts, t0, t1):
    """messages/s between the first sample >= t0 and the last sample <= t1"""
    w = [p for p in pts if t0 <= p[0] <= t1]
    if len(w) < 2:
        return 0.0, 0
    (ta, va), (tb, vb) = w[0], w[-1]
    return (vb - va) / max(tb - ta, 1), (pts[-1][1] if pts else 0)


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--broker-pid", type=int, default=0, help="default: owner of the listening port")
    ap.add_argument("--label", default="")
    ap.add_argument("--scenario", choices=["fanin", "fanout", "pairs"], default="fanin")
    ap.add_argument("--pubs", type=int, default=10)
    ap.add_argument("--subs", type=int, default=1)
    ap.add_argument("--qos", type=int, choices=[0, 1, 2], default=0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0, help="msgs/s per publisher, 0 = flat out")
    ap.add_argument("--inflight", type=int, default=32, help="emqtt-bench -F for QoS>0")
    ap.add_argument("--version", type=int, choices=[3, 4, 5], default=4)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--latency", action="store_true", help="payload timestamp header + QoE log percentiles")
    ap.add_argument("--pin", dest="pin", action="store_true", default=True)
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--broker-cpus", default="0", help="taskset CPU list for the broker (with --pin)")
    ap.add_argument("--gen-cpus", default="1", help="taskset CPU list for the generator (with --pin)")
    ap.add_argument("--json", default="", help="append one JSON line with the result to this file")
    ap.add_argument("--window-file", default="",
                    help="create this file when the measured window starts (for profilers to attach then)")
    ap.add_argument("--tool", choices=["emqtt-bench", "nanomq-cli"], default="emqtt-bench",
                    help="nanomq-cli = NanoMQ's C 'nanomq_cli bench' (much more load per core, no latency)")
    a = ap.parse_args()
    if not a.host.startswith("127."):
        sys.exit("refusing: only loopback targets allowed")
    if a.duration > 60:
        sys.exit("refusing: keep runs bounded (<= 60 s)")
    tool_bin = NANOCLI if a.tool == "nanomq-cli" else BENCH
    if not PEERS or not os.access(tool_bin, os.X_OK):
        sys.exit("%s not found: set PEERS (see bench-harness/README.md, External generators)" % tool_bin)

    bpid = a.broker_pid or broker_pid_for_port(a.port)
    if not bpid:
        sys.exit("no process listening on port %d" % a.port)
    if a.pin:
        subprocess.run(["taskset", "-a", "-p", "-c", a.broker_cpus, str(bpid)], capture_output=True)

    run = "r%d" % (int(time.time() * 1000) % 10**8)
    if a.scenario == "fanin":
        sub_topic, pub_topic, nsubs = "bench/%s/fanin/#" % run, "bench/%s/fanin/%%i" % run, a.subs
    elif a.scenario == "fanout":
        sub_topic, pub_topic, nsubs = "bench/%s/fanout" % run, "bench/%s/fanout" % run, a.subs
    else:
        sub_topic, pub_topic, nsubs = "bench/%s/p2p/%%i" % run, "bench/%s/p2p/%%i" % run, a.pubs
    interval = 0 if a.rate <= 0 else max(1, int(round(1000.0 / a.rate)))

    logroot = os.environ.get("LOADGEN_LOGDIR", os.path.join(PEERS, "results", "load", "runs"))
    os.makedirs(logroot, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="loadgen-", dir=logroot)
    sub_log, pub_log, qoe = os.path.join(tmp, "sub.txt"), os.path.join(tmp, "pub.txt"), os.path.join(tmp, "qoe.log")
    pin = ["taskset", "-c", a.gen_cpus] if a.pin else []
    common = ["-h", a.host, "-p", str(a.port), "-V", str(a.version), "-i", "1"]
    hdr = ["--payload-hdrs", "ts"] if a.latency else []
    total_time = a.duration + 6
    # timeout -k: an emqtt-bench VM with 1,000 clients once ignored SIGTERM for minutes.
    sub_cmd = pin + ["timeout", "-k", "10", "-s", "TERM", str(int(total_time + 8)), BENCH, "sub"] + common + \
        ["-c", str(nsubs), "-t", sub_topic, "-q", str(a.qos), "--prefix", run + "s"] + hdr + \
        (["--qoe", "true", "--qoelog", qoe] if a.latency else [])
    pub_cmd = pin + ["timeout", "-k", "10", "-s", "TERM", str(int(a.duration + 2)), BENCH, "pub"] + common + \
        ["-c", str(a.pubs), "-t", pub_topic, "-q", str(a.qos), "-s", str(a.size), "-I", str(interval),
         "-F", str(a.inflight), "--prefix", run + "p"] + hdr

    if a.tool == "nanomq-cli":
        if a.latency:
            sys.exit("--latency needs emqtt-bench")
        sub_cmd = pin + ["timeout", "-k", "10", "-s", "INT", str(int(total_time + 8)), "stdbuf", "-oL", "-eL", NANOCLI, "bench", "sub",
                         "-h", a.host, "-p", str(a.port), "-V", str(a.version), "-i", "1", "-c", str(nsubs),
                         "-t", sub_topic, "-q", str(a.qos)]
        pub_cmd = pin + ["timeout", "-k", "10", "-s", "INT", str(int(a.duration + 2)), "stdbuf", "-oL", "-eL", NANOCLI, "bench", "pub",
                         "-h", a.host, "-p", str(a.port), "-V", str(a.version), "-i", "1", "-c", str(a.pubs),
                         "-t", pub_topic, "-q", str(a.qos), "-s", str(a.size), "-I", str(interval)]
    sub = subprocess.Popen(sub_cmd, stdout=open(sub_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    # wait for all subscriptions
    t_wait = time.time()
    while a.tool == "emqtt-bench" and time.time() - t_wait < 10:
        pts = parse_counter(sub_log, "sub")
        if pts and pts[-1][1] >= nsubs:
            break
        time.sleep(0.2)
    time.sleep(0.5 if a.tool == "emqtt-bench" else 2.0)
    pub = subprocess.Popen(pub_cmd, stdout=open(pub_log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    t_pub = time.time()
    time.sleep(a.warmup)
    b0, l0, w0 = cpu_ticks(bpid), tree_ticks(pub.pid) + tree_ticks(sub.pid), time.time()
    if a.window_file:
        open(a.window_file, "w").close()
    time.sleep(max(1.0, a.duration - a.warmup - 1))
    b1, l1, w1 = cpu_ticks(bpid), tree_ticks(pub.pid) + tree_ticks(sub.pid), time.time()
    rss = rss_kb(bpid)
    pub.wait()
    time.sleep(1.5)  # let in-flight deliveries drain
    os.killpg(sub.pid, signal.SIGINT if a.tool == "nanomq-cli" else signal.SIGTERM)
    try:
        sub.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(sub.pid, signal.SIGKILL)

    win0, win1 = a.warmup, a.duration - 1
    if a.tool == "nanomq-cli":
        pub_pts, recv_pts = parse_nano(pub_log, "sent"), parse_nano(sub_log, "recv")
        # sub started ~2 s before pub: align its per-second lines to the publisher's clock
        recv_pts = [(t - 2, v) for t, v in recv_pts]
    else:
        pub_pts, recv_pts = parse_counter(pub_log, "pub"), parse_counter(sub_log, "recv")
    pub_rate, pub_total = window_rate(pub_pts, win0, win1)
    recv_rate, recv_total = window_rate(recv_pts, win0, win1)
    el = max(w1 - w0, 1e-6)
    bcpu = 100.0 * (b1 - b0) / CLK / el if b0 is not None and b1 is not None else None
    lcpu = 100.0 * (l1 - l0) / CLK / el
    res = dict(label=a.label, tool=a.tool, port=a.port, scenario=a.scenario, pubs=a.pubs, subs=nsubs, qos=a.qos,
               size=a.size, rate_per_pub=(0 if interval == 0 else 1000.0 / interval), version=a.version,
               duration=a.duration, pin=a.pin, pub_rate=round(pub_rate), recv_rate=round(recv_rate),
               pub_total=pub_total, recv_total=recv_total,
               broker_cpu=None if bcpu is None else round(bcpu, 1), loadgen_cpu=round(lcpu, 1),
               us_per_msg=None if not bcpu or not recv_rate else round(bcpu / 100.0 * 1e6 / recv_rate, 2),
               broker_rss_mb=None if rss is None else round(rss / 1024.0, 1))
    errs = [l for l in open(pub_log, errors="replace").read().replace("\r", "\n").splitlines() +
            open(sub_log, errors="replace").read().replace("\r", "\n").splitlines()
            if "error" in l.lower() or "EXIT" in l]
    res["bench_errors"] = len(errs)
    if a.latency:
        avgs = parse_latency_avg(sub_log)
        res["lat_avg_ms_lines"] = round(sum(avgs) / len(avgs), 2) if avgs else 0
        # dump the QoE disk log to CSV with emqtt-bench itself, then percentiles
        subprocess.run([BENCH, "sub", "-c", "1", "-t", "x", "--qoe", "dump", "--qoelog", qoe],
                       capture_output=True, timeout=60)
        vals = []
        if os.path.exists(qoe + ".csv"):
            for row in csv.DictReader(open(qoe + ".csv")):
                if row.get("Publish"):
                    vals.append(int(row["Publish"]))
        vals.sort()
        res.update(lat_samples=len(vals), lat_p50_ms=pct(vals, .5), lat_p95_ms=pct(vals, .95),
                   lat_p99_ms=pct(vals, .99), lat_max_ms=vals[-1] if vals else None,
                   lat_mean_ms=round(sum(vals) / len(vals), 2) if vals else None)
    res["logs"] = tmp
    line = json.dumps(res)
    print(line)
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
