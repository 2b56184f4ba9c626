"""Authentication, ACLs, reload and the PROXY protocol, as a user meets them:
a password file written by ``shardmq passwd`` or Mosquitto's ``mosquitto_passwd``,
an ACL file in Mosquitto's syntax, SIGHUP, and clients from paho, the Mosquitto
command-line tools and raw bytes. Every check runs with clients on both shards.

Specs: [MQTT-3.1.4-2] (the server may refuse a CONNECT it does not authorise),
[MQTT-3.2.2-8] (CONNACK return codes 4 and 5; MQTT 5 0x86, 0x87),
[MQTT-3.9.3-1] (SUBACK 0x80 / 0x87 per filter), MQTT 5 PUBACK 0x87.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import BROKER_KIND, Broker, _broker_binary, free_port, wait_for_log
from mqtt_helpers import (
    ConnectionClosed,
    MqttClient,
    RawClient,
    connect_packet,
    disconnect_packet,
    publish_packet,
    subscribe_packet,
    unique_topic_root,
)
from mqtt5_helpers import connect5, parse_connack5, parse_ack5, parse_suback5, publish5, subscribe5

pytestmark = pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq configuration files")

USERS = {"alice": "wonderland", "bob": "builder", "dev-7": "s3nsor"}

ACL = """\
# anonymous clients (none are admitted when a password file is set)
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/secret
topic read $SYS/#

user bob
topic write sensors/#
topic readwrite test/#
topic deny test/nosubscribe

# every client: its own command topic, and its user's inbox
pattern read cmd/%c
pattern readwrite inbox/%u/#
"""


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """Through ``shardmq passwd``, the way a user creates one."""
    for user, password in users.items():
        subprocess.run([_broker_binary(), "passwd", str(path), user], input=f"{password}\n",
                       text=True, check=True, capture_output=True, timeout=30)


@pytest.fixture
def secure(tmp_path, config_broker):
    """Factory: a broker with USERS in a password file, ACL, and `extra` config."""
    def _start(extra: str = "", users=USERS, acl: str | None = ACL, cores: int = 2) -> Broker:
        passwd = tmp_path / "passwd"
        write_password_file(passwd, users)
        config = f'password_file = "{passwd}"\n'
        if acl is not None:
            (tmp_path / "acl").write_text(acl)
            config += f'acl_file = "{tmp_path / "acl"}"\n'
        b = config_broker(config + extra, cores=cores)
        b.passwd, b.acl = passwd, tmp_path / "acl"
        return b

    return _start


def client(b: Broker, cid: str, user=None, password=None, protocol=mqtt.MQTTv311) -> MqttClient:
    c = MqttClient(b.host, b.port, cid, protocol=protocol)
    if user is not None:
        c.c.username_pw_set(user, password)
    return c


def connack(b: Broker, cid: str, **kw) -> int:
    raw = RawClient(b.host, b.port)
    try:
        _sp, rc = raw.connect(cid, **kw)
        return rc
    finally:
        raw.close()


def connack5(b: Broker, cid: str, **kw) -> int:
    raw = RawClient(b.host, b.port)
    try:
        raw.send(connect5(cid, **kw))
        return parse_connack5(raw.recv_packet()).reason_code
    finally:
        raw.close()


# -- authentication -----------------------------------------------------------

def test_the_right_password_connects_and_every_wrong_one_is_refused(secure):
    b = secure()
    for shard in (0, 1):
        cid = b.client_id("auth", shard)
        assert connack(b, cid, username="alice", password="wonderland") == 0
        assert connack(b, cid, username="alice", password="rabbit") == 4, "wrong password"
        assert connack(b, cid, username="mallory", password="x") == 4, "unknown user"
        assert connack(b, cid, username="alice") == 4, "no password"
        assert connack(b, cid) == 5, "anonymous, not allowed with a password file"
        assert connack5(b, cid, username="bob", password=b"builder") == 0
        assert connack5(b, cid, username="bob", password=b"nope") == 0x86
        assert connack5(b, cid) == 0x87


def test_a_refused_client_is_closed_and_others_are_undisturbed(secure):
    b = secure()
    good = client(b, b.client_id("ok", 0), "alice", "wonderland")
    good.connect()
    topic = "alice/" + unique_topic_root("undisturbed")
    good.subscribe(topic, qos=1)
    raw = RawClient(b.host, b.port)
    assert raw.connect(b.client_id("bad", 1), username="alice", password="no")[1] == 4
    raw.wait_closed()
    good.publish(topic, b"still here", qos=1)
    assert good.messages.get(timeout=5).payload == b"still here"
    good.stop()


def test_mosquitto_passwd_files_are_read_as_they_are(secure, tmp_path, config_broker):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    theirs = tmp_path / "theirs"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(theirs), "carol", "c4rol"], check=True,
                   capture_output=True, timeout=30)
    b = config_broker(f'password_file = "{theirs}"\n')
    for shard in (0, 1):
        cid = b.client_id("mosq", shard)
        assert connack(b, cid, username="carol", password="c4rol") == 0
        assert connack(b, cid, username="carol", password="carol") == 4
    out = subprocess.run(["mosquitto_pub", "-h", b.host, "-p", str(b.port), "-u", "carol",
                          "-P", "c4rol", "-t", "any", "-m", "x"], capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["mosquitto_pub", "-h", b.host, "-p", str(b.port), "-u", "carol",
                          "-P", "wrong", "-t", "any", "-m", "x"], capture_output=True, timeout=10)
    assert out.returncode != 0


def test_failed_logins_from_one_address_are_rate_limited(secure):
    b = secure("login_failures_max = 3\n", cores=1)
    cid = b.client_id("brute", 0)
    # The readiness probe's anonymous CONNECT was the first failure from 127.0.0.1.
    for _ in range(2):
        assert connack(b, cid, username="alice", password="guess") == 4
    # Over the limit: refused before the password is looked at, even the right one.
    assert connack(b, cid, username="alice", password="wonderland") == 3
    assert connack5(b, cid, username="alice", password=b"wonderland") == 0x9F
    assert "refusing connection" in b.log()


def test_allow_anonymous_opens_the_door_the_password_file_closed(secure):
    b = secure("allow_anonymous = true\n", acl=None)
    for shard in (0, 1):
        assert connack(b, b.client_id("anon", shard)) == 0
        assert connack(b, b.client_id("anon", shard), username="alice", password="x") == 4


def test_sighup_reloads_the_password_file_without_dropping_connections(secure):
    b = secure()
    kept = client(b, b.client_id("kept", 0), "alice", "wonderland")
    kept.connect()
    cid = b.client_id("late", 1)
    assert connack(b, cid, username="dave", password="d4ve") == 4
    write_password_file(b.passwd, {"dave": "d4ve"})
    os.kill(b.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while connack(b, cid, username="dave", password="d4ve") != 0:
        assert time.monotonic() < deadline, "the new user never got in"
        time.sleep(0.1)  # the reload lands within a tick
    assert kept.c.is_connected(), "a reload drops no connection"
    # A file that does not read keeps what the broker has, and says why.
    b.acl.write_text("topic sideways nowhere\n")
    os.kill(b.proc.pid, signal.SIGHUP)
    wait_for_log(b, "reload refused")
    assert connack(b, cid, username="dave", password="d4ve") == 0
    kept.stop()


# -- ACL --------------------------------------------------------------------

def test_an_acl_reload_takes_back_a_grant_from_connected_clients(secure):
    """Answers the shard remembered from the old ACL do not outlive a reload."""
    b = secure()
    alice = client(b, b.client_id("reacl", 1), "alice", "wonderland")
    alice.connect()
    assert alice.subscribe("alice/#", qos=1) == [1]
    assert alice.subscribe("inbox/alice/#", qos=1) == [1]
    alice.publish("alice/1", b"before", qos=1)
    assert alice.messages.get(timeout=5).payload == b"before"
    b.acl.write_text(ACL.replace("topic readwrite alice/#", "topic read alice/#"))
    os.kill(b.proc.pid, signal.SIGHUP)
    wait_for_log(b, "reloaded the password file")
    alice.publish("alice/2", b"after", qos=1)
    alice.publish("inbox/alice/barrier", b"barrier", qos=1)
    got = alice.messages.get(timeout=5)
    assert (got.topic, got.payload) == ("inbox/alice/barrier", b"barrier"), "a revoked grant was used"
    alice.stop()


def test_acl_grants_and_denies_publish_and_subscribe_across_shards(secure):
    b = secure()
    root = unique_topic_root("acl")
    alice = client(b, b.client_id("alice", 0), "alice", "wonderland")
    alice.connect()
    bob = client(b, b.client_id("bob", 1), "bob", "builder")
    bob.connect()
    # Subscriptions: granted where the ACL lets alice read, 0x80 elsewhere.
    assert alice.subscribe(f"sensors/{root}/+", qos=1) == [1]
    assert alice.subscribe(f"bob/{root}", qos=1) == [0x80]
    assert alice.subscribe("sensors/secret", qos=1) == [0x80]
    # bob may write sensors/..., alice reads it from the other shard.
    bob.publish(f"sensors/{root}/t", b"21.5", qos=1)
    assert alice.messages.get(timeout=5).payload == b"21.5"
    # alice may not write sensors/...: dropped, never delivered.
    alice.publish(f"sensors/{root}/t", b"forged", qos=1)
    bob.publish(f"sensors/{root}/t", b"22.0", qos=1)
    assert alice.messages.get(timeout=5).payload == b"22.0", "the forged message was delivered"
    alice.stop()
    bob.stop()


def test_wildcard_subscriptions_never_leak_denied_topics(secure):
    b = secure()
    alice = client(b, b.client_id("wild", 1), "alice", "wonderland")
    alice.connect()
    assert alice.subscribe("sensors/#", qos=1) == [1]
    assert alice.subscribe("#", qos=1) == [1], "granted: some topics are readable"
    bob = client(b, b.client_id("pub", 0), "bob", "builder")
    bob.connect()
    bob.publish("sensors/secret", b"denied", qos=1, retain=True)
    bob.publish("sensors/open", b"granted", qos=1)
    got = alice.messages.get(timeout=5)
    assert (got.topic, got.payload) == ("sensors/open", b"granted")
    time.sleep(0.5)  # window for a leaked copy of the denied message to arrive
    assert alice.messages.empty(), "a denied topic reached a wildcard subscriber"
    # The retained message on the denied topic is not sent on subscribe either.
    late = client(b, b.client_id("late", 0), "alice", "wonderland")
    late.connect()
    assert late.subscribe("sensors/+", qos=1) == [1]
    time.sleep(0.5)  # window for a retained copy of the denied topic
    assert late.messages.empty()
    for c in (alice, bob, late):
        c.stop()


def test_patterns_substitute_client_id_and_user_name(secure):
    b = secure()
    cid = b.client_id("dev", 1)
    dev = client(b, cid, "dev-7", "s3nsor")
    dev.connect()
    assert dev.subscribe(f"cmd/{cid}", qos=1) == [1]
    assert dev.subscribe("cmd/someone-else", qos=1) == [0x80]
    assert dev.subscribe("inbox/dev-7/#", qos=1) == [1]
    assert dev.subscribe("inbox/alice/#", qos=1) == [0x80]
    dev.publish("inbox/dev-7/note", b"to myself", qos=1)
    assert dev.messages.get(timeout=5).payload == b"to myself"
    dev.stop()


def test_mqtt5_clients_are_told_0x87(secure):
    b = secure()
    raw = RawClient(b.host, b.port)
    raw.send(connect5(b.client_id("v5", 0), username="alice", password=b"wonderland"))
    assert parse_connack5(raw.recv_packet()).reason_code == 0
    raw.send(publish5("sensors/x", b"forged", qos=1, pid=7))
    pid, reason, _ = parse_ack5(raw.recv_packet())
    assert (pid, reason) == (7, 0x87)
    raw.send(publish5("sensors/x", b"forged", qos=2, pid=8))
    pid, reason, _ = parse_ack5(raw.recv_packet())
    assert (pid, reason) == (8, 0x87), "PUBREC 0x87 ends the exchange"
    raw.send(subscribe5(9, [("sensors/+", 1), ("bob/#", 1)]))
    pid, _props, codes = parse_suback5(raw.recv_packet())
    assert (pid, codes) == (9, [1, 0x87])
    raw.close()


def test_a_will_on_a_denied_topic_refuses_the_connect(secure):
    b = secure()
    cid = b.client_id("will", 1)
    rc = connack(b, cid, username="alice", password="wonderland", will=("sensors/x", b"bye", 0, False))
    assert rc == 5


def test_sys_is_readable_only_where_the_acl_allows(secure):
    b = secure("sys_interval_secs = 1\n")
    bob = client(b, b.client_id("sysb", 0), "bob", "builder")
    bob.connect()
    assert bob.subscribe("$SYS/#", qos=0) == [0x80]
    alice = client(b, b.client_id("sysa", 1), "alice", "wonderland")
    alice.connect()
    assert alice.subscribe("$SYS/brokers/+/clients/connected", qos=0) == [0]
    assert alice.messages.get(timeout=5).topic.startswith("$SYS/")
    bob.stop()
    alice.stop()


def test_paho_interop_subscribe_failure_topic(secure):
    """The Paho interoperability suite's test_subscribe_failure: SUBSCRIBE to
    test/nosubscribe is refused with 0x80."""
    b = secure()
    bob = client(b, b.client_id("paho", 1), "bob", "builder")
    bob.connect()
    assert bob.subscribe("test/nosubscribe", qos=2) == [0x80]
    assert bob.subscribe("test/other", qos=2) == [2]
    bob.stop()


# -- PROXY protocol -----------------------------------------------------------

def proxy_config(port: int) -> str:
    return (f'[[listener]]\nbind = "127.0.0.1:{port}"\nproxy_protocol = true\n'
            "allow_anonymous = true\n")


def proxied(b: Broker, port: int, header: bytes) -> RawClient:
    raw = RawClient(b.host, port)
    raw.send(header)
    return raw


def v2_header(src: str, sport: int) -> bytes:
    addresses = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 1883)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def test_proxy_headers_v1_and_v2_are_read_and_bad_ones_close(secure):
    port = free_port()
    b = secure(proxy_config(port), acl=None)
    for shard in (0, 1):
        raw = proxied(b, port, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 1883\r\n")
        assert raw.connect(b.client_id("pv1", shard))[1] == 0
        raw.close()
        raw = proxied(b, port, v2_header("198.51.100.4", 40001))
        assert raw.connect(b.client_id("pv2", shard))[1] == 0
        raw.close()
    # Plain MQTT to a PROXY listener, garbage, and a truncated header: closed.
    for first in (connect_packet(b.client_id("plain", 0)), b"GARBAGE\r\n\r\n" * 4):
        raw = RawClient(b.host, port)
        raw.send(first)
        raw.wait_closed()
    raw = proxied(b, port, b"PROXY TCP4 203.0.113.9 127.0")
    raw.wait_closed(timeout=15)  # connect_timeout (10 s) ends it


def test_login_failures_count_against_the_address_the_balancer_reports(secure):
    port = free_port()
    b = secure("login_failures_max = 2\n" + proxy_config(port), cores=1)
    cid = b.client_id("lb", 0)

    def attempt(src: str, password: str) -> int:
        raw = proxied(b, port, f"PROXY TCP4 {src} 127.0.0.1 40000 1883\r\n".encode())
        try:
            return raw.connect(cid, username="alice", password=password)[1]
        finally:
            raw.close()

    assert attempt("203.0.113.66", "guess") == 4
    assert attempt("203.0.113.66", "guess") == 4
    assert attempt("203.0.113.66", "wonderland") == 3, "the attacker's address is blocked"
    assert attempt("203.0.113.77", "wonderland") == 0, "another client behind the balancer is not"
