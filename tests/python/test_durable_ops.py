"""Durable sessions in operation (``--data-dir``): wills across a restart, the
disk limit (``--data-max-bytes``), a disk that fills up, checkpoints that keep
the log bounded, and the log's figures in ``/metrics``.

Every test runs private brokers on a data directory of its own; a restart is a
new broker (new port) on the same directory. Publishers and subscribers are on
different shards (the cross-core path).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BROKER_KIND, free_port
from mqtt_helpers import (
    PUBACK,
    ConnectionClosed,
    RawClient,
    connect_packet,
    disconnect_packet,
    publish_packet,
    unique_topic_root,
)
from mqtt5_helpers import (
    SESSION_EXPIRY_INTERVAL,
    WILL_DELAY_INTERVAL,
    Will,
    connect5,
    parse_ack5,
    parse_connack5,
    publish5,
)

pytestmark = [
    pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq's --data-dir"),
    pytest.mark.timeout(90),
]

QUOTA_EXCEEDED = 0x97


def crash(broker) -> None:
    """SIGKILL: the broker has no chance to write anything more."""
    os.killpg(broker.proc.pid, signal.SIGKILL)
    broker.proc.wait(5)
    broker.stopped_by_us = True


def segments(data: Path) -> list[Path]:
    return sorted(data.glob("gen-*/shard-*/*.log"))


def metric(port: int, name: str, at_least: float = 0.0, timeout: float = 5.0) -> float:
    """The sum over shards of a metric of ``GET /metrics``, once it is at least
    ``at_least`` (the shards report once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        values = [float(v) for v in re.findall(rf"^shardmq_{name}(?:_total)?{{[^}}]*}} (\S+)$", text, re.M)]
        if (values and sum(values) >= at_least) or time.monotonic() > deadline:
            assert values, f"no shardmq_{name} in /metrics"
            return sum(values)
        time.sleep(0.2)


# --------------------------------------------------------------------------
# Wills
# --------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_will_of_a_client_connected_at_the_stop_is_published_after_the_restart(
        start_broker, mqtt_client, tmp_path, how):
    """[MQTT-3.1.2-8] A persistent client connected when the broker stops
    (a crash, or a shutdown, which ends its connection without DISCONNECT)
    has its will published once the broker is back, exactly once, to a
    persistent watcher on the other shard. (``--sync always``: the CONNACK the
    client saw means its session and will are on disk.)"""
    args = ["--data-dir", str(tmp_path), "--sync", "always"]
    b = start_broker(extra_args=args)
    topic = f"{unique_topic_root('dw')}/gone"
    watch_id = b.client_id("dww", 1)
    watcher = mqtt_client(broker_=b, client_id=watch_id, clean_session=False)
    assert watcher.subscribe(topic, 1) == [1]
    watcher.disconnect()
    device = RawClient(b.host, b.port)
    device.send(connect_packet(b.client_id("dwd", 0), clean=False, will=(topic, b"bye", 1, False)))
    assert device.recv_packet().connack() == (0, 0)
    if how == "sigkill":
        crash(b)
    else:
        b.kill()
    device.abort()

    b = start_broker(extra_args=args)
    watcher = mqtt_client(broker_=b, client_id=watch_id, clean_session=False)
    m = watcher.get(timeout=10)
    assert (m.topic, m.payload) == (topic, b"bye")
    with pytest.raises(AssertionError):
        watcher.get(timeout=1.5)  # once only


def test_a_client_back_in_time_cancels_its_recovered_will(start_broker, mqtt_client, tmp_path):
    """[MQTT-3.1.3-9] A recovered will waits its Will Delay Interval (and at
    least a second after the start): a client that reconnects before resumes
    its session and its will is never published."""
    args = ["--data-dir", str(tmp_path), "--sync", "always"]
    b = start_broker(extra_args=args)
    topic = f"{unique_topic_root('dx')}/gone"
    watch_id = b.client_id("dxw", 1)
    watcher = mqtt_client(broker_=b, client_id=watch_id, clean_session=False)
    assert watcher.subscribe(topic, 1) == [1]
    device_id = b.client_id("dxd", 0)
    device = RawClient(b.host, b.port)
    props = [(SESSION_EXPIRY_INTERVAL, 600)]
    will = Will(topic, b"bye", 1, False, [(WILL_DELAY_INTERVAL, 5)])
    device.send(connect5(device_id, clean_start=False, props=props, will=will))
    assert parse_connack5(device.recv_packet()).reason_code == 0
    crash(b)
    device.abort()

    b = start_broker(extra_args=args)
    device = RawClient(b.host, b.port)
    device.send(connect5(device_id, clean_start=False, props=props))
    connack = parse_connack5(device.recv_packet())
    assert (bool(connack.session_present), connack.reason_code) == (True, 0)
    watcher = mqtt_client(broker_=b, client_id=watch_id, clean_session=False)
    with pytest.raises(AssertionError):
        watcher.get(timeout=7)  # past the 5 s delay: cancelled
    device.send(disconnect_packet())


# --------------------------------------------------------------------------
# The disk limit
# --------------------------------------------------------------------------

def test_data_max_bytes_refuses_new_durable_state_with_0x97(start_broker, mqtt_client, tmp_path):
    """At its share of ``--data-max-bytes`` a log refuses new durable state:
    an MQTT 5 QoS 1 publisher gets PUBACK 0x97 (Quota exceeded, 3.4.2.1), a new
    persistent session CONNACK 0x97, an MQTT 3.1.1 QoS 1 publisher is
    disconnected (it cannot be told); everything acknowledged before is
    delivered, and the refusals are counted."""
    metrics_port = free_port()
    args = ["--data-dir", str(tmp_path), "--data-max-bytes", "200000", "--data-segment-bytes", "40000",
            "--mqueue-len-max", "100000", "--metrics", f"127.0.0.1:{metrics_port}"]
    b = start_broker(extra_args=args)
    topic = f"{unique_topic_root('dl')}/q"
    sub_id = b.client_id("dls", 1)
    sub = mqtt_client(broker_=b, client_id=sub_id, clean_session=False)
    assert sub.subscribe(topic, 1) == [1]
    sub.disconnect()

    pub = RawClient(b.host, b.port)
    pub.send(connect5(b.client_id("dlp", 0)))
    assert parse_connack5(pub.recv_packet()).reason_code == 0
    accepted, refused = 0, 0
    for pid in range(1, 3000):
        pub.send(publish5(topic, b"x" * 200, qos=1, pid=pid))
        _pid, rc, _props = parse_ack5(pub.recv_packet())
        if rc == QUOTA_EXCEEDED:
            refused += 1
            break
        assert rc == 0
        accepted += 1
    assert refused == 1, f"no 0x97 after {accepted} messages of 200 bytes under a 200 kB limit"

    late = RawClient(b.host, b.port)
    late.send(connect5(b.client_id("dln", 1), clean_start=False, props=[(SESSION_EXPIRY_INTERVAL, 60)]))
    assert parse_connack5(late.recv_packet()).reason_code == QUOTA_EXCEEDED

    v3 = RawClient(b.host, b.port)
    assert v3.connect(b.client_id("dl3", 0)) == (0, 0)
    # A checkpoint may have made room meanwhile (the log drops what it wrote
    # again): what is acknowledged is delivered like the rest, and once the log
    # is full again the MQTT 3.1.1 publisher, which cannot be told, is closed.
    closed = False
    for pid in range(1, 3000):
        try:
            v3.send(publish_packet(topic, b"x" * 200, qos=1, pid=pid))
            ack = v3.recv_packet()
        except ConnectionClosed:
            closed = True
            break
        assert ack.type == PUBACK, ack
        accepted += 1
    assert closed, "the MQTT 3.1.1 publisher was never closed"
    assert metric(metrics_port, "refused_log_full", at_least=3) >= 3

    sub = mqtt_client(broker_=b, client_id=sub_id, clean_session=False)
    got = sub.expect(accepted, timeout=20)
    assert len(got) == accepted, "every acknowledged message is delivered"


def test_a_full_disk_stops_the_log_and_the_broker_goes_on(start_broker, mqtt_client, tmp_path):
    """A disk that fills up (a 256 KiB tmpfs): the log stops with a clear
    error line and the ``log_failed`` alarm; the broker keeps serving other
    clients (in memory)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    b = None
    try:
        b = start_broker(extra_args=["--data-dir", str(mount / "data"), "--mqueue-len-max", "100000",
                                     "--sys-interval-secs", "1"])
        topic = f"{unique_topic_root('df')}/q"
        sub = mqtt_client(broker_=b, client_id=b.client_id("dfs", 1), clean_session=False)
        assert sub.subscribe(topic, 1) == [1]
        sub.disconnect()
        pub = mqtt_client(broker_=b, shard=0, prefix="dfp")
        for i in range(2000):
            pub.publish(topic, b"y" * 300, qos=0)
        deadline = time.monotonic() + 10
        while "durable log failed" not in b.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "durable log failed" in b.log(), "no error line for the full disk"
        deadline = time.monotonic() + 5
        while "log_failed" not in b.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "log_failed" in b.log(), "no log_failed alarm"
        other = f"{unique_topic_root('dg')}/q"
        a = mqtt_client(broker_=b, shard=1, prefix="dga")
        assert a.subscribe(other, 1) == [1]
        c = mqtt_client(broker_=b, shard=0, prefix="dgc")
        c.publish(other, b"still here", qos=0)
        assert a.get(timeout=5).payload == b"still here"
    finally:
        if b is not None:
            b.kill()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# --------------------------------------------------------------------------
# Checkpoints and figures
# --------------------------------------------------------------------------

def test_checkpoints_keep_the_log_bounded_and_lose_nothing(start_broker, mqtt_client, tmp_path):
    """With small segments, a stream through a persistent subscriber rolls many
    segments; checkpoints let the old ones go (the number on disk stays small),
    and what an offline session holds survives the restart whole and in
    order [MQTT-4.6.0-1]."""
    metrics_port = free_port()
    args = ["--data-dir", str(tmp_path), "--data-segment-bytes", "16384", "--mqueue-len-max", "100000",
            "--metrics", f"127.0.0.1:{metrics_port}"]
    b = start_broker(extra_args=args)
    topic = f"{unique_topic_root('dc')}/q"
    keep_id = b.client_id("dck", 1)
    keep = mqtt_client(broker_=b, client_id=keep_id, clean_session=False)
    assert keep.subscribe(topic, 1) == [1]
    keep.disconnect()
    live = mqtt_client(broker_=b, client_id=b.client_id("dcl", 1), clean_session=False)
    assert live.subscribe(topic, 1) == [1]
    pub = mqtt_client(broker_=b, shard=0, prefix="dcp")
    n = 3000
    for i in range(n):
        pub.publish(topic, str(i).encode(), qos=1)
    live.expect(n, timeout=30)
    time.sleep(1)
    assert metric(metrics_port, "log_checkpoints", at_least=1) >= 1
    on_disk = len(segments(tmp_path))
    # 3,000 QoS 1 messages through two sessions write well over 30 segments of 16 KiB.
    assert metric(metrics_port, "log_bytes_written") > 30 * 16384
    assert on_disk <= 8, f"{on_disk} segments on disk: checkpoints do not free them"
    b.kill()

    b = start_broker(extra_args=args)
    keep = mqtt_client(broker_=b, client_id=keep_id, clean_session=False)
    got = [int(m.payload) for m in keep.expect(n, timeout=30)]
    assert got == list(range(n))
    assert metric(metrics_port, "recovery_records", at_least=1) > 0


def test_a_log_behind_its_disk_pauses_publishers_and_loses_nothing(start_broker, mqtt_client, tmp_path):
    """With ``--log-buffer-bytes 1`` every pass's records put the shard's log
    behind: the shard stops reading its publishers and taking ring batches until
    its writer took them (``log_pauses`` counts each time it went behind: how
    many depends on how the writer keeps up), and a stream through a persistent
    subscriber on the other shard still arrives whole and in order
    [MQTT-4.6.0-1], with nothing left waiting at the end."""
    metrics_port = free_port()
    b = start_broker(extra_args=["--data-dir", str(tmp_path), "--log-buffer-bytes", "1",
                                 "--mqueue-len-max", "100000", "--metrics", f"127.0.0.1:{metrics_port}"])
    topic = f"{unique_topic_root('dw')}/q"
    sub = mqtt_client(broker_=b, client_id=b.client_id("dws", 1), clean_session=False)
    assert sub.subscribe(topic, 1) == [1]
    pubs = [mqtt_client(broker_=b, shard=0, prefix=f"dwp{i}") for i in range(2)]
    n = 1000
    for i in range(n):
        for p, pub in enumerate(pubs):
            pub.publish(topic, f"{p}:{i}".encode(), qos=1)
    got = [m.payload.decode() for m in sub.expect(2 * n, timeout=30)]
    for p in range(2):
        assert [int(s.split(":")[1]) for s in got if s.startswith(f"{p}:")] == list(range(n))
    assert metric(metrics_port, "log_pauses", at_least=1) >= 1
    assert metric(metrics_port, "log_waiting_bytes") == 0
    assert metric(metrics_port, "log_errors") == 0


def test_sync_always_syncs_and_reports_its_latency(start_broker, mqtt_client, tmp_path):
    """``--sync always`` syncs the log (its fdatasyncs and their latency in
    ``/metrics``) and a QoS 1 publisher still gets every PUBACK."""
    metrics_port = free_port()
    b = start_broker(extra_args=["--data-dir", str(tmp_path), "--sync", "always",
                                 "--metrics", f"127.0.0.1:{metrics_port}"])
    topic = f"{unique_topic_root('ds')}/q"
    sub = mqtt_client(broker_=b, client_id=b.client_id("dss", 1), clean_session=False)
    assert sub.subscribe(topic, 1) == [1]
    pub = mqtt_client(broker_=b, shard=0, prefix="dsp")
    for i in range(200):
        pub.publish(topic, str(i).encode(), qos=1)
    assert [int(m.payload) for m in sub.expect(200, timeout=20)] == list(range(200))
    assert metric(metrics_port, "log_syncs", at_least=1) > 0
    assert metric(metrics_port, "log_sync_p99_us", at_least=1) > 0
    assert metric(metrics_port, "log_errors") == 0


# --------------------------------------------------------------------------
# As a new user would try it
# --------------------------------------------------------------------------

MOSQ_SUB = shutil.which("mosquitto_sub")
MOSQ_PUB = shutil.which("mosquitto_pub")


@pytest.mark.skipif(not (MOSQ_SUB and MOSQ_PUB), reason="mosquitto_sub/mosquitto_pub not installed")
def test_mosquitto_sub_c_gets_everything_after_kill_9(start_broker, tmp_path):
    """The issue's "done means": ``shardmq --data-dir DIR``, a ``mosquitto_sub -c``
    subscriber offline, messages published with ``mosquitto_pub -q 1``, the
    broker killed with -9 and restarted: the subscriber reconnects and gets
    every message, in order. (``--sync always``: a PUBACK means on disk.)"""
    args = ["--data-dir", str(tmp_path), "--sync", "always"]
    b = start_broker(extra_args=args)
    topic = f"{unique_topic_root('du')}/readings"
    sub_id = b.client_id("dus", 1)

    def sub(broker, count: int) -> subprocess.CompletedProcess:
        return subprocess.run([MOSQ_SUB, "-h", broker.host, "-p", str(broker.port), "-c", "-i", sub_id,
                               "-q", "1", "-t", topic, "-C", str(count), "-W", "10"],
                              capture_output=True, text=True, timeout=20)

    # Creates the persistent session and its subscription, then leaves (-W: a
    # timeout with nothing received, exit code 27).
    first = subprocess.run([MOSQ_SUB, "-h", b.host, "-p", str(b.port), "-c", "-i", sub_id, "-q", "1",
                            "-t", topic, "-W", "1"], capture_output=True, text=True, timeout=20)
    assert first.returncode == 27, first
    sent = [f"reading {i}" for i in range(50)]
    pub_id = b.client_id("dup", 0)
    r = subprocess.run([MOSQ_PUB, "-h", b.host, "-p", str(b.port), "-i", pub_id, "-q", "1", "-t", topic, "-l"],
                       input="\n".join(sent) + "\n", capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r
    crash(b)

    b = start_broker(extra_args=args)
    got = sub(b, len(sent))
    assert got.returncode == 0, got
    assert got.stdout.splitlines() == sent
