"""Hostile clients in volume: hundreds of malformed, truncated, oversized,
random-garbage and byte-at-a-time slow connections from several threads at
once, while a healthy paho client on each shard keeps a QoS 1 round trip loop
going. Every round trip must succeed within a bound, the broker must stay up
without panicking, its file descriptors must return to their baseline once
the bad clients are gone, and protocol errors must be counted.

(test_protocol_errors.py checks each bad input on its own; this is the
concurrent, high-volume version.)

shardmq only: /proc of the broker process and /metrics are shardmq's.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BROKER_KIND
from hardening import Healthy, fd_count, scrape, start_with_metrics, wait_fds_at_most, wait_metrics
from mqtt_helpers import (
    CONNACK,
    ConnectionClosed,
    RawClient,
    connect_packet,
    disconnect_packet,
    enc_rl,
    enc_str,
    packet,
    publish_packet,
    subscribe_packet,
)

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "shardmq", reason="inspects the shardmq process and its /metrics"),
    pytest.mark.timeout(90),
]

CONNECT_TIMEOUT = 2
#: how long the broker may take to close a bad connection: the connect timeout
#: (for input that looks like the start of a CONNECT) plus slack
CLOSE_BOUND = CONNECT_TIMEOUT + 4
ROUNDTRIP_BOUND = 5.0
T = "hostile"


def _rl_claim(first: int, size: int = 268_435_455) -> bytes:
    return bytes([first]) + enc_rl(size)


#: invalid CONNECTs: the broker must close, at most after a refusing CONNACK
MALFORMED_CONNECTS = [
    ("bad-protocol-name", "[MQTT-3.1.2-1]", connect_packet("h1", proto_name="MQXX")),
    ("reserved-flag", "[MQTT-3.1.2-3]", connect_packet("h2", flags=0x03)),
    ("fixed-header-flags", "[MQTT-2.2.2-2]", b"\x11" + connect_packet("h3")[1:]),
    ("will-qos-3", "[MQTT-3.1.2-14]", connect_packet("h4", flags=0x02 | 0x04 | 0x18)),
    ("will-qos-no-will", "[MQTT-3.1.2-13]", connect_packet("h5", flags=0x02 | 0x08)),
    ("password-no-username", "[MQTT-3.1.2-22]",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x42]) + b"\x00\x3c" + enc_str("h6") + enc_str("pw"))),
    ("client-id-invalid-utf8", "[MQTT-1.5.3-1]",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x02]) + b"\x00\x3c" + b"\x00\x02\xff\xfe")),
    ("missing-client-id", "[MQTT-3.1.3-3]", packet(0x10, enc_str("MQTT") + bytes([4, 0x02]) + b"\x00\x3c")),
    ("will-announced-missing", "[MQTT-3.1.2-9]",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x06]) + b"\x00\x3c" + enc_str("h7"))),
    ("rl-5-bytes", "[MQTT-2.2.3]", b"\x10\xff\xff\xff\xff\x7f"),
    ("first-packet-publish", "[MQTT-3.1.0-1]", publish_packet(f"{T}/x", b"x")),
    ("first-packet-pingreq", "[MQTT-3.1.0-1]", b"\xc0\x00"),
    ("first-packet-subscribe", "[MQTT-3.1.0-1]", subscribe_packet(1, [(f"{T}/x", 0)])),
    ("reserved-type-0", "[MQTT-2.2.1]", b"\x00\x00"),
    ("reserved-type-15", "[MQTT-2.2.1]", b"\xf0\x00"),
    ("protocol-level-3", "[MQTT-3.1.2-2]", connect_packet("h8", proto_level=3)),
    ("string-longer-than-packet", "[MQTT-4.8.0-1]",
     packet(0x10, enc_str("MQTT") + bytes([4, 0x02]) + b"\x00\x3c" + b"\x00\x50abc")),
]

#: protocol violations after a successful CONNECT: the broker must close
#: without answering, and count a protocol error
AFTER_CONNECT = [
    ("subscribe-flags", "[MQTT-3.8.1-1]", subscribe_packet(1, [(f"{T}/a", 0)], flags=0x0)),
    ("unsubscribe-flags", "[MQTT-3.10.1-1]", packet(0xA0, b"\x00\x01" + enc_str(f"{T}/a"))),
    ("pubrel-flags", "[MQTT-3.6.1-1]", packet(0x60, b"\x00\x01")),
    ("publish-qos3", "[MQTT-3.3.1-4]", publish_packet(f"{T}/q3", b"x", flags=0x06)),
    ("publish-pid0", "[MQTT-2.3.1-1]", publish_packet(f"{T}/p0", b"x", qos=1, pid=0)),
    ("publish-wildcard", "[MQTT-3.3.2-2]", publish_packet(f"{T}/+/x", b"x")),
    ("publish-empty-topic", "[MQTT-4.7.3-1]", publish_packet("", b"x")),
    ("subscribe-no-filters", "[MQTT-3.8.3-3]", packet(0x82, b"\x00\x01")),
    ("subscribe-qos3", "[MQTT-3.8.3-4]", subscribe_packet(1, [(f"{T}/a", 3)])),
    ("second-connect", "[MQTT-3.1.0-2]", connect_packet("again")),
    ("server-packet-connack", "[MQTT-4.8.0-1]", b"\x20\x02\x00\x00"),
    ("reserved-type-0", "[MQTT-4.8.0-1]", b"\x00\x00"),
    ("rl-5-bytes", "[MQTT-2.2.3]", b"\x30\xff\xff\xff\xff\x7f"),
    ("publish-256mb", "[MQTT-4.8.0-1] over --packet-size-max", _rl_claim(0x30) + b"\x00\x04abcd"),
    ("subscribe-256mb", "[MQTT-4.8.0-1] over --packet-size-max", _rl_claim(0x82) + b"\x00\x01"),
]


class Outcome:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}
        self.failures: list[str] = []

    def count(self, kind: str):
        with self.lock:
            self.sent[kind] = self.sent.get(kind, 0) + 1

    def fail(self, msg: str):
        with self.lock:
            self.failures.append(msg)


def _closed_without_accept(r: RawClient, what: str, out: Outcome, bound: float = CLOSE_BOUND) -> None:
    """The broker must close ``r`` within ``bound`` seconds, answering at most
    a refusing CONNACK."""
    try:
        got = r.wait_closed(bound)
    except AssertionError as e:
        out.fail(f"{what}: {e}")
        return
    except OSError:
        return  # reset by the peer while we read: closed
    for p in got:
        if p.type != CONNACK or p.connack()[1] == 0:
            out.fail(f"{what}: broker answered {p}")


def _attack(b, kind: str, arg, seed: int, out: Outcome) -> None:
    rnd = random.Random(seed)
    try:
        r = RawClient(b.host, b.port, timeout=CLOSE_BOUND)
    except OSError as e:
        out.fail(f"{kind}: TCP connect failed: {e!r}")
        return
    out.count(kind)
    try:
        if kind == "malformed":
            name, clause, data = arg
            r.send(data)
            _closed_without_accept(r, f"malformed {name} {clause}", out)
        elif kind == "truncated-then-close":
            data = connect_packet(f"tr{seed}")
            r.send(data[: rnd.randrange(1, len(data))])
            # the client gives up: nothing to wait for but the close
        elif kind == "truncated-held":
            data = connect_packet(f"th{seed}")
            r.send(data[: rnd.randrange(1, len(data))])
            _closed_without_accept(r, "truncated CONNECT held open (connect timeout)", out)
        elif kind == "oversized":
            r.send(_rl_claim(0x10) + b"\x00\x04MQTT\x04\x02\x00\x3c")
            _closed_without_accept(r, "CONNECT claiming 256 MB", out)
        elif kind == "garbage":
            data = bytearray(rnd.randbytes(rnd.randrange(1, 3000)))
            if data[0] == 0x10:
                data[0] = 0x20  # not a CONNECT header: that case is "truncated"
            try:
                r.send(bytes(data))
            except OSError:
                return  # the broker may close while we are still sending
            _closed_without_accept(r, "random garbage", out)
        elif kind == "slow-ok":
            cid = b.client_id("slowok", seed % 2)
            r.send_slowly(connect_packet(cid), pause=0.03)  # ~0.7 s, within the timeout
            p = r.recv_packet(CLOSE_BOUND)
            if p.type != CONNACK or p.connack() != (0, 0):
                out.fail(f"slow but valid CONNECT refused: {p}")
            r.send(disconnect_packet())
            _closed_without_accept_any(r, "slow client after DISCONNECT", out)
        elif kind == "slow-too-slow":
            data = connect_packet(f"slowbad{seed}")
            try:
                for i in range(len(data)):
                    r.send(data[i:i + 1])
                    time.sleep(0.25)  # pacing: slower than the connect timeout allows in total
            except OSError:
                return  # closed by the broker mid-way: what we want
            out.fail("a CONNECT trickled over 4+ s was not cut off by --connect-timeout-secs 2")
        elif kind == "after-connect":
            name, clause, data = arg
            sp, rc = r.connect(b.client_id("hostile", seed % 2), keepalive=5)
            if rc != 0:
                out.fail(f"after-connect {name}: CONNACK rc={rc}")
                return
            r.send(data)
            try:
                got = r.wait_closed(CLOSE_BOUND)
            except OSError:
                got = []
            except AssertionError as e:
                out.fail(f"after-connect {name} {clause}: {e}")
                return
            if got:
                out.fail(f"after-connect {name} {clause}: broker answered {got}")
        elif kind == "garbage-after-connect":
            sp, rc = r.connect(b.client_id("junk", seed % 2), keepalive=2)
            if rc != 0:
                out.fail(f"garbage-after-connect: CONNACK rc={rc}")
                return
            try:
                r.send(rnd.randbytes(rnd.randrange(1, 3000)))
                # closed for bad input, or by the keep-alive timeout (3 s) if the
                # garbage happened to look like the start of a packet
                r.wait_closed(CLOSE_BOUND)
            except OSError:
                pass  # closed while we were still sending
            except AssertionError as e:
                out.fail(f"garbage-after-connect: {e}")
                return
        else:
            raise AssertionError(kind)
    except (ConnectionClosed, TimeoutError, OSError) as e:
        if kind in ("slow-ok", "after-connect", "garbage-after-connect"):
            out.fail(f"{kind}: {e!r}")  # these had to get through CONNECT
    finally:
        r.abort() if rnd.random() < 0.5 else r.close()


def _closed_without_accept_any(r: RawClient, what: str, out: Outcome) -> None:
    try:
        r.wait_closed(CLOSE_BOUND)
    except AssertionError as e:
        out.fail(f"{what}: {e}")
    except OSError:
        pass


class RoundTripLoop(threading.Thread):
    def __init__(self, healthy: Healthy):
        super().__init__(daemon=True)
        self.h = healthy
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.done = 0

    def run(self):
        while not self.stop.is_set():
            try:
                self.h.roundtrip(timeout=ROUNDTRIP_BOUND)
                self.done += 1
            except BaseException as e:  # reported by the test
                self.errors.append(repr(e))
                return
            self.stop.wait(0.01)  # pacing: keep a steady loop without hogging the 2 cores


def test_hostile_clients_do_not_disturb_healthy_ones(start_broker):
    """>= 300 bad connections from 12 threads -- invalid CONNECTs
    ([MQTT-3.1.2-1], [MQTT-3.1.2-3], [MQTT-3.1.0-1], ...), truncated CONNECTs
    (held open, or abandoned), CONNECTs announcing 256 MB, random garbage,
    byte-at-a-time CONNECTs (fast enough: accepted; too slow: cut off by
    --connect-timeout-secs), protocol violations after CONNECT ([MQTT-4.8.0-1],
    closed without an answer) and garbage after CONNECT -- while a healthy paho
    client on each shard loops QoS 1 round trips: every round trip succeeds
    within 5 s, every bad connection is closed by the broker in bounded time,
    the broker stays up without panicking, its fd count returns to the
    baseline, and shardmq_protocol_errors_total grows by at least the number
    of post-CONNECT violations."""
    b, port = start_with_metrics(start_broker, ["--connect-timeout-secs", str(CONNECT_TIMEOUT),
                                                "--sys-interval-secs", "0"])
    healthy = [Healthy(b, shard=0, prefix="hok"), Healthy(b, shard=1, prefix="hok")]
    loops = [RoundTripLoop(h) for h in healthy]
    fds_baseline = fd_count(b)
    errors_before = scrape(port).sum("shardmq_protocol_errors_total")
    for lp in loops:
        lp.start()

    plan = []
    plan += [("malformed", case) for case in MALFORMED_CONNECTS for _ in range(4)]          # 68
    plan += [("truncated-then-close", None)] * 30 + [("truncated-held", None)] * 30        # 60
    plan += [("oversized", None)] * 20                                                     # 20
    plan += [("garbage", None)] * 90                                                       # 90
    plan += [("slow-ok", None)] * 12 + [("slow-too-slow", None)] * 4                       # 16
    plan += [("after-connect", case) for case in AFTER_CONNECT for _ in range(3)]          # 45
    plan += [("garbage-after-connect", None)] * 20                                         # 20
    rnd = random.Random(1234)
    rnd.shuffle(plan)
    # The slow ones take seconds: start them first so they overlap the rest.
    plan.sort(key=lambda item: 0 if item[0].startswith("slow") else 1)
    out = Outcome()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(_attack, b, kind, arg, i, out) for i, (kind, arg) in enumerate(plan)]
        for f in futures:
            f.result(timeout=60)
    attack_secs = time.monotonic() - t0
    for lp in loops:
        lp.stop.set()
        lp.join(ROUNDTRIP_BOUND + 1)

    total = sum(out.sent.values())
    print(f"\nhostile: {total} bad connections in {attack_secs:.1f}s {dict(sorted(out.sent.items()))}; "
          f"round trips {[lp.done for lp in loops]}, worst "
          f"{max(max(h.latencies, default=0) for h in healthy) * 1000:.0f} ms")
    assert total == len(plan) >= 300
    assert out.failures == [], "\n".join(out.failures[:30])
    for lp, h in zip(loops, healthy):
        assert lp.errors == [], f"round trip loop on {h.client.client_id}: {lp.errors}"
        assert lp.done >= 3, "the round-trip loop barely ran"
        assert max(h.latencies) < ROUNDTRIP_BOUND
        h.roundtrip()  # still connected and serving after the storm
    assert b.alive()
    assert "panicked" not in b.log()

    fds = wait_fds_at_most(b, fds_baseline + 2, timeout=CLOSE_BOUND + 4)
    assert fds <= fds_baseline + 2, f"fd count {fds}, baseline {fds_baseline}"
    post_connect_violations = len(AFTER_CONNECT) * 3
    m = wait_metrics(port, lambda m: m.sum("shardmq_protocol_errors_total") - errors_before
                     >= post_connect_violations,
                     what=f"protocol_errors grew by >= {post_connect_violations}")
    print(f"protocol_errors +{m.sum('shardmq_protocol_errors_total') - errors_before:.0f}; "
          f"fds {fds_baseline} -> {fds}")
    for h in healthy:
        h.close()


def test_bad_input_before_connect_is_counted(start_broker):
    """Every connection the broker closes for bad input counts in
    shardmq_protocol_errors_total, including those whose first packet is not a
    valid CONNECT [MQTT-3.1.0-1] [MQTT-3.1.2-1] [MQTT-4.8.0-1]: a flood of
    those is exactly what an operator needs to see."""
    b, port = start_with_metrics(start_broker, ["--sys-interval-secs", "0"])
    before = scrape(port).sum("shardmq_protocol_errors_total")
    cases = [c for c in MALFORMED_CONNECTS if c[0] != "protocol-level-3"]  # that one is a refusal
    cases.append(("connect-256mb", "[MQTT-4.8.0-1]", _rl_claim(0x10) + b"\x00\x04MQTT"))
    out = Outcome()
    for name, clause, data in cases:
        r = RawClient(b.host, b.port)
        r.send(data)
        _closed_without_accept(r, name, out)
        r.close()
    assert out.failures == []
    wait_metrics(port, lambda m: m.sum("shardmq_protocol_errors_total") - before >= len(cases), timeout=3,
                 what=f"protocol_errors grew by {len(cases)}")
