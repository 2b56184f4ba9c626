"""Helpers for the hardening suites (test_limits, test_slow_consumer,
test_hostile, test_soak): Prometheus scraping, process resources of the
broker (/proc/<pid>), a broker started with ``--metrics``, and a "healthy
client" that proves the broker still serves other clients.

Every wait here is bounded; polling intervals only pace a loop whose exit
condition is checked each time.
"""

from __future__ import annotations

import os
import time
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import free_port
from mqtt_helpers import MqttClient, unique_topic_root

# --------------------------------------------------------------------------
# /metrics
# --------------------------------------------------------------------------


class Metrics:
    """One scrape of /metrics: ``{(sample name, sorted label items): value}``."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels) -> float:
        """The single sample ``name{labels}`` (0 when absent)."""
        return self.samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)

    def sum(self, name: str, **labels) -> float:
        """Sum of every ``name`` sample whose labels include ``labels`` (e.g. over shards)."""
        want = {k: str(v) for k, v in labels.items()}
        total = 0.0
        for (n, lbls), v in self.samples.items():
            if n == name and all(dict(lbls).get(k) == val for k, val in want.items()):
                total += v
        return total

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}

    def by_shard(self, name: str, **labels) -> dict[str, float]:
        want = {k: str(v) for k, v in labels.items()}
        out = {}
        for (n, lbls), v in self.samples.items():
            d = dict(lbls)
            if n == name and all(d.get(k) == val for k, val in want.items()):
                out[d.get("shard")] = v
        return out


def scrape(port: int) -> Metrics:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return Metrics(r.read().decode())


def wait_metrics(port: int, pred, timeout: float = 6.0, what: str = "metrics condition") -> Metrics:
    """Scrapes until ``pred(Metrics)`` holds. Shards report once a second, so a
    change shows up within about a second."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(port)
        if pred(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s; last scrape:\n"
                                 + "\n".join(l for l in m.text.splitlines()
                                             if not l.startswith("#") and not l.endswith(" 0")))
        time.sleep(0.2)  # pacing the scrape loop; the condition is re-checked each time


def start_with_metrics(start_broker, extra_args=(), cores: int = 2):
    """A private broker serving /metrics; returns ``(broker, metrics_port)``."""
    port = free_port()
    b = start_broker(extra_args=["--metrics", f"127.0.0.1:{port}", *extra_args], cores=cores)
    b.metrics_port = port
    # The endpoint is served by shard 0 once it runs; wait until it answers.
    deadline = time.monotonic() + 5
    while True:
        try:
            scrape(port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return b, port


# --------------------------------------------------------------------------
# /proc/<pid>
# --------------------------------------------------------------------------


def broker_pid(broker) -> int:
    assert broker.proc is not None and broker.alive(), f"{broker} is not running"
    return broker.proc.pid


def rss_bytes(broker) -> int:
    """Resident set size of the broker process (VmRSS)."""
    with open(f"/proc/{broker_pid(broker)}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def fd_count(broker) -> int:
    """Open file descriptors of the broker process."""
    return len(os.listdir(f"/proc/{broker_pid(broker)}/fd"))


def wait_fds_at_most(broker, limit: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = fd_count(broker)
        if n <= limit or time.monotonic() > deadline:
            return n
        time.sleep(0.1)  # pacing: closes are noticed by the broker asynchronously


MIB = 1024 * 1024


# --------------------------------------------------------------------------
# A healthy client
# --------------------------------------------------------------------------


class Healthy:
    """A paho client on one shard, connected before the abuse starts, that
    proves the broker still serves it: ``roundtrip()`` publishes a QoS 1
    message to a topic only it subscribes to and waits for it."""

    def __init__(self, broker, shard: int, prefix: str = "ok", timeout: float = 5.0):
        self.broker = broker
        self.timeout = timeout
        self.topic = f"{unique_topic_root('healthy')}/s{shard}"
        self.client = MqttClient(broker.host, broker.port, broker.client_id(prefix, shard))
        self.client.connect(timeout)
        assert self.client.subscribe(self.topic, 1, timeout) == [1]
        self.n = 0
        self.latencies: list[float] = []

    def roundtrip(self, timeout: float | None = None) -> float:
        timeout = self.timeout if timeout is None else timeout
        assert not self.client.disconnected.is_set(), f"{self.client.client_id}: was disconnected"
        self.n += 1
        payload = f"rt-{self.n}".encode()
        t0 = time.monotonic()
        self.client.publish(self.topic, payload, qos=1, timeout=timeout)
        m, _ = self.client.get_until(lambda m: m.payload == payload,
                                     timeout=max(0.1, timeout - (time.monotonic() - t0)))
        assert (m.topic, m.qos) == (self.topic, 1)
        dt = time.monotonic() - t0
        self.latencies.append(dt)
        return dt

    def close(self) -> None:
        self.client.disconnect()
