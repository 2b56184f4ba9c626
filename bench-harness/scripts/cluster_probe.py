#!/usr/bin/env python3
"""What `make bench-cluster` (bench-harness/cluster.sh) needs besides shardmq-bench:

    cluster_probe.py wait  --metrics ADDR,... --names a,b,c
        waits until every node sees every other `up` with a `connected` link.
    cluster_probe.py run   --names a,b,c --pids P,... --metrics ADDR,... --out FILE -- BENCH ARGS
        runs the bench (whose args hold `--json REPORT`), samples every node's
        /proc/PID/stat and status every 100 ms meanwhile and /metrics before and
        after, and writes FILE: per node, CPU (cores) over the measured window,
        RSS, and the cluster counters' growth over the run.
    cluster_probe.py table --dir DIR --md FILE --json FILE
        the Markdown table and the JSON summary of DIR/<target>-<case>.json and
        their .nodes.json files.

Node CPU comes from /proc, not from the bench's --broker-pid, which samples one
process: the window is placed on the probe's clock from the report's setup_s
and the case's warmup, and node CPU time is interpolated between samples.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.1  # /proc sampling period during a run
COUNTERS = {
    "forwarded": "shardmq_cluster_messages_forwarded_total",
    "received": "shardmq_cluster_messages_received_total",
    "dropped": "shardmq_cluster_messages_dropped_total",
}


def http_get(addr, path):
    with urllib.request.urlopen("http://%s%s" % (addr, path), timeout=5) as r:
        return r.read().decode()


def counters(addr):
    values = {}
    for line in http_get(addr, "/metrics").splitlines():
        for key, name in COUNTERS.items():
            if line.startswith(name + " "):
                values[key] = float(line.split()[1])
    return values


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        # Fields after the command name (which may hold spaces): utime is the
        # 14th field of the line, stime the 15th.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out.get("VmRSS"), out.get("VmHWM")


def wait(a):
    names = a.names.split(",")
    addrs = a.metrics.split(",")
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            ready = True
            for name, addr in zip(names, addrs):
                members = {m["name"]: m for m in json.loads(http_get(addr, "/cluster"))["members"]}
                others = [n for n in names if n != name]
                ok = all(members.get(o, {}).get("state") == "up" and members[o].get("link") == "connected"
                         for o in others)
                ready &= ok
                last = (name, members)
            if ready:
                return 0
        except (OSError, ValueError) as e:  # a node still starting
            last = e
        time.sleep(0.1)  # polling period for the cluster's state
    print("cluster did not form in %ss; last view: %r" % (a.timeout, last), file=sys.stderr)
    return 1


def option(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


def at(samples, t):
    """CPU seconds at time t, interpolated between (time, cpu) samples."""
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 <= t <= t1:
            return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
    return samples[0][1] if t < samples[0][0] else samples[-1][1]


def run(a):
    names = a.names.split(",")
    pids = [int(p) for p in a.pids.split(",")]
    addrs = a.metrics.split(",")
    bench = a.bench[1:] if a.bench and a.bench[0] == "--" else a.bench
    report_path = option(bench, "--json")
    warmup = float(option(bench, "--warmup") or 2.0)
    before = [counters(m) for m in addrs]
    samples = [[] for _ in pids]
    peak = [0] * len(pids)
    done = threading.Event()

    def sample():
        while True:
            now = time.monotonic()
            for i, pid in enumerate(pids):
                samples[i].append((now, cpu_s(pid)))
                rss, _ = rss_kib(pid)
                peak[i] = max(peak[i], rss or 0)
            if done.wait(SAMPLE_S):
                return

    sampler = threading.Thread(target=sample)
    t_launch = time.monotonic()
    sampler.start()
    rc = subprocess.call(bench)
    done.set()
    sampler.join()
    after = [counters(m) for m in addrs]
    nodes = []
    window = None
    try:
        with open(report_path) as f:
            r = json.load(f)["results"]
        ws = t_launch + r["setup_s"] + warmup
        window = (ws, ws + r["window_s"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the bench failed: no window, the node figures still help
    for i, (name, pid) in enumerate(zip(names, pids)):
        rss, hwm = rss_kib(pid)
        node = {"name": name, "pid": pid, "rss_end_kib": rss, "rss_run_peak_kib": peak[i], "rss_hwm_kib": hwm}
        if window:
            node["cpu_cores"] = (at(samples[i], window[1]) - at(samples[i], window[0])) / (window[1] - window[0])
        for key in COUNTERS:
            node[key] = after[i].get(key, 0) - before[i].get(key, 0)
        nodes.append(node)
    with open(a.out, "w") as f:
        json.dump({"nodes": nodes}, f, indent=2)
    return rc


# --- the table -------------------------------------------------------------------

def get(v, *path):
    for p in path:
        if not isinstance(v, dict) or v.get(p) is None:
            return None
        v = v[p]
    return v


def num(v, digits=0):
    return "n/a" if v is None else format(v, ",.%df" % digits)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def table(a):
    cases = []
    for fname in sorted(os.listdir(a.dir)):
        m = re.fullmatch(r"(single|cluster)-(.+)\.json", fname)
        if not m or fname.endswith(".nodes.json"):
            continue
        report = load(os.path.join(a.dir, fname))
        nodes = load(os.path.join(a.dir, fname[:-5] + ".nodes.json")) or {"nodes": []}
        if report:
            cases.append({"target": m.group(1), "case": m.group(2), "report": report, "nodes": nodes["nodes"]})
    order = {"single": 0, "cluster": 1}
    cases.sort(key=lambda c: (c["case"], order[c["target"]]))
    lines = [
        "| case | target | msgs/s received | p50 us | p99 us | p99.9 us | lost | node CPU (cores) | node RSS MiB "
        "(end) | forwarded | dropped |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    summary = []
    for c in cases:
        r = c["report"]
        lat = get(r, "results", "latency_us") or {}
        cpu = " / ".join("%s %s" % (n["name"], num(n.get("cpu_cores"), 2)) for n in c["nodes"])
        rss = " / ".join("%s %s" % (n["name"], num((n.get("rss_end_kib") or 0) / 1024, 1)) for n in c["nodes"])
        fwd = sum(n.get("forwarded", 0) for n in c["nodes"])
        drop = sum(n.get("dropped", 0) for n in c["nodes"])
        lost = get(r, "results", "lost")
        loss_pct = get(r, "results", "loss_pct")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["case"], c["target"], num(get(r, "results", "received_per_s")), num(lat.get("p50_us")),
            num(lat.get("p99_us")), num(lat.get("p999_us")),
            "%s (%s%%)" % (num(lost), num(loss_pct, 2)) if lost else "0", cpu, rss, num(fwd), num(drop)))
        summary.append({
            "case": c["case"], "target": c["target"], "name": r["case"],
            "hosts": get(r, "config", "hosts"),
            "received_per_s": get(r, "results", "received_per_s"),
            "sent_per_s": get(r, "results", "sent_per_s"),
            "latency_us": lat, "lost": lost, "loss_pct": loss_pct,
            "unacked": get(r, "results", "unacked"), "warnings": r.get("warnings", []),
            "generator_max_core_util": get(r, "generator", "max_core_util"),
            "nodes": c["nodes"],
        })
    ratios = []
    by = {(s["case"], s["target"]): s for s in summary}
    for (case, target), s in sorted(by.items()):
        single = by.get((case, "single"))
        if target != "cluster" or not single:
            continue
        rate = (s["received_per_s"] / single["received_per_s"]) if single["received_per_s"] else None
        p50 = (s["latency_us"].get("p50_us") or 0) / (single["latency_us"].get("p50_us") or 1)
        p99 = (s["latency_us"].get("p99_us") or 0) / (single["latency_us"].get("p99_us") or 1)
        ratios.append({"case": case, "msgs_ratio": rate, "p50_ratio": p50, "p99_ratio": p99})
    if ratios:
        lines += ["", "Cluster (publishers and subscribers on different nodes) over one node, same case:", "",
                  "| case | msgs/s ratio | p50 ratio | p99 ratio |", "|---|---:|---:|---:|"]
        for x in ratios:
            lines.append("| %s | %s | %s | %s |" % (x["case"], num(x["msgs_ratio"], 2), num(x["p50_ratio"], 2),
                                                   num(x["p99_ratio"], 2)))
    warnings = ["%s %s: %s" % (s["target"], s["name"], w) for s in summary for w in s["warnings"]]
    if warnings:
        lines += ["", "Warnings from the runs:", ""] + ["- " + w for w in warnings]
    with open(a.md, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(a.json, "w") as f:
        json.dump({"cases": summary, "ratios": ratios}, f, indent=2)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--names", required=True)
    w.add_argument("--metrics", required=True)
    w.add_argument("--timeout", type=float, default=20.0)
    r = sub.add_parser("run")
    r.add_argument("--names", required=True)
    r.add_argument("--pids", required=True)
    r.add_argument("--metrics", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("bench", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("--dir", required=True)
    t.add_argument("--md", required=True)
    t.add_argument("--json", required=True)
    a = ap.parse_args()
    return {"wait": wait, "run": run, "table": table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
