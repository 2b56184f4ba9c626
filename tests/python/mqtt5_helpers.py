"""MQTT 5.0 helpers for the black-box suite (``test_v5_*.py``).

* an MQTT 5 packet encoder/decoder: Variable Byte Integers, properties
  (every property of the standard, typed), CONNECT with Clean Start, will
  properties and CONNECT properties, PUBLISH with properties, SUBSCRIBE with
  subscription options, UNSUBSCRIBE, acks with reason codes, DISCONNECT and
  AUTH; parsers for everything a server sends;
* ``RawClient5``: the suite's ``RawClient`` plus MQTT 5 CONNECT and a
  bounded wait for the server's DISCONNECT and the close that must follow;
* ``MqttClient5``: a paho-mqtt 2.x MQTTv5 client with bounded waits that
  records message properties, reason codes and the server's DISCONNECT;
* fixtures ``mqtt5_client`` (factory of connected v5 paho clients) and
  ``v5_broker`` (a private broker started with shardmq flags, or with the
  equivalent mosquitto.conf lines when running against Mosquitto).

Nothing here sleeps to let things settle: every wait is on a socket, a
queue or a condition with a timeout.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_helpers import (  # noqa: F401  (packet types re-exported for the v5 tests)
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    DEFAULT_TIMEOUT,
    IS_MOSQUITTO,
    PUBLISH,
    SUBACK,
    UNSUBACK,
    Packet,
    PahoLifecycle,
    RawClient,
    enc_str,
    unique_topic_root,
)

AUTH = 15
PROTOCOL_V5 = 5

# --------------------------------------------------------------------------
# Reason codes (MQTT 5.0 section 2.4)
# --------------------------------------------------------------------------

RC_SUCCESS = 0x00
RC_GRANTED_QOS_1 = 0x01
RC_GRANTED_QOS_2 = 0x02
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_CONTINUE_AUTH = 0x18
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_BAD_AUTH_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95

# --------------------------------------------------------------------------
# Properties (MQTT 5.0 section 2.2.2.2)
# --------------------------------------------------------------------------

PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

#: property id -> wire type
PROPERTY_TYPES = {
    PAYLOAD_FORMAT_INDICATOR: "byte",
    MESSAGE_EXPIRY_INTERVAL: "u32",
    CONTENT_TYPE: "str",
    RESPONSE_TOPIC: "str",
    CORRELATION_DATA: "bin",
    SUBSCRIPTION_IDENTIFIER: "vbi",
    SESSION_EXPIRY_INTERVAL: "u32",
    ASSIGNED_CLIENT_IDENTIFIER: "str",
    SERVER_KEEP_ALIVE: "u16",
    AUTHENTICATION_METHOD: "str",
    AUTHENTICATION_DATA: "bin",
    REQUEST_PROBLEM_INFORMATION: "byte",
    WILL_DELAY_INTERVAL: "u32",
    REQUEST_RESPONSE_INFORMATION: "byte",
    RESPONSE_INFORMATION: "str",
    SERVER_REFERENCE: "str",
    REASON_STRING: "str",
    RECEIVE_MAXIMUM: "u16",
    TOPIC_ALIAS_MAXIMUM: "u16",
    TOPIC_ALIAS: "u16",
    MAXIMUM_QOS: "byte",
    RETAIN_AVAILABLE: "byte",
    USER_PROPERTY: "pair",
    MAXIMUM_PACKET_SIZE: "u32",
    WILDCARD_SUBSCRIPTION_AVAILABLE: "byte",
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: "byte",
    SHARED_SUBSCRIPTION_AVAILABLE: "byte",
}


class MalformedFromBroker(AssertionError):
    """The broker sent bytes that do not decode as MQTT 5."""


def enc_vbi(n: int) -> bytes:
    """Variable Byte Integer (section 1.5.5), minimal encoding."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"VBI out of range: {n}")
    out = bytearray()
    while True:
        digit = n % 128
        n //= 128
        if n:
            digit |= 0x80
        out.append(digit)
        if not n:
            return bytes(out)


def dec_vbi(buf: bytes, pos: int) -> tuple[int, int]:
    mult, value = 1, 0
    for i in range(4):
        if pos >= len(buf):
            raise MalformedFromBroker(f"truncated VBI in {buf!r}")
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return value, pos
    raise MalformedFromBroker(f"VBI longer than 4 bytes in {buf!r}")


def _b(s) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def enc_bin(data) -> bytes:
    data = _b(data)
    return struct.pack("!H", len(data)) + data


def enc_prop(pid: int, value) -> bytes:
    """One property: identifier (as a VBI) and value, typed by PROPERTY_TYPES."""
    t = PROPERTY_TYPES[pid]
    head = enc_vbi(pid)
    if t == "byte":
        return head + bytes([value])
    if t == "u16":
        return head + struct.pack("!H", value)
    if t == "u32":
        return head + struct.pack("!I", value)
    if t == "vbi":
        return head + enc_vbi(value)
    if t == "str":
        return head + enc_str(value)
    if t == "bin":
        return head + enc_bin(value)
    if t == "pair":
        k, v = value
        return head + enc_str(k) + enc_str(v)
    raise AssertionError(t)


def enc_props(props=()) -> bytes:
    """Property Length (VBI) followed by the properties. ``props`` is a list of
    ``(id, value)`` pairs (order kept, repeats allowed), a dict, or raw bytes
    (sent as the property block verbatim, for malformed cases)."""
    if isinstance(props, (bytes, bytearray)):
        return enc_vbi(len(props)) + bytes(props)
    items = props.items() if isinstance(props, dict) else props
    body = b"".join(enc_prop(pid, v) for pid, v in items)
    return enc_vbi(len(body)) + body


class Props:
    """Decoded properties: an ordered list of ``(id, value)``."""

    def __init__(self, items: Sequence[tuple[int, object]] = ()):
        self.items = list(items)

    def get(self, pid: int, default=None):
        for k, v in self.items:
            if k == pid:
                return v
        return default

    def get_all(self, pid: int) -> list:
        return [v for k, v in self.items if k == pid]

    def __contains__(self, pid: int) -> bool:
        return any(k == pid for k, _ in self.items)

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return self.get_all(USER_PROPERTY)

    def ids(self) -> list[int]:
        return [k for k, _ in self.items]

    def __repr__(self) -> str:
        return "Props(" + ", ".join(f"{k:#04x}={v!r}" for k, v in self.items) + ")"


def _dec_str(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise MalformedFromBroker(f"truncated string at {pos} in {buf!r}")
    n = struct.unpack_from("!H", buf, pos)[0]
    if pos + 2 + n > len(buf):
        raise MalformedFromBroker(f"string overruns packet at {pos} in {buf!r}")
    return bytes(buf[pos + 2:pos + 2 + n]), pos + 2 + n


def dec_props(buf: bytes, pos: int) -> tuple[Props, int]:
    """Decode a property block at ``pos``; returns (Props, position after it)."""
    length, pos = dec_vbi(buf, pos)
    end = pos + length
    if end > len(buf):
        raise MalformedFromBroker(f"property length {length} overruns the packet: {buf!r}")
    items = []
    while pos < end:
        pid, pos = dec_vbi(buf, pos)
        t = PROPERTY_TYPES.get(pid)
        if t is None:
            raise MalformedFromBroker(f"unknown property id {pid:#x} in {buf!r}")
        if t == "byte":
            v = buf[pos]
            pos += 1
        elif t == "u16":
            v = struct.unpack_from("!H", buf, pos)[0]
            pos += 2
        elif t == "u32":
            v = struct.unpack_from("!I", buf, pos)[0]
            pos += 4
        elif t == "vbi":
            v, pos = dec_vbi(buf, pos)
        elif t == "str":
            raw, pos = _dec_str(buf, pos)
            v = raw.decode("utf-8")
        elif t == "bin":
            v, pos = _dec_str(buf, pos)
        else:
            k, pos = _dec_str(buf, pos)
            val, pos = _dec_str(buf, pos)
            v = (k.decode("utf-8"), val.decode("utf-8"))
        items.append((pid, v))
    if pos != end:
        raise MalformedFromBroker(f"properties do not end at the property length: {buf!r}")
    return Props(items), end


# --------------------------------------------------------------------------
# Packet builders (client -> server)
# --------------------------------------------------------------------------

def packet5(first_byte: int, body: bytes = b"") -> bytes:
    return bytes([first_byte]) + enc_vbi(len(body)) + body


@dataclass
class Will:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    props: object = ()


def connect5(client_id: str = "", clean_start: bool = True, keepalive: int = 60, props=(),
             will: Optional[Will] = None, username=None, password=None,
             proto_name: str = "MQTT", proto_level: int = PROTOCOL_V5, flags: Optional[int] = None,
             raw_props: Optional[bytes] = None) -> bytes:
    """MQTT 5 CONNECT (section 3.1). ``raw_props`` replaces the encoded
    CONNECT property block (Property Length included) verbatim."""
    f = 0x02 if clean_start else 0
    payload = enc_str(client_id)
    if will is not None:
        f |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += enc_props(will.props) + enc_str(will.topic) + enc_bin(will.payload)
    if username is not None:
        f |= 0x80
        payload += enc_str(username)
    if password is not None:
        f |= 0x40
        payload += enc_bin(password)
    if flags is not None:
        f = flags
    prop_block = raw_props if raw_props is not None else enc_props(props)
    var = enc_str(proto_name) + bytes([proto_level, f]) + struct.pack("!H", keepalive) + prop_block
    return packet5(0x10, var + payload)


def publish5(topic, payload=b"", qos: int = 0, retain: bool = False, dup: bool = False,
             pid: Optional[int] = None, props=(), raw_props: Optional[bytes] = None) -> bytes:
    """MQTT 5 PUBLISH (section 3.3). ``topic`` may be "" (with a Topic Alias)."""
    fb = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = enc_str(topic)
    if qos:
        body += struct.pack("!H", pid if pid is not None else 1)
    body += raw_props if raw_props is not None else enc_props(props)
    body += _b(payload)
    return packet5(fb, body)


def _ack5(first: int, pid: int, rc: Optional[int], props) -> bytes:
    body = struct.pack("!H", pid)
    if rc is not None or props:
        body += bytes([rc or 0])
        if props:
            body += enc_props(props)
    return packet5(first, body)


def puback5(pid: int, rc: Optional[int] = None, props=()) -> bytes:
    return _ack5(0x40, pid, rc, props)


def pubrec5(pid: int, rc: Optional[int] = None, props=()) -> bytes:
    return _ack5(0x50, pid, rc, props)


def pubrel5(pid: int, rc: Optional[int] = None, props=()) -> bytes:
    return _ack5(0x62, pid, rc, props)


def pubcomp5(pid: int, rc: Optional[int] = None, props=()) -> bytes:
    return _ack5(0x70, pid, rc, props)


def sub_opts(qos: int = 0, no_local: bool = False, rap: bool = False, rh: int = 0) -> int:
    """Subscription Options byte (section 3.8.3.1)."""
    return qos | (0x04 if no_local else 0) | (0x08 if rap else 0) | (rh << 4)


def subscribe5(pid: int, filters: Sequence[tuple[str, int]], props=(), raw_props: Optional[bytes] = None,
               flags: int = 0x02) -> bytes:
    """MQTT 5 SUBSCRIBE: ``filters`` = [(filter, options byte)]."""
    body = struct.pack("!H", pid) + (raw_props if raw_props is not None else enc_props(props))
    for flt, opts in filters:
        body += enc_str(flt) + bytes([opts])
    return packet5(0x80 | flags, body)


def unsubscribe5(pid: int, filters: Iterable[str], props=()) -> bytes:
    body = struct.pack("!H", pid) + enc_props(props)
    for flt in filters:
        body += enc_str(flt)
    return packet5(0xA2, body)


def disconnect5(rc: Optional[int] = None, props=()) -> bytes:
    """DISCONNECT (section 3.14). With no reason code and no properties it is
    the 2-byte form (Remaining Length 0 means 0x00 Normal disconnection)."""
    if rc is None and not props:
        return b"\xe0\x00"
    body = bytes([rc or 0])
    if props:
        body += enc_props(props)
    return packet5(0xE0, body)


def auth5(rc: Optional[int] = None, props=()) -> bytes:
    if rc is None and not props:
        return b"\xf0\x00"
    return packet5(0xF0, bytes([rc or 0]) + enc_props(props))


def pingreq5() -> bytes:
    return b"\xc0\x00"


# --------------------------------------------------------------------------
# Parsers (server -> client)
# --------------------------------------------------------------------------

@dataclass
class Connack5:
    session_present: int
    reason_code: int
    props: Props


@dataclass
class Publish5:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    pid: Optional[int]
    props: Props

    @property
    def topic_alias(self):
        return self.props.get(TOPIC_ALIAS)

    @property
    def sub_ids(self) -> list[int]:
        return self.props.get_all(SUBSCRIPTION_IDENTIFIER)


def parse_connack5(p: Packet) -> Connack5:
    assert p.type == CONNACK, f"expected CONNACK, got {p}"
    assert p.flags == 0, f"CONNACK fixed-header flags must be 0: {p}"
    assert len(p.body) >= 3, f"an MQTT 5 CONNACK has flags, reason code and properties: {p}"
    assert p.body[0] & 0xFE == 0, f"CONNACK acknowledge flags bits 7-1 must be 0 [MQTT-3.2.2-1]: {p}"
    props, end = dec_props(p.body, 2)
    assert end == len(p.body), f"trailing bytes after CONNACK properties: {p}"
    return Connack5(p.body[0] & 1, p.body[1], props)


def parse_publish5(p: Packet) -> Publish5:
    assert p.type == PUBLISH, f"expected PUBLISH, got {p}"
    qos = (p.flags >> 1) & 3
    raw_topic, pos = _dec_str(p.body, 0)
    pid = None
    if qos:
        pid = struct.unpack_from("!H", p.body, pos)[0]
        pos += 2
    props, pos = dec_props(p.body, pos)
    return Publish5(raw_topic.decode("utf-8"), bytes(p.body[pos:]), qos, bool(p.flags & 1),
                    bool(p.flags & 8), pid, props)


def parse_ack5(p: Packet) -> tuple[int, int, Props]:
    """PUBACK/PUBREC/PUBREL/PUBCOMP -> (packet id, reason code, properties)."""
    pid = struct.unpack_from("!H", p.body, 0)[0]
    if len(p.body) == 2:
        return pid, 0, Props()
    rc = p.body[2]
    if len(p.body) == 3:
        return pid, rc, Props()
    props, _ = dec_props(p.body, 3)
    return pid, rc, props


def parse_suback5(p: Packet) -> tuple[int, Props, list[int]]:
    assert p.type == SUBACK, f"expected SUBACK, got {p}"
    pid = struct.unpack_from("!H", p.body, 0)[0]
    props, pos = dec_props(p.body, 2)
    return pid, props, list(p.body[pos:])


def parse_unsuback5(p: Packet) -> tuple[int, Props, list[int]]:
    assert p.type == UNSUBACK, f"expected UNSUBACK, got {p}"
    pid = struct.unpack_from("!H", p.body, 0)[0]
    props, pos = dec_props(p.body, 2)
    return pid, props, list(p.body[pos:])


def parse_disconnect5(p: Packet) -> tuple[int, Props]:
    assert p.type == DISCONNECT, f"expected DISCONNECT, got {p}"
    assert p.flags == 0, f"DISCONNECT reserved flags must be 0 [MQTT-3.14.1-1]: {p}"
    if not p.body:
        return 0, Props()
    rc = p.body[0]
    if len(p.body) == 1:
        return rc, Props()
    props, _ = dec_props(p.body, 1)
    return rc, props


# --------------------------------------------------------------------------
# Raw client
# --------------------------------------------------------------------------

class RawClient5(RawClient):
    """RawClient speaking MQTT 5.

    ``recv_until(type)`` does not drop the packets of other types that arrive
    first: they stay queued (``pending``) and later ``recv_packet`` /
    ``recv_until`` calls return them first, in arrival order."""

    @property
    def pending(self) -> list[Packet]:
        if not hasattr(self, "_pending"):
            self._pending = []
        return self._pending

    def recv_packet(self, timeout: float = DEFAULT_TIMEOUT) -> Packet:
        if self.pending:
            return self.pending.pop(0)
        return super().recv_packet(timeout)

    def recv_until(self, ptype: int, timeout: float = DEFAULT_TIMEOUT) -> tuple[Packet, list[Packet]]:
        """The first packet of ``ptype`` (queued or new); others stay queued.
        Returns (packet, [])."""
        for i, p in enumerate(self.pending):
            if p.type == ptype:
                return self.pending.pop(i), []
        deadline = time.monotonic() + timeout
        while True:
            p = super().recv_packet(max(0.0, deadline - time.monotonic()))
            if p.type == ptype:
                return p, []
            self.pending.append(p)

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> list[Packet]:
        queued, self._pending = list(self.pending), []
        return queued + super().wait_closed(timeout)

    def connect5(self, client_id: str = "", timeout: float = DEFAULT_TIMEOUT, **kw) -> Connack5:
        """Send an MQTT 5 CONNECT (``kw`` as in ``connect5``) and return the CONNACK."""
        self.send(connect5(client_id, **kw))
        return parse_connack5(self.recv_packet(timeout))

    def recv_publish5(self, timeout: float = DEFAULT_TIMEOUT) -> Publish5:
        p, _ = self.recv_until(PUBLISH, timeout)
        return parse_publish5(p)

    def subscribe5(self, pid: int, filters, props=(), timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """SUBSCRIBE and wait for the SUBACK; returns its reason codes."""
        self.send(subscribe5(pid, filters, props))
        p, _ = self.recv_until(SUBACK, timeout)
        got_pid, _props, codes = parse_suback5(p)
        assert got_pid == pid, f"SUBACK packet id {got_pid} != {pid} [MQTT-3.8.4-2]"
        return codes

    def expect_disconnect(self, timeout: float = DEFAULT_TIMEOUT) -> Optional[int]:
        """Wait until the broker closes the connection. Returns the reason code
        of the DISCONNECT it sent before closing, or None if it closed without
        one. Fails if the connection stays open, or if anything but PUBLISH /
        acks precede the DISCONNECT, or if packets follow it [MQTT-3.14.4-1]."""
        got = self.wait_closed(timeout)
        self.packets_before_close = got
        discs = [i for i, p in enumerate(got) if p.type == DISCONNECT]
        if not discs:
            return None
        i = discs[0]
        assert i == len(got) - 1, f"packets after the server's DISCONNECT [MQTT-3.14.4-1]: {got[i:]}"
        rc, props = parse_disconnect5(got[i])
        assert SESSION_EXPIRY_INTERVAL not in props, \
            f"the Server MUST NOT send Session Expiry Interval on DISCONNECT [MQTT-3.14.2-2]: {props}"
        self.last_disconnect_props = props
        return rc


def assert_disconnect_reason(rc: Optional[int], allowed, what: str = "",
                             why: str = "section 4.13.1: a server SHOULD send it; shardmq does") -> None:
    """``rc`` (from ``expect_disconnect``) must be one of ``allowed``. A close
    without DISCONNECT is accepted only from Mosquitto, by skipping the rest of
    the test: section 4.13.1 says a server SHOULD send the DISCONNECT with
    the reason code, and shardmq does."""
    allowed = {allowed} if isinstance(allowed, int) else set(allowed)
    if rc is None and IS_MOSQUITTO:
        pytest.skip(f"mosquitto closed the connection without sending a DISCONNECT {what} ({why})")
    assert rc is not None, f"connection closed without a DISCONNECT; expected reason {sorted(map(hex, allowed))} {what}"
    assert rc in allowed, f"DISCONNECT reason {rc:#04x}, expected one of {[hex(a) for a in sorted(allowed)]} {what}"


# --------------------------------------------------------------------------
# paho v5 wrapper
# --------------------------------------------------------------------------

@dataclass
class Msg5:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    props: dict = field(default_factory=dict)

    @property
    def sub_ids(self) -> list[int]:
        v = self.props.get("SubscriptionIdentifier", [])
        return list(v) if isinstance(v, (list, tuple)) else [v]

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return [tuple(x) for x in self.props.get("UserProperty", [])]


def props_of(packet_type, **kw) -> Properties:
    """paho Properties for ``packet_type`` from keyword arguments, e.g.
    ``props_of(PacketTypes.PUBLISH, MessageExpiryInterval=5)``."""
    p = Properties(packet_type)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def _props_dict(p) -> dict:
    """paho Properties -> {attribute name: value}, binary values as bytes,
    Subscription Identifier always a list."""
    if p is None:
        return {}
    out = {}
    for name in p.names:
        attr = name.replace(" ", "")
        if hasattr(p, attr):
            out[attr] = getattr(p, attr)
    return out


class MqttClient5(PahoLifecycle):
    """paho MQTTv5 client with a background network thread and bounded waits.

    Automatic reconnect is disabled. Received messages carry their MQTT 5
    properties (``{paho attribute name: value}``) in ``Msg5.props``; Topic
    Aliases from the server are resolved (paho itself does not); the
    CONNACK properties are in ``connack_props`` and the server's DISCONNECT
    reason code, if it sent one, in ``disconnect_rc``."""

    def __init__(self, host: str, port: int, client_id: str, clean_start: bool = True,
                 session_expiry: Optional[int] = None, keepalive: int = 60,
                 will: Optional[Will] = None, connect_props: Optional[dict] = None):
        self.host, self.port = host, port
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        cp = dict(connect_props or {})
        if session_expiry is not None:
            cp["SessionExpiryInterval"] = session_expiry
        self.connect_props = props_of(PacketTypes.CONNECT, **cp) if cp else None
        if will is not None:
            wp = None
            if will.props:
                wp = props_of(PacketTypes.WILLMESSAGE, **dict(will.props))
            self.c.will_set(will.topic, will.payload, will.qos, will.retain, properties=wp)
        self.messages: "queue.Queue[Msg5]" = queue.Queue()
        self._cond = threading.Condition()
        self._connack = None
        self.connack_props: dict = {}
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: dict[int, list[int]] = {}
        self.disconnect_rc: Optional[int] = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_message = self._on_message
        self._started = False
        self.aliases: dict[int, str] = {}

    # -- callbacks (network thread) --------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.aliases = {}
        with self._cond:
            self._connack = (bool(flags.session_present), reason_code)
            self.connack_props = _props_dict(properties)
            self._cond.notify_all()
        if not reason_code.is_failure:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            rc = getattr(reason_code, "value", reason_code)
            if flags.is_disconnect_packet_from_server:
                self.disconnect_rc = rc
            self.disconnected.set()
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._unsubacks[mid] = [rc.value for rc in reason_codes] if reason_codes else []
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        try:
            topic = m.topic
        except UnicodeDecodeError:
            topic = repr(m._topic)
        props = _props_dict(getattr(m, "properties", None))
        # paho 2.x does not resolve Topic Aliases sent by the server: do it here
        # (mappings live for one network connection [MQTT-3.3.2-7]).
        alias = props.get("TopicAlias")
        if alias is not None:
            if topic:
                self.aliases[alias] = topic
            else:
                topic = self.aliases.get(alias, f"<unmapped topic alias {alias}>")
        self.messages.put(Msg5(topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup), m.mid, props))

    def _wait(self, pred, timeout, what):
        with self._cond:
            self._cond.wait_for(lambda: pred() or self.disconnected.is_set(), timeout)
            if pred():
                return
            if self.disconnected.is_set():
                raise AssertionError(f"{self.client_id}: connection lost while waiting for {what}"
                                     f" (server DISCONNECT rc={self.disconnect_rc})")
            raise AssertionError(f"{self.client_id}: timed out after {timeout}s waiting for {what}")

    # -- API ----------------------------------------------------------------
    def connect(self, timeout: float = DEFAULT_TIMEOUT, expect_success: bool = True) -> bool:
        """Connect and wait for CONNACK. Returns the Session Present flag."""
        self.c.connect(self.host, self.port, keepalive=self.keepalive, clean_start=self.clean_start,
                       properties=self.connect_props)
        return self._start_and_await_connack(timeout, expect_success)

    def subscribe(self, topic: str, qos: int = 0, no_local: bool = False, rap: bool = False,
                  rh: int = 0, sub_id: Optional[int] = None, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Subscribe with MQTT 5 options; wait for SUBACK; return its reason codes."""
        opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap, retainHandling=rh)
        props = props_of(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        rc, mid = self.c.subscribe(topic, options=opts, properties=props)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        self._wait(lambda: mid in self._subacks, timeout, f"SUBACK mid={mid}")
        return self._subacks[mid]

    def unsubscribe(self, topic, timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {rc}"
        self._wait(lambda: mid in self._unsubacks, timeout, f"UNSUBACK mid={mid}")
        return self._unsubacks[mid]

    def publish(self, topic, payload=b"", qos: int = 0, retain: bool = False, props: Optional[dict] = None,
                wait: bool = True, timeout: float = DEFAULT_TIMEOUT):
        """Publish with optional PUBLISH properties (paho attribute names);
        with ``wait`` block until the QoS flow completed."""
        p = props_of(PacketTypes.PUBLISH, **props) if props else None
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=p)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait:
            deadline = time.monotonic() + timeout
            while not info.is_published():
                assert not self.disconnected.is_set(), \
                    f"{self.client_id}: disconnected before publish mid={info.mid} completed (rc={self.disconnect_rc})"
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{self.client_id}: publish mid={info.mid} not completed within {timeout}s"
                info.wait_for_publish(min(remaining, 0.2))
        return info

    def get(self, timeout: float = DEFAULT_TIMEOUT) -> Msg5:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message received within {timeout}s") from None

    def expect(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> list[Msg5]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{self.client_id}: got {len(out)}/{n} messages within {timeout}s; "
                                     f"last: {out[-3:]}") from None
        return out

    def get_until(self, pred, timeout: float = DEFAULT_TIMEOUT) -> tuple[Msg5, list[Msg5]]:
        deadline = time.monotonic() + timeout
        before = []
        while True:
            try:
                m = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.client_id}: expected message not received within {timeout}s; "
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

    def collect(self, duration: float) -> list[Msg5]:
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

    def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        return self.disconnected.wait(timeout)

    def disconnect(self, rc: Optional[int] = None, props: Optional[dict] = None) -> None:
        """MQTT DISCONNECT (optionally with a reason code and DISCONNECT
        properties), then stop the network thread."""
        if self._started and not self.disconnected.is_set():
            from paho.mqtt.reasoncodes import ReasonCode
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=rc) if rc is not None else None
            p = props_of(PacketTypes.DISCONNECT, **props) if props else None
            self.c.disconnect(reasoncode=reason, properties=p)
            self.disconnected.wait(DEFAULT_TIMEOUT)
        self.stop()



# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def mqtt5_client(request):
    """Factory for connected paho MQTTv5 clients, disconnected at teardown.

    ``mqtt5_client(shard=0, prefix="c", connect=True, broker_=None, **kw)``;
    ``kw`` goes to ``MqttClient5`` (clean_start, session_expiry, keepalive,
    will, connect_props, client_id)."""
    clients: list[MqttClient5] = []

    def _make(shard: int = 0, prefix: str = "c", connect: bool = True, broker_=None, **kw) -> MqttClient5:
        b = broker_ or request.getfixturevalue("broker")
        cid = kw.pop("client_id", None)
        if cid is None:
            cid = b.client_id(prefix, shard)
        c = MqttClient5(b.host, b.port, cid, **kw)
        clients.append(c)
        if connect:
            c.connect()
        return c

    yield _make
    for c in clients:
        try:
            c.disconnect()
        except Exception:
            pass


@pytest.fixture
def raw5(request):
    """Factory for raw MQTT 5 socket clients: ``raw5(broker_=None, timeout=5)``
    -> RawClient5 (TCP connected, nothing sent); closed at teardown."""
    raws: list[RawClient5] = []

    def _make(broker_=None, timeout: float = DEFAULT_TIMEOUT) -> RawClient5:
        b = broker_ or request.getfixturevalue("broker")
        r = RawClient5(b.host, b.port, timeout=timeout)
        raws.append(r)
        return r

    yield _make
    for r in raws:
        r.close()


@pytest.fixture
def v5_broker(request):
    """Factory for a private broker of this test:
    ``v5_broker(shardmq_args=[...], mosquitto_conf=[...] or None)``.

    shardmq gets ``shardmq_args`` on its command line. Mosquitto gets the
    extra ``mosquitto_conf`` lines in its config file; if ``mosquitto_conf``
    is None the test is skipped on Mosquitto (no equivalent setting).
    The broker is killed and checked (exit by itself, 'panicked') at
    teardown, like conftest's ``start_broker``."""
    import conftest

    started: list = []

    class _ConfiguredBroker(conftest.Broker):
        def __init__(self, conf_lines, **kw):
            super().__init__(**kw)
            self.conf_lines = list(conf_lines or [])

        def _command(self):
            cmd = super()._command()
            if self.kind == "mosquitto":
                conf = Path(self.tmpdir.name) / "mosquitto.conf"
                conf.write_text(conf.read_text() + "".join(f"{l}\n" for l in self.conf_lines))
            return cmd

    def _start(shardmq_args=(), mosquitto_conf=None, cores: int = conftest.DEFAULT_CORES):
        if conftest.BROKER_KIND == "mosquitto":
            if mosquitto_conf is None:
                pytest.skip("needs a shardmq-only broker setting: " + " ".join(shardmq_args))
            b = _ConfiguredBroker(mosquitto_conf, kind="mosquitto", cores=cores)
        else:
            b = _ConfiguredBroker((), kind="shardmq", cores=cores, extra_args=list(shardmq_args))
        started.append(b)
        b.start()
        request.node._mqtt_brokers = getattr(request.node, "_mqtt_brokers", []) + [(b, 0)]
        return b

    yield _start
    problems = []
    for b in started:
        problems += [f"{b}: {p}" for p in b.problems()]
        b.kill()
        if conftest.PANIC_MARKER in b.log() and not any("panicked" in p for p in problems):
            problems.append(f"{b}: broker stderr contains 'panicked' (at shutdown)")
    logs = "\n".join(f"--- {b} stderr ---\n{conftest._log_tail(b.log())}" for b in started)
    for b in started:
        b.tmpdir.cleanup()
    if problems:
        pytest.fail("; ".join(problems) + "\n" + logs, pytrace=False)


# --------------------------------------------------------------------------
# Small helpers used by several modules
# --------------------------------------------------------------------------

def raw5_connected(broker, shard: int, prefix: str, timeout: float = DEFAULT_TIMEOUT, **kw) -> tuple[RawClient5, Connack5]:
    """A RawClient5 connected (CONNACK 0x00) with a client id owned by ``shard``."""
    r = RawClient5(broker.host, broker.port, timeout=timeout)
    ca = r.connect5(broker.client_id(prefix, shard), **kw)
    assert ca.reason_code == 0, f"CONNACK reason {ca.reason_code:#x} {ca.props}"
    return r, ca


def bystander_roundtrip(broker, timeout: float = DEFAULT_TIMEOUT) -> None:
    """A fresh v5 subscriber (shard 1) and a v5 publisher (shard 0) round-trip
    a QoS 1 message with a user property: the broker still serves others."""
    root = unique_topic_root("by")
    sub = MqttClient5(broker.host, broker.port, broker.client_id("bs", 1))
    pub = MqttClient5(broker.host, broker.port, broker.client_id("bp", 0))
    try:
        sub.connect(timeout)
        assert sub.subscribe(f"{root}/ok", 1) == [1]
        pub.connect(timeout)
        pub.publish(f"{root}/ok", b"alive", qos=1, props={"UserProperty": [("k", "v")]}, timeout=timeout)
        m = sub.get(timeout)
        assert (m.topic, m.payload, m.qos) == (f"{root}/ok", b"alive", 1)
        assert m.user_properties == [("k", "v")]
    finally:
        pub.disconnect()
        sub.disconnect()


class Bystander:
    """A v5 client connected *before* a misbehaving client acts; afterwards
    ``check()`` proves its connection survived and still receives."""

    def __init__(self, broker, shard: int = 1):
        self.broker = broker
        self.root = unique_topic_root("bys")
        self.sub = MqttClient5(broker.host, broker.port, broker.client_id("ys", shard))
        self.sub.connect()
        assert self.sub.subscribe(f"{self.root}/#", 1) == [1]

    def check(self) -> None:
        assert not self.sub.disconnected.is_set(), \
            f"bystander was disconnected (rc={self.sub.disconnect_rc})"
        pub = MqttClient5(self.broker.host, self.broker.port, self.broker.client_id("yp", 0))
        try:
            pub.connect()
            pub.publish(f"{self.root}/x", b"still-here", qos=1)
            # The misbehaving client may have published under the same root
            # before it was closed: skip those.
            m = self.sub.get()
            while m.topic != f"{self.root}/x":
                m = self.sub.get()
            assert (m.topic, m.payload) == (f"{self.root}/x", b"still-here")
        finally:
            pub.disconnect()

    def close(self) -> None:
        self.sub.disconnect()
