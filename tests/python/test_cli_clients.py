"""Interop with the Mosquitto command-line clients (mosquitto_sub / mosquitto_pub).

mosquitto_sub runs with -d so that its "Subscribed (mid: 1): Q" line tells us
when the SUBACK arrived (no sleeping before publishing). Its stdout is
line-buffered through ``stdbuf -oL`` when available; debug lines start with
"Client " or "Subscribed", every other line is a received payload.
"""

import queue
import shutil
import subprocess
import threading
import time

import pytest

MOSQ_SUB = shutil.which("mosquitto_sub")
MOSQ_PUB = shutil.which("mosquitto_pub")
STDBUF = shutil.which("stdbuf")

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not (MOSQ_SUB and MOSQ_PUB), reason="mosquitto_sub/mosquitto_pub not installed"),
]


class Sub:
    def __init__(self, broker, args):
        cmd = [MOSQ_SUB, "-h", broker.host, "-p", str(broker.port), "-d"] + args
        if STDBUF:
            cmd = [STDBUF, "-oL"] + cmd
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.all_lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pred, timeout=5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub: expected line not seen in {timeout}s; "
                                     f"output so far: {self.all_lines}") from None
            if line is None:
                raise AssertionError(f"mosquitto_sub exited early (rc={self.proc.wait()}): "
                                     f"{self.all_lines} {self.proc.stderr.read()}")
            self.all_lines.append(line)
            if pred(line):
                return line

    def wait_subscribed(self, timeout=5.0) -> int:
        line = self.wait_for(lambda l: l.startswith("Subscribed (mid:"), timeout)
        return int(line.rsplit(":", 1)[1])

    def finish(self, timeout=10.0) -> tuple[int, list[str], list[str]]:
        """Wait for exit; return (rc, payload lines, debug lines)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"mosquitto_sub did not exit within {timeout}s; output: {self.all_lines}")
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.all_lines.append(line)
        payloads = [l for l in self.all_lines if not (l.startswith("Client ") or l.startswith("Subscribed"))]
        debug = [l for l in self.all_lines if l.startswith("Client ")]
        return rc, payloads, debug

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def cli_sub(broker):
    subs = []

    def _start(args):
        s = Sub(broker, args)
        subs.append(s)
        return s

    yield _start
    for s in subs:
        s.kill()


def run_pub(broker, args, stdin_text=None, timeout=10):
    cmd = [MOSQ_PUB, "-h", broker.host, "-p", str(broker.port)] + args
    r = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"mosquitto_pub failed rc={r.returncode}: {r.stderr}"
    return r


@pytest.mark.parametrize("pub_shard,sub_shard", [(0, 1), (1, 0), (0, 0)],
                         ids=["cross-0to1", "cross-1to0", "same-0"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_cli_pub_sub(broker, cli_sub, topic_root, qos, pub_shard, sub_shard):
    """[MQTT-3.8.4-6] [MQTT-4.6.0-5] mosquitto_sub (-q Q, -C 5) receives the 5
    lines mosquitto_pub -l sends at QoS Q, in order, at QoS Q; SUBACK grants Q."""
    t = f"{topic_root}/cli"
    lines = [f"line {i} q{qos}" for i in range(5)]
    sub = cli_sub(["-t", t, "-C", "5", "-q", str(qos), "-i", broker.client_id("cs", sub_shard)])
    assert sub.wait_subscribed() == qos
    run_pub(broker, ["-t", t, "-q", str(qos), "-l", "-i", broker.client_id("cp", pub_shard)],
            stdin_text="\n".join(lines) + "\n")
    rc, payloads, debug = sub.finish()
    assert rc == 0
    assert payloads == lines
    received = [d for d in debug if "received PUBLISH" in d]
    assert len(received) == 5 and all(f", q{qos}," in d for d in received), received


@pytest.mark.parametrize("pub_version", ["mqttv31", "mqttv311"])
def test_cli_mqttv31(broker, cli_sub, topic_root, pub_version):
    """[MQTT-3.1.2-2] mosquitto_sub -V mqttv31 (protocol "MQIsdp" level 3)
    connects, subscribes and receives from a 3.1 or 3.1.1 publisher on the
    other shard."""
    t = f"{topic_root}/v31"
    sub = cli_sub(["-V", "mqttv31", "-t", t, "-C", "3", "-q", "1", "-i", broker.client_id("c31s", 1)])
    assert sub.wait_subscribed() == 1
    for i in range(3):
        run_pub(broker, ["-V", pub_version, "-t", t, "-q", "1", "-m", f"v31 msg {i}",
                         "-i", broker.client_id("c31p", 0)])
    rc, payloads, _ = sub.finish()
    assert rc == 0
    assert payloads == [f"v31 msg {i}" for i in range(3)]


def test_cli_retained_and_clear(broker, cli_sub, topic_root):
    """[MQTT-3.3.1-6] [MQTT-3.3.1-10] mosquitto_pub -r stores a retained
    message that a later mosquitto_sub -v -C 1 prints; mosquitto_pub -r -n
    clears it (mosquitto_sub --retained-only then times out with nothing)."""
    t = f"{topic_root}/ret"
    run_pub(broker, ["-t", t, "-q", "1", "-r", "-m", "retained via cli", "-i", broker.client_id("crp", 0)])
    sub = cli_sub(["-t", t, "-v", "-C", "1", "-i", broker.client_id("crs", 1)])
    rc, payloads, debug = sub.finish()
    assert rc == 0
    assert payloads == [f"{t} retained via cli"]
    assert any(", r1," in d and "received PUBLISH" in d for d in debug), debug

    run_pub(broker, ["-t", t, "-q", "1", "-r", "-n", "-i", broker.client_id("crp", 0)])
    sub2 = cli_sub(["-t", t, "-v", "-C", "1", "-W", "1", "--retained-only",
                    "-i", broker.client_id("crs", 1)])
    rc, payloads, _ = sub2.finish()
    assert payloads == [], f"retained message not cleared: {payloads}"
    assert rc == 27, f"expected mosquitto_sub -W timeout (rc 27), got {rc}"
