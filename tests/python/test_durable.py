"""Durable sessions and retained messages (``--data-dir``).

Every test starts a private broker on a data directory of its own, stops it
(SIGTERM: graceful; SIGKILL: a crash) and starts another broker on the same
directory. What the first one held must come back in the second:

- persistent sessions (MQTT 3.1.1 CleanSession=0, MQTT 5 Session Expiry
  Interval > 0) with their subscriptions, their queued messages in order,
  their inflight window (re-sent with DUP=1 and the same packet ids) and the
  QoS 2 packet ids a publisher has not released yet;
- retained messages, and their clearing;
- not clean sessions, nor sessions whose expiry passed while the broker was
  down.

Under ``--sync always`` the broker acknowledges (PUBACK, PUBREC, PUBCOMP,
SUBACK, CONNACK) only what is on disk: whatever a publisher saw acknowledged
must survive ``kill -9``.

Each start logs ``data directory replayed`` with its figures (sessions,
retained, records, torn, corrupt, ...); the tests read them from the broker's
stderr. The torn-tail and corruption test reads the shard logs themselves:
``<dir>/CURRENT`` names the generation, ``<dir>/gen-<n>/shard-<i>/<seq>.log``
are the segments, made of records framed as ``len u32 | CRC32C u32 | body``
(body: a kind byte, then its fields; big-endian).

Publishers and subscribers are on different shards (the cross-core path)
throughout; every reconnect goes to the new broker's port.
"""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import BROKER_KIND, Broker
from mqtt_helpers import (
    PINGRESP,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    MqttClient,
    disconnect_packet,
    pingreq_packet,
    puback_packet,
    pubcomp_packet,
    publish_packet,
    pubrec_packet,
    pubrel_packet,
    shard_of,
    subscribe_packet,
    unique_topic_root,
)
from mqtt5_helpers import (  # noqa: F401  (fixtures)
    SESSION_EXPIRY_INTERVAL,
    disconnect5,
    raw5,
    sub_opts,
)

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq's --data-dir"),
    pytest.mark.timeout(60),
]

# --------------------------------------------------------------------------
# The data directory and the brokers that share it
# --------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain_log(broker: Broker) -> str:
    """The broker's stderr without terminal colours."""
    return _ANSI.sub("", broker.log())


def replay_stats(broker: Broker) -> dict[str, int]:
    """The numeric fields of the broker's ``data directory replayed`` line."""
    m = re.search(r"data directory replayed(.*)", plain_log(broker))
    assert m, f"no 'data directory replayed' line in the log:\n{plain_log(broker)[-2000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)(?=\s|$)", m.group(1))}


class DataDir:
    """A data directory shared by the successive brokers of one test.

    ``start`` starts a broker on it (through conftest's ``start_broker``, so
    every broker is checked for panics and exits of its own at teardown),
    ``stop`` sends SIGTERM, ``crash`` SIGKILL; ``restart`` does one of them
    and starts again with the same arguments unless told otherwise."""

    def __init__(self, start_broker, path: Path):
        self._start_broker = start_broker
        self.path = path
        self.broker: Broker | None = None
        self._kw: dict = {"cores": 2, "sync": "interval", "extra": ()}

    def start(self, **kw) -> Broker:
        assert self.broker is None or not self.broker.alive(), "the previous broker still runs"
        self._kw.update(kw)
        k = self._kw
        args = ["--data-dir", str(self.path), "--sync", k["sync"], *k["extra"]]
        self.broker = self._start_broker(extra_args=args, cores=k["cores"])
        return self.broker

    def stop(self) -> None:
        """SIGTERM; the broker must exit by itself with status 0 (conftest's
        ``kill`` would SIGKILL it after 5 s)."""
        b = self.broker
        b.kill()
        assert b.proc.returncode == 0, f"broker did not stop cleanly on SIGTERM: status {b.proc.returncode}"

    def crash(self) -> None:
        """``kill -9``: nothing the broker did not write survives."""
        b = self.broker
        b.stopped_by_us = True
        os.killpg(b.proc.pid, signal.SIGKILL)
        b.proc.wait(5)

    def restart(self, how: str = "sigterm", **kw) -> Broker:
        assert how in ("sigterm", "sigkill")
        (self.crash if how == "sigkill" else self.stop)()
        return self.start(**kw)

    def replayed(self) -> dict[str, int]:
        return replay_stats(self.broker)

    # -- the files ---------------------------------------------------------
    def generation(self) -> int:
        return int((self.path / "CURRENT").read_text().strip())

    def segments(self, shard: int) -> list[Path]:
        d = self.path / f"gen-{self.generation()}" / f"shard-{shard}"
        return sorted(d.glob("*.log"))

    def all_segments(self) -> list[Path]:
        return sorted((self.path / f"gen-{self.generation()}").glob("shard-*/*.log"))


@pytest.fixture
def data_dir(start_broker):
    """A fresh data directory; its last broker is stopped (SIGTERM) before the
    directory goes (``start_broker`` then checks every broker of the test)."""
    with tempfile.TemporaryDirectory(prefix="shardmq-durable-") as d:
        dd = DataDir(start_broker, Path(d) / "data")
        yield dd
        if dd.broker is not None:
            dd.broker.kill()


# --------------------------------------------------------------------------
# Reading the shard logs (torn tail / corruption test)
# --------------------------------------------------------------------------

HEAD = 8  # len u32 + CRC32C u32
K_SESSION, K_MESSAGE, K_PENDING = 1, 5, 6
_KINDS_WITH_SERIAL = {1, 2, 3, 4, 6, 7, 8, 9, 10, 11}


@dataclass
class LogRecord:
    offset: int
    size: int  # head included
    body: bytes

    @property
    def kind(self) -> int:
        return self.body[0]

    @property
    def serial(self) -> int | None:
        return struct.unpack_from("!Q", self.body, 1)[0] if self.kind in _KINDS_WITH_SERIAL else None

    @property
    def client_id(self) -> str | None:
        """A Session record's client id (kind, serial u64, fresh u8, id)."""
        if self.kind != K_SESSION:
            return None
        n = struct.unpack_from("!H", self.body, 10)[0]
        return self.body[12:12 + n].decode()


def log_records(path: Path) -> list[LogRecord]:
    """The whole records of a segment (a torn tail is left out)."""
    data = path.read_bytes()
    out, at = [], 0
    while at + HEAD <= len(data):
        length = struct.unpack_from("!I", data, at)[0]
        if length == 0 or at + HEAD + length > len(data):
            break
        out.append(LogRecord(at, HEAD + length, data[at + HEAD:at + HEAD + length]))
        at += HEAD + length
    return out


def serials_of(records: list[LogRecord], client_id: str) -> set[int]:
    return {r.serial for r in records if r.kind == K_SESSION and r.client_id == client_id}


def pending_count(records: list[LogRecord], serials: set[int]) -> int:
    """Messages that joined these sessions' queues (one Pending record each)."""
    return sum(1 for r in records if r.kind == K_PENDING and r.serial in serials)


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------

def persistent(mqtt_client, broker: Broker, client_id: str, present: bool) -> MqttClient:
    """A CleanSession=0 paho client connected to ``broker``; asserts the
    CONNACK's Session Present flag [MQTT-3.1.2-4] [MQTT-3.2.2-2] [MQTT-3.2.2-3]."""
    c = mqtt_client(broker_=broker, client_id=client_id, clean_session=False, connect=False)
    sp = c.connect()
    assert sp is present, (f"{client_id}: CONNACK Session Present={int(sp)}, expected {int(present)} "
                           f"[MQTT-3.2.2-2] [MQTT-3.2.2-3]")
    return c


def publish_all(pub: MqttClient, topic: str, payloads: list[bytes], qos: int, retain: bool = False) -> None:
    """Publish every payload (paho keeps its window), then wait until each is acknowledged."""
    infos = [pub.publish(topic, p, qos=qos, retain=retain, wait=False) for p in payloads]
    for info in infos:
        pub.wait_published(info, timeout=15)


def expect_exactly(sub: MqttClient, topic: str, payloads: list[bytes], qos: int, sentinel_pub: MqttClient,
                   timeout: float = 15) -> None:
    """``sub`` receives exactly ``payloads`` on ``topic`` at ``qos``, in order
    [MQTT-4.6.0-1]: then a sentinel published afterwards (at the same QoS:
    paho hands a QoS 2 message over only at its PUBREL, so a QoS 1 sentinel
    could overtake it) arrives with nothing before it (no duplicate, no extra
    message)."""
    msgs = sub.expect(len(payloads), timeout=timeout)
    got = [m.payload for m in msgs]
    if got != payloads:
        missing = [p for p in payloads if p not in set(got)]
        raise AssertionError(f"{sub.client_id}: {len(got)} messages, {len(missing)} of the {len(payloads)} "
                             f"expected missing (first: {missing[:5]}); got[:10]={got[:10]} "
                             "[MQTT-4.6.0-1] [MQTT-4.3.3-2]")
    assert all(m.topic == topic and m.qos == qos for m in msgs), \
        f"{sub.client_id}: wrong topic/QoS: {[(m.topic, m.qos) for m in msgs if m.topic != topic or m.qos != qos][:5]}"
    sentinel_pub.publish(topic, b"sentinel", qos=qos)
    _, before = sub.get_until(lambda m: m.payload == b"sentinel", timeout=timeout)
    assert before == [], f"{sub.client_id}: messages delivered twice or unexpected: {before[:5]} [MQTT-4.3.3-2]"


def sync_point(raw) -> None:
    """PINGREQ/PINGRESP: the broker has handled everything sent before (and,
    under ``--sync always``, logged it: the PINGRESP waits behind the records)."""
    raw.send(pingreq_packet())
    raw.recv_until(PINGRESP)


def raw_publish(raw):
    """The next packet, which must be a PUBLISH, parsed."""
    p = raw.recv_packet()
    assert p.type == PUBLISH, f"expected PUBLISH, got {p}"
    return p.publish()


RESTARTS = [
    pytest.param("sigterm", "interval", id="sigterm"),
    pytest.param("sigkill", "always", id="sigkill-sync-always"),
]


# --------------------------------------------------------------------------
# 1, 2: offline queues across a restart
# --------------------------------------------------------------------------

@pytest.mark.parametrize("how,sync", RESTARTS)
def test_offline_queues_survive_restart(data_dir, mqtt_client, how, sync):
    """[MQTT-3.1.2-4] [MQTT-3.2.2-2] [MQTT-4.6.0-1] [MQTT-4.3.3-2]
    Persistent subscribers, QoS 1 on shard 0 and QoS 2 on shard 1, go
    offline; a publisher on the other shard sends each 200 messages. After a
    restart on the same data directory (SIGTERM; or ``kill -9`` right after
    the last acknowledgement under ``--sync always``) they reconnect with
    Session Present=1 and receive every message exactly once, in order."""
    b = data_dir.start(sync=sync)
    root = unique_topic_root("dq")
    n = 200
    subs = {}  # qos -> (client id, shard, topic)
    for qos, shard in ((1, 0), (2, 1)):
        cid = b.client_id(f"dq{qos}", shard)
        t = f"{root}/q{qos}"
        s = persistent(mqtt_client, b, cid, present=False)
        assert s.subscribe(t, qos) == [qos]
        s.disconnect()
        subs[qos] = (cid, shard, t)
    sent = {qos: [b"%s-%03d" % (b"q%d" % qos, i) for i in range(n)] for qos in subs}
    for qos, (_cid, shard, t) in subs.items():
        pub = mqtt_client(broker_=b, shard=1 - shard, prefix="dp")
        publish_all(pub, t, sent[qos], qos)
    # SIGKILL right after the last acknowledgement: nothing is given time to settle.
    b2 = data_dir.restart(how)
    stats = data_dir.replayed()
    assert stats["sessions"] == 2 and stats["corrupt"] == 0, stats
    for qos, (cid, shard, t) in subs.items():
        s = persistent(mqtt_client, b2, cid, present=True)
        pub = mqtt_client(broker_=b2, shard=1 - shard, prefix="dp")
        expect_exactly(s, t, sent[qos], qos, pub)


# --------------------------------------------------------------------------
# 3: retained messages
# --------------------------------------------------------------------------

def _retained(sub: MqttClient, n: int) -> dict[str, tuple[bytes, int]]:
    msgs = sub.expect(n, timeout=10)
    assert all(m.retain for m in msgs), f"RETAIN=1 expected on stored messages [MQTT-3.3.1-6]: {msgs}"
    got = {m.topic: (m.payload, m.qos) for m in msgs}
    assert len(got) == n, f"a retained topic delivered twice: {msgs}"
    sub.expect_none(0.5)
    return got


@pytest.mark.parametrize("how,sync", RESTARTS)
def test_retained_messages_survive_restart(data_dir, mqtt_client, how, sync):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-10] [MQTT-3.3.1-11]
    Retained messages set before a restart (one replaced, one at QoS 2) are
    sent to a new subscriber after it, with RETAIN=1; a topic cleared with an
    empty payload before the restart stays cleared. A clear made after the
    first restart survives a second one."""
    b = data_dir.start(sync=sync)
    root = unique_topic_root("dr")
    pub = mqtt_client(broker_=b, shard=0, prefix="rp")
    pub.publish(f"{root}/keep", b"kept", qos=1, retain=True)
    pub.publish(f"{root}/replaced", b"old", qos=1, retain=True)
    pub.publish(f"{root}/replaced", b"new", qos=1, retain=True)
    pub.publish(f"{root}/cleared", b"gone", qos=1, retain=True)
    pub.publish(f"{root}/cleared", b"", qos=1, retain=True)
    pub.publish(f"{root}/two", b"qos2", qos=2, retain=True)
    b = data_dir.restart(how)
    stats = data_dir.replayed()
    assert stats["retained"] == 3, f"3 retained topics expected in the replay: {stats}"
    sub = mqtt_client(broker_=b, shard=1, prefix="rs")
    assert sub.subscribe(f"{root}/#", 2) == [2]
    assert _retained(sub, 3) == {
        f"{root}/keep": (b"kept", 1),
        f"{root}/replaced": (b"new", 1),
        f"{root}/two": (b"qos2", 2),
    }, "retained messages after the restart [MQTT-3.3.1-5]"
    sub2 = mqtt_client(broker_=b, shard=1, prefix="rs")
    assert sub2.subscribe(f"{root}/cleared", 1) == [1]
    sub2.expect_none(0.5)  # [MQTT-3.3.1-10] the cleared topic stays cleared
    # Clear one on the new broker (from the other shard), restart again.
    pub2 = mqtt_client(broker_=b, shard=1, prefix="rp")
    pub2.publish(f"{root}/keep", b"", qos=1, retain=True)
    b = data_dir.restart(how)
    assert data_dir.replayed()["retained"] == 2, data_dir.replayed()
    sub3 = mqtt_client(broker_=b, shard=1, prefix="rs")
    assert sub3.subscribe(f"{root}/#", 2) == [2]
    assert _retained(sub3, 2) == {f"{root}/replaced": (b"new", 1), f"{root}/two": (b"qos2", 2)}


# --------------------------------------------------------------------------
# 4: subscriptions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("how,sync", RESTARTS)
def test_subscriptions_survive_restart(data_dir, mqtt_client, how, sync):
    """[MQTT-3.1.2-4] [MQTT-3.1.2-5] The subscriptions of an offline
    persistent session survive a restart: messages published after the
    restart, while the subscriber is still offline, are queued for it (exact
    filter at QoS 2, wildcard filter at QoS 1) and delivered when it
    reconnects with Session Present=1 without subscribing again. A filter
    unsubscribed before the restart stays unsubscribed [MQTT-3.10.4-1]."""
    b = data_dir.start(sync=sync)
    root = unique_topic_root("ds")
    cid = b.client_id("ds", 1)
    s = persistent(mqtt_client, b, cid, present=False)
    assert s.subscribe(f"{root}/exact", 2) == [2]
    assert s.subscribe(f"{root}/+/w", 1) == [1]
    assert s.subscribe(f"{root}/gone", 1) == [1]
    s.unsubscribe(f"{root}/gone")
    s.disconnect()
    b = data_dir.restart(how)
    assert data_dir.replayed()["sessions"] == 1
    pub = mqtt_client(broker_=b, shard=0, prefix="dp")
    pub.publish(f"{root}/gone", b"unsubscribed", qos=1)
    publish_all(pub, f"{root}/exact", [b"e%d" % i for i in range(5)], 2)
    publish_all(pub, f"{root}/a/w", [b"w%d" % i for i in range(5)], 1)
    s = persistent(mqtt_client, b, cid, present=True)
    msgs = s.expect(10, timeout=10)
    assert not [m for m in msgs if m.topic == f"{root}/gone"], "a filter unsubscribed before the restart came back"
    assert [(m.payload, m.qos) for m in msgs if m.topic == f"{root}/exact"] == [(b"e%d" % i, 2) for i in range(5)]
    assert [(m.payload, m.qos) for m in msgs if m.topic == f"{root}/a/w"] == [(b"w%d" % i, 1) for i in range(5)]
    pub.publish(f"{root}/exact", b"sentinel", qos=1)
    _, before = s.get_until(lambda m: m.payload == b"sentinel")
    assert before == [], f"unsubscribed filter came back, or duplicates: {before}"


# --------------------------------------------------------------------------
# 5: the outbound inflight window
# --------------------------------------------------------------------------

@pytest.mark.parametrize("how,sync", RESTARTS)
def test_inflight_qos1_resent_after_restart(data_dir, raw_client, mqtt_client, how, sync):
    """[MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-1] A raw CleanSession=0
    subscriber receives 6 QoS 1 PUBLISHes and acknowledges only the first 2;
    one more message is queued while it is offline. After a restart its
    reconnect gets Session Present=1, then the 4 unacknowledged messages again
    with DUP=1 and their original packet ids, in order, then the queued one
    (DUP=0, a packet id not in use). Nothing acknowledged is re-sent, and once
    everything is acknowledged a further restart re-sends nothing."""
    b = data_dir.start(sync=sync)
    t = f"{unique_topic_root('di')}/q"
    cid = b.client_id("di", 1)
    raw = raw_client(broker_=b)
    assert raw.connect(cid, clean=False) == (0, 0)
    raw.send(subscribe_packet(1, [(t, 1)]))
    assert raw.recv_packet().suback() == (1, [1])
    pub = mqtt_client(broker_=b, shard=0, prefix="ip")
    publish_all(pub, t, [b"m%d" % i for i in range(6)], 1)
    first = [raw_publish(raw) for _ in range(6)]
    assert [(p.payload, p.qos, p.dup) for p in first] == [(b"m%d" % i, 1, False) for i in range(6)]
    assert len({p.pid for p in first}) == 6
    raw.send(puback_packet(first[0].pid) + puback_packet(first[1].pid))
    sync_point(raw)
    raw.send(disconnect_packet())
    raw.wait_closed()
    pub.publish(t, b"queued", qos=1)
    pub.disconnect()

    b = data_dir.restart(how)
    raw2 = raw_client(broker_=b)
    assert raw2.connect(cid, clean=False) == (1, 0), "Session Present=1 expected [MQTT-3.2.2-2]"
    again = [raw_publish(raw2) for _ in range(5)]
    assert [(p.payload, p.pid, p.dup, p.qos) for p in again[:4]] == \
        [(f.payload, f.pid, True, 1) for f in first[2:]], \
        "unacknowledged messages must be re-sent first, DUP=1, same packet ids, in order [MQTT-4.4.0-1] [MQTT-4.6.0-1]"
    q = again[4]
    assert (q.payload, q.dup, q.qos) == (b"queued", False, 1), f"the queued message next, DUP=0: {q}"
    assert q.pid not in {f.pid for f in first[2:]}, "packet id of an unacknowledged message reused"
    raw2.expect_no_packet(0.5)
    raw2.send(b"".join(puback_packet(p.pid) for p in again))
    sync_point(raw2)
    raw2.send(disconnect_packet())
    raw2.wait_closed()

    b = data_dir.restart(how)
    raw3 = raw_client(broker_=b)
    assert raw3.connect(cid, clean=False) == (1, 0)
    raw3.expect_no_packet(0.7)  # acknowledged before the restart: nothing to re-send


@pytest.mark.parametrize("how,sync", RESTARTS)
def test_inflight_qos2_resent_after_restart(data_dir, raw_client, mqtt_client, how, sync):
    """[MQTT-4.4.0-1] [MQTT-4.3.3-2] A raw CleanSession=0 subscriber gets 3
    QoS 2 PUBLISHes; it answers the first with PUBREC (the broker sends
    PUBREL) and never completes, the others not at all. After a restart the
    broker re-sends the PUBREL of the first (same packet id) and the other
    two PUBLISHes with DUP=1 and their packet ids, never the first PUBLISH
    again; after the flows complete, a further restart re-sends nothing."""
    b = data_dir.start(sync=sync)
    t = f"{unique_topic_root('dj')}/q"
    cid = b.client_id("dj", 1)
    raw = raw_client(broker_=b)
    assert raw.connect(cid, clean=False) == (0, 0)
    raw.send(subscribe_packet(1, [(t, 2)]))
    assert raw.recv_packet().suback() == (1, [2])
    pub = mqtt_client(broker_=b, shard=0, prefix="jp")
    publish_all(pub, t, [b"x0", b"x1", b"x2"], 2)
    first = [raw_publish(raw) for _ in range(3)]
    assert [(p.payload, p.qos, p.dup) for p in first] == [(b"x%d" % i, 2, False) for i in range(3)]
    raw.send(pubrec_packet(first[0].pid))
    rel, _ = raw.recv_until(PUBREL)
    assert rel.pid() == first[0].pid
    sync_point(raw)
    raw.send(disconnect_packet())
    raw.wait_closed()
    pub.disconnect()

    b = data_dir.restart(how)
    raw2 = raw_client(broker_=b)
    assert raw2.connect(cid, clean=False) == (1, 0)
    got = [raw2.recv_packet() for _ in range(3)]
    rels = [p for p in got if p.type == PUBREL]
    pubs = [p.publish() for p in got if p.type == PUBLISH]
    assert [p.pid() for p in rels] == [first[0].pid], \
        f"PUBREL of the released message must be re-sent with its packet id [MQTT-4.4.0-1]: {got}"
    assert [(p.payload, p.pid, p.dup) for p in pubs] == [(f.payload, f.pid, True) for f in first[1:]], \
        f"unreleased PUBLISHes re-sent with DUP=1 and their ids, the released one never [MQTT-4.3.3-2]: {got}"
    raw2.expect_no_packet(0.5)
    raw2.send(pubcomp_packet(first[0].pid))
    for p in pubs:
        raw2.send(pubrec_packet(p.pid))
        rel, _ = raw2.recv_until(PUBREL)
        assert rel.pid() == p.pid
        raw2.send(pubcomp_packet(p.pid))
    sync_point(raw2)
    raw2.send(disconnect_packet())
    raw2.wait_closed()

    b = data_dir.restart(how)
    raw3 = raw_client(broker_=b)
    assert raw3.connect(cid, clean=False) == (1, 0)
    raw3.expect_no_packet(0.7)


# --------------------------------------------------------------------------
# 6: QoS 2 from a publisher, unreleased at the restart
# --------------------------------------------------------------------------

def release(raw, pid: int) -> None:
    """PUBREL for ``pid``, answered by its PUBCOMP [MQTT-4.3.3]."""
    raw.send(pubrel_packet(pid))
    comp = raw.recv_packet()
    assert (comp.type, comp.pid()) == (PUBCOMP, pid), comp


def publish_qos2(raw, topic: str, payload: bytes, pid: int) -> None:
    """A whole QoS 2 exchange from a raw publisher: PUBLISH, PUBREC, PUBREL, PUBCOMP."""
    raw.send(publish_packet(topic, payload, qos=2, pid=pid))
    rec = raw.recv_packet()
    assert (rec.type, rec.pid()) == (PUBREC, pid), rec
    release(raw, pid)


@pytest.mark.parametrize("how,sync,resend", [
    pytest.param("sigterm", "interval", "publish", id="sigterm-dup-publish"),
    pytest.param("sigkill", "always", "publish", id="sigkill-sync-always-dup-publish"),
    pytest.param("sigkill", "always", "pubrel", id="sigkill-sync-always-pubrel-only"),
])
def test_inbound_qos2_awaiting_pubrel_survives_restart(data_dir, raw_client, mqtt_client, how, sync, resend):
    """[MQTT-4.3.3-2] [MQTT-4.4.0-1] A raw CleanSession=0 publisher sends a
    QoS 2 PUBLISH with packet id 7 and gets PUBREC, but sends no PUBREL
    before the restart. After it, it reconnects (Session Present=1), re-sends
    the PUBLISH with DUP=1 (again PUBREC 7; or goes straight to PUBREL), then
    PUBREL (PUBCOMP 7): the persistent subscriber on the other shard gets the
    message exactly once. Packet id 7 is free again afterwards: a new QoS 2
    PUBLISH with it is a new message, delivered."""
    b = data_dir.start(sync=sync)
    t = f"{unique_topic_root('dk')}/q"
    sub_id = b.client_id("dks", 1)
    s = persistent(mqtt_client, b, sub_id, present=False)
    assert s.subscribe(t, 2) == [2]
    s.disconnect()
    pub_id = b.client_id("dkp", 0)
    raw = raw_client(broker_=b)
    assert raw.connect(pub_id, clean=False) == (0, 0)
    raw.send(publish_packet(t, b"once", qos=2, pid=7))
    rec = raw.recv_packet()
    assert (rec.type, rec.pid()) == (PUBREC, 7), rec
    raw.close()  # no PUBREL

    b = data_dir.restart(how)
    assert data_dir.replayed()["sessions"] == 2
    raw2 = raw_client(broker_=b)
    assert raw2.connect(pub_id, clean=False) == (1, 0), "the publisher's session must be present [MQTT-3.2.2-2]"
    if resend == "publish":
        raw2.send(publish_packet(t, b"once", qos=2, pid=7, dup=True))
        rec = raw2.recv_packet()
        assert (rec.type, rec.pid()) == (PUBREC, 7), rec
    release(raw2, 7)
    # Id 7 is released: a new message may use it.
    publish_qos2(raw2, t, b"second", 7)
    # The sentinel at QoS 2 as well: paho hands QoS 2 messages over at PUBREL.
    publish_qos2(raw2, t, b"sentinel", 8)

    s = persistent(mqtt_client, b, sub_id, present=True)
    m, before = s.get_until(lambda m: m.payload == b"sentinel", timeout=10)
    got = [x.payload for x in before]
    assert got == [b"once", b"second"], \
        f"QoS 2 must be delivered exactly once across the restart [MQTT-4.3.3-2]: {got}"
    s.expect_none(0.3)


# --------------------------------------------------------------------------
# 7: kill -9 rounds under publishing load
# --------------------------------------------------------------------------

class Flood(threading.Thread):
    """A paho publisher (clean session) sending ``<stream>:<seq>`` payloads at
    ``qos`` as fast as its acknowledgements allow (``window`` unacknowledged
    at most), until halted, until its connection drops, or ``cap`` messages."""

    def __init__(self, broker: Broker, client_id: str, topic: str, qos: int, stream: str,
                 window: int = 64, cap: int = 10000):
        super().__init__(daemon=True, name=f"flood-{stream}")
        self.client = MqttClient(broker.host, broker.port, client_id)
        self.client.c.max_inflight_messages_set(window)
        self.topic, self.qos, self.stream = topic, qos, stream
        self.window, self.cap = window, cap
        self.infos: list = []  # index = sequence number
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            pending: deque = deque()
            c = self.client.c
            while len(self.infos) < self.cap and not self.halt.is_set() and not self.client.disconnected.is_set():
                while pending and pending[0].is_published():
                    pending.popleft()
                if len(pending) >= self.window:
                    pending[0].wait_for_publish(0.05)
                    continue
                info = c.publish(self.topic, f"{self.stream}:{len(self.infos)}".encode(), qos=self.qos)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                self.infos.append(info)
                pending.append(info)
        except BaseException as e:  # noqa: BLE001  (reported by the test)
            self.error = e

    def acked(self) -> list[int]:
        """Sequence numbers whose PUBACK (QoS 1) / PUBCOMP (QoS 2) arrived."""
        return [i for i, info in enumerate(self.infos) if info.is_published()]


@pytest.mark.timeout(120)
def test_kill9_rounds_lose_no_acknowledged_message(data_dir, mqtt_client):
    """[MQTT-4.3.2-2] [MQTT-4.3.3-2] [MQTT-4.6.0-1] Under ``--sync always``,
    20 rounds on 2 shards: a QoS 1 publisher (shard 0) and a QoS 2 publisher
    (shard 1) publish as fast as they can to the topics of two offline
    persistent subscribers with QoS 2 subscriptions, each on the shard of the
    OTHER publisher (every message crosses shards); the broker is killed with
    SIGKILL at a random moment and restarted. After each restart the
    subscribers reconnect (Session Present=1), collect what is queued (up to
    a sentinel published behind it) and go offline again before the next
    round, so that their own acknowledgements live through the later crashes
    too. At the end: every message whose PUBACK/PUBCOMP its publisher received
    was delivered; QoS 2 messages at most once; each publisher's messages in
    the order it sent them (QoS 1 duplicates, which the QoS allows, aside).
    Every replay finds both sessions and no corrupt record.

    Collecting after every round keeps each queue at one round's worth: the
    start-up restore takes time that grows about quadratically with the
    messages queued in one session (about 3.5 s for 16,000)."""
    rounds = 20
    seed = int(os.environ.get("DURABLE_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    ctx = f"(seed {seed}; rerun with DURABLE_SEED={seed})"
    b = data_dir.start(sync="always", extra=["--mqueue-len-max", "100000"])
    root = unique_topic_root("dz")
    # publisher QoS -> (topic, publisher shard, subscriber client id on the other shard)
    plan = {1: (f"{root}/q1", 0, b.client_id("dz1", 1)), 2: (f"{root}/q2", 1, b.client_id("dz2", 0))}
    for qos, (t, _ps, sid) in plan.items():
        s = persistent(mqtt_client, b, sid, present=False)
        assert s.subscribe(t, 2) == [2]
        s.disconnect()
    published: dict[str, int] = {}  # stream -> messages published
    acked: dict[str, list[int]] = {}  # stream -> acknowledged seqs
    delivered: dict[str, list[int]] = {}  # stream -> delivered seqs, in arrival order
    volume = []

    def collect(b: Broker, r: int) -> None:
        for qos, (t, ps, sid) in plan.items():
            s = persistent(mqtt_client, b, sid, present=True)
            sentinel = mqtt_client(broker_=b, shard=ps, prefix="zs")
            mark = f"sentinel:{r}".encode()
            sentinel.publish(t, mark, qos=qos)  # same QoS: paho hands QoS 2 over at PUBREL
            _, before = s.get_until(lambda m: m.payload == mark, timeout=30)
            s.disconnect()
            sentinel.disconnect()
            for m in before:
                stream, _, seq = m.payload.decode().partition(":")
                if stream == "sentinel":
                    continue  # an earlier round's, re-sent (QoS 1 allows it)
                assert stream in published and int(seq) < published[stream], f"never published: {m} {ctx}"
                assert stream.endswith(f"q{qos}") and m.qos == qos, f"wrong topic or QoS: {m} {ctx}"
                delivered.setdefault(stream, []).append(int(seq))

    deadline = time.monotonic() + 75
    for r in range(rounds):
        assert time.monotonic() < deadline, f"kill -9 rounds too slow: {r} rounds in 75 s {ctx}"
        floods = [Flood(b, b.client_id(f"fz{qos}", ps), t, qos, f"r{r}q{qos}") for qos, (t, ps, _s) in plan.items()]
        for f in floods:
            f.client.connect()
        for f in floods:
            f.start()
        time.sleep(rng.uniform(0.3, 0.9))  # the crash comes at a random moment of the flood
        data_dir.crash()
        for f in floods:
            f.halt.set()
            f.join(10)
            assert not f.is_alive(), f"{f.name} did not stop {ctx}"
            f.client.stop()
            assert f.error is None, f"{f.name}: {f.error!r} {ctx}"
            published[f.stream] = len(f.infos)
            acked[f.stream] = f.acked()
            assert acked[f.stream], f"round {r}: {f.stream} got no acknowledgement before the crash {ctx}"
        volume.append(sum(len(f.infos) for f in floods))
        b = data_dir.start()
        stats = data_dir.replayed()
        assert stats["sessions"] == 2, f"round {r}: both subscriber sessions must be replayed: {stats} {ctx}"
        assert stats["corrupt"] == 0, f"round {r}: a crash cannot corrupt a record: {stats} {ctx}"
        collect(b, r)

    problems = []
    for stream in sorted(published, key=lambda s: (int(s[1:].split("q")[0]), s)):
        got = delivered.get(stream, [])
        lost = sorted(set(acked[stream]) - set(got))
        if lost:
            problems.append(f"{stream}: {len(lost)} acknowledged messages lost "
                            f"(published {published[stream]}, acked {len(acked[stream])}, delivered {len(got)}): "
                            f"seqs {lost[:10]}{'...' if len(lost) > 10 else ''}")
        if stream.endswith("q2"):
            if len(got) != len(set(got)):
                problems.append(f"{stream}: {len(got) - len(set(got))} QoS 2 messages delivered twice [MQTT-4.3.3-2]")
            if got != sorted(got):
                problems.append(f"{stream}: out of order [MQTT-4.6.0-1]: {got[:20]}")
        else:
            firsts = list(dict.fromkeys(got))
            if firsts != sorted(firsts):
                problems.append(f"{stream}: out of order [MQTT-4.6.0-1]: {firsts[:20]}")
    total_acked = sum(len(a) for a in acked.values())
    assert not problems, (f"{len(problems)} problems in {rounds} rounds ({total_acked} messages acknowledged, "
                          f"published per round {volume}) {ctx}:\n" + "\n".join(problems))


# --------------------------------------------------------------------------
# 8: torn tail, corrupt record
# --------------------------------------------------------------------------

def test_torn_tail_and_corrupt_record(data_dir, mqtt_client):
    """A shard log whose last record was cut short (a crash in the middle of a
    write) loses that record only: the broker starts, logs "log ends inside
    a record", replays every record before it (its ``records`` figure) and
    the session is there (Session Present=1 [MQTT-3.2.2-2]) with the messages
    those records hold, in order. A flipped byte in the middle of a segment
    ends that segment's replay: the broker starts, logs "corrupt log record",
    keeps what the records before it hold and everything of the other shard;
    the next generation it writes is clean."""
    s_shard, o_shard = 1, 0
    b = data_dir.start()
    root = unique_topic_root("dt")
    a_id = b.client_id("dta", s_shard)
    a = persistent(mqtt_client, b, a_id, present=False)
    assert a.subscribe(f"{root}/a", 1) == [1]
    a.disconnect()
    pub = mqtt_client(broker_=b, shard=o_shard, prefix="dtp")
    sent_a = [b"a%d" % i for i in range(8)]
    publish_all(pub, f"{root}/a", sent_a, 1)
    data_dir.stop()

    # -- torn tail: cut 3 bytes off the last record of the subscriber's shard
    segs = data_dir.segments(s_shard)
    seg = segs[-1]
    recs = log_records(seg)
    size = seg.stat().st_size
    assert recs and recs[-1].offset + recs[-1].size == size, "the log should end with a whole record"
    other = sum(len(log_records(p)) for p in data_dir.all_segments() if p != seg)
    os.truncate(seg, size - 3)
    kept = recs[:-1]
    expect_a = pending_count(kept, serials_of(kept, a_id))
    assert expect_a >= len(sent_a) - 1, f"layout: {expect_a} of A's messages before the torn record"

    b = data_dir.start()
    stats = data_dir.replayed()
    assert "log ends inside a record" in plain_log(b), plain_log(b)[-2000:]
    assert (stats["torn"], stats["corrupt"]) == (1, 0), stats
    assert stats["records"] == len(kept) + other, f"every record before the torn one is replayed: {stats}"
    assert stats["sessions"] == 1, stats
    pub = mqtt_client(broker_=b, shard=o_shard, prefix="dtp")
    a = persistent(mqtt_client, b, a_id, present=True)
    expect_exactly(a, f"{root}/a", sent_a[:expect_a], 1, pub)
    a.disconnect()
    # More state in this generation: A's queue, then B (same shard, many
    # messages), C on the other shard.
    sent_a2 = [b"a2-%d" % i for i in range(3)]
    publish_all(pub, f"{root}/a", sent_a2, 1)
    b_id = b.client_id("dtb", s_shard)
    bb = persistent(mqtt_client, b, b_id, present=False)
    assert bb.subscribe(f"{root}/b", 1) == [1]
    bb.disconnect()
    c_id = b.client_id("dtc", o_shard)
    cc = persistent(mqtt_client, b, c_id, present=False)
    assert cc.subscribe(f"{root}/c", 1) == [1]
    cc.disconnect()
    sent_b = [b"b%d" % i for i in range(30)]
    publish_all(pub, f"{root}/b", sent_b, 1)
    pub_c = mqtt_client(broker_=b, shard=s_shard, prefix="dtq")
    sent_c = [b"c%d" % i for i in range(5)]
    publish_all(pub_c, f"{root}/c", sent_c, 1)
    data_dir.stop()

    # -- corruption: flip a byte in the body of the middle Pending record of B
    segs = data_dir.segments(s_shard)
    assert len(segs) == 1
    seg = segs[0]
    recs = log_records(seg)
    assert recs[-1].offset + recs[-1].size == seg.stat().st_size
    b_serials = serials_of(recs, b_id)
    b_pending = [i for i, r in enumerate(recs) if r.kind == K_PENDING and r.serial in b_serials]
    assert len(b_pending) == len(sent_b), f"layout: {len(b_pending)} Pending records for B"
    k = b_pending[len(b_pending) // 2]
    assert len(recs) // 4 < k, f"layout: the corrupt record should be in the middle of the segment ({k}/{len(recs)})"
    victim = recs[k]
    before = recs[:k]
    expect_b = pending_count(before, b_serials)
    assert 0 < expect_b < len(sent_b)
    a_serials = serials_of(recs, a_id)
    assert all(i < k for i, r in enumerate(recs) if r.serial in a_serials), "layout: A's records come first"
    other = sum(len(log_records(p)) for p in data_dir.all_segments() if p != seg)
    data = bytearray(seg.read_bytes())
    data[victim.offset + HEAD + (victim.size - HEAD) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))

    b = data_dir.start()
    stats = data_dir.replayed()
    assert "corrupt log record" in plain_log(b), plain_log(b)[-2000:]
    assert (stats["torn"], stats["corrupt"]) == (0, 1), stats
    assert stats["records"] == k + other, f"replay must stop exactly at the corrupt record: {stats}"
    assert stats["sessions"] == 3, stats
    pub = mqtt_client(broker_=b, shard=o_shard, prefix="dtp")
    pub_c = mqtt_client(broker_=b, shard=s_shard, prefix="dtq")
    a = persistent(mqtt_client, b, a_id, present=True)
    expect_exactly(a, f"{root}/a", sent_a2, 1, pub)
    bb = persistent(mqtt_client, b, b_id, present=True)
    expect_exactly(bb, f"{root}/b", sent_b[:expect_b], 1, pub)
    cc = persistent(mqtt_client, b, c_id, present=True)
    expect_exactly(cc, f"{root}/c", sent_c, 1, pub_c)
    for c in (a, bb, cc):
        c.disconnect()

    # The generation written from the damaged one is whole.
    data_dir.restart()
    stats = data_dir.replayed()
    assert (stats["torn"], stats["corrupt"], stats["sessions"]) == (0, 0, 3), stats


# --------------------------------------------------------------------------
# 9: changing --cores
# --------------------------------------------------------------------------

def test_sessions_rehomed_when_cores_change(data_dir, mqtt_client):
    """[MQTT-3.1.2-4] [MQTT-4.6.0-1] [MQTT-3.3.1-5] Two persistent sessions
    (on shard 0 and shard 1 of 2; QoS 1 and QoS 2) and their queues survive
    ``--cores 2`` -> ``--cores 1`` -> ``--cores 2``; messages queued in each
    phase arrive once, in order, and retained messages set in each phase are
    all there at the end."""
    b = data_dir.start(cores=2)
    root = unique_topic_root("dc")
    subs = [(b.client_id("dc", 0), f"{root}/s0", 1), (b.client_id("dc", 1), f"{root}/s1", 2)]
    for cid, t, qos in subs:
        s = persistent(mqtt_client, b, cid, present=False)
        assert s.subscribe(t, qos) == [qos]
        s.disconnect()
    sent: dict[str, list[bytes]] = {t: [] for _, t, _ in subs}

    def phase(b: Broker, tag: str) -> None:
        for cid, t, qos in subs:
            pub = mqtt_client(broker_=b, shard=shard_of(cid, b.shards) + 1, prefix="dcp")
            payloads = [b"%s-%d" % (tag.encode(), i) for i in range(20)]
            publish_all(pub, t, payloads, qos)
            sent[t] += payloads
            pub.publish(f"{root}/ret/{tag}", tag.encode(), qos=1, retain=True)
            pub.disconnect()

    phase(b, "c2")
    for retained, (tag, cores) in enumerate((("c1", 1), ("c2b", 2)), start=1):
        b = data_dir.restart(cores=cores)
        stats = data_dir.replayed()
        assert (stats["sessions"], stats["retained"]) == (2, retained), f"--cores {cores}: {stats}"
        phase(b, tag)
    b = data_dir.restart(cores=2)
    assert (data_dir.replayed()["sessions"], data_dir.replayed()["retained"]) == (2, 3)
    for cid, t, qos in subs:
        s = persistent(mqtt_client, b, cid, present=True)
        pub = mqtt_client(broker_=b, shard=shard_of(cid, 2) + 1, prefix="dcp")
        expect_exactly(s, t, sent[t], qos, pub)
    r = mqtt_client(broker_=b, shard=1, prefix="dcr")
    assert r.subscribe(f"{root}/ret/+", 1) == [1]
    got = sorted((m.topic, m.payload, m.retain) for m in r.expect(3, timeout=10))
    assert got == sorted((f"{root}/ret/{tag}", tag.encode(), True) for tag in ("c2", "c1", "c2b"))


# --------------------------------------------------------------------------
# 10: MQTT 5 Session Expiry across a restart
# --------------------------------------------------------------------------

def test_v5_session_expired_while_broker_down(data_dir, raw5, mqtt_client):
    """[MQTT-3.1.2-23] [MQTT-4.1.0-2] [MQTT-3.2.2-3] An MQTT 5 session with
    Session Expiry Interval 2 s whose client disconnected just before the
    broker stopped has expired when the broker starts 3 s later: it is
    dropped at start (``expired=1``) and a Clean Start=0 reconnect gets
    Session Present=0 and none of its queued messages. A session with a long
    expiry (1 h), otherwise alike, is kept: Session Present=1 and its queued
    message is delivered."""
    b = data_dir.start()
    root = unique_topic_root("dv")
    clients = {"short": (b.client_id("dvs", 1), 2, f"{root}/short"),
               "long": (b.client_id("dvl", 0), 3600, f"{root}/long")}
    for cid, expiry, t in clients.values():
        r = raw5(broker_=b)
        ca = r.connect5(cid, clean_start=True, props=[(SESSION_EXPIRY_INTERVAL, expiry)])
        assert (ca.reason_code, ca.session_present) == (0, 0)
        assert r.subscribe5(1, [(t, sub_opts(1))]) == [1]
        r.send(disconnect5())
        assert r.wait_closed() == []
    for cid, _expiry, t in clients.values():
        pub = mqtt_client(broker_=b, shard=shard_of(cid, 2) + 1, prefix="dvp")
        pub.publish(t, b"queued", qos=1)
        pub.disconnect()
    data_dir.stop()
    time.sleep(3.0)  # the 2 s Session Expiry Interval passes while the broker is down
    b = data_dir.start()
    stats = data_dir.replayed()
    assert (stats["sessions"], stats["expired"]) == (1, 1), stats

    cid, expiry, t = clients["short"]
    r = raw5(broker_=b)
    ca = r.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)])
    assert (ca.reason_code, ca.session_present) == (0, 0), \
        "a session whose expiry passed while the broker was down must be gone [MQTT-4.1.0-2]"
    r.expect_no_packet(0.5)

    cid, expiry, t = clients["long"]
    r = raw5(broker_=b)
    ca = r.connect5(cid, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, expiry)])
    assert (ca.reason_code, ca.session_present) == (0, 1), "a session within its expiry is kept [MQTT-3.2.2-2]"
    m = r.recv_publish5()
    assert (m.topic, m.payload, m.qos) == (t, b"queued", 1)


# --------------------------------------------------------------------------
# 11: clean sessions are not restored
# --------------------------------------------------------------------------

def test_clean_sessions_not_restored(data_dir, mqtt_client, raw5):
    """[MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.1.2-23] Only persistent sessions
    come back: a CleanSession=1 session (connected at the stop, or gone
    before), an MQTT 5 session with Session Expiry 0, and a persistent
    session ended by a CleanSession=1 connect are not restored: a
    CleanSession=0 reconnect after the restart gets Session Present=0 and
    their subscriptions are gone. The persistent session next to them is
    restored."""
    b = data_dir.start()
    root = unique_topic_root("dn")
    online = mqtt_client(broker_=b, client_id=b.client_id("dno", 1), clean_session=True, connect=False)
    online.connect()
    assert online.subscribe(f"{root}/online", 1) == [1]
    gone = mqtt_client(broker_=b, client_id=b.client_id("dng", 1), clean_session=True, connect=False)
    gone.connect()
    assert gone.subscribe(f"{root}/gone", 1) == [1]
    gone.disconnect()
    v5_id = b.client_id("dnv", 1)
    r = raw5(broker_=b)
    ca = r.connect5(v5_id, clean_start=False)  # no Session Expiry Interval: 0
    assert ca.reason_code == 0
    assert r.subscribe5(1, [(f"{root}/v5", sub_opts(1))]) == [1]
    r.send(disconnect5())
    r.wait_closed()
    ended_id = b.client_id("dne", 1)
    e = persistent(mqtt_client, b, ended_id, present=False)
    assert e.subscribe(f"{root}/ended", 1) == [1]
    e.disconnect()
    e = mqtt_client(broker_=b, client_id=ended_id, clean_session=True, connect=False)
    assert e.connect() is False
    e.disconnect()
    kept_id = b.client_id("dnk", 1)
    k = persistent(mqtt_client, b, kept_id, present=False)
    assert k.subscribe(f"{root}/kept", 1) == [1]
    k.disconnect()

    b = data_dir.restart()
    stats = data_dir.replayed()
    assert stats["sessions"] == 1, f"only the persistent session is restored: {stats}"
    assert online.wait_disconnected(5)
    pub = mqtt_client(broker_=b, shard=0, prefix="dnp")
    for cid, topic in ((online.client_id, "online"), (gone.client_id, "gone"), (ended_id, "ended")):
        c = persistent(mqtt_client, b, cid, present=False)
        assert c.subscribe(f"{root}/{cid}/sentinel", 1) == [1]
        pub.publish(f"{root}/{topic}", b"old-subscription", qos=1)
        pub.publish(f"{root}/{cid}/sentinel", b"sentinel", qos=1)
        _, before = c.get_until(lambda m: m.payload == b"sentinel")
        assert before == [], f"{cid}: a subscription of a clean session came back: {before}"
    r = raw5(broker_=b)
    ca = r.connect5(v5_id, clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)])
    assert (ca.reason_code, ca.session_present) == (0, 0), "Session Expiry 0 ends with the connection [MQTT-3.1.2-23]"
    k = persistent(mqtt_client, b, kept_id, present=True)
    pub.publish(f"{root}/kept", b"still-subscribed", qos=1)
    assert k.get().payload == b"still-subscribed"


# --------------------------------------------------------------------------
# 12: --sync never / interval, graceful restart
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sync,extra", [
    pytest.param("never", [], id="never"),
    pytest.param("interval", [], id="interval"),
    pytest.param("interval", ["--sync-interval-ms", "5000"], id="interval-5s"),
    pytest.param("interval", ["--data-segment-bytes", "4096"], id="interval-4KiB-segments"),
])
def test_graceful_restart_keeps_state_in_every_sync_mode(data_dir, mqtt_client, sync, extra):
    """[MQTT-3.1.2-4] [MQTT-4.6.0-1] [MQTT-3.3.1-5] With ``--sync never`` or
    ``interval`` (even with fdatasync 5 s apart, or 4 KiB segments) a
    graceful stop keeps everything: an offline persistent subscriber's 300
    queued messages (in order, once), a retained message, and the session of
    a persistent subscriber still connected when the broker stopped, whose
    subscription still delivers after the restart."""
    b = data_dir.start(sync=sync, extra=extra)
    root = unique_topic_root("dm")
    off_id, on_id = b.client_id("dmf", 1), b.client_id("dmn", 1)
    s = persistent(mqtt_client, b, off_id, present=False)
    assert s.subscribe(f"{root}/off", 1) == [1]
    s.disconnect()
    on = persistent(mqtt_client, b, on_id, present=False)
    assert on.subscribe(f"{root}/on", 2) == [2]
    pub = mqtt_client(broker_=b, shard=0, prefix="dmp")
    sent = [b"m%03d" % i for i in range(300)]
    publish_all(pub, f"{root}/off", sent, 1)
    pub.publish(f"{root}/retained", b"kept", qos=1, retain=True)
    if "--data-segment-bytes" in extra:
        assert len(data_dir.segments(1)) > 1, "4 KiB segments: the log should have rolled"
    b = data_dir.restart()
    stats = data_dir.replayed()
    assert (stats["sessions"], stats["retained"], stats["torn"], stats["corrupt"]) == (2, 1, 0, 0), stats
    assert on.wait_disconnected(5)
    pub = mqtt_client(broker_=b, shard=0, prefix="dmp")
    s = persistent(mqtt_client, b, off_id, present=True)
    expect_exactly(s, f"{root}/off", sent, 1, pub)
    on = persistent(mqtt_client, b, on_id, present=True)
    pub.publish(f"{root}/on", b"after", qos=2)
    m = on.get()
    assert (m.topic, m.payload, m.qos) == (f"{root}/on", b"after", 2)
    r = mqtt_client(broker_=b, shard=1, prefix="dmr")
    assert r.subscribe(f"{root}/retained", 1) == [1]
    m = r.get()
    assert (m.payload, m.retain) == (b"kept", True)


@pytest.mark.parametrize("sync", ["interval", "never"])
def test_graceful_stop_right_after_a_burst_keeps_every_queued_message(data_dir, mqtt_client, sync):
    """[MQTT-3.1.2-4] [MQTT-4.6.0-1] A SIGTERM is a graceful stop: whatever
    ``--sync`` says (it only decides when the records reach the disk, for a
    crash of the machine), every queued message the broker acknowledged
    before the stop must be in the log it leaves. Ten offline persistent
    subscribers (shard 1) hold a QoS 1 subscription; a publisher (shard 0)
    sends 2,000 messages; SIGTERM right after the last PUBACK. After the
    restart every subscriber gets all 2,000, in order, exactly once."""
    b = data_dir.start(sync=sync, extra=["--mqueue-len-max", "100000"])
    t = f"{unique_topic_root('db')}/burst"
    ids = [b.client_id("db", 1) for _ in range(10)]
    for cid in ids:
        s = persistent(mqtt_client, b, cid, present=False)
        assert s.subscribe(t, 1) == [1]
        s.disconnect()
    pub = mqtt_client(broker_=b, shard=0, prefix="dbp")
    sent = [b"b%04d" % i for i in range(2000)]
    publish_all(pub, t, sent, 1)
    b = data_dir.restart()  # SIGTERM right after the last PUBACK
    stats = data_dir.replayed()
    assert stats["sessions"] == len(ids), stats
    pub = mqtt_client(broker_=b, shard=0, prefix="dbp")
    for cid in ids:
        s = persistent(mqtt_client, b, cid, present=True)
        pub.publish(t, b"sentinel", qos=1)
        _, before = s.get_until(lambda m: m.payload == b"sentinel", timeout=15)
        got = [m.payload for m in before]
        assert got == sent, (f"{cid}: {len(got)} of the {len(sent)} acknowledged messages after a graceful "
                             f"restart (replay: {stats}); first missing: "
                             f"{next((p for p in sent if p not in set(got)), None)}")
        s.disconnect()
