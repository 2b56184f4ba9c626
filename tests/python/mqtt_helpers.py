"""Helpers shared by the black-box MQTT test suite.

* shard placement (FNV-1a 64 of the client id, modulo the shard count),
* an MQTT 3.1.1 packet encoder/decoder and a raw-socket client (``RawClient``)
  for protocol edge cases,
* a thin paho-mqtt 2.x wrapper (``MqttClient``) whose every wait is bounded.

Nothing in here sleeps to "let things settle": every wait is on a socket, a
``queue.Queue`` or a ``threading.Condition`` with an explicit timeout.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

DEFAULT_TIMEOUT = 5.0

#: which broker the suite runs against (see conftest.py / README.md)
BROKER_KIND = os.environ.get("MQTT_TEST_BROKER", "shardmq").strip().lower()
IS_MOSQUITTO = BROKER_KIND == "mosquitto"

# --------------------------------------------------------------------------
# Shard placement
# --------------------------------------------------------------------------

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fnv1a_64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & _MASK64
    return h


def shard_of(client_id: str, shards: int) -> int:
    return fnv1a_64(client_id.encode("utf-8")) % shards


_issued_ids: set[str] = set()
_issued_lock = threading.Lock()


def client_id_on_shard(prefix: str, shard: int, shards: int) -> str:
    """Return ``prefix + str(counter)`` that lands on ``shard``.

    The counter is incremented until ``fnv1a_64(id) % shards == shard``. Ids are
    never handed out twice in one test run, so two tests (or two clients of one
    test) never collide by accident and trigger a session takeover.
    Keep prefixes short: MQTT 3.1 limits client ids to 23 bytes.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range for {shards} shards")
    with _issued_lock:
        for i in itertools.count():
            cid = f"{prefix}{i}"
            if cid in _issued_ids:
                continue
            if shard_of(cid, shards) == shard:
                _issued_ids.add(cid)
                return cid
    raise AssertionError("unreachable")


_topic_counter = itertools.count(1)


def unique_topic_root(tag: str = "t") -> str:
    """A topic level never used before in this run (``tag`` + counter)."""
    return f"{tag}{next(_topic_counter)}"


# --------------------------------------------------------------------------
# MQTT packet encoding / decoding (3.1.1, enough for black-box tests)
# --------------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
    6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE",
    11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT",
}


def _b(s) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def enc_str(s) -> bytes:
    data = _b(s)
    return struct.pack("!H", len(data)) + data


def enc_rl(n: int) -> bytes:
    """Encode a Remaining Length (variable byte integer)."""
    out = bytearray()
    while True:
        digit = n % 128
        n //= 128
        if n > 0:
            digit |= 0x80
        out.append(digit)
        if n == 0:
            return bytes(out)


def packet(first_byte: int, body: bytes = b"") -> bytes:
    return bytes([first_byte]) + enc_rl(len(body)) + body


def connect_packet(client_id="", clean=True, keepalive=60, will=None,
                   username=None, password=None, proto_name="MQTT",
                   proto_level=4, flags=None) -> bytes:
    """``will`` = (topic, payload, qos, retain). ``flags`` overrides the flags byte."""
    f = 0
    if clean:
        f |= 0x02
    payload = enc_str(client_id)
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        f |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        payload += enc_str(wtopic) + enc_str(wpayload)
    if username is not None:
        f |= 0x80
        payload += enc_str(username)
    if password is not None:
        f |= 0x40
        payload += enc_str(password)
    if flags is not None:
        f = flags
    var = enc_str(proto_name) + bytes([proto_level, f]) + struct.pack("!H", keepalive)
    return packet(0x10, var + payload)


def publish_packet(topic, payload=b"", qos=0, retain=False, dup=False, pid=None,
                   flags=None) -> bytes:
    fb = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    if flags is not None:
        fb = 0x30 | flags
    body = enc_str(topic)
    if pid is not None:
        body += struct.pack("!H", pid)
    body += _b(payload)
    return packet(fb, body)


def puback_packet(pid: int) -> bytes:
    return packet(0x40, struct.pack("!H", pid))


def pubrec_packet(pid: int) -> bytes:
    return packet(0x50, struct.pack("!H", pid))


def pubrel_packet(pid: int, flags: int = 0x02) -> bytes:
    return packet(0x60 | flags, struct.pack("!H", pid))


def pubcomp_packet(pid: int) -> bytes:
    return packet(0x70, struct.pack("!H", pid))


def subscribe_packet(pid: int, filters: Sequence[tuple], flags: int = 0x02) -> bytes:
    body = struct.pack("!H", pid)
    for flt, qos in filters:
        body += enc_str(flt) + bytes([qos])
    return packet(0x80 | flags, body)


def unsubscribe_packet(pid: int, filters: Iterable, flags: int = 0x02) -> bytes:
    body = struct.pack("!H", pid)
    for flt in filters:
        body += enc_str(flt)
    return packet(0xA0 | flags, body)


def pingreq_packet() -> bytes:
    return b"\xc0\x00"


def disconnect_packet() -> bytes:
    return b"\xe0\x00"


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type{self.type}")

    def pid(self) -> int:
        return struct.unpack("!H", self.body[:2])[0]

    # CONNACK
    def connack(self) -> tuple[int, int]:
        assert self.type == CONNACK, f"expected CONNACK, got {self}"
        assert len(self.body) == 2, f"CONNACK remaining length must be 2: {self}"
        return self.body[0] & 0x01, self.body[1]

    # SUBACK
    def suback(self) -> tuple[int, list[int]]:
        assert self.type == SUBACK, f"expected SUBACK, got {self}"
        return self.pid(), list(self.body[2:])

    # PUBLISH
    def publish(self) -> "RawPublish":
        assert self.type == PUBLISH, f"expected PUBLISH, got {self}"
        qos = (self.flags >> 1) & 0x03
        tlen = struct.unpack("!H", self.body[:2])[0]
        topic = self.body[2:2 + tlen].decode("utf-8")
        pos = 2 + tlen
        pid = None
        if qos > 0:
            pid = struct.unpack("!H", self.body[pos:pos + 2])[0]
            pos += 2
        return RawPublish(topic, bytes(self.body[pos:]), qos,
                          bool(self.flags & 0x01), bool(self.flags & 0x08), pid)

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 40 else self.body[:40] + b"..."
        return f"<{self.name} flags={self.flags:#x} body={body!r}>"


@dataclass
class RawPublish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    pid: Optional[int]


class ConnectionClosed(Exception):
    pass


class RawClient:
    """A raw TCP MQTT client: send arbitrary bytes, read whole packets."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed_by_peer = False

    # -- sending ----------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_slowly(self, data: bytes, pause: float = 0.003) -> None:
        """Send one byte per TCP segment. The pause is pacing, not a wait for
        a condition: it keeps Nagle/the kernel from coalescing the bytes."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(pause)

    def connect(self, client_id: str, timeout: float = DEFAULT_TIMEOUT, **kw) -> tuple[int, int]:
        """Send CONNECT, wait for CONNACK, return (session_present, return_code)."""
        self.send(connect_packet(client_id, **kw))
        return self.recv_packet(timeout).connack()

    # -- receiving --------------------------------------------------------
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from broker")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data from broker") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            self.closed_by_peer = True
            raise ConnectionClosed(str(e)) from None
        if not data:
            self.closed_by_peer = True
            raise ConnectionClosed("EOF")
        self.buf += data

    def _try_parse(self) -> Optional[Packet]:
        if len(self.buf) < 2:
            return None
        mult, value, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            value += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise AssertionError(f"broker sent malformed remaining length: {bytes(self.buf[:8])!r}")
        if len(self.buf) < i + value:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i:i + value])
        del self.buf[:i + value]
        return Packet(first >> 4, first & 0x0F, body)

    def recv_packet(self, timeout: float = DEFAULT_TIMEOUT) -> Packet:
        deadline = time.monotonic() + timeout
        while True:
            p = self._try_parse()
            if p is not None:
                return p
            self._fill(deadline)

    def recv_until(self, ptype: int, timeout: float = DEFAULT_TIMEOUT) -> tuple[Packet, list[Packet]]:
        """Read until a packet of ``ptype`` arrives; return it and the skipped ones."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            p = self.recv_packet(max(0.0, deadline - time.monotonic()))
            if p.type == ptype:
                return p, skipped
            skipped.append(p)

    def expect_no_packet(self, timeout: float = 0.5) -> None:
        try:
            p = self.recv_packet(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected packet from broker: {p}")

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[Packet]:
        """Wait until the broker closes the connection. Returns the packets
        received before the close. Raises AssertionError if it stays open."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                p = self._try_parse()
            except AssertionError:
                self.buf.clear()
                p = None
            if p is not None:
                got.append(p)
                continue
            try:
                self._fill(deadline)
            except ConnectionClosed:
                return got
            except TimeoutError:
                raise AssertionError(
                    f"broker did not close the connection within {timeout}s "
                    f"(packets received meanwhile: {got})") from None

    def is_open(self, timeout: float = 0.3) -> bool:
        """True if the broker has not closed the connection (probes with PINGREQ)."""
        try:
            self.send(pingreq_packet())
            p, _ = self.recv_until(PINGRESP, timeout=max(timeout, DEFAULT_TIMEOUT))
            return True
        except (ConnectionClosed, OSError, TimeoutError):
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): an abrupt network failure."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


# --------------------------------------------------------------------------
# paho-mqtt wrapper
# --------------------------------------------------------------------------

@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class PahoLifecycle:
    """Starting and ending a paho client's connection, for both protocol
    versions' wrappers: they hold the paho client in ``c``, its ``client_id``,
    a ``disconnected`` event, ``_started``, and ``_connack`` (session present,
    reason code) guarded by ``_cond``."""

    def _start_and_await_connack(self, timeout: float, expect_success: bool) -> bool:
        """After ``c.connect``: run the network thread and wait for CONNACK.
        Returns the session-present flag."""
        self.c.loop_start()
        self._started = True
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None or self.disconnected.is_set(), timeout)
            connack = self._connack
        assert connack is not None, f"{self.client_id}: no CONNACK within {timeout}s"
        sp, rc = connack
        if expect_success:
            assert not rc.is_failure, f"{self.client_id}: CONNACK refused: {rc}"
        return sp

    @property
    def connack_rc(self):
        return None if self._connack is None else self._connack[1]

    def drop(self) -> None:
        """Kill the TCP connection without sending DISCONNECT."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.disconnected.wait(DEFAULT_TIMEOUT)
        self.stop()

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.c.loop_stop()
            try:
                sock = self.c.socket()
                if sock is not None:
                    sock.close()
            except OSError:
                pass


class RawDrain(threading.Thread):
    """Reads a raw subscriber's PUBLISH packets as they come, in a thread: keeps
    each payload per topic, in arrival order, and acknowledges QoS 1. Ends at
    ``stop`` or when the connection ends (its node killed, the test over)."""

    def __init__(self, client: "RawClient"):
        super().__init__(daemon=True)
        self.client = client
        self.got: dict[str, list[bytes]] = {}
        self.total = 0
        self.stop = threading.Event()
        self.error: Optional[Exception] = None
        self.start()

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    p = self.client.recv_packet(timeout=0.2)
                except TimeoutError:
                    continue
                if p.type == PUBLISH:
                    pub = p.publish()
                    self.got.setdefault(pub.topic, []).append(pub.payload)
                    self.total += 1
                    if pub.qos == 1:
                        self.client.send(puback_packet(pub.pid))
        except ConnectionClosed:
            return
        except Exception as e:  # reported by the test
            self.error = e

    def count(self, topic: str) -> int:
        return len(self.got.get(topic, []))


class MqttClient(PahoLifecycle):
    """paho client with a background network thread and bounded waits.

    Automatic reconnect is disabled (``reconnect_on_failure=False``) so that a
    disconnect initiated by the broker (takeover, protocol error) is observed
    instead of being silently repaired.
    """

    def __init__(self, host: str, port: int, client_id: str, clean_session: bool = True,
                 protocol=mqtt.MQTTv311, keepalive: int = 60, will=None):
        self.host, self.port = host, port
        self.client_id = client_id
        self.keepalive = keepalive
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean_session, protocol=protocol,
                             reconnect_on_failure=False)
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain)
        self.messages: "queue.Queue[Msg]" = queue.Queue()
        self._cond = threading.Condition()
        self._connack = None  # (session_present, reason_code_value)
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: set[int] = set()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_message = self._on_message
        self._started = False

    # -- callbacks (network thread) --------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self._connack = (bool(flags.session_present), reason_code)
            self._cond.notify_all()
        if not reason_code.is_failure:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._unsubacks.add(mid)
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        try:
            topic = m.topic
        except UnicodeDecodeError:  # a broker forwarded an invalid topic: keep it visible
            topic = repr(m._topic)
        self.messages.put(Msg(topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup)))

    def _wait(self, pred, timeout, what):
        with self._cond:
            ok = self._cond.wait_for(lambda: pred() or self.disconnected.is_set(), timeout)
            if pred():
                return
            if self.disconnected.is_set():
                raise AssertionError(f"{self.client_id}: connection lost while waiting for {what}")
            assert ok, f"{self.client_id}: timed out after {timeout}s waiting for {what}"
            raise AssertionError(f"{self.client_id}: timed out waiting for {what}")

    # -- API ----------------------------------------------------------------
    def connect(self, timeout: float = DEFAULT_TIMEOUT, expect_success: bool = True) -> bool:
        """Connect and wait for CONNACK. Returns the session-present flag."""
        self.c.connect(self.host, self.port, keepalive=self.keepalive)
        return self._start_and_await_connack(timeout, expect_success)

    def subscribe(self, topic, qos: int = 0, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Subscribe (``topic`` may be a list of (filter, qos)); wait for SUBACK;
        return the granted QoS list."""
        if isinstance(topic, (list, tuple)):
            rc, mid = self.c.subscribe(list(topic))
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        self._wait(lambda: mid in self._subacks, timeout, f"SUBACK mid={mid}")
        return self._subacks[mid]

    def unsubscribe(self, topic, timeout: float = DEFAULT_TIMEOUT) -> None:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {rc}"
        self._wait(lambda: mid in self._unsubacks, timeout, f"UNSUBACK mid={mid}")

    def publish(self, topic, payload=b"", qos: int = 0, retain: bool = False,
                wait: bool = True, timeout: float = DEFAULT_TIMEOUT):
        """Publish; with ``wait`` block until the QoS flow completed
        (written for QoS 0, PUBACK for 1, PUBCOMP for 2)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait:
            self.wait_published(info, timeout)
        return info

    def wait_published(self, info, timeout: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not info.is_published():
            assert not self.disconnected.is_set(), f"{self.client_id}: disconnected before publish mid={info.mid} completed"
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{self.client_id}: publish mid={info.mid} not completed within {timeout}s"
            info.wait_for_publish(min(remaining, 0.2))

    def get(self, timeout: float = DEFAULT_TIMEOUT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message received within {timeout}s") from None

    def expect(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[Msg]:
        """Receive exactly ``n`` messages (overall deadline ``timeout``)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(0.0, remaining)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)}/{n} messages within {timeout}s; "
                    f"last: {out[-3:]}") from None
        return out

    def get_until(self, pred, timeout: float = DEFAULT_TIMEOUT) -> tuple[Msg, list[Msg]]:
        """Receive until ``pred(msg)``; return the match and the messages before it."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: expected message not received within {timeout}s; "
                    f"got instead: {before[:5]}") from None
            if pred(m):
                return m, before
            before.append(m)

    def expect_none(self, timeout: float = 0.5) -> None:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m}")

    def collect(self, duration: float) -> list[Msg]:
        """Everything received during the next ``duration`` seconds (a bounded
        window for negative checks)."""
        deadline = time.monotonic() + duration
        out = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                return out

    def drain(self) -> list[Msg]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        return self.disconnected.wait(timeout)

    def disconnect(self) -> None:
        """Clean MQTT DISCONNECT, then stop the network thread."""
        if self._started and not self.disconnected.is_set():
            self.c.disconnect()
            self.disconnected.wait(DEFAULT_TIMEOUT)
        self.stop()



def roundtrip_check(broker, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Assert the broker still works: fresh paho clients on shard 0 (publisher)
    and shard 1 (subscriber) round-trip a QoS 1 message."""
    root = unique_topic_root("health")
    sub = MqttClient(broker.host, broker.port, broker.client_id("hs", 1))
    pub = MqttClient(broker.host, broker.port, broker.client_id("hp", 0))
    try:
        sub.connect(timeout)
        assert sub.subscribe(f"{root}/ok", 1, timeout) == [1]
        pub.connect(timeout)
        pub.publish(f"{root}/ok", b"alive", qos=1, timeout=timeout)
        m = sub.get(timeout)
        assert (m.topic, m.payload, m.qos) == (f"{root}/ok", b"alive", 1)
    finally:
        pub.disconnect()
        sub.disconnect()


# --------------------------------------------------------------------------
# Shard-pair parametrisations: (publisher shard, subscriber shard)
# --------------------------------------------------------------------------

def _pairs(*pairs):
    import pytest
    names = {(0, 1): "cross-0to1", (1, 0): "cross-1to0", (0, 0): "same-0", (1, 1): "same-1"}
    return [pytest.param(p, s, id=names[(p, s)]) for p, s in pairs]


#: publisher and subscriber on different shards (both directions) and on the same shard
SHARD_PAIRS = _pairs((0, 1), (1, 0), (0, 0))
#: cheaper variant for heavy tests: one cross-shard and one same-shard case
SHARD_PAIRS_2 = _pairs((0, 1), (1, 1))
