#!/usr/bin/env python3
"""Markdown tables from loadgen.py JSON lines: one table per case, one row per broker, and a
row per --ratio A/B (where both ran) with A's delivered msgs/s, CPU-us per delivered message
and p99 latency over B's.

    peer_table.py results.jsonl [--ratio shardmq/mosquitto ...] > peers.md
"""
import argparse
import json


def case_name(r):
    rate = "flood" if not r["rate_per_pub"] else "%s msgs/s (%s x %g/s)" % (
        f'{round(r["pubs"] * r["rate_per_pub"]):,}', r["pubs"], r["rate_per_pub"])
    return "%s %s, %d pubs -> %d sub, QoS %d, %d B, %s" % (
        r["tool"], r["scenario"], r["pubs"], r["subs"], r["qos"], r["size"], rate)


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or not b else a / b


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl")
    ap.add_argument("--ratio", action="append", help="LABEL_A/LABEL_B (repeatable) [shardmq/mosquitto]")
    a = ap.parse_args()
    ratios = [r.split("/", 1) for r in a.ratio or ["shardmq/mosquitto"]]
    cases = {}
    for line in open(a.jsonl):
        if line.strip():
            r = json.loads(line)
            cases.setdefault(case_name(r), {})[r["label"]] = r  # a later run replaces an earlier one
    for name, by_label in cases.items():
        print("### %s\n" % name)
        print("| broker | sent msgs/s | delivered msgs/s | broker CPU-us per delivered msg | p99 latency (ms) | generator CPU (% of a core) |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, r in by_label.items():
            print("| %s | %s | %s | %s | %s | %s |" % (
                label, f'{r["pub_rate"]:,}', f'{r["recv_rate"]:,}', fmt(r["us_per_msg"], ".2f"),
                fmt(r.get("lat_p99_ms"), "d"), fmt(r["loadgen_cpu"], ".0f")))
        for num, den in ratios:
            x, y = by_label.get(num), by_label.get(den)
            if x and y:
                print("| **%s / %s** | | %s | %s | %s | |" % (
                    num, den, fmt(ratio(x["recv_rate"], y["recv_rate"]), ".2f"),
                    fmt(ratio(x["us_per_msg"], y["us_per_msg"]), ".2f"),
                    fmt(ratio(x.get("lat_p99_ms"), y.get("lat_p99_ms")), ".2f")))
        print()


if __name__ == "__main__":
    main()
