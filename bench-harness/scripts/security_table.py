#!/usr/bin/env python3
"""The Markdown summary of the suite's security part: TLS handshakes and CONNACK latency,
fan-in over TLS and with an ACL, one column per broker, with the TLS/plain and ACL/no-ACL
ratios. Reads the shardmq-bench reports DIR/<broker>-sec-*.json that suite.sh writes.

    security_table.py --dir target/bench --brokers shardmq,mosquitto \
        --acl-rules 1000 --tls-key ec > security.md
"""
import argparse
import json
import os

# Report files of the security part (suite.sh's SEC_CASES), without the broker prefix.
CONN_TLS = "sec-conn-tls"
CONN_TLS_MAX = "sec-conn-tls-max"
CONN_MAX = "sec-conn-max"
FANIN_TLS = "sec-fanin-q0-tls"
FANIN_USER = "sec-fanin-q0-user"
FANIN_ACL = "sec-fanin-q0-acl"


def load(directory, broker, name):
    path = os.path.join(directory, "%s-%s.json" % (broker, name))
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(report, *path):
    v = report
    for p in path:
        if not isinstance(v, dict) or v.get(p) is None:
            return None
        v = v[p]
    return v


def num(v, digits=0):
    return "n/a" if v is None else format(v, ",.%df" % digits)


def ratio(a, b):
    return "n/a" if a is None or not b else "%.2f" % (a / b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--brokers", required=True, help="comma-separated labels, in column order")
    ap.add_argument("--acl-rules", type=int, required=True)
    ap.add_argument("--tls-key", required=True)
    a = ap.parse_args()
    brokers = [b for b in a.brokers.split(",") if b]
    r = {b: {n: load(a.dir, b, n) for n in (CONN_TLS, CONN_TLS_MAX, CONN_MAX, FANIN_TLS, FANIN_USER, FANIN_ACL)}
         for b in brokers}
    brokers = [b for b in brokers if any(r[b].values())]

    def conn_rate(b, n):
        return get(r[b][n], "results", "connections", "per_s")

    def connack(b, n):
        p50 = get(r[b][n], "results", "connections", "connack_us", "p50_us")
        p99 = get(r[b][n], "results", "connections", "connack_us", "p99_us")
        return "n/a" if p50 is None else "%s / %s" % (num(p50), num(p99))

    def msgs(b, n):
        return get(r[b][n], "results", "received_per_s")

    def cpu(b, n):
        return get(r[b][n], "broker", "cpu_us_per_msg")

    offered = next((get(r[b][CONN_TLS], "config", "rate") for b in brokers if r[b][CONN_TLS]), None)
    rows = [
        ("TLS handshakes/s, %s/s offered" % num(offered), lambda b: num(conn_rate(b, CONN_TLS))),
        ("CONNACK p50 / p99 (us), %s/s offered" % num(offered), lambda b: connack(b, CONN_TLS)),
        ("TLS handshakes/s, flat out", lambda b: num(conn_rate(b, CONN_TLS_MAX))),
        ("CONNACK p50 / p99 (us), flat out", lambda b: connack(b, CONN_TLS_MAX)),
        ("plain connections/s, flat out", lambda b: num(conn_rate(b, CONN_MAX))),
        ("**TLS / plain** connections/s", lambda b: ratio(conn_rate(b, CONN_TLS_MAX), conn_rate(b, CONN_MAX))),
        ("fan-in QoS 0 over TLS, msgs/s", lambda b: num(msgs(b, FANIN_TLS))),
        ("fan-in QoS 0 plain, no ACL, msgs/s", lambda b: num(msgs(b, FANIN_USER))),
        ("**TLS / plain** fan-in", lambda b: ratio(msgs(b, FANIN_TLS), msgs(b, FANIN_USER))),
        ("fan-in QoS 0 with the ACL, msgs/s", lambda b: num(msgs(b, FANIN_ACL))),
        ("**ACL / no ACL** fan-in", lambda b: ratio(msgs(b, FANIN_ACL), msgs(b, FANIN_USER))),
        ("broker CPU-us per msg: plain / TLS / ACL",
         lambda b: " / ".join(num(cpu(b, n), 2) for n in (FANIN_USER, FANIN_TLS, FANIN_ACL))),
    ]
    print("# Security: what TLS and an ACL cost\n")
    key = {"ec": "ECDSA P-256", "rsa": "RSA 2048"}.get(a.tls_key, a.tls_key)
    print("Broker certificate: %s, signed by a CA made for the run; every TLS connection makes a full "
          "handshake (no resumption). ACL: %s rules in Mosquitto's syntax (`pattern` lines, other "
          "users' `topic` rules, and the bench user's section, whose grant is its middle rule). "
          "Fan-in: 8 publishers, 1 subscriber, QoS 0, 64 B, coalesced writes, flat out; the plain "
          "and ACL runs log in with the same user name.\n" % (key, num(a.acl_rules)))
    print("| figure | %s |" % " | ".join(brokers))
    print("|---|" + "---|" * len(brokers))
    for title, cell in rows:
        print("| %s | %s |" % (title, " | ".join(cell(b) for b in brokers)))
    print()
    for b in brokers:
        session = next((get(r[b][n], "config", "tls_session") for n in (FANIN_TLS, CONN_TLS, CONN_TLS_MAX)
                        if get(r[b][n], "config", "tls_session")), None)
        print("- %s TLS: %s" % (b, session or "n/a"))
    saturated = sorted("%s %s" % (b, n) for b in brokers for n, rep in r[b].items()
                       if get(rep, "generator", "saturated"))
    if saturated:
        print("\nThe generator was saturated in: %s. Those figures may measure the generator, "
              "not the broker." % ", ".join(saturated))


if __name__ == "__main__":
    main()
