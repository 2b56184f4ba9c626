"""MQTT over TLS and WebSocket, with the clients people use: mosquitto_pub/sub with
--cafile/--cert/--key, paho over TLS and over WebSocket (ws and wss), raw sockets
for silent handshakes. Certificates are made per run (certs.py). Publisher and
subscriber sit on different shards, and on different listeners where it matters.

Specs: MQTT 5.0 section 6 / 3.1.1 section 6 (WebSocket: binary frames, subprotocol
"mqtt"), [MQTT-4.2] (TLS is a network connection like any other).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from certs import Authority
from conftest import BROKER_KIND, free_port, wait_for_log
from test_security import write_password_file

pytestmark = pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq configuration files")


class Ports:
    def __init__(self):
        self.mqtts, self.ws, self.wss, self.mtls = (free_port() for _ in range(4))


@pytest.fixture
def pki(tmp_path):
    ca = Authority(tmp_path)
    return {"dir": tmp_path, "ca": ca, "server": ca.server()}


def listeners(ports: Ports, pki, extra: str = "") -> str:
    ca, server = pki["ca"], pki["server"]
    return f"""
connect_timeout_secs = 2
{extra}
[[listener]]
kind = "mqtts"
bind = "127.0.0.1:{ports.mqtts}"
cert = "{server.cert}"
key = "{server.key}"

[[listener]]
kind = "ws"
bind = "127.0.0.1:{ports.ws}"

[[listener]]
kind = "wss"
bind = "127.0.0.1:{ports.wss}"
cert = "{server.cert}"
key = "{server.key}"

[[listener]]
kind = "mqtts"
bind = "127.0.0.1:{ports.mtls}"
cert = "{server.cert}"
key = "{server.key}"
ca_file = "{ca.pem}"
require_certificate = true
use_identity_as_username = true
"""


@pytest.fixture
def tls_broker(pki, config_broker):
    def _start(extra: str = "", cores: int = 2):
        ports = Ports()
        b = config_broker(listeners(ports, pki, extra), cores=cores)
        b.ports = ports
        return b

    return _start


class Paho:
    """A paho client over any transport, with bounded waits."""

    def __init__(self, cid: str, port: int, transport: str = "tcp", tls: dict | None = None,
                 user: tuple[str, str] | None = None, protocol=mqtt.MQTTv311):
        self.port = port
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=protocol,
                             transport=transport, reconnect_on_failure=False)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if tls is not None:
            self.c.tls_set(**tls)
        if user is not None:
            self.c.username_pw_set(*user)
        self.messages: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        # A connection closed before CONNACK (a refused handshake) answers None.
        self.c.on_disconnect = lambda c, u, f, rc, p: self.connack.put(None)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.c.on_message = lambda c, u, m: self.messages.put(m)

    def connect(self) -> int | None:
        """The CONNACK's code, or None when the connection closed before one."""
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        except (ssl.SSLError, OSError):
            return None
        self.c.loop_start()
        return self.connack.get(timeout=10)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.c.publish(topic, payload, qos).wait_for_publish(timeout=10)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def trust(pki, client=None) -> dict:
    tls = {"ca_certs": str(pki["ca"].pem)}
    if client is not None:
        tls.update(certfile=str(client.cert), keyfile=str(client.key))
    return tls


def test_paho_over_tls_ws_and_wss_reach_each_other_across_shards(tls_broker, pki):
    b = tls_broker()
    p = b.ports
    sub = Paho(b.client_id("tls-sub", 0), p.mqtts, tls=trust(pki))
    assert sub.connect() == 0
    assert sub.subscribe("transports/#") == [1]
    publishers = [
        ("ws", Paho(b.client_id("ws-pub", 1), p.ws, transport="websockets")),
        ("wss", Paho(b.client_id("wss-pub", 1), p.wss, transport="websockets", tls=trust(pki))),
        ("tcp", Paho(b.client_id("tcp-pub", 1), b.port)),
    ]
    for name, pub in publishers:
        assert pub.connect() == 0, name
        pub.publish(f"transports/{name}", name.encode() * 1000)
        got = sub.messages.get(timeout=10)
        assert (got.topic, got.payload) == (f"transports/{name}", name.encode() * 1000)
        pub.stop()
    # And back: a WebSocket subscriber gets what the TLS client sends.
    ws_sub = Paho(b.client_id("ws-sub", 0), p.wss, transport="websockets", tls=trust(pki))
    assert ws_sub.connect() == 0
    assert ws_sub.subscribe("back/+") == [1]
    tls_pub = Paho(b.client_id("tls-pub", 1), p.mqtts, tls=trust(pki))
    assert tls_pub.connect() == 0
    for i in range(50):
        tls_pub.publish("back/x", f"{i}".encode())
    assert [ws_sub.messages.get(timeout=10).payload for _ in range(50)] == \
        [f"{i}".encode() for i in range(50)]
    for c in (sub, ws_sub, tls_pub):
        c.stop()


JS = Path(__file__).resolve().parent.parent / "js"


def test_mqttjs_over_ws_and_wss_as_a_browser_connects(tls_broker, pki):
    """MQTT.js (what browser dashboards use) over ws:// and wss://, MQTT 3.1.1 and
    5, each client's messages coming back through the other shard's route."""
    if shutil.which("node") is None or not (JS / "node_modules" / "mqtt").is_dir():
        pytest.fail("MQTT.js is missing: `make deps` installs node and tests/js", pytrace=False)
    b = tls_broker()
    cases = [
        (f"ws://127.0.0.1:{b.ports.ws}/mqtt", 4, None),
        (f"ws://127.0.0.1:{b.ports.ws}/mqtt", 5, None),
        (f"wss://localhost:{b.ports.wss}/mqtt", 4, str(pki["ca"].pem)),
        (f"wss://localhost:{b.ports.wss}/mqtt", 5, str(pki["ca"].pem)),
    ]
    for n, (url, version, ca) in enumerate(cases):
        cid = b.client_id(f"js{version}", n % 2)
        args = ["node", str(JS / "roundtrip.js"), url, cid, f"js/{n}/t", "100", str(version)]
        out = subprocess.run(args + ([ca] if ca else []), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"{url} v{version}: {out.stdout} {out.stderr}"
        assert '"ok":true' in out.stdout


def test_mosquitto_clients_with_cafile_and_a_password(tls_broker, pki):
    """The README's example: a TLS listener, a password file, mosquitto_sub/pub."""
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto clients are not installed")
    passwd = pki["dir"] / "passwd"
    write_password_file(passwd, {"meter": "m3ter"})
    b = tls_broker(f'password_file = "{passwd}"')
    common = ["-h", "127.0.0.1", "-p", str(b.ports.mqtts), "--cafile", str(pki["ca"].pem)]
    sub = subprocess.Popen(["mosquitto_sub", *common, "-u", "meter", "-P", "m3ter", "-t", "meters/#",
                            "-C", "1", "-W", "10", "-i", b.client_id("msub", 0)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # mosquitto_sub has no "subscribed" signal: give it time to SUBACK
    out = subprocess.run(["mosquitto_pub", *common, "-u", "meter", "-P", "m3ter", "-t", "meters/1",
                          "-m", "42 kWh", "-q", "1", "-i", b.client_id("mpub", 1)],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    stdout, stderr = sub.communicate(timeout=15)
    assert stdout.strip() == "42 kWh", stderr
    refused = subprocess.run(["mosquitto_pub", *common, "-t", "meters/1", "-m", "x"],
                             capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0, "a client without credentials is refused"


def test_client_certificates_required_verified_and_used_as_user_name(tls_broker, pki, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user device-42\ntopic readwrite devices/42/#\n")
    b = tls_broker(f'acl_file = "{acl}"')
    ca, port = pki["ca"], b.ports.mtls
    good = Paho(b.client_id("mtls", 0), port, tls=trust(pki, ca.client("device-42")))
    assert good.connect() == 0
    assert good.subscribe("devices/42/cmd") == [1], "the ACL knows it by its certificate CN"
    assert good.subscribe("devices/43/cmd") == [0x80]
    good.publish("devices/42/cmd", b"on")
    assert good.messages.get(timeout=10).payload == b"on"
    good.stop()
    (tmp_path / "other").mkdir()
    other_ca = Authority(tmp_path / "other", "another CA")
    refused = {
        "no certificate": trust(pki),
        "expired": trust(pki, ca.client("device-42", expired=True)),
        "wrong CA": trust(pki, other_ca.client("device-42")),
    }
    for why, tls in refused.items():
        c = Paho(b.client_id("bad", 1), port, tls=tls)
        # The handshake fails, or (TLS 1.3 checks the client's certificate after the
        # client finished) the broker closes before CONNACK.
        assert c.connect() is None, f"{why}: connected"
        c.c.loop_stop()
    assert b.alive()


def test_a_silent_tls_handshake_is_closed_after_connect_timeout(tls_broker):
    b = tls_broker()
    s = socket.create_connection(("127.0.0.1", b.ports.mqtts))
    s.settimeout(8)
    started = time.monotonic()
    assert s.recv(1) == b"", "closed without a byte"
    assert 1.5 < time.monotonic() - started < 6, "bounded by connect_timeout (2 s)"
    s.close()


def test_bad_tls_and_websocket_input_closes_only_that_connection(tls_broker, pki):
    b = tls_broker()
    keep = Paho(b.client_id("keep", 0), b.ports.wss, transport="websockets", tls=trust(pki))
    assert keep.connect() == 0
    assert keep.subscribe("alive") == [1]
    for port, junk in [(b.ports.mqtts, b"\x16\x03\x01\x00\x05hello"),
                       (b.ports.ws, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n"),
                       (b.ports.ws, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")]:
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(5)
        s.sendall(junk)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        if port == b.ports.ws and junk.startswith(b"GET"):
            assert data.startswith(b"HTTP/1.1 404"), data
    pub = Paho(b.client_id("pub", 1), b.port)
    assert pub.connect() == 0
    pub.publish("alive", b"yes")
    assert keep.messages.get(timeout=10).payload == b"yes"
    keep.stop()
    pub.stop()


def test_certificates_reload_on_sighup_without_dropping_connections(tls_broker, pki, tmp_path):
    b = tls_broker()
    kept = Paho(b.client_id("kept", 0), b.ports.mqtts, tls=trust(pki))
    assert kept.connect() == 0
    assert kept.subscribe("reload/#") == [1]
    # A new CA and server certificate over the old files, then SIGHUP.
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    new_ca = Authority(new_dir, "renewed CA")
    renewed = new_ca.server()
    pki["server"].cert.write_bytes(renewed.cert.read_bytes())
    pki["server"].key.write_bytes(renewed.key.read_bytes())
    os.kill(b.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        c = Paho(b.client_id("new", 1), b.ports.mqtts, tls={"ca_certs": str(new_ca.pem)})
        if c.connect() == 0:
            break
        c.c.loop_stop()
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.2)  # the reload lands within a tick
    c.publish("reload/after", b"renewed")
    assert kept.messages.get(timeout=10).payload == b"renewed", "the old connection lives on"
    c.stop()
    # A broken file: the broker keeps serving the certificate it has.
    pki["server"].key.write_text("not a key\n")
    os.kill(b.proc.pid, signal.SIGHUP)
    wait_for_log(b, "reload refused")
    again = Paho(b.client_id("again", 1), b.ports.mqtts, tls={"ca_certs": str(new_ca.pem)})
    assert again.connect() == 0
    again.stop()
    kept.stop()


def test_listener_max_connections_and_per_listener_figures(pki, config_broker):
    """max_connections closes what is over it at accept; /metrics and $SYS count per
    listener (connections, handshake failures, auth failures, PROXY refusals)."""
    import urllib.request

    from mqtt_helpers import RawClient

    capped, metrics = free_port(), free_port()
    config = f"""
sys_interval_secs = 1
metrics_listen = "127.0.0.1:{metrics}"
[[listener]]
bind = "127.0.0.1:{capped}"
max_connections = 2
"""
    b = config_broker(config, cores=1)
    held = [RawClient(b.host, capped) for _ in range(2)]
    for n, raw in enumerate(held):
        assert raw.connect(f"capped{n}")[1] == 0
    over = RawClient(b.host, capped)
    over.wait_closed()
    name = f'listener="mqtt 127.0.0.1:{capped}"'
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        lines = [line for line in text.splitlines() if name in line]
        if f"shardmq_listener_refused_full_total{{shard=\"0\",{name}}} 1" in lines and \
                f"shardmq_listener_connections{{shard=\"0\",{name}}} 2" in lines:
            break
        assert time.monotonic() < deadline, "\n".join(lines) or text[-3000:]
        time.sleep(0.2)  # snapshots are taken once a second
    sub = Paho("sysreader", b.port)
    assert sub.connect() == 0
    assert sub.subscribe("$SYS/brokers/+/listeners/1/#", qos=0) == [0]
    seen = {}
    deadline = time.monotonic() + 5
    while "connections" not in seen or "name" not in seen:
        m = sub.messages.get(timeout=max(0.1, deadline - time.monotonic()))
        seen[m.topic.rsplit("/", 1)[1]] = m.payload.decode()
    assert seen["name"] == f"mqtt 127.0.0.1:{capped}"
    assert seen["connections"] == "2"
    sub.stop()
    for raw in held:
        raw.close()


def test_mount_point_puts_a_listener_s_clients_under_a_prefix(config_broker):
    """mount_point as in Mosquitto: the listener's clients publish and subscribe
    under the prefix without knowing it; clients of other listeners see the prefix."""
    tenant = free_port()
    config = f'[[listener]]\nbind = "127.0.0.1:{tenant}"\nmount_point = "tenant-a/"\n'
    b = config_broker(config)
    inside = Paho(b.client_id("in", 0), tenant)
    assert inside.connect() == 0
    assert inside.subscribe("meters/+") == [1]
    outside = Paho(b.client_id("out", 1), b.port)
    assert outside.connect() == 0
    assert outside.subscribe("tenant-a/#") == [1]
    # From inside: the outside sees the prefix.
    inside.publish("meters/1", b"in")
    got = outside.messages.get(timeout=10)
    assert (got.topic, got.payload) == ("tenant-a/meters/1", b"in")
    got = inside.messages.get(timeout=10)
    assert (got.topic, got.payload) == ("meters/1", b"in"), "delivered without the prefix"
    # From outside: only the prefixed topic reaches the inside, stripped.
    outside.publish("meters/2", b"not for tenants")
    outside.publish("tenant-a/meters/3", b"for tenant a", qos=1)
    got = inside.messages.get(timeout=10)
    assert (got.topic, got.payload) == ("meters/3", b"for tenant a")
    inside.stop()
    outside.stop()
