"""$SYS topics, alarms and the Prometheus endpoint (shardmq only: the topic
layout, alarms and metrics are shardmq's own)."""

import json
import time
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import BROKER_KIND, free_port

pytestmark = pytest.mark.skipif(BROKER_KIND != "shardmq", reason="shardmq's own $SYS, alarms and metrics")

NODE = "testnode"


def wait_sys(sub, topic_suffix, pred, timeout=10.0):
    """Reads $SYS publications until ``$SYS/brokers/testnode/<suffix>`` satisfies
    ``pred(payload_str)``; returns the payload."""
    want = f"$SYS/brokers/{NODE}/{topic_suffix}"
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            m = sub.get(timeout=max(0.05, deadline - time.monotonic()))
        except AssertionError:
            break
        if m.topic == want:
            last = m.payload.decode()
            if pred(last):
                return last
    raise AssertionError(f"{want}: last value {last!r} never satisfied the condition")


def test_sys_topics_report_known_traffic(start_broker, mqtt_client, topic_root):
    b = start_broker(extra_args=["--sys-interval-secs", "1", "--node-name", NODE])
    sys_sub = mqtt_client(shard=0, prefix="sys", broker_=b)
    sys_sub.subscribe("$SYS/#", qos=0)
    # The node list and the version exist from the first publication on.
    wait_sys(sys_sub, "version", lambda v: v.startswith("shardmq "))
    # $SYS topics are retained but not counted.
    assert wait_sys(sys_sub, "retained/count", lambda v: True) == "0"

    sub = mqtt_client(shard=1, prefix="sub", broker_=b)
    sub.subscribe(f"{topic_root}/#", qos=1)
    pub0 = mqtt_client(shard=0, prefix="pub", broker_=b)
    pub1 = mqtt_client(shard=1, prefix="pub", broker_=b)
    for i in range(10):
        pub0.wait_published(pub0.publish(f"{topic_root}/a", f"q1-{i}", qos=1))
    for i in range(5):
        pub1.wait_published(pub1.publish(f"{topic_root}/b", f"q0-{i}", qos=0))
    for i in range(3):
        pub1.wait_published(pub1.publish(f"{topic_root}/r{i}", "kept", qos=1, retain=True))
    sub.expect(18)

    # Figures are merged once a second and published every second here.
    assert wait_sys(sys_sub, "messages/qos1/received", lambda v: v == "13") == "13"
    assert wait_sys(sys_sub, "messages/qos0/received", lambda v: v == "5") == "5"
    assert wait_sys(sys_sub, "messages/received", lambda v: v == "18") == "18"
    assert wait_sys(sys_sub, "messages/qos1/sent", lambda v: v == "13") == "13"
    assert wait_sys(sys_sub, "retained/count", lambda v: v == "3") == "3"
    assert wait_sys(sys_sub, "clients/connected", lambda v: v == "4") == "4"
    assert int(wait_sys(sys_sub, "clients/maximum", lambda v: int(v) >= 4)) >= 4
    # Two subscriptions: $SYS/# and the test's filter.
    assert wait_sys(sys_sub, "subscriptions/count", lambda v: v == "2") == "2"
    for shard in (0, 1):
        assert int(wait_sys(sys_sub, f"shards/{shard}/connections", lambda v: int(v) >= 1)) >= 1
    assert wait_sys(sys_sub, "messages/dropped/mqueue_full", lambda v: v == "0") == "0"


def test_connections_alarm_activates_and_clears(start_broker, mqtt_client):
    b = start_broker(extra_args=["--sys-interval-secs", "0", "--node-name", NODE,
                                 "--connections-max", "10", "--alarm-connections-ratio", "0.5"])
    watcher = mqtt_client(shard=0, prefix="watch", broker_=b)
    watcher.subscribe(f"$SYS/brokers/{NODE}/alarms/#", qos=0)
    # The active list is published (retained) at start: empty.
    m, _ = watcher.get_until(lambda m: m.topic.endswith("/alarms/active"), timeout=5)
    assert json.loads(m.payload) == []
    extra = [mqtt_client(shard=i % 2, prefix=f"load{i}", broker_=b) for i in range(4)]
    m, _ = watcher.get_until(lambda m: m.topic.endswith("/alarms/activate"), timeout=5)
    alarm = json.loads(m.payload)
    assert alarm["name"] == "connections_high"
    assert alarm["node"] == NODE and alarm["shard"] is None and alarm["severity"] == "warning"
    assert alarm["deactivated_at"] is None and alarm["activated_at"].endswith("Z")
    assert alarm["details"] == {"connections": 5, "connections_max": 10}
    active, _ = watcher.get_until(lambda m: m.topic.endswith("/alarms/active"), timeout=5)
    assert [a["name"] for a in json.loads(active.payload)] == ["connections_high"]
    for c in extra[:2]:
        c.disconnect()
    m, _ = watcher.get_until(lambda m: m.topic.endswith("/alarms/deactivate"), timeout=5)
    cleared = json.loads(m.payload)
    assert cleared["name"] == "connections_high"
    assert cleared["activated_at"] == alarm["activated_at"]
    assert cleared["deactivated_at"] is not None
    # Below the threshold again: 4 or 3, depending on which second it was sampled in.
    assert cleared["details"]["connections"] in (3, 4)
    active, _ = watcher.get_until(lambda m: m.topic.endswith("/alarms/active"), timeout=5)
    assert json.loads(active.payload) == []


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_parses_and_counts(start_broker, mqtt_client, topic_root):
    port = free_port()
    b = start_broker(extra_args=["--metrics", f"127.0.0.1:{port}"])
    sub = mqtt_client(shard=1, prefix="msub", broker_=b)
    sub.subscribe(f"{topic_root}/m", qos=1)
    pub = mqtt_client(shard=0, prefix="mpub", broker_=b)
    for i in range(7):
        pub.wait_published(pub.publish(f"{topic_root}/m", str(i), qos=1))
    sub.expect(7)
    deadline = time.monotonic() + 5
    while True:
        s = samples(scrape(port))
        received = s.get(("shardmq_messages_received_total", (("qos", "1"), ("shard", "0"))))
        sent = s.get(("shardmq_messages_sent_total", (("qos", "1"), ("shard", "1"))))
        if (received, sent) == (7, 7) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert received == 7 and sent == 7, s
    assert s[("shardmq_connections", (("shard", "0"),))] >= 1
    assert s[("shardmq_connections", (("shard", "1"),))] >= 1
    assert ("shardmq_uptime_seconds", ()) in s
    # The socket rings count their work: at least the 7 PUBLISHes were received
    # (one completion per arrival) on shard 0, through at least one enter.
    assert s[("shardmq_socket_receives_total", (("shard", "0"),))] >= 7, s
    assert s[("shardmq_socket_enters_total", (("shard", "0"),))] >= 1, s
    # An idle shard sleeps in its socket ring; the test's pauses leave it idle.
    assert s[("shardmq_socket_parks_total", (("shard", "1"),))] >= 1, s
    assert ("shardmq_socket_buffers_exhausted_total", (("shard", "0"),)) in s
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
    assert e.value.code == 404
