"""pytest harness for the shardmq black-box MQTT suite.

Environment:
  MQTT_TEST_BROKER   "shardmq" (default) or "mosquitto"
  SHARDMQ_BIN        path to the shardmq binary (default <repo>/target/debug/shardmq)
  MOSQUITTO_BIN      path to mosquitto (default: /usr/sbin/mosquitto, else PATH)
  SHARDMQ_CORES      shard count for the default broker (default 2)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mqtt_helpers import (
    CONNACK,
    ConnectionClosed,
    MqttClient,
    RawClient,
    client_id_on_shard,
    disconnect_packet,
    unique_topic_root,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
BROKER_KIND = os.environ.get("MQTT_TEST_BROKER", "shardmq").strip().lower()
if BROKER_KIND not in ("shardmq", "mosquitto"):
    raise pytest.UsageError(f"MQTT_TEST_BROKER must be 'shardmq' or 'mosquitto', not {BROKER_KIND!r}")
DEFAULT_CORES = int(os.environ.get("SHARDMQ_CORES", "2"))
STARTUP_TIMEOUT = 10.0
PANIC_MARKER = "panicked"


def pytest_report_header(config):
    return f"broker under test: {BROKER_KIND} ({_broker_binary()})"


def _broker_binary() -> str:
    if BROKER_KIND == "mosquitto":
        b = os.environ.get("MOSQUITTO_BIN")
        if b:
            return b
        if Path("/usr/sbin/mosquitto").exists():
            return "/usr/sbin/mosquitto"
        return shutil.which("mosquitto") or "mosquitto"
    b = os.environ.get("SHARDMQ_BIN")
    if b:
        p = Path(b)
        return str(p if p.is_absolute() else (Path.cwd() / p))
    return str(REPO_ROOT / "target" / "debug" / "shardmq")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A broker process on 127.0.0.1:<free port>."""

    def __init__(self, kind: str, cores: int = DEFAULT_CORES, extra_args=None):
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = 0
        self.shards = cores if kind == "shardmq" else 1
        self.cores = cores
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.tmpdir = tempfile.TemporaryDirectory(prefix=f"mqtt-test-{kind}-")
        self.log_path = Path(self.tmpdir.name) / "broker.stderr.log"
        self.stdout_path = Path(self.tmpdir.name) / "broker.stdout.log"
        self.cmd: list[str] = []
        self.stopped_by_us = False

    # -- placement --------------------------------------------------------
    def client_id(self, prefix: str, shard: int) -> str:
        """Client id whose owning shard is ``shard % self.shards``
        (on a single-shard broker every id lands on shard 0)."""
        return client_id_on_shard(prefix, shard % self.shards, self.shards)

    # -- lifecycle --------------------------------------------------------
    def _command(self) -> list[str]:
        binary = _broker_binary()
        if self.kind == "mosquitto":
            conf = Path(self.tmpdir.name) / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\n"
                "allow_anonymous true\n"
                "persistence false\n"
                "log_dest stderr\n"
            )
            return [binary, "-c", str(conf)] + self.extra_args
        return [binary, "--listen", f"{self.host}:{self.port}", "--cores", str(self.cores)] + self.extra_args

    def start(self) -> "Broker":
        binary = _broker_binary()
        if self.kind == "shardmq" and not Path(binary).exists():
            pytest.fail(f"shardmq binary not found at {binary} (build it with `cargo build` or set SHARDMQ_BIN)",
                        pytrace=False)
        last_err = None
        for _attempt in range(3):
            self.port = free_port()
            self.cmd = self._command()
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            self._stderr = open(self.log_path, "ab")
            self._stdout = open(self.stdout_path, "ab")
            self.proc = subprocess.Popen(self.cmd, stdout=self._stdout, stderr=self._stderr,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            try:
                self._wait_ready()
                return self
            except AssertionError as e:
                last_err = e
                self.kill()
                if "Address already in use" not in self.log() and "address in use" not in self.log().lower():
                    break
        pytest.fail(f"broker failed to start: {last_err}\ncommand: {' '.join(self.cmd)}\n"
                    f"--- broker log ---\n{self.log()}", pytrace=False)

    def _wait_ready(self) -> None:
        """Wait until the port accepts TCP connections and answers CONNECT."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"broker exited during startup with code {self.proc.returncode}")
            try:
                raw = RawClient(self.host, self.port, timeout=1.0)
            except OSError as e:
                last = e
                time.sleep(0.05)  # polling interval while the process binds its port
                continue
            try:
                _sp, rc = raw.connect(f"probe-{os.getpid()}-{time.monotonic_ns() % 10**6}", timeout=2.0)
                assert rc == 0, f"readiness probe CONNACK rc={rc}"
                raw.send(disconnect_packet())
                return
            except (ConnectionClosed, TimeoutError, OSError) as e:
                last = e
            finally:
                raw.close()
        raise AssertionError(f"broker not ready within {STARTUP_TIMEOUT}s: {last!r}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.stopped_by_us = True
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for f in (getattr(self, "_stderr", None), getattr(self, "_stdout", None)):
            if f is not None:
                f.close()

    def problems(self, since: int = 0) -> list[str]:
        """Reasons to fail: the process died on its own, or it panicked."""
        out = []
        if self.proc is not None and self.proc.poll() is not None and not self.stopped_by_us:
            out.append(f"broker process exited by itself with code {self.proc.returncode}")
        if PANIC_MARKER in self.log_since(since):
            out.append("broker stderr contains 'panicked'")
        return out

    def __repr__(self) -> str:
        return f"<Broker {self.kind} {self.host}:{self.port} shards={self.shards}>"


class ConfigBroker(Broker):
    """A shardmq broker started from a config file (plus its plain listener on a
    free port); its readiness probe accepts any CONNACK, since an anonymous probe is
    refused once a password file is set."""

    def __init__(self, config: str, cores: int = 2):
        super().__init__("shardmq", cores=cores)
        self.config_text = config

    def _command(self) -> list[str]:
        conf = Path(self.tmpdir.name) / "shardmq.toml"
        conf.write_text(self.config_text)
        return [_broker_binary(), "--config", str(conf), "--listen", f"{self.host}:{self.port}",
                "--cores", str(self.cores)]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"broker exited during startup with code {self.proc.returncode}")
            try:
                raw = RawClient(self.host, self.port, timeout=1.0)
            except OSError:
                time.sleep(0.05)  # polling interval while the process binds its port
                continue
            try:
                raw.connect(f"probe-{time.monotonic_ns() % 10**9}", timeout=2.0)
                return
            except (ConnectionClosed, TimeoutError, OSError):
                pass
            finally:
                raw.close()
        raise AssertionError("broker not ready within 10 s")



def wait_for_log(broker: Broker, text: str, timeout: float = 5.0) -> None:
    """Waits until the broker's stderr contains ``text``."""
    deadline = time.monotonic() + timeout
    while text not in broker.log():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{broker.log()[-2000:]}"
        time.sleep(0.1)  # polling interval for the log file


def _log_tail(text: str, lines: int = 200) -> str:
    ls = text.splitlines()
    if len(ls) > lines:
        return f"[... {len(ls) - lines} earlier lines omitted ...]\n" + "\n".join(ls[-lines:])
    return "\n".join(ls)


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def _module_broker():
    """One broker per test module (restarted if a test killed it)."""
    holder = {"broker": None, "retired": []}
    yield holder
    for b in [holder["broker"], *holder["retired"]]:
        if b is not None:
            b.kill()
            b.tmpdir.cleanup()


@pytest.fixture
def broker(_module_broker, request):
    """The broker under test (shared by the module). After each test it is
    checked: a test FAILS if the broker process exited by itself or printed
    'panicked' on stderr."""
    b = _module_broker["broker"]
    if b is None or not b.alive():
        if b is not None:
            _module_broker["retired"].append(b)
        b = Broker(BROKER_KIND).start()
        _module_broker["broker"] = b
    offset = b.log_size()
    request.node._mqtt_brokers = getattr(request.node, "_mqtt_brokers", []) + [(b, offset)]
    yield b
    problems = b.problems(since=offset)
    if problems and not getattr(request.node, "_mqtt_problems_reported", False):
        pytest.fail("; ".join(problems) + "\n--- broker stderr ---\n" + _log_tail(b.log_since(offset)),
                    pytrace=False)


@pytest.fixture
def config_broker():
    """Factory: ``config_broker(config_text, cores=2)`` starts a ConfigBroker for this
    test; at teardown it is killed, and the test fails if it exited by itself or
    panicked."""
    started: list[Broker] = []

    def _start(config: str, cores: int = 2) -> Broker:
        b = ConfigBroker(config, cores=cores)
        started.append(b)
        return b.start()

    yield _start
    for b in started:
        problems = b.problems()
        b.kill()
        b.tmpdir.cleanup()
        if problems:
            pytest.fail("; ".join(problems) + "\n" + _log_tail(b.log()), pytrace=False)


@pytest.fixture
def start_broker(request):
    """Factory: ``start_broker(extra_args=[...], cores=N)`` starts a private
    broker for this test; it is killed and checked at teardown."""
    started: list[Broker] = []

    def _start(extra_args=None, cores: int = DEFAULT_CORES) -> Broker:
        b = Broker(BROKER_KIND, cores=cores, extra_args=extra_args)
        started.append(b)
        b.start()
        request.node._mqtt_brokers = getattr(request.node, "_mqtt_brokers", []) + [(b, 0)]
        return b

    yield _start
    problems = []
    for b in started:
        problems += [f"{b}: {p}" for p in b.problems()]
        b.kill()
        if PANIC_MARKER in b.log() and not any("panicked" in p for p in problems):
            problems.append(f"{b}: broker stderr contains 'panicked' (at shutdown)")
    logs = "\n".join(f"--- {b} stderr ---\n{_log_tail(b.log())}" for b in started)
    for b in started:
        b.tmpdir.cleanup()
    if problems:
        pytest.fail("; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def mqtt_client(request):
    """Factory for connected paho clients, disconnected at teardown.

    ``mqtt_client(shard=0, prefix="c", connect=True, broker=None, **kw)``;
    ``kw`` goes to ``MqttClient`` (clean_session, protocol, keepalive, will,
    client_id)."""
    clients: list[MqttClient] = []

    def _make(shard: int = 0, prefix: str = "c", connect: bool = True, broker_=None, **kw) -> MqttClient:
        b = broker_ or request.getfixturevalue("broker")
        cid = kw.pop("client_id", None) or b.client_id(prefix, shard)
        c = MqttClient(b.host, b.port, cid, **kw)
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
def raw_client(request):
    """Factory for raw-socket clients: ``raw_client()`` -> RawClient (TCP
    connected, nothing sent); closed at teardown."""
    raws: list[RawClient] = []

    def _make(broker_=None, timeout: float = 5.0) -> RawClient:
        b = broker_ or request.getfixturevalue("broker")
        r = RawClient(b.host, b.port, timeout=timeout)
        raws.append(r)
        return r

    yield _make
    for r in raws:
        r.close()


@pytest.fixture
def topic_root():
    """A topic level unique to this test (tests share a broker per module,
    so retained messages and subscriptions must not collide)."""
    return unique_topic_root("t")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Right after the test body: FAIL the test (not just error its teardown)
    if a broker it used died on its own or printed 'panicked'."""
    try:
        result = yield
    finally:
        problems = []
        for b, offset in getattr(item, "_mqtt_brokers", []):
            problems += [f"{b}: {p}" for p in b.problems(since=offset)]
    if problems:
        item._mqtt_problems_reported = True
        pytest.fail("; ".join(problems), pytrace=False)
    return result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        if call.when == "call" and not getattr(item, "_mqtt_problems_reported", False):
            problems = [f"{b}: {p}" for b, off in getattr(item, "_mqtt_brokers", []) for p in b.problems(since=off)]
            if problems:
                rep.sections.append(("broker health", "\n".join(problems)))
        for b, offset in getattr(item, "_mqtt_brokers", []):
            text = b.log_since(offset)
            rep.sections.append((f"broker log ({b.kind}:{b.port}, since test start)",
                                 _log_tail(text) or "(empty)"))
